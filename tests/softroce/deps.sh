#!/usr/bin/env bash
# Debian packages rdmae needs to build, lint, fuzz and run the soft-RoCE bench.
#
#   deps.sh check     exit 0 iff every package is installed (fast, offline)
#   deps.sh install   apt-get update once + install what is missing (idempotent;
#                     needs root, or sudo without a password)
#   deps.sh list      print the package list
set -euo pipefail

PACKAGES=(
  rdma-core libibverbs-dev librdmacm-dev ibverbs-providers ibverbs-utils
  rdmacm-utils perftest libnuma-dev libhugetlbfs-dev libhugetlbfs-bin
  libcmocka-dev libxxhash-dev libssl-dev qemu-system-x86 qemu-system-data seabios
  busybox-static kmod cpio iproute2 socat cppcheck clang-tidy pkg-config
  util-linux coreutils gzip xz-utils
  # rdmae-perf: --plot draws with gnuplot; jq checks --json output in the bench VM.
  gnuplot-nox jq
  # The fuzz harnesses (make fuzz, tests/fuzz/): clang, and its runtimes for
  # -fsanitize=fuzzer,address,undefined, only recommended by clang on Debian 12.
  clang libclang-rt-14-dev
)

missing() {
  # One dpkg-query for all; unknown packages print nothing on stdout.
  local have
  have=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${PACKAGES[@]}" 2>/dev/null |
    awk '$2 == "installed" { sub(/:.*/, "", $1); print $1 }' || true)
  local p
  for p in "${PACKAGES[@]}"; do
    grep -qxF -- "$p" <<<"$have" || printf '%s\n' "$p"
  done
}

case "${1:-}" in
  check)
    m=$(missing)
    if [[ -n $m ]]; then
      echo "deps.sh: missing Debian packages: ${m//$'\n'/ }" >&2
      exit 1
    fi
    ;;
  install)
    m=$(missing)
    if [[ -z $m ]]; then
      echo "deps.sh: all ${#PACKAGES[@]} packages already installed"
      exit 0
    fi
    SUDO=()
    if [[ $(id -u) -ne 0 ]]; then
      if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
      else
        echo "deps.sh: need root to install: ${m//$'\n'/ }" >&2
        exit 1
      fi
    fi
    export DEBIAN_FRONTEND=noninteractive
    echo "deps.sh: installing: ${m//$'\n'/ }"
    timeout 900 "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q ||
      { echo "deps.sh: apt-get update failed" >&2; exit 1; }
    # shellcheck disable=SC2086
    timeout 1800 "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -q --no-install-recommends $m ||  # word splitting wanted
      { echo "deps.sh: apt-get install failed" >&2; exit 1; }
    m=$(missing)
    [[ -z $m ]] || { echo "deps.sh: still missing after install: ${m//$'\n'/ }" >&2; exit 1; }
    echo "deps.sh: done"
    ;;
  list)
    printf '%s\n' "${PACKAGES[@]}"
    ;;
  *)
    echo "usage: $0 check|install|list" >&2
    exit 2
    ;;
esac
