#!/usr/bin/env bash
# Build libvirt 11.3.0 (Debian's bookworm-backports orig tarball) with the
# rdmae:// migration scheme (patches/), only what running QEMU domains and
# migrating them needs: the QEMU driver, the remote driver, libvirtd (no
# socket activation), the secret driver and virsh.
#
#   qemu-plugin/libvirt/build.sh        build (or reuse) and print the prefix
#   LV=$(qemu-plugin/libvirt/build.sh | tail -1); "$LV/bin/virsh" --version
#
# Progress goes to stderr; the LAST line on stdout is the install prefix
# (bin/virsh, sbin/libvirtd, etc/libvirt/, var/run/libvirt/).
#
# Everything is cached outside the work tree, under
# ${RDMAE_CACHE:-$HOME/.cache/rdmae}/libvirt/:
#   dl/       the orig tarball (SHA256 checked, tarball.sh)
#   src/      the unpacked, patched source (the series switched in place:
#             only the files the patches touch change, so ninja rebuilds little)
#   build/    the meson/ninja build directory (incremental)
#   prefix/   the installation; prefix/.rdmae-key names what it holds. KEY
#             hashes the contents (never the paths) of the tarball, the
#             patches and these scripts, so every clone of the same sources
#             shares it; a run whose KEY is installed costs about a second.
# The prefix is one fixed path: libvirt compiles its paths (modules,
# configuration, sockets) into config.h, and a prefix per KEY would rebuild
# everything for every patch change. So there is one installation at a time:
# a run with another KEY rebuilds what changed and reinstalls over it (stop
# any libvirtd running from it first).
# A lock (flock) serialises concurrent runs. Debug info and __FILE__ carry
# no absolute path (-ffile-prefix-map), so the objects do not depend on where
# the cache is.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=qemu-plugin/libvirt/tarball.sh
. "$here/tarball.sh"
JOBS=${RDMAE_LIBVIRT_JOBS:-2}
src=$LV_CACHE/src
build=$LV_CACHE/build
prefix=$LV_CACHE/prefix
MESON_ARGS=(
  --prefix="$prefix" --libdir=lib --buildtype=debugoptimized
  # libvirt puts its sockets and pid files in /run whatever the prefix
  -Drunstatedir="$prefix/var/run"
  -Dc_args="-ffile-prefix-map=$src=libvirt/src -ffile-prefix-map=$build=libvirt/build"
  -Ddocs=disabled -Dtests=disabled -Dexpensive_tests=disabled -Dnls=disabled
  -Dgit_werror=disabled -Drpath=enabled
  -Ddriver_qemu=enabled -Ddriver_remote=enabled -Ddriver_libvirtd=enabled
  -Ddriver_secrets=enabled -Dqemu_user=root -Dqemu_group=root
  -Dremote_default_mode=legacy -Dreadline=enabled -Djson_c=enabled
  -Ddriver_bhyve=disabled -Ddriver_esx=disabled -Ddriver_hyperv=disabled
  -Ddriver_interface=disabled -Ddriver_libxl=disabled -Ddriver_lxc=disabled
  -Ddriver_ch=disabled -Ddriver_network=disabled -Ddriver_openvz=disabled
  -Ddriver_test=disabled -Ddriver_vbox=disabled -Ddriver_vmware=disabled
  -Ddriver_vz=disabled
  -Dstorage_dir=disabled -Dstorage_disk=disabled -Dstorage_fs=disabled
  -Dstorage_gluster=disabled -Dstorage_iscsi=disabled
  -Dstorage_iscsi_direct=disabled -Dstorage_lvm=disabled
  -Dstorage_mpath=disabled -Dstorage_rbd=disabled -Dstorage_scsi=disabled
  -Dstorage_vstorage=disabled -Dstorage_zfs=disabled
  -Dapparmor=disabled -Dsecdriver_apparmor=disabled -Dapparmor_profiles=disabled
  -Dselinux=disabled -Dsecdriver_selinux=disabled -Dpolkit=disabled
  -Dfirewalld=disabled -Dfirewalld_zone=disabled -Dudev=disabled
  -Dpciaccess=disabled -Dlibnl=enabled -Dnumactl=disabled -Dnumad=disabled
  -Dcapng=disabled -Daudit=disabled -Dblkid=disabled -Dfuse=disabled
  -Dcurl=disabled -Dlibssh=disabled -Dlibssh2=disabled -Dsasl=disabled
  -Dglusterfs=disabled -Dlibiscsi=disabled -Dnetcf=disabled
  -Dopenwsman=disabled -Dsanlock=disabled -Dwireshark_dissector=disabled
  -Dbash_completion=disabled -Dlibpcap=disabled -Dattr=disabled
  -Dhost_validate=disabled -Dinit_script=none -Dnss=disabled
  -Dnbdkit=disabled -Dlogin_shell=disabled -Dpm_utils=disabled
  -Dssh_proxy=disabled -Dsysctl_config=disabled -Duserfaultfd_sysctl=disabled
  -Ddtrace=disabled
)

