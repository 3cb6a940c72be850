#!/usr/bin/env bash
# Build QEMU 10.0.2 (Debian's bookworm-backports source) with the rdmae:
# migration channel, linked against this tree's librdmae.
#
#   qemu-plugin/build.sh            build (or reuse) and print the binary's path
#   RDMAE_QEMU=$(qemu-plugin/build.sh | tail -1)
#
# Progress goes to stderr; the LAST line on stdout is the absolute path of
# qemu-system-x86_64. Firmware: -L /usr/share/qemu -L /usr/share/seabios.
#
# Everything is cached outside the work tree, under
# ${RDMAE_CACHE:-$HOME/.cache/rdmae}/qemu/:
#   dl/         the orig tarball (SHA256 checked)
#   rdmae/      `make install` of this tree's librdmae (headers, .a, rdmae.pc)
#   src/        the unpacked, patched source (patches switched in place: only
#               the files they touch change, so ninja rebuilds little), with
#               our new files (qemu-plugin/src/) copied over it
#   build/      the meson/ninja build directory (incremental)
#   bin/KEY/    finished binaries; KEY hashes the contents (never the paths)
#               of the tarball, the patches, our files, these scripts and the
#               installed library and headers, so every clone of the same
#               sources shares it. A run whose key has a binary costs only
#               the key (about a second).
# A lock (flock) serialises concurrent runs; RDMAE_QEMU_LOCK_HELD=1 says the
# caller holds it already.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(dirname "$here")
# shellcheck source=qemu-plugin/tarball.sh
. "$here/tarball.sh"
JOBS=${RDMAE_QEMU_JOBS:-2}
CONFIGURE_ARGS=(
  --python=/usr/bin/python3 --target-list=x86_64-softmmu
  --enable-rdma --enable-rdmae --enable-kvm
  --disable-docs --disable-werror --disable-install-blobs --disable-gtk
  --disable-sdl --disable-vnc --disable-spice --disable-opengl --disable-gio
  --disable-xen --disable-guest-agent --disable-tools
)

