#!/bin/sh
# topology: two
# timeout: 1200
# needs: qemu
# The test guest migrates over rdmae: given as a plain URI: HMP
# "migrate -d rdmae:HOST:PORT" on the source, -incoming rdmae:HOST:PORT on the
# destination. Same checks as q_rdmae_migrate (figures, RAM equal, verdict).
# Needs the patched QEMU (RDMAE_QEMU); fails without it.
set -eu
. /usr/libexec/rdmae/qmig.sh
QM_PREFIX="q_rdmae_hmp $ROLE"
qm_need_rdmae
qm_e2e rdmae hmp 4451
qm_say "pass"
