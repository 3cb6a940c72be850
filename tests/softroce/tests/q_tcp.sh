#!/bin/sh
# topology: two
# timeout: 1200
# needs: qemu
# The reference: the test guest (tests/guest) migrates over tcp: from a QEMU
# in the src VM to a QEMU in the dst VM (QMP migrate, URI form), with the
# checks the rdmae: tests make: query-migrate figures plausible, source RAM at
# stop = destination RAM before cont, the guest's own verdict ok after cont.
# Runs with whatever QEMU the bench put in the VMs (Debian's without RDMAE_QEMU).
set -eu
. /usr/libexec/rdmae/qmig.sh
QM_PREFIX="q_tcp $ROLE"
qm_say "QEMU: $QEMU_VERSION"
qm_e2e tcp uri 4444
qm_say "pass"
