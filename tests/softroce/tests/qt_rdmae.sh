#!/bin/sh
# topology: one
# timeout: 1200
# needs: qemu
# QEMU's own migration-test (tests/qtest/migration/rdmae-tests.c, patch
# 0007) runs its rdmae: tests here, where rxe0 gives them an RDMA device:
# /x86_64/migration/multifd/rdmae/{plain,channels,bad-key,no-multifd}, source and
# destination QEMU in this VM, through the one rxe0 (RDMAE_QTEST_ADDR is
# its address). On a host without RDMA the data tests skip; here a skip
# is a failure. Passes iff the test exits 0, every TAP result is "ok",
# none is skipped and the data test /plain ran.
# Needs the patched QEMU (RDMAE_QEMU) and the migration-test built from
# the same tree (RDMAE_QTEST=$(qemu-plugin/qtest.sh --build-only | tail -1));
# fails without either.
set -eu
# shellcheck source=tests/guest/qmig.sh
. /usr/libexec/rdmae/qmig.sh
# shellcheck disable=SC2034 # qmig.sh's prefix
QM_PREFIX=qt_rdmae
qm_need_rdmae
if [ -z "${RDMAE_QTEST:-}" ] || [ ! -x "$RDMAE_QTEST" ]; then
  qm_die "no migration-test in this VM: set RDMAE_QTEST=\$(qemu-plugin/qtest.sh --build-only | tail -1) when running the bench"
fi
qm_say "QEMU: $QEMU_VERSION; RDMA address $SELF ($RDMA_DEV)"

# libqtest wants a name ending in -system-x86_64; the firmware directory
# is given as qemu-plugin/qtest.sh gives it on a host (-L): the binary
# finds no data directory of its own.
mkdir -p bin tmp
{
  echo '#!/bin/sh'
  echo "exec $QEMU -L $QEMU_FW \"\$@\""
} >bin/qemu-system-x86_64
chmod +x bin/qemu-system-x86_64
# rdmae registers all of guest RAM (the init script sets it already).
# shellcheck disable=SC3045 # busybox sh has ulimit -l
ulimit -l unlimited

(
  rc=0
  TMPDIR=$PWD/tmp QTEST_QEMU_BINARY=$PWD/bin/qemu-system-x86_64 RDMAE_QTEST_ADDR=$SELF \
    "$RDMAE_QTEST" --tap -k -r /x86_64/migration/multifd/rdmae 2>&1 || rc=$?
  echo "$rc" >rc
) | tee tap.log
rc=$(cat rc)

ok=$(grep -cE '^ok ' tap.log || true)
skip=$(grep -cE '^ok .*# *SKIP' tap.log || true)
fail=$(grep -cE '^not ok ' tap.log || true)
plan=$(sed -n 's/^1\.\.\([0-9][0-9]*\)$/\1/p' tap.log)
qm_say "exit status $rc; ok $((ok - skip)), skip $skip, fail $fail, plan ${plan:-none}"
[ "$rc" = 0 ] || qm_die "migration-test exited with status $rc"
[ "$fail" = 0 ] || qm_die "$fail test(s) failed: $(grep -E '^not ok ' tap.log | tr '\n' ' ')"
[ "$skip" = 0 ] || qm_die "$skip test(s) skipped: $(grep -E '^ok .*# *SKIP' tap.log | tr '\n' ' ')"
[ "${plan:-none}" = "$ok" ] || qm_die "the plan says ${plan:-nothing}, $ok results are ok"
grep -qE '^ok [0-9]+ /x86_64/migration/multifd/rdmae/plain$' tap.log ||
  qm_die "the data test /x86_64/migration/multifd/rdmae/plain did not run"
qm_say "pass"
