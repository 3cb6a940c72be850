#!/bin/sh
# topology: two
# timeout: 1500
# needs: qemu
# The fault matrix end to end, with QEMU on both sides (the engine's own is
# f_matrix and f_matrix_two; q_rdmae_kill and q_rdmae_linkcut cover a killed
# destination and a cut cable). For each fault the source QEMU ends the
# migration in status failed with an error that names the cause, its guest
# runs on (heartbeat advancing, a later verify pass ok), and the destination
# either keeps waiting for the real source (a bad peer must not stop it) or
# exits with an error. The source prints a table: fault, outcome, the
# source's error, and the time from the fault to the source's verdict.
#   wrong key          the source's key differs from the destination's
#   RAM layout         the destination's guest has more RAM (pre-flight)
#   dst SIGSTOP        the destination QEMU stops mid-migration (keepalive)
# Timing is reported, not asserted, except a generous bound on the SIGSTOP
# case (keepalive idle + answer timeout, with ample slack).
set -eu
. /usr/libexec/rdmae/qmig.sh
QM_PREFIX="q_rdmae_faults $ROLE"
qm_need_rdmae
PORT=4470
# QEMU's rdmae: keeps the engine's keepalive (idle 10 s, answer 5 s): the
# operator has no knob for it.
KEEPALIVE_MS=10000
STOP_BOUND_MS=$(((KEEPALIVE_MS + 5000) * 4))

now_ms() { awk '{ printf "%d", $1 * 1000 }' /proc/uptime; }

if [ "$ROLE" = dst ]; then
  # ---- wrong key: the destination keeps listening ----
  qm_start dst -S -incoming "rdmae:$SELF:$PORT"
  qm_sync ready-key 900
  msg=$(qm_recv "$(qm_xport 1)" 900)
  [ "$msg" = "key-done" ] || qm_die "the source says: $msg"
  qm_alive dst || qm_die "dst: QEMU exited after a peer with the wrong key: $(tr '\n' ' ' <dst.log)"
  st=$(qm_qmp dst query-status | jget status)
  qm_say "dst: still waiting for the source after the bad peer (run state $st)"
  grep -i "auth\|key\|proof" dst.log | sed 's/^/  dst log: /' || true
  qm_send "$(qm_xport 2)" "dst-listening"
  qm_stop dst

  # ---- RAM layout: a bigger destination guest ----
  mem=$GUEST_MEM
  GUEST_MEM=$((mem + 16))
  qm_start dst -S -incoming "rdmae:$SELF:$((PORT + 1))"
  GUEST_MEM=$mem
  qm_sync ready-layout 900
  qm_dst_exit_error 600
  grep -q "pc.ram" dst.log || qm_die "dst: its error does not name the block"
  qm_send "$(qm_xport 3)" "dst-exited"

  # ---- SIGSTOP mid-migration ----
  qm_start dst -S -incoming "rdmae:$SELF:$((PORT + 2))"
  qm_sync ready 900
  msg=$(qm_recv "$(qm_xport 4)" 1800)
  [ "$msg" = stop ] || qm_die "the source gave up: $msg"
  kill -STOP "$(qm_pid dst)"
  qm_say "dst: QEMU stopped (SIGSTOP) at $(now_ms) ms"
  qm_send "$(qm_xport 5)" "stopped $(now_ms)"
  msg=$(qm_recv "$(qm_xport 6)" 900)
  kill -CONT "$(qm_pid dst)"
  qm_say "dst: QEMU continued after the source's verdict ($msg)"
  qm_dst_exit_error 600
  qm_sync end 900
