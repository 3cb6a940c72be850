# shellcheck shell=bash
# shellcheck disable=SC2012,SC2034
# Sourced by bench.sh. Fetches Debian's kernel for the bench VMs into the cache.
#
# kernel_fetch sets:
#   KDIR   $CACHE/kernel-<abi>_<pkgversion>  (vmlinuz, lib/modules/KVER, kver, pkg)
#
# kernel_pvh sets LINUX_PVH: the kernel as an ELF with a PVH entry (see there).
#   KVER   e.g. 6.1.0-56-amd64
#   KID    e.g. 6.1.0-56-amd64_6.1.192-2 (the cache key of the kernel)
#
# The package is the one linux-image-amd64 depends on (linux-image-6.1.0-NN-amd64),
# at its candidate version. A cached, complete copy is used without touching the
# network. If apt cannot say which version is current (no lists, apt broken), the
# newest cached kernel is used.

# Module trees we keep in the cache (the rest of the 400 MB tree is sound, GPU,
# wireless, ... drivers the VM never loads).
KERNEL_KEEP_DIRS=(crypto lib net fs arch mm virt block
  drivers/infiniband drivers/virtio drivers/net drivers/block drivers/char
  drivers/vhost drivers/md)
KERNEL_DROP_DIRS=(drivers/net/wireless drivers/net/ethernet drivers/net/usb
  drivers/net/can drivers/net/wwan drivers/net/ieee802154)

_kernel_newest_cached() {
  local d best=
  for d in "$CACHE"/kernel-*/; do
    [[ -f $d/.complete ]] || continue
    best=$(printf '%s\n%s\n' "$best" "${d%/}" | sed '/^$/d' | sort -V | tail -1)
  done
  printf '%s' "$best"
}

