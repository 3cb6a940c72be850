#!/usr/bin/env bash
# QEMU's own migration test suite against the patched QEMU: upstream's
# tests/qtest/migration-test, built from the same tree as the binary
# (qemu-plugin/build.sh), its default set (no --full, no -m slow), run against
# our qemu-system-x86_64. The series changes migration.c, ram.c and options.c:
# precopy, multifd and postcopy over tcp:, unix:, file: and TLS must still pass.
#
#   qemu-plugin/qtest.sh            the default set (make qemu-test)
#   qemu-plugin/qtest.sh PATH...    only the tests under these paths (g_test's
#                                   -r; -p goes one level only), e.g. /x86_64/migration/multifd: the
#                                   part that make check runs
#   qemu-plugin/qtest.sh --build-only   build (or reuse) the test and print
#                                   the path of the cached migration-test
#                                   (bin/KEY/migration-test) on its last
#                                   line; nothing runs. The soft-RoCE bench
#                                   takes it into its VM (RDMAE_QTEST), where
#                                   the rdmae: tests have an RDMA device.
#
# 1. Under build.sh's lock ($CACHE/lock): build.sh (RDMAE_QEMU_LOCK_HELD=1)
#    gives the binary, bin/KEY/qemu-system-x86_64; ninja builds
#    tests/qtest/migration-test in the same build directory, which is copied
#    to bin/KEY/migration-test (with scripts/analyze-migration.py), so it is
#    cached under the binary's key and built once per key. Still under the
#    lock, the run takes its own copies (hard links) of the binary and the
#    test: build.sh keeps only the four newest bin/KEY, and a build of another
#    key (another checkout) may remove this one while the test runs.
# 2. The lock released, and the machine-wide bench lock taken (a TCG guest
#    pair, like the soft-RoCE bench: the two never run at once), the test runs
#    in that temporary directory (TMPDIR and cwd, removed at the end) with
#    what meson's `make check-qtest` would give it:
#      QTEST_QEMU_BINARY  a wrapper that runs our binary with the firmware
#                         paths (-L): the binary lives outside an install tree
#                         and a build tree, so it finds no data directory of
#                         its own; Debian's +ds tarball has no ROMs either.
#                         q35 needs SeaBIOS (bios-256k.bin, vgabios-stdvga.bin:
#                         seabios), the e1000e's option ROM (efi-e1000e.rom:
#                         ipxe-qemu) and linuxboot_dma.bin/kvmvapic.bin
#                         (qemu-system-data), all from qemu-plugin/deps.sh.
#      PYTHON             for /migration/analyze-script (upstream skips it
#                         only when meson did not set PYTHON)
#    QTEST_QEMU_IMG is not set: the build has no tools (--disable-tools), as
#    meson would not set it either, and migration-test does not use it.
# 3. The TAP output is counted: ok, skip (only what upstream skips by itself:
#    no KVM, no /dev/shm, ...), fail. Exit status 0 iff nothing failed, the
#    test binary exited 0 and something ran.
#
# No timing assertion of ours: RDMAE_QTEST_TIMEOUT (default 3600 s) only ends
# a hung run. RDMAE_QTEST_KEEP=1 keeps the run directory.
# Environment: RDMAE_CACHE, RDMAE_QEMU_JOBS (ninja -j, default 2), RDMAE_LOCK
# (the bench lock, default /tmp/rdmae-bench.lock), TMPDIR.
set -euo pipefail

