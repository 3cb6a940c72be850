# shellcheck shell=bash
# Sourced by build.sh and checkpatch.sh: which QEMU source the series is for,
# and how it arrives (Debian's orig tarball, SHA256 checked). Defines CACHE,
# VERSION, TARBALL, SHA256 and qemu_tarball, which prints the tarball's path.

CACHE=${RDMAE_CACHE:-$HOME/.cache/rdmae}/qemu
VERSION=10.0.2
TARBALL=qemu_${VERSION}+ds.orig.tar.xz
SHA256=0901da33844a331bf8b3602b9c1fbd178e60b737c8e3ade678255bd090c9b9f1

qemu_tarball() {
  local tarball=$CACHE/dl/$TARBALL
  mkdir -p "$CACHE/dl"
  # A lock of its own, not build.sh's: lint's checkpatch must not wait for a
  # QEMU build that holds the build lock for minutes.
  (
    exec 8>"$CACHE/dl/lock"
    flock 8
    have_sha() { [[ -f $tarball ]] && [[ $(sha256sum <"$tarball" | cut -c1-64) == "$SHA256" ]]; }
    have_sha && exit 0
    rm -f "$tarball"
    printf 'qemu-plugin: fetching %s (apt-get source qemu/bookworm-backports)\n' "$TARBALL" >&2
    # The .dsc and .debian.tar.xz answer 404 on this archive, so apt exits
    # non-zero even when the orig tarball arrived: judge by the tarball.
    (cd "$CACHE/dl" && apt-get source --download-only -q qemu/bookworm-backports >&2) ||
      printf 'qemu-plugin: apt-get source exited non-zero (expected: the .dsc is missing); checking the tarball\n' >&2
    [[ -f $tarball ]] || { printf 'qemu-plugin: error: %s did not arrive (is the bookworm-backports deb-src configured? qemu-plugin/deps.sh install)\n' "$TARBALL" >&2; exit 1; }
    have_sha || { printf 'qemu-plugin: error: %s: SHA256 is not %s\n' "$TARBALL" "$SHA256" >&2; exit 1; }
  ) || return 1
  printf '%s\n' "$tarball"
}