log() { printf 'qemu-plugin/libvirt/build.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

mkdir -p "$LV_CACHE"
exec 9>"$LV_CACHE/lock"
if ! flock -n 9; then
  log "waiting for another build.sh run (lock $LV_CACHE/lock)"
  flock 9
fi

"$here/deps.sh" check 2>/dev/null || "$here/deps.sh" install >&2

tarball=$(libvirt_tarball) || die "no libvirt $LV_VERSION source"

mapfile -t patches < <(find "$here/patches" -maxdepth 1 -name '*.patch' 2>/dev/null | LC_ALL=C sort)
# Contents only, never paths: every clone of the same sources shares a key.
key=$( {
  echo "$LV_SHA256"
  for p in "${patches[@]}"; do echo "${p##*/}"; sha256sum <"$p"; done
  for f in build.sh tarball.sh deps.sh; do sha256sum <"$here/$f"; done
} | sha256sum | cut -c1-16)
if [[ -x $prefix/sbin/libvirtd && -f $prefix/.rdmae-key &&
      $(cat "$prefix/.rdmae-key") == "$key" ]]; then
  log "up to date (key $key)"
  echo "$prefix"
  exit 0
fi
log "building libvirt $LV_VERSION with rdmae (key $key)"
t0=$(date +%s)

# ---- source tree: unpack once, switch the patch series in place ----
applied=$LV_CACHE/src.applied        # a copy of the series applied to src
unpack() {
  log "unpacking $LV_TARBALL"
  rm -rf "$src" "$applied" "$build"
  mkdir -p "$src" "$applied"
  tar -xJf "$tarball" -C "$src" --strip-components=1
}
[[ -d $src && -d $applied && -f $src/meson.build ]] || unpack

series_differs() {
  local a b
  a=$(cd "$applied" && find . -name '*.patch' | LC_ALL=C sort | xargs -r cat | sha256sum)
  b=$(cat "${patches[@]}" /dev/null | sha256sum)
  [[ $a != "$b" ]] ||
    [[ $(ls "$applied" | LC_ALL=C sort) != "$( ((${#patches[@]})) && printf '%s\n' "${patches[@]##*/}")" ]]
}
patch_files() { sed -n 's|^+++ [ab]/\([^[:space:]]*\).*|\1|p' "$@" | LC_ALL=C sort -u; }

if series_differs; then
  mapfile -t old < <(find "$applied" -name '*.patch' | LC_ALL=C sort)
  mapfile -t touched < <(patch_files "${old[@]}" "${patches[@]}" /dev/null)
  # Keep the time stamps of files whose content ends up the same.
  declare -A before=()
  for f in "${touched[@]}"; do
    [[ -f $src/$f ]] && before[$f]="$(sha256sum <"$src/$f" | cut -c1-64) $(stat -c %Y "$src/$f")"
  done
  ok=1
  for ((i = ${#old[@]} - 1; i >= 0; i--)); do
    log "reverting ${old[i]##*/}"
    patch -d "$src" -p1 -R -s -f <"${old[i]}" >&2 || { ok=0; break; }
  done
  if [[ $ok = 0 ]]; then
    log "the old series did not revert cleanly: unpacking again"
    unpack
    before=()
  fi
  rm -rf "$applied"; mkdir -p "$applied"
  for p in "${patches[@]}"; do
    log "applying ${p##*/}"
    patch -d "$src" -p1 -s -f --no-backup-if-mismatch <"$p" >&2 ||
      die "${p##*/} does not apply to libvirt $LV_VERSION"
    cp "$p" "$applied/"
  done
  for f in "${!before[@]}"; do
    [[ -f $src/$f ]] || continue
    sum=${before[$f]% *}
    [[ $(sha256sum <"$src/$f" | cut -c1-64) == "$sum" ]] && touch -d "@${before[$f]#* }" "$src/$f"
  done
fi

# ---- configure (again only when the arguments change) ----
conf="${MESON_ARGS[*]}"
if [[ ! -f $build/build.ninja || ! -f $build/.rdmae-configure ||
      $(cat "$build/.rdmae-configure") != "$conf" ]]; then
  log "configuring"
  rm -rf "$build"
  meson setup "${MESON_ARGS[@]}" "$build" "$src" >&2 || die "meson setup failed"
  echo "$conf" >"$build/.rdmae-configure"
fi

# ---- build and install ----
log "ninja -j$JOBS"
ninja -C "$build" -j"$JOBS" >&2 || die "the build failed"
rm -f "$prefix/.rdmae-key"
meson install -C "$build" --no-rebuild --quiet >&2 || die "meson install failed"
echo "$key" >"$prefix/.rdmae-key"
log "built in $(($(date +%s) - t0)) s: $prefix"
echo "$prefix"
