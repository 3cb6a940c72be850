#!/bin/sh
# topology: two
# timeout: 1200
# needs: qemu
# migrate_cancel mid-way through an rdmae: migration (one that cannot converge:
# 64 MiB hot set, 1 ms downtime limit). The source ends in status cancelled
# with its guest running (heartbeat advancing, verify passes ok); the
# destination QEMU exits with an error.
# Needs the patched QEMU (RDMAE_QEMU); fails without it.
set -eu
. /usr/libexec/rdmae/qmig.sh
QM_PREFIX="q_rdmae_cancel $ROLE"
qm_need_rdmae
PORT=4452
if [ "$ROLE" = dst ]; then
  qm_start dst -S -incoming "rdmae:$SELF:$PORT"
  qm_sync ready 900
  qm_dst_exit_error 600
  qm_sync end 900
else
  qm_midway rdmae "$PORT"
  qm_qmp src migrate_cancel >/dev/null || qm_die "src: migrate_cancel refused"
  qm_say "src: migrate_cancel sent"
  qm_migrate_wait src 600
  st=$(jget status <src.mig)
  [ "$st" = cancelled ] || { cat src.mig; qm_die "src: status '$st' after migrate_cancel, want cancelled"; }
  qm_say "src: status cancelled"
  qm_source_survives
  qm_stop src
  qm_sync end 900
fi
qm_say "pass"
