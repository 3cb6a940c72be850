#!/usr/bin/env bash
# Debian packages the patched QEMU 10.0.2 build needs (qemu-plugin/build.sh),
# and the firmware its guests and QEMU's migration-test (qemu-plugin/qtest.sh)
# load with -L: SeaBIOS, QEMU's option ROMs and iPXE's NIC ROMs.
#
#   deps.sh check     exit 0 iff every package is installed and the
#                     bookworm-backports source is configured (fast, offline)
#   deps.sh install   add the bookworm-backports source (deb + deb-src) if it is
#                     missing, apt-get update, install what is missing
#                     (idempotent; needs root, or sudo without a password)
#   deps.sh list      print the package lists
#
# QEMU 10.0 needs meson >= 1.5; bookworm has 1.0.1, bookworm-backports 1.7.0.
# The QEMU source itself comes from bookworm-backports' deb-src.
set -euo pipefail

SOURCES=/etc/apt/sources.list.d/rdmae-bookworm-backports.sources
BACKPORTS=(meson python3-pycotap)
PACKAGES=(
  ninja-build libglib2.0-dev libpixman-1-dev zlib1g-dev flex bison libslirp-dev
  libfdt-dev libibverbs-dev librdmacm-dev pkg-config xz-utils patch
  qemu-system-data seabios ipxe-qemu
)

have_source() {
  # Any deb822 or one-line source that carries bookworm-backports with deb-src.
  grep -rqsE 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/ &&
    grep -rqsE '^(Types:.*deb-src|deb-src .*bookworm-backports)' /etc/apt/sources.list /etc/apt/sources.list.d/ &&
    [[ -f $SOURCES ]] || return 1
}

missing() {
  local have p
  have=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "$@" 2>/dev/null |
    awk '$2 == "installed" { sub(/:.*/, "", $1); print $1 }' || true)
  for p in "$@"; do
    grep -qxF -- "$p" <<<"$have" || printf '%s\n' "$p"
  done
}

meson_ok() {
  # The backports meson, not bookworm's 1.0.1.
  local v
  v=$(dpkg-query -W -f='${Version}' meson 2>/dev/null) || return 1
  dpkg --compare-versions "$v" ge 1.5
}

case "${1:-}" in
  check)
    m=$(missing "${PACKAGES[@]}" "${BACKPORTS[@]}")
    if [[ -n $m ]] || ! meson_ok || ! have_source; then
      echo "qemu-plugin/deps.sh: missing: ${m//$'\n'/ }$(meson_ok || echo ' meson>=1.5')$(have_source || echo " $SOURCES")" >&2
      exit 1
    fi
    ;;
  install)
    SUDO=()
    if [[ $(id -u) -ne 0 ]]; then
      if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
      else
        echo "qemu-plugin/deps.sh: need root" >&2
        exit 1
      fi
    fi
    updated=0
    if [[ ! -f $SOURCES ]]; then
      # Same mirror and keyring as the system's bookworm entry.
      uri=$(awk '/^URIs:/ { u = $2 } /^Suites:/ && / bookworm( |$)/ { print u; exit }' \
            /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
      key=$(awk '/^Signed-By:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
      uri=${uri:-http://deb.debian.org/debian}
      key=${key:-/usr/share/keyrings/debian-archive-keyring.gpg}
      echo "qemu-plugin/deps.sh: adding $SOURCES ($uri bookworm-backports)"
      printf 'Types: deb deb-src\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' \
        "$uri" "$key" | "${SUDO[@]}" tee "$SOURCES.tmp" >/dev/null
      "${SUDO[@]}" mv "$SOURCES.tmp" "$SOURCES"
      timeout 900 "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q ||
        { echo "qemu-plugin/deps.sh: apt-get update failed" >&2; exit 1; }
      updated=1
    fi
    m=$(missing "${PACKAGES[@]}")
    b=$(missing "${BACKPORTS[@]}")
    meson_ok || b=$(printf '%s\nmeson\n' "$b" | sort -u | sed '/^$/d')
    if [[ -z $m && -z $b ]]; then
      echo "qemu-plugin/deps.sh: all packages already installed"
      exit 0
    fi
    if [[ $updated = 0 ]]; then
      timeout 900 "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q ||
        { echo "qemu-plugin/deps.sh: apt-get update failed" >&2; exit 1; }
    fi
    if [[ -n $m ]]; then
      echo "qemu-plugin/deps.sh: installing: ${m//$'\n'/ }"
      # shellcheck disable=SC2086
      timeout 1800 "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends $m ||
        { echo "qemu-plugin/deps.sh: apt-get install failed" >&2; exit 1; }
    fi
    if [[ -n $b ]]; then
      echo "qemu-plugin/deps.sh: installing from bookworm-backports: ${b//$'\n'/ }"
      # shellcheck disable=SC2086
      timeout 1800 "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends -t bookworm-backports $b ||
        { echo "qemu-plugin/deps.sh: apt-get install -t bookworm-backports failed" >&2; exit 1; }
    fi
    "$0" check
    echo "qemu-plugin/deps.sh: done"
    ;;
  list)
    printf '%s\n' "${PACKAGES[@]}"
    printf '%s (bookworm-backports)\n' "${BACKPORTS[@]}"
    ;;
  *)
    echo "usage: $0 check|install|list" >&2
    exit 2
    ;;
esac
