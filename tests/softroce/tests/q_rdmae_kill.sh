#!/bin/sh
# topology: two
# timeout: 1200
# needs: qemu
# The destination QEMU is killed (SIGKILL) mid-way through an rdmae: migration.
# The source ends in status failed, with an error text, and its guest runs on
# (heartbeat advancing, verify passes ok).
# Needs the patched QEMU (RDMAE_QEMU); fails without it.
set -eu
. /usr/libexec/rdmae/qmig.sh
QM_PREFIX="q_rdmae_kill $ROLE"
qm_need_rdmae
PORT=4453
if [ "$ROLE" = dst ]; then
  qm_start dst -S -incoming "rdmae:$SELF:$PORT"
  qm_sync ready 900
  msg=$(qm_recv "$(qm_xport 1)" 1800)
  [ "$msg" = kill ] || qm_die "the source gave up: $msg"
  st=$(qm_qmp dst query-status | jget status)
  qm_say "dst: run state $st; killing QEMU (pid $(qm_pid dst)) with SIGKILL"
  kill -9 "$(qm_pid dst)"
  qm_sync killed 120
  qm_sync end 900
else
  QM_ON_DIE='qm_send "$(qm_xport 1)" "failed: see the source VM"'
  qm_midway rdmae "$PORT"
  QM_ON_DIE=
  qm_send "$(qm_xport 1)" kill
  qm_sync killed 120
  qm_say "src: the destination QEMU was killed"
  qm_migrate_wait src 900
  st=$(jget status <src.mig)
  err=$(jget error-desc <src.mig || true)
  [ "$st" = failed ] || { cat src.mig; qm_die "src: status '$st' after the destination died, want failed"; }
  [ -n "$err" ] || { cat src.mig; qm_die "src: status failed without an error-desc"; }
  qm_say "src: status failed: $err"
  qm_source_survives
  qm_stop src
  qm_sync end 900
fi
qm_say "pass"
