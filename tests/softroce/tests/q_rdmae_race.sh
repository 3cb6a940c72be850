#!/bin/sh
# topology: two
# timeout: 1800
# needs: qemu
# The per-lane SYNC acknowledgement is what stops a destination's zero-fill
# of one round from landing on the next round's RDMA WRITE of the same page.
# RDMA WRITEs are placed by the NIC as they arrive; the destination's multifd
# receive threads only learn of them from the packet that follows, and a
# zero page is zero-filled by the thread, later. Without the acknowledgement
# the source starts round k+1 as soon as its own threads have sent round k:
# a receive thread still working through round k then zero-fills pages that
# round k+1 has already written.
# The guest's hot set turns pages from data to zero and back (zero=1), and
# RDMAE_TEST_FAULTS=recv_hold=1:300 on the destination hands each message of
# lane 1 (the one multifd channel) to its thread 300 ms late (rdma/faults.h):
# without the acknowledgement the source runs up to a lane's credits (32
# messages, about ten rounds of the hot set) ahead of the destination's
# thread. A 32 MiB guest keeps the held first round short.
#   run 1, as shipped: the migration completes, destination RAM equals the
#     source's, the guest's own verification passes after cont;
#   run 2, RDMAE_TEST_FAULTS=no_sync_ack at the source: it does not wait for
#     the acknowledgements (it reads them all just before COMPLETE, so that
#     COMPLETE still follows every WRITE). The race must be caught: earlier
#     rounds' late zero-fills land on later rounds' WRITEs, the verified
#     commit refuses (a page's sum differs), the destination never runs its
#     guest, and the source's guest runs on. If run 2 completes, this test
#     could not catch the race, and it fails.
# Needs the patched QEMU (RDMAE_QEMU); fails without it.
set -eu
. /usr/libexec/rdmae/qmig.sh
QM_PREFIX="q_rdmae_race $ROLE"
qm_need_rdmae
PORT=4480
HOLD=recv_hold=1:300
GUEST_MEM=32
# One multifd channel: lane 1 carries every page.
QM_LANES=2
GUEST_APPEND="hot=1024 zero=1"

# ---- run 1: as shipped ----
if [ "$ROLE" = dst ]; then
  RDMAE_TEST_FAULTS=$HOLD
  export RDMAE_TEST_FAULTS
fi
qm_e2e rdmae uri $PORT
qm_say "run 1 (acknowledged, destination lane 1 held 300 ms): pass"

# ---- run 2: without the acknowledgement ----
if [ "$ROLE" = dst ]; then
  qm_start dst -S -incoming "rdmae:$SELF:$((PORT + 1))"
  qm_sync ready-2 900
  qm_dst_exit_error 1200
  grep -qi "differs from the source" dst.log ||
    qm_die "dst: its error does not name the differing page: $(tr '\n' ' ' <dst.log)"
  qm_say "dst: run 2: $(grep -i -m1 'differs from the source' dst.log)"
  qm_sync end-2 1200
else
  RDMAE_TEST_FAULTS=no_sync_ack
  export RDMAE_TEST_FAULTS
  qm_start src
  qm_guest_ready src
  qm_set_params src '"downtime-limit": 2000'
  qm_sync ready-2 900
  qm_qmp src "$(qm_migrate_cmd rdmae uri "$PEER" $((PORT + 1)))" >migrate.out ||
    qm_die "src: migrate refused: $(cat migrate.out)"
  qm_migrate_wait src 1500
  st=$(jget status <src.mig)
  err=$(jget error-desc <src.mig || true)
  [ "$st" != completed ] ||
    qm_die "src: run 2 completed without the acknowledgement: the race was not caught, so this test cannot show the acknowledgement is needed (widen the hold)"
  [ "$st" = failed ] || qm_die "src: run 2 ended '$st', want failed"
  echo "$err" | grep -qi "differs from the source" ||
    qm_die "src: run 2 failed, but not on the verified commit: $err"
  qm_say "src: run 2 (no acknowledgement): failed as it must: $err"
  qm_source_survives
  qm_stop src
  qm_sync end-2 1200
fi
qm_say "pass"
