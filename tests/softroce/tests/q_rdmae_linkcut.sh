#!/bin/sh
# topology: two
# timeout: 1200
# needs: qemu
# The cable between the two hosts is cut mid-way through an rdmae: migration.
# The source ends in status failed with an error text and its guest runs on
# (heartbeat advancing, verify passes ok); the destination QEMU exits with an
# error. The cable is restored afterwards.
# Needs the patched QEMU (RDMAE_QEMU); fails without it.
set -eu
. /usr/libexec/rdmae/qmig.sh
QM_PREFIX="q_rdmae_linkcut $ROLE"
qm_need_rdmae
PORT=4456
if [ "$ROLE" = dst ]; then
  qm_start dst -S -incoming "rdmae:$SELF:$PORT"
  qm_sync ready 900
  # The source cuts the cable; this side notices on its own (keepalive).
  qm_dst_exit_error 900
  qm_sync end 900
else
  qm_midway rdmae "$PORT"
  qm_say "src: cutting the cable"
  bench_host link off 60 || qm_die "src: the link did not go down"
  qm_migrate_wait src 900
  st=$(jget status <src.mig)
  err=$(jget error-desc <src.mig || true)
  [ "$st" = failed ] || { cat src.mig; qm_die "src: status '$st' after the cable was cut, want failed"; }
  [ -n "$err" ] || { cat src.mig; qm_die "src: status failed without an error-desc"; }
  qm_say "src: status failed: $err"
  qm_source_survives
  qm_stop src
  bench_host link on 120 || qm_die "src: the link did not come back"
  qm_sync end 900
fi
qm_say "pass"