paths=()
build_only=0
if [[ ${1:-} == --build-only ]]; then
  build_only=1
  shift
  [[ $# -eq 0 ]] || { echo "qemu-plugin/qtest.sh: --build-only takes no test paths" >&2; exit 2; }
fi
for p in "$@"; do
  [[ $p == /* ]] || { printf 'qemu-plugin/qtest.sh: %s is not a test path (/x86_64/migration/...)\n' "$p" >&2; exit 2; }
  paths+=(-r "$p")
done
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${RDMAE_CACHE:-$HOME/.cache/rdmae}/qemu
JOBS=${RDMAE_QEMU_JOBS:-2}
TIMEOUT=${RDMAE_QTEST_TIMEOUT:-3600}
PYTHON=/usr/bin/python3                 # what build.sh configures QEMU with
FIRMWARE=(/usr/share/qemu /usr/share/seabios /usr/lib/ipxe/qemu)
FIRMWARE_FILES=(bios-256k.bin vgabios-stdvga.bin efi-e1000e.rom linuxboot_dma.bin kvmvapic.bin)

log() { printf 'qemu-plugin/qtest.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for t in flock ninja timeout "$PYTHON"; do
  command -v "$t" >/dev/null || die "$t not found (make deps)"
done

# ---- 1. the binary and the test, under build.sh's lock ----
mkdir -p "$CACHE"
exec 9>"$CACHE/lock"
if ! flock -n 9; then
  log "waiting for a build.sh run (lock $CACHE/lock)"
  flock 9
fi
bin=$(RDMAE_QEMU_LOCK_HELD=1 "$here/build.sh" | tail -n 1)
[[ -x $bin ]] || die "build.sh did not give a binary (last line: '$bin')"
key_dir=$(dirname "$bin")
build=$CACHE/build
src=$CACHE/src
build_s=
if [[ -x $key_dir/migration-test && -f $key_dir/analyze-migration.py ]]; then
  log "migration-test up to date ($key_dir/migration-test)"
  from=$key_dir
else
  # build.sh answers from bin/KEY without touching the build tree, where
  # another patch series may have been built since: then the test is built
  # there all the same (its sources are upstream's; only the generated QAPI
  # code differs) for this run, but not cached under this key.
  from=$key_dir
  if ! cmp -s "$bin" "$build/qemu-system-x86_64"; then
    log "warning: $build holds another build than $bin; its migration-test is used for this run only"
    from=
  fi
  log "ninja -j$JOBS tests/qtest/migration-test"
  t0=$(date +%s)
  ninja -C "$build" -j"$JOBS" tests/qtest/migration-test >&2 || die "building migration-test failed"
  build_s=$(($(date +%s) - t0))
  log "migration-test built in $build_s s"
  if [[ -n $from ]]; then
    cp "$src/scripts/analyze-migration.py" "$from/analyze-migration.py.tmp"
    mv "$from/analyze-migration.py.tmp" "$from/analyze-migration.py"
    cp "$build/tests/qtest/migration-test" "$from/migration-test.tmp"
    mv "$from/migration-test.tmp" "$from/migration-test"
    log "cached: $from/migration-test"
  fi
fi

if [[ $build_only == 1 ]]; then
  # Only a cached test has a path that outlives this call.
  [[ -n $from ]] || die "$build holds another build than $bin: run build.sh first, then --build-only"
  echo "$from/migration-test"
  exit 0
fi

# The run's own copies, taken under the lock: build.sh keeps only the four
# newest bin/KEY directories, and a build of another key (another checkout)
# may remove this one while the test runs. A hard link where it can be.
run=$(mktemp -d "${TMPDIR:-/tmp}/rdmae-qtest.XXXXXX")
cleanup() {
  if [[ -n ${RDMAE_QTEST_KEEP:-} ]]; then log "kept $run"; else rm -rf "$run"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "$run/bin" "$run/scripts" "$run/tmp"
stage() { ln -f "$1" "$2" 2>/dev/null || cp "$1" "$2"; }
stage "$bin" "$run/bin/qemu-system-x86_64"
if [[ -n $from ]]; then
  stage "$from/migration-test" "$run/bin/migration-test"
  cp "$from/analyze-migration.py" "$run/scripts/analyze-migration.py"
else
  cp "$build/tests/qtest/migration-test" "$run/bin/migration-test"
  cp "$src/scripts/analyze-migration.py" "$run/scripts/analyze-migration.py"
fi
exec 9>&-
test_bin=$run/bin/migration-test

for f in "${FIRMWARE_FILES[@]}"; do
  found=0
  for d in "${FIRMWARE[@]}"; do [[ -e $d/$f ]] && found=1; done
  [[ $found = 1 ]] || die "firmware $f is in none of ${FIRMWARE[*]} (qemu-plugin/deps.sh install)"
done

# ---- 2. the run ----
glock=${RDMAE_LOCK:-/tmp/rdmae-bench.lock}
[[ -e $glock ]] || (umask 0; : >"$glock") 2>/dev/null || true
exec 8<"$glock" || die "cannot open the bench lock $glock"
if ! flock -n 8; then
  log "a bench run holds $glock; waiting (up to 2 h)"
  flock -w 7200 8 || die "could not take $glock within 2 h"
fi

# libqtest checks that the name ends in -system-<arch>. The test runs
# "$PYTHON scripts/analyze-migration.py" from its cwd.
wrapper=$run/qemu-system-x86_64
{
  echo '#!/bin/bash'
  printf 'exec %q' "$run/bin/qemu-system-x86_64"
  printf ' -L %q' "${FIRMWARE[@]}"
  echo ' "$@"'
} >"$wrapper"
chmod +x "$wrapper"

log "running migration-test --tap -k ${paths[*]:-(the default set)} against $bin"
t0=$(date +%s)
set +e
(
  cd "$run" &&
  TMPDIR=$run/tmp QTEST_QEMU_BINARY=$wrapper PYTHON=$PYTHON \
    timeout -k 30 "$TIMEOUT" "$test_bin" --tap -k "${paths[@]}"
) 2>&1 | {
  # Each result line with the seconds since the previous one (for the
  # summary; nothing is judged on them).
  last=$EPOCHSECONDS
  while IFS= read -r line; do
    printf '%s\n' "$line"
    printf '%s\n' "$line" >>"$run/tap.log"
    if [[ $line =~ ^(not\ )?ok\ [0-9]+\ ([^ ]+)(.*)$ ]]; then
      name=${BASH_REMATCH[2]} st=ok why=
      if [[ -n ${BASH_REMATCH[1]} ]]; then
        st=FAIL
      elif [[ ${BASH_REMATCH[3]} =~ \#\ *[Ss][Kk][Ii][Pp]\ *(.*) ]]; then
        st=skip why=${BASH_REMATCH[1]:+ (${BASH_REMATCH[1]})}
      fi
      printf '  %-4s %4d s  %s%s\n' "$st" $((EPOCHSECONDS - last)) "$name" "$why" >>"$run/results"
      last=$EPOCHSECONDS
    fi
  done
}
rc=${PIPESTATUS[0]}
set -e
run_s=$(($(date +%s) - t0))

# ---- 3. the summary ----
ok=$(grep -cE '^ok ' "$run/tap.log" || true)
skip=$(grep -cE '^ok .*# *SKIP' "$run/tap.log" || true)
fail=$(grep -cE '^not ok ' "$run/tap.log" || true)
ok=$((ok - skip))
echo
echo "=== QEMU migration-test (${paths[*]:-default set}) against $bin"
[[ -f $run/results ]] && cat "$run/results"
echo "=== ok $ok, skip $skip, fail $fail; exit status $rc; run $((run_s / 60)) min $((run_s % 60)) s${build_s:+, migration-test build $build_s s}"
if [[ $rc = 124 || $rc = 137 ]]; then
  echo "=== FAILED: still running after $TIMEOUT s (RDMAE_QTEST_TIMEOUT), killed"
  exit 1
fi
if [[ $rc != 0 || $fail != 0 || $ok = 0 ]]; then
  echo "=== FAILED"
  exit 1
fi
echo "=== passed"
