#!/bin/sh
# topology: two
# timeout: 1800
# needs: qemu
# The per-lane SYNC acknowledgement is what stops a destination's zero-fill
# of one round from landing on a later round's RDMA WRITE of the same page.
# RDMA WRITEs are placed by the NIC as they arrive; the destination's multifd
# receive threads only learn of them from the packet that follows, and a
# zero page is zero-filled by the thread, later. Without the acknowledgement
# the source starts round k+1 as soon as its own threads have sent round k,
# so a receive thread still working through round k zero-fills pages that
# round k+1 has already written.
# Setup: one multifd channel (lane 1); a 16 MiB guest whose 1 MiB hot set
# turns pages from data to zero and back (zero=1); the destination hands each
# message of lane 1 to its thread 100 ms late (RDMAE_TEST_FAULTS=
# recv_hold=1:100, rdma/faults.h). downtime-limit starts at 1 ms, so the
# source goes round after round over the hot set (two batches and a SYNC
# each), and is raised to 60 s after 10 dirty syncs, so that it completes.
#   run 1, as shipped: each round waits for its acknowledgement; the
#     migration completes, destination RAM equals the source's at the stop,
#     the guest's own verification passes after cont;
#   run 2, RDMAE_TEST_FAULTS=no_sync_ack at the source: it does not wait for
#     the acknowledgements (it reads them all just before COMPLETE, so that
#     COMPLETE still follows every WRITE) and runs up to a lane's credits
#     (32 messages, about ten rounds) ahead of the destination's thread. The
#     race must be caught: earlier rounds' late zero-fills land on later
#     rounds' WRITEs, the verified commit refuses (a page's sum differs),
#     the destination never runs its guest, the source's guest runs on. If
#     run 2 completes, this test could not catch the race, and it fails.
# Needs the patched QEMU (RDMAE_QEMU); fails without it.
set -eu
. /usr/libexec/rdmae/qmig.sh
QM_PREFIX="q_rdmae_race $ROLE"
qm_need_rdmae
PORT=4480
QM_LANES=2
GUEST_MEM=16
GUEST_APPEND="hot=1024 zero=1"
SYNCS=10

# src_migrate PORT: the schedule above; the last answer is in src.mig.
src_migrate() {
  local raised=0 t=0 j st dsc
  qm_set_params src '"downtime-limit": 1'
  qm_qmp src "$(qm_migrate_cmd rdmae uri "$PEER" "$1")" >migrate.out ||
    qm_die "src: migrate refused: $(cat migrate.out)"
  while :; do
    j=$(qm_qmp src query-migrate) || qm_die "src: query-migrate failed"
    echo "$j" >src.mig
    st=$(echo "$j" | jget status || echo none)
    case $st in completed | failed | cancelled) break ;; esac
    dsc=$(echo "$j" | jget dirty-sync-count || echo 0)
    if [ $raised = 0 ] && [ "$dsc" -ge $SYNCS ]; then
      qm_set_params src '"downtime-limit": 60000'
      raised=1
      qm_say "src: $dsc dirty syncs: downtime-limit 60 s, to complete"
    fi
    t=$((t + 1))
    [ $t -lt 1500 ] || qm_die "src: migration still '$st' after 1500 s"
    sleep 1
  done
}

if [ "$ROLE" = dst ]; then
  RDMAE_TEST_FAULTS=recv_hold=1:100
  export RDMAE_TEST_FAULTS
  # ---- run 1: as shipped ----
  qm_start dst -S -incoming "rdmae:$SELF:$PORT"
  qm_sync ready-1 900
  qm_dst_verify_ram "$(qm_xport 1)" "run 1, $GUEST_MEM MiB"
  qm_qmp dst cont >/dev/null || qm_die "dst: cont failed"
  qm_verify_after_resume dst
  qm_ticking dst
  qm_stop dst
  qm_say "run 1 (acknowledged, lane 1 held 100 ms): pass"
  # ---- run 2: without the acknowledgement ----
  qm_start dst -S -incoming "rdmae:$SELF:$((PORT + 1))"
  qm_sync ready-2 900
  qm_dst_exit_error 1500
  grep -qi "differs from the source" dst.log ||
    qm_die "dst: its error does not name the differing page: $(tr '\n' ' ' <dst.log)"
  qm_say "dst: run 2: $(grep -i -m1 'differs from the source' dst.log)"
  qm_sync end-2 1500
else
  # ---- run 1: as shipped ----
  qm_start src
  qm_guest_ready src
  qm_sync ready-1 900
  QM_ON_DIE='qm_send "$(qm_xport 1)" "failed: see the source VM"'
  src_migrate $PORT
  st=$(jget status <src.mig)
  [ "$st" = completed ] || qm_die "src: run 1 $st: $(jget error-desc <src.mig || true)"
  hs=$(qm_pmem_hash src src.mem)
  QM_ON_DIE=
  qm_send "$(qm_xport 1)" "hash $hs"
  eval "$(qm_figures src)"
  # shellcheck disable=SC2154
  qm_say "src: run 1: completed, total-time ${total_time} ms, downtime ${downtime} ms, dirty-sync-count $dirty_sync_count"
  qm_stop src
  qm_say "run 1 (acknowledged, lane 1 held 100 ms): pass"
  # ---- run 2: without the acknowledgement ----
  RDMAE_TEST_FAULTS=no_sync_ack
  export RDMAE_TEST_FAULTS
  qm_start src
  qm_guest_ready src
  qm_sync ready-2 900
  src_migrate $((PORT + 1))
  st=$(jget status <src.mig)
  err=$(jget error-desc <src.mig || true)
  [ "$st" != completed ] ||
    qm_die "src: run 2 completed without the acknowledgement: the race was not caught, so this test cannot show the acknowledgement is needed"
  [ "$st" = failed ] || qm_die "src: run 2 ended '$st', want failed"
  echo "$err" | grep -qi "differs from the source" ||
    qm_die "src: run 2 failed, but not on the verified commit: $err"
  qm_say "src: run 2 (no acknowledgement): failed as it must: $err"
  qm_source_survives
  qm_stop src
  qm_sync end-2 1500
fi
qm_say "pass"
