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
KEY=$(bench_key)
KA="--keepalive 2000 --keepalive-timeout 2000"
BOUND_MS=$((3 * (4000 + 2000)))
LINK_RE="retry counter exceeded|keepalive: no answer"
MID="--size 128M --rate 1 --bw-cap 16"
PORT=7960
WHY=""

up_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
alive() { [ -e "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
reap() {
  i=0
  while alive "$1" && [ $i -lt $(($2 * 10)) ]; do sleep 0.1; i=$((i + 1)); done
  if alive "$1"; then echo "  pid $1 still running after $2 s: killed"; kill -9 "$1"; fi
  wait "$1"
}
err_of() { sed -n 's/^[a-z]*: migration ended: \(.*\) (-[0-9]*)$/\1/p' "$1" | tail -1; }
end_of() { sed -n 's/.*end time: \([0-9]*\) ms since boot.*/\1/p' "$1" | tail -1; }
need() { WHY="${WHY:+$WHY; }$1"; }
report() { # FILE T0
  err=$(err_of "$1")
  [ -n "$err" ] || need "no error"
  [ -z "$err" ] || echo "$err" | grep -Eq "$LINK_RE" || need "the error does not say '$LINK_RE'"
  e=$(end_of "$1") ms=-
  if [ -n "$e" ] && [ -n "$2" ]; then
    ms=$((e - $2))
    [ $ms -ge 0 ] || ms=0
    [ $ms -le $BOUND_MS ] || need "took $ms ms, bound $BOUND_MS ms"
  fi
  [ -z "$WHY" ] || { echo "FAIL: $WHY"; cat "$1"; }
  printf '%-38s | %-7s | %-96s | %s\n' "fault" "outcome" "$ROLE's end (its error, shortened)" "ms"
  printf '%-38s | %-7s | %-96s | %s\n' "link cut mid-round" "$([ -z "$WHY" ] && echo pass || echo FAIL)" \
    "$(echo "${WHY:-$err}" | cut -c1-96)" "$ms"
}

if [ "$ROLE" = dst ]; then
  rdmae_mig dst --key "$KEY" --addr "$SELF" --port $PORT $KA $MID --expect fail >d.txt 2>&1 &
  dpid=$!
  wait_for listening d.txt 30
  bench_sync ready
  # The host pulls the cable at both ends at once: here, the carrier drops.
  i=0 t0=
  while [ $i -lt 1800 ]; do
    [ "$(cat "/sys/class/net/$NETDEV/carrier" 2>/dev/null)" = 1 ] || { t0=$(up_ms); break; }
    alive $dpid || break
    sleep 0.05; i=$((i + 1))
  done
  [ -n "$t0" ] || need "the link was never cut"
  reap $dpid 90 && rc=0 || rc=$?
  [ $rc = 0 ] || need "rdmae_mig dst exit $rc"
  report d.txt "$t0"
  bench_sync done 120
else
  bench_sync ready
  rdmae_mig src --key "$KEY" --addr "$PEER" --port $PORT $KA $MID --marks --expect fail >s.txt 2>&1 &
  spid=$!
  t0=
  if wait_for "round 1 starting" s.txt 120; then
    sleep 1
    if bench_host link off; then t0=$(up_ms); else need "the host did not cut the link"; fi
  else
    need "round 1 never started"
  fi
  reap $spid 90 && rc=0 || rc=$?
  [ $rc = 0 ] || need "rdmae_mig src exit $rc"
  grep -q "source memory intact" s.txt || need "the source's memory was not found intact"
  grep -q "source guest still running" s.txt || need "the source's guest is not running"
  bench_host link on 60 || need "the link did not come back"
  report s.txt "$t0"
  bench_sync done 120
fi
[ -z "$WHY" ]