else
  rows=faults.rows
  : >"$rows"
  row() { printf '%-22s | %-4s | %-90.90s | %s\n' "$1" "$2" "$3" "$4" >>"$rows"; }

  # ---- wrong key ----
  qm_start src
  qm_guest_ready src
  qm_sync ready-key 900
  head -c 32 /dev/urandom >wrong.key
  chmod 600 wrong.key
  # The wrong key as an operator would give it: another secret object.
  qm_qmp src "{\"execute\":\"object-add\",\"arguments\":{\"qom-type\":\"secret\",\"id\":\"wrong\",\"file\":\"$PWD/wrong.key\",\"format\":\"raw\"}}" >/dev/null ||
    qm_die "src: object-add of the wrong key failed"
  qm_qmp src '{"execute":"migrate-set-parameters","arguments":{"rdmae-secret":"wrong"}}' >/dev/null ||
    qm_die "src: migrate-set-parameters rdmae-secret=wrong failed"
  t0=$(now_ms)
  qm_qmp src "$(qm_migrate_cmd rdmae uri "$PEER" "$PORT")" >migrate.out ||
    qm_say "src: migrate refused at once: $(cat migrate.out)"
  qm_migrate_wait src 600
  t1=$(now_ms)
  st=$(jget status <src.mig)
  err=$(jget error-desc <src.mig || true)
  [ "$st" = failed ] || { cat src.mig; qm_die "src: status '$st' with the wrong key, want failed"; }
  echo "$err" | grep -qi "authenticat" || qm_die "src: the error does not name authentication: $err"
  qm_source_survives
  qm_send "$(qm_xport 1)" "key-done"
  [ "$(qm_recv "$(qm_xport 2)" 900)" = "dst-listening" ] || qm_die "dst: did not keep listening"
  row "wrong key" pass "$err; dst keeps listening" $((t1 - t0))
  qm_stop src

  # ---- RAM layout ----
  qm_start src
  qm_guest_ready src
  qm_sync ready-layout 900
  t0=$(now_ms)
  qm_qmp src "$(qm_migrate_cmd rdmae uri "$PEER" $((PORT + 1)))" >/dev/null || qm_die "src: migrate refused"
  qm_migrate_wait src 600
  t1=$(now_ms)
  st=$(jget status <src.mig)
  err=$(jget error-desc <src.mig || true)
  [ "$st" = failed ] || { cat src.mig; qm_die "src: status '$st' against a bigger destination, want failed"; }
  echo "$err" | grep -q "pc.ram" || qm_die "src: the error does not name the block: $err"
  qm_source_survives
  [ "$(qm_recv "$(qm_xport 3)" 900)" = "dst-exited" ] || qm_die "dst: did not exit with an error"
  row "RAM layout mismatch" pass "$err; dst exited with an error" $((t1 - t0))
  qm_stop src

  # ---- SIGSTOP mid-migration ----
  QM_ON_DIE='qm_send "$(qm_xport 4)" "failed: see the source VM"'
  # qm_midway meets the destination at "ready".
  qm_midway rdmae $((PORT + 2))
  QM_ON_DIE=
  qm_send "$(qm_xport 4)" stop
  msg=$(qm_recv "$(qm_xport 5)" 300)
  t0=$(now_ms)
  qm_migrate_wait src 600
  t1=$(now_ms)
  st=$(jget status <src.mig)
  err=$(jget error-desc <src.mig || true)
  qm_send "$(qm_xport 6)" "source $st"
  [ "$st" = failed ] || { cat src.mig; qm_die "src: status '$st' with the destination stopped, want failed"; }
  echo "$err" | grep -qi "keepalive\|credit\|timed out" ||
    qm_die "src: the error does not name the silence: $err"
  [ $((t1 - t0)) -le "$STOP_BOUND_MS" ] ||
    qm_die "src: took $((t1 - t0)) ms to notice, bound $STOP_BOUND_MS ms (keepalive $KEEPALIVE_MS + 5000, x4)"
  qm_source_survives
  row "dst SIGSTOP mid-round" pass "$err; dst continued, then exited with an error" $((t1 - t0))
  qm_stop src
  qm_sync end 900

  qm_say "fault table (time: from the fault, or from migrate for the first two, to status failed):"
  printf '%-22s | %-4s | %-90s | %s\n' fault pass "source's error-desc (shortened)" ms
  cat "$rows"
fi
qm_say "pass"
