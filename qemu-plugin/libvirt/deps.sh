#!/usr/bin/env bash
# Debian packages the libvirt 11.3.0 build needs (qemu-plugin/libvirt/build.sh):
# what its meson requires for the QEMU and remote drivers, libvirtd, the
# secret driver and virsh, with everything else disabled (build.sh).
#
#   deps.sh check     exit 0 iff every package is installed (fast, offline)
#   deps.sh install   qemu-plugin/deps.sh install first (bookworm-backports,
#                     meson 1.7, ninja, the libvirt source's deb-src), then
#                     what is missing here (idempotent; root or sudo -n)
#   deps.sh list      print the package list
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PACKAGES=(
  # meson's required programs (perl, python3, xmllint, xsltproc)
  perl python3 libxml2-utils xsltproc
  # required libraries: glib, gnutls, libxml2; json-c for the QEMU driver,
  # libtirpc for the remote driver and libvirtd's RPC, readline for virsh
  libglib2.0-dev libgnutls28-dev libxml2-dev libjson-c-dev libtirpc-dev
  libreadline-dev
  # libnl: src/util/virnetdevbridge.c does not build without it (RTM_SETLINK)
  libnl-3-dev libnl-route-3-dev
  pkg-config xz-utils patch
)

missing() {
  local have p
  have=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "$@" 2>/dev/null |
    awk '$2 == "installed" { sub(/:.*/, "", $1); print $1 }' || true)
  for p in "$@"; do
    grep -qxF -- "$p" <<<"$have" || printf '%s\n' "$p"
  done
}

case "${1:-}" in
  check)
    "$here/../deps.sh" check || exit 1
    m=$(missing "${PACKAGES[@]}")
    if [[ -n $m ]]; then
      echo "qemu-plugin/libvirt/deps.sh: missing: ${m//$'\n'/ }" >&2
      exit 1
    fi
    ;;
  install)
    "$here/../deps.sh" check 2>/dev/null || "$here/../deps.sh" install
    SUDO=()
    if [[ $(id -u) -ne 0 ]]; then
      if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
      else
        echo "qemu-plugin/libvirt/deps.sh: need root" >&2
        exit 1
      fi
    fi
    m=$(missing "${PACKAGES[@]}")
    if [[ -z $m ]]; then
      echo "qemu-plugin/libvirt/deps.sh: all packages already installed"
      exit 0
    fi
    echo "qemu-plugin/libvirt/deps.sh: installing: ${m//$'\n'/ }"
    # shellcheck disable=SC2086
    timeout 1800 "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -q --no-install-recommends $m ||
      { echo "qemu-plugin/libvirt/deps.sh: apt-get install failed" >&2; exit 1; }
    "$0" check
    echo "qemu-plugin/libvirt/deps.sh: done"
    ;;
  list)
    printf '%s\n' "${PACKAGES[@]}"
    ;;
  *)
    echo "usage: $0 check|install|list" >&2
    exit 2
    ;;
esac