_kernel_use() { # dir
  KDIR=$1
  KVER=$(cat "$KDIR/kver")
  KID=${KDIR##*/kernel-}
  [[ -f $KDIR/vmlinuz && -f $KDIR/lib/modules/$KVER/modules.dep ]] ||
    die "cached kernel $KDIR is incomplete; delete it and rerun"
}

_kernel_resolve() { # sets _kpkg _kver (empty when apt cannot tell)
  _kpkg="" _kver=""
  _kpkg=$(timeout 60 apt-cache depends linux-image-amd64 2>/dev/null |
    awk '$1 ~ /Depends:$/ && $2 ~ /^linux-image-[0-9]/ { print $2; exit }') || true
  [[ -n $_kpkg ]] || return 0
  _kver=$(timeout 60 apt-cache policy "$_kpkg" 2>/dev/null |
    awk '$1 == "Candidate:" { print $2; exit }') || true
  [[ $_kver == "(none)" ]] && _kver=
  return 0
}

kernel_fetch() {
  local _kpkg _kver dir tmp out deb kver mroot d
  rm -rf "$CACHE"/.kernel-dl.*   # left by an interrupted run (we hold the lock)
  _kernel_resolve
  if [[ -z $_kpkg || -z $_kver ]] && [[ -z $(_kernel_newest_cached) && $(id -u) -eq 0 ]]; then
    # Fresh machine whose package lists were never fetched.
    note "kernel: apt knows no linux-image-amd64; running apt-get update"
    timeout 600 apt-get update -q >/dev/null 2>&1 || true
    _kernel_resolve
  fi
  if [[ -z $_kpkg || -z $_kver ]]; then
    dir=$(_kernel_newest_cached)
    [[ -n $dir ]] || die "cannot tell which kernel to use: 'apt-cache depends linux-image-amd64' / 'apt-cache policy' gave nothing (run 'apt-get update' as root?) and $CACHE holds no kernel"
    note "apt cannot tell the current kernel package; using the newest cached one: ${dir##*/}"
    _kernel_use "$dir"
    return 0
  fi
  dir=$CACHE/kernel-${_kpkg#linux-image-}_$_kver
  if [[ -f $dir/.complete ]]; then
    vnote "kernel: cached $dir"
    _kernel_use "$dir"
    return 0
  fi

  note "kernel: downloading $_kpkg=$_kver (once; cached in $dir)"
  tmp=$(mktemp -d "$CACHE/.kernel-dl.XXXXXX")
  if ! out=$(cd "$tmp" && timeout 900 apt-get download "$_kpkg=$_kver" 2>&1); then
    # Stale package lists (the archive moved on): refresh once if we may.
    if [[ $(id -u) -eq 0 ]]; then
      note "kernel: apt-get download failed; running apt-get update and retrying"
      timeout 600 apt-get update -q >/dev/null 2>&1 || true
      _kernel_resolve
      [[ -n $_kpkg && -n $_kver ]] || { rm -rf "$tmp"; die "cannot resolve the kernel package after apt-get update"; }
      dir=$CACHE/kernel-${_kpkg#linux-image-}_$_kver
      if [[ -f $dir/.complete ]]; then rm -rf "$tmp"; _kernel_use "$dir"; return 0; fi
      out=$(cd "$tmp" && timeout 900 apt-get download "$_kpkg=$_kver" 2>&1) ||
        { rm -rf "$tmp"; die "cannot download $_kpkg=$_kver: apt-get said: $(tail -3 <<<"$out")"; }
    else
      rm -rf "$tmp"
      die "cannot download $_kpkg=$_kver: apt-get said: $(tail -3 <<<"$out")"
    fi
  fi
  deb=$(ls "$tmp"/*.deb 2>/dev/null | head -1)
  [[ -n $deb ]] || { rm -rf "$tmp"; die "apt-get download $_kpkg=$_kver left no .deb: $(tail -3 <<<"$out")"; }
  timeout 300 dpkg-deb -x "$deb" "$tmp/root" || { rm -rf "$tmp"; die "dpkg-deb -x $deb failed"; }
  rm -f "$deb"
  mroot=$tmp/root/lib/modules
  [[ -d $mroot ]] || mroot=$tmp/root/usr/lib/modules
  kver=$(ls "$mroot" 2>/dev/null | head -1)
  [[ -n $kver && -f $tmp/root/boot/vmlinuz-$kver ]] || { rm -rf "$tmp"; die "$_kpkg holds no boot/vmlinuz-* and lib/modules/*"; }

  mkdir -p "$tmp/out/lib/modules/$kver/kernel"
  mv "$tmp/root/boot/vmlinuz-$kver" "$tmp/out/vmlinuz"
  mv "$tmp/root/boot/config-$kver" "$tmp/out/config" 2>/dev/null || true
  for d in "${KERNEL_DROP_DIRS[@]}"; do rm -rf "$mroot/$kver/kernel/$d"; done
  for d in "${KERNEL_KEEP_DIRS[@]}"; do
    [[ -d $mroot/$kver/kernel/$d ]] || continue
    mkdir -p "$tmp/out/lib/modules/$kver/kernel/$(dirname "$d")"
    mv "$mroot/$kver/kernel/$d" "$tmp/out/lib/modules/$kver/kernel/$d"
  done
  cp "$mroot/$kver"/modules.builtin* "$mroot/$kver"/modules.order "$tmp/out/lib/modules/$kver/" 2>/dev/null || true
  rm -rf "$tmp/root"
  PATH=$PATH:/usr/sbin:/sbin timeout 300 depmod -b "$tmp/out" "$kver" ||
    { rm -rf "$tmp"; die "depmod -b $tmp/out $kver failed"; }
  echo "$kver" >"$tmp/out/kver"
  echo "$_kpkg=$_kver" >"$tmp/out/pkg"
  touch "$tmp/out/.complete"
  rm -rf "$dir"
  mv "$tmp/out" "$dir"
  rm -rf "$tmp"
  # Keep the two newest kernels.
  local old
  for old in $(ls -d "$CACHE"/kernel-*/ 2>/dev/null | sed 's:/$::' | sort -V | head -n -2); do
    [[ $old == "$dir" ]] || { vnote "kernel: pruning $old"; rm -rf "$old"; }
  done
  _kernel_use "$dir"
}

# kernel_pvh: the kernel inside vmlinuz, uncompressed, for the Linux test guest
# (LINUX_PVH, cached as $KDIR/vmlinux-pvh; empty when it cannot be had).
# Why: the guest runs in TCG inside a bench VM that is itself TCG, where the
# bzImage's own XZ decompression took about 100 s of a 300-400 s boot
# (tests/softroce/tests: measured side by side, bzImage 406 s to ready, PVH
# 302 s). QEMU starts an ELF kernel that carries a PVH entry note
# (XEN_ELFNOTE_PHYS32_ENTRY, Debian builds with CONFIG_PVH=y) directly in
# 32-bit protected mode: no real-mode setup, no decompressor. Loading the
# 65 MB ELF costs less than decompressing it in the guest.
kernel_pvh() {
  local out=$KDIR/vmlinux-pvh tmp off
  LINUX_PVH=
  if [[ ! -f $out ]]; then
    tmp=$out.tmp.$$
    # The bzImage's payload is one XZ stream (CONFIG_KERNEL_XZ) after the setup code.
    off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$KDIR/vmlinuz" | head -1 | cut -d: -f1) || true
    if [[ -z $off ]]; then
      note "kernel: no XZ payload in $KDIR/vmlinuz; the Linux guest boots the bzImage"
      return 0
    fi
    # xz stops reading at the end of the stream and tail gets SIGPIPE: the
    # pipeline's status is xz's alone, so pipefail is off in this subshell.
    if ! (set +o pipefail; tail -c +$((off + 1)) "$KDIR/vmlinuz" |
      xz -dc --single-stream >"$tmp" 2>/dev/null) ||
      [[ $(head -c 4 "$tmp" | od -An -tx1 | tr -d ' ') != 7f454c46 ]]; then
      rm -f "$tmp"
      note "kernel: could not unpack $KDIR/vmlinuz; the Linux guest boots the bzImage"
      return 0
    fi
    # Note type 0x12 is XEN_ELFNOTE_PHYS32_ENTRY: without it QEMU cannot start the ELF.
    if ! readelf -n "$tmp" 2>/dev/null | grep -q 'Xen .*(0x00000012)'; then
      rm -f "$tmp"
      note "kernel: $KDIR/vmlinuz has no PVH entry; the Linux guest boots the bzImage"
      return 0
    fi
    mv "$tmp" "$out"
  fi
  LINUX_PVH=$out
}
