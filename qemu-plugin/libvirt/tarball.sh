# shellcheck shell=bash
# Sourced by build.sh: which libvirt source the series is for, and how it
# arrives (Debian's orig tarball from bookworm-backports, SHA256 checked; the
# .dsc and the .debian tarball are not used). Defines LV_CACHE, LV_VERSION,
# LV_TARBALL, LV_SHA256 and libvirt_tarball, which prints the tarball's path.

LV_CACHE=${RDMAE_CACHE:-$HOME/.cache/rdmae}/libvirt
LV_VERSION=11.3.0
LV_TARBALL=libvirt_${LV_VERSION}.orig.tar.xz
# As in bookworm-backports' Sources index (libvirt 11.3.0-2~bpo12+1).
LV_SHA256=6bcb0c42c4580436fea262ced56f68a6afe20f7390b1bea2116718cc034a0283

libvirt_tarball() {
  local tarball=$LV_CACHE/dl/$LV_TARBALL
  mkdir -p "$LV_CACHE/dl"
  (
    exec 8>"$LV_CACHE/dl/lock"
    flock 8
    have_sha() { [[ -f $tarball ]] && [[ $(sha256sum <"$tarball" | cut -c1-64) == "$LV_SHA256" ]]; }
    have_sha && exit 0
    rm -f "$tarball"
    printf 'qemu-plugin/libvirt: fetching %s (apt-get source libvirt/bookworm-backports)\n' "$LV_TARBALL" >&2
    # The .dsc, .asc and .debian.tar.xz answer 404 on this archive, so apt
    # exits non-zero even when the orig tarball arrived: judge by the tarball.
    (cd "$LV_CACHE/dl" && apt-get source --download-only -q libvirt/bookworm-backports >&2) ||
      printf 'qemu-plugin/libvirt: apt-get source exited non-zero (expected: the .dsc is missing); checking the tarball\n' >&2
    [[ -f $tarball ]] || { printf 'qemu-plugin/libvirt: error: %s did not arrive (is the bookworm-backports deb-src configured? qemu-plugin/deps.sh install)\n' "$LV_TARBALL" >&2; exit 1; }
    have_sha || { printf 'qemu-plugin/libvirt: error: %s: SHA256 is not %s\n' "$LV_TARBALL" "$LV_SHA256" >&2; exit 1; }
  ) || return 1
  printf '%s\n' "$tarball"
}
