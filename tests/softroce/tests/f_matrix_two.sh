#!/bin/sh
# topology: two
# timeout: 300
# The fault of the engine's fault matrix (f_matrix) that needs two hosts: the
# cable between them is cut one second into a round 1 that lasts about six,
# and restored afterwards. The source must end with an error naming the lost
# link (its WRITEs' retries run out, or the keepalive goes unanswered), its
# guest running with its memory intact; the destination must end by itself
# the same way. Each VM prints its row: the time runs from the cut (src:
# when the host confirmed it; dst: when its carrier dropped) to the moment
# the engine call returned, bounded by 3x the keepalive (idle + timeout,
# 2 s + 2 s here) plus the WRITE retries (about 2 s).
# shellcheck disable=SC2086  # option sets split on purpose
set -u
# shellcheck source=lib/fmatrix.sh
. /tests/lib/fmatrix.sh
KEY=$(bench_key)
BOUND_MS=$((3 * (FM_KA_MS + 2000)))
LINK_RE="retry counter exceeded|keepalive: no answer"
PORT=7960

report() { # FILE T0
  err=$(fm_err_of "$1")
  [ -n "$err" ] || fm_need "no error"
  [ -z "$err" ] || echo "$err" | grep -Eq "$LINK_RE" || fm_need "the error does not say '$LINK_RE'"
  e=$(fm_end_of "$1") ms=-
  if [ -n "$e" ] && [ -n "$2" ]; then
    ms=$((e - $2))
    [ $ms -ge 0 ] || ms=0
    [ $ms -le $BOUND_MS ] || fm_need "took $ms ms, bound $BOUND_MS ms"
  fi
  [ -z "$WHY" ] || { echo "FAIL: $WHY"; cat "$1"; }
  fm_table_head "$ROLE"
  fm_table_row "link cut mid-round" "$([ -z "$WHY" ] && echo pass || echo FAIL)" "${WHY:-$err}" "$ms"
}

if [ "$ROLE" = dst ]; then
  rdmae_mig dst --key "$KEY" --addr "$SELF" --port $PORT $FM_KA $FM_MID --expect fail >d.txt 2>&1 &
  dpid=$!
  wait_for listening d.txt 30
  bench_sync ready
  # The host pulls the cable at both ends at once: here, the carrier drops.
  i=0 t0=
  while [ $i -lt 1800 ]; do
    [ "$(cat "/sys/class/net/$NETDEV/carrier" 2>/dev/null)" = 1 ] || { t0=$(fm_up_ms); break; }
    fm_alive $dpid || break
    sleep 0.05; i=$((i + 1))
  done
  [ -n "$t0" ] || fm_need "the link was never cut"
  fm_reap $dpid 90 && rc=0 || rc=$?
  [ $rc = 0 ] || fm_need "rdmae_mig dst exit $rc"
  report d.txt "$t0"
  bench_sync "done" 120
else
  bench_sync ready
  rdmae_mig src --key "$KEY" --addr "$PEER" --port $PORT $FM_KA $FM_MID --marks --expect fail >s.txt 2>&1 &
  spid=$!
  t0=
  if wait_for "round 1 starting" s.txt 120; then
    sleep 1
    if bench_host link off; then t0=$(fm_up_ms); else fm_need "the host did not cut the link"; fi
  else
    fm_need "round 1 never started"
  fi
  fm_reap $spid 90 && rc=0 || rc=$?
  [ $rc = 0 ] || fm_need "rdmae_mig src exit $rc"
  grep -q "source memory intact" s.txt || fm_need "the source's memory was not found intact"
  grep -q "source guest still running" s.txt || fm_need "the source's guest is not running"
  bench_host link on 60 || fm_need "the link did not come back"
  report s.txt "$t0"
  bench_sync "done" 120
fi
[ -z "$WHY" ]