log() { printf 'qemu-plugin/build.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

mkdir -p "$CACHE"
# A caller that already holds the lock (qemu-plugin/qtest.sh, which builds
# QEMU's own tests in the same tree) says so, or the two would deadlock.
if [[ -z ${RDMAE_QEMU_LOCK_HELD:-} ]]; then
  exec 9>"$CACHE/lock"
  if ! flock -n 9; then
    log "waiting for another build.sh run (lock $CACHE/lock)"
    flock 9
  fi
fi

# ---- packages (meson >= 1.5 from bookworm-backports, -dev libraries) ----
"$here/deps.sh" check 2>/dev/null || "$here/deps.sh" install >&2

# ---- librdmae, installed as any library would be ----
make -s -C "$top" install PREFIX="$CACHE/rdmae" >&2
export PKG_CONFIG_PATH="$CACHE/rdmae/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"

# ---- the source tarball ----
tarball=$(qemu_tarball) || die "no QEMU $VERSION source"

# ---- the cache key ----
mapfile -t patches < <(find "$here/patches" -maxdepth 1 -name '*.patch' | LC_ALL=C sort)
[[ ${#patches[@]} -gt 0 ]] || die "no patches in $here/patches"
lib_sum=$(cd "$CACHE/rdmae" && find include lib -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-64)
# Our new QEMU files (qemu-plugin/src/, paths as in QEMU's tree): copied over
# the tree, never carried as hunks, so that the patches touch only QEMU's own
# files. A patch that touches one of them is a mistake.
mapfile -t ours < <(cd "$here/src" && find . -type f -printf '%P\n' | LC_ALL=C sort)
while IFS= read -r f; do
  [[ ! -f $here/src/$f ]] || die "a patch touches $f, which is ours (qemu-plugin/src/$f): edit the file instead"
done < <(sed -n 's|^+++ [ab]/\([^[:space:]]*\).*|\1|p' "${patches[@]}" | LC_ALL=C sort -u)
# Contents only, never paths: every clone of the same sources shares a key.
key=$( {
  echo "$SHA256"
  for p in "${patches[@]}"; do echo "${p##*/}"; sha256sum <"$p"; done
  for f in "${ours[@]}"; do echo "$f"; sha256sum <"$here/src/$f"; done
  sha256sum <"$here/build.sh"
  sha256sum <"$here/tarball.sh"
  echo "$lib_sum"
} | sha256sum | cut -c1-16)
bin=$CACHE/bin/$key/qemu-system-x86_64
if [[ -x $bin ]]; then
  # In use: the pruning below goes by age.
  touch "$CACHE/bin/$key"
  log "up to date (key $key)"
  echo "$bin"
  exit 0
fi
log "building QEMU $VERSION with rdmae (key $key)"
t0=$(date +%s)

# ---- source tree: unpack once, switch the patch series in place ----
src=$CACHE/src
applied=$CACHE/src.applied        # a copy of the series applied to src
unpack() {
  log "unpacking $TARBALL"
  rm -rf "$src" "$applied" "$CACHE/build"
  mkdir -p "$src"
  tar -xJf "$tarball" -C "$src" --strip-components=1
  mkdir -p "$applied"
}
[[ -d $src && -d $applied && -f $src/VERSION ]] || unpack

series_differs() {
  local a b
  a=$(cd "$applied" && find . -name '*.patch' | LC_ALL=C sort | xargs -r cat | sha256sum)
  b=$(cat "${patches[@]}" | sha256sum)
  [[ $a != "$b" ]] || [[ $(ls "$applied" | LC_ALL=C sort) != "$(printf '%s\n' "${patches[@]##*/}")" ]]
}

# The files a patch touches ("+++ b/path").
patch_files() { sed -n 's|^+++ [ab]/\([^[:space:]]*\).*|\1|p' "$@" | LC_ALL=C sort -u; }

# Copy our files in where they differ (unchanged ones keep their time stamps),
# and remove those an earlier run copied that src/ no longer has.
place_ours() {
  local f list=$CACHE/src.ours
  if [[ -f $list ]]; then
    while IFS= read -r f; do
      [[ -z $f || -f $here/src/$f ]] || rm -f "$src/$f"
    done <"$list"
  fi
  for f in "${ours[@]}"; do
    cmp -s "$here/src/$f" "$src/$f" || install -D -m 644 "$here/src/$f" "$src/$f"
  done
  printf '%s\n' "${ours[@]}" >"$list"
}

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
      die "${p##*/} does not apply to QEMU $VERSION"
    cp "$p" "$applied/"
  done
  place_ours
  for f in "${!before[@]}"; do
    [[ -f $src/$f ]] || continue
    sum=${before[$f]% *}
    [[ $(sha256sum <"$src/$f" | cut -c1-64) == "$sum" ]] && touch -d "@${before[$f]#* }" "$src/$f"
  done
fi

place_ours

# ---- configure (again only when the arguments change) ----
build=$CACHE/build
conf="${CONFIGURE_ARGS[*]} PKG_CONFIG_PATH=$PKG_CONFIG_PATH"
if [[ ! -f $build/build.ninja || ! -f $build/.rdmae-configure ||
      $(cat "$build/.rdmae-configure") != "$conf" ]]; then
  log "configuring"
  rm -rf "$build"; mkdir -p "$build"
  (cd "$build" && "$src/configure" "${CONFIGURE_ARGS[@]}" >&2) || die "configure failed"
  grep -qE "^#define CONFIG_RDMAE( 1)?$" "$build/config-host.h" || die "configure did not enable rdmae"
  echo "$conf" >"$build/.rdmae-configure"
fi

# ---- build ----
# Nor does meson, which caches what pkg-config said: when rdmae.pc changes (a
# library added to Libs), clear that cache and touch meson.build, so that ninja
# regenerates the build files (objects kept) with the new flags.
pc_sum=$(sha256sum <"$CACHE/rdmae/lib/pkgconfig/rdmae.pc" | cut -c1-64)
if [[ ! -f $build/.rdmae-pc || $(cat "$build/.rdmae-pc") != "$pc_sum" ]]; then
  (cd "$build" && ./pyvenv/bin/meson configure --clearcache >&2) || die "meson configure --clearcache failed"
  touch "$src/meson.build"
fi
# ninja does not see the static librdmae.a behind pkg-config: relink when it changed.
if [[ ! -f $build/.rdmae-lib || $(cat "$build/.rdmae-lib") != "$lib_sum" ]]; then
  rm -f "$build/qemu-system-x86_64"
fi
log "ninja -j$JOBS qemu-system-x86_64"
ninja -C "$build" -j"$JOBS" qemu-system-x86_64 >&2 || die "the build failed"
echo "$lib_sum" >"$build/.rdmae-lib"
echo "$pc_sum" >"$build/.rdmae-pc"

mkdir -p "$CACHE/bin/$key"
cp "$build/qemu-system-x86_64" "$bin.tmp"
mv "$bin.tmp" "$bin"
# Keep the four newest binaries (79 MB each): a bench or qtest.sh of another
# checkout may still be using one of the older keys.
mapfile -t keys < <(ls -1dt "$CACHE"/bin/*/ 2>/dev/null)
for old in "${keys[@]:4}"; do rm -rf "$old"; done
log "built in $(($(date +%s) - t0)) s: $bin"
echo "$bin"
