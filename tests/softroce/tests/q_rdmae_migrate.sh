#!/bin/sh
# topology: two
# timeout: 1200
# needs: qemu
# The test guest (tests/guest) migrates over rdmae: from a QEMU in the src VM
# to a QEMU in the dst VM, both sides given the address in the QMP "channels"
# form (migrate / migrate-incoming). Checks: the migration completes;
# query-migrate figures are present and plausible; source RAM at stop and
# destination RAM before cont hash the same (pmemsave of all guest RAM); the
# guest's own verify passes are ok on the destination after cont. With
# RDMAE_TEST_FAULTS=recheck each side also rehashes every page at the
# commit and must find its memory equal to the sum it kept (qm_recheck): a
# page the source changed without QEMU's dirty log saying so shows there
# (it did, under TCG, before QEMU patch 0008).
# Needs the patched QEMU (RDMAE_QEMU); fails without it.
set -eu
. /usr/libexec/rdmae/qmig.sh
QM_PREFIX="q_rdmae_migrate $ROLE"
qm_need_rdmae
RDMAE_TEST_FAULTS=recheck
export RDMAE_TEST_FAULTS
qm_say "QEMU: $QEMU_VERSION"
qm_e2e rdmae channels 4450
qm_say "pass"
