#!/bin/sh
# topology: one
# timeout: 480
# The engine's fault matrix: a fault injected at a known point of a migration
# between two rdmae_mig processes. Each fault must end the migration with an
# error that names its cause; the source's guest must run on with its memory
# intact (rdmae_mig src checks every page against its version table and that
# the vCPU writes again), except after COMPLETE, where the outcome is unknown
# and the guest stays paused (see e_unknown); and the destination must be
# gone: killed, or ended on its own with an error and nothing left behind
# (rdmae_mig's own checks: threads, ASan/LSan).
#
# Faults are injected on markers, not after guessed delays: --hold-at stops
# a side at a point and says so ("holding at ..."), --marks prints "round N
# starting". "Mid-round" is one second into a round 1 that lasts about six
# (128 MiB guest, 16 MB/s cap). The time column runs from the fault to the
# moment the engine call returned on the side that reports ("end time: T ms
# since boot", against /proc/uptime read just before the fault; for the faults
# there from the start, key, layout and memlock, from the source's start; for
# the destination that stops reading, from its "holding at round"). A bound is
# asserted only where the transport promises one, with at least 3x slack:
# a dead peer is seen through the CM disconnect, failed WRITEs or the
# keepalive (idle + timeout, 2 s + 2 s here); a peer that grants no credit
# through the send timeout (3 s here). The link cut, which needs two hosts,
# is in f_matrix_two.
# shellcheck disable=SC2086,SC3045  # option sets split on purpose; busybox ulimit has -l
set -u
KEY=$(bench_key)
KA="--keepalive 2000 --keepalive-timeout 2000"
KA_MS=4000
MID="--size 128M --rate 1 --bw-cap 16"
MID_MS=8000                  # round 1 at the cap: 96 MiB of data, 32 MiB of zero pages
SMALL="--size 64M --rate 1"
SEND_TIMEOUT_MS=3000
# A killed peer: its CM disconnect, or a WRITE that finds its memory gone
# (the kernel deregisters it first) or gets no acknowledgement.
DEAD_RE="closed by the peer|remote access error|retry counter exceeded"
port=7910
: >rows.txt

up_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
alive() { [ -e "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
# reap PID SECONDS: wait for PID's exit (its status), or SIGKILL it after SECONDS.
reap() {
  i=0
  while alive "$1" && [ $i -lt $(($2 * 10)) ]; do sleep 0.1; i=$((i + 1)); done
  if alive "$1"; then echo "  pid $1 still running after $2 s: killed"; kill -9 "$1"; fi
  wait "$1"
}
err_of() { sed -n 's/^[a-z]*: migration ended: \(.*\) (-[0-9]*)$/\1/p' "$1" | tail -1; }
end_of() { sed -n 's/.*end time: \([0-9]*\) ms since boot.*/\1/p' "$1" | tail -1; }
hold_of() { sed -n 's/.*holding at .* (from \([0-9]*\) ms since boot).*/\1/p' "$1" | tail -1; }

begin() {
  NAME=$1 WHY="" ERR="" MS=- WHO=src
  port=$((port + 1))
  echo "--- $NAME"
}
need() { WHY="${WHY:+$WHY; }$1"; }
start_dst() {
  rdmae_mig dst --key "${DKEY:-$KEY}" --addr "$SELF" --port $port "$@" >d.txt 2>&1 &
  DPID=$!
  wait_for listening d.txt 30 || need "the destination did not listen"
}
start_src() {
  rdmae_mig src --key "$KEY" --addr "$SELF" --port $port "$@" >s.txt 2>&1 &
  SPID=$!
}
# The source ended as it must: an error, its guest running, its memory intact.
src_ok() { # exit status of rdmae_mig src --expect fail
  [ "$1" = 0 ] || need "rdmae_mig src exit $1"
  grep -q "source memory intact" s.txt || need "the source's memory was not found intact"
  grep -q "source guest still running" s.txt || need "the source's guest is not running"
}
# The destination ended by itself, with an error and its own checks passed.
dst_ok() { # SECONDS
  reap $DPID "$1" && drc=0 || drc=$?
  [ $drc = 0 ] || need "rdmae_mig dst exit $drc"
}
cause() { # FILE REGEX: the error names the cause; the first one checked goes in the table
  e=$(err_of "$1")
  if [ -z "$e" ]; then need "no error from ${1%.txt}"; return; fi
  [ -n "$ERR" ] || ERR=$e
  echo "$e" | grep -Eq "$2" || need "${1%.txt}'s error does not say '$2'"
}
timing() { # FILE T0 [BOUND_MS]
  e=$(end_of "$1")
  [ -n "$e" ] || { need "no end time from ${1%.txt}"; return; }
  MS=$((e - $2))
  [ $MS -ge 0 ] || MS=0
  [ -z "${3:-}" ] || [ $MS -le "$3" ] || need "took $MS ms, bound $3 ms"
}
finish() {
  for p in $(pidof rdmae_mig); do need "rdmae_mig pid $p left running"; kill -9 "$p"; done
  short=$(echo "$ERR" | tr '|' '/' | cut -c1-96)
  [ $WHO = src ] || short="dst: $short"
  if [ -z "$WHY" ]; then
    echo "  pass: $short ($MS ms)"
    echo "$NAME|pass|$short|$MS" >>rows.txt
  else
    echo "  FAIL: $WHY"
    sed 's/^/  src| /' s.txt
    sed 's/^/  dst| /' d.txt
    echo "$NAME|FAIL|$(echo "$WHY" | tr '|' '/')|$MS" >>rows.txt
  fi
  rm -f s.txt d.txt
  : >s.txt
  : >d.txt
}

# ---- faults before any data moves ----
begin "wrong key"
(umask 077 && head -c 32 /dev/urandom >key2)
DKEY=$PWD/key2
start_dst $SMALL --expect fail
DKEY=
t0=$(up_ms)
start_src $SMALL --expect fail
reap $SPID 90 && rc=0 || rc=$?
src_ok $rc; cause s.txt "authentication failed"; cause d.txt "authentication failed"
timing s.txt "$t0" 15000       # 3 x the connection setup bound (timeout_ms 5000)
dst_ok 30
finish

begin "RAM layout mismatch"
start_dst $SMALL --dst-size 32M --expect fail
t0=$(up_ms)
start_src $SMALL --expect fail
reap $SPID 90 && rc=0 || rc=$?
src_ok $rc; cause s.txt "block 'pc.ram'"; cause d.txt "block 'pc.ram'"
timing s.txt "$t0"
dst_ok 30
finish

begin "memlock too low (dst)"
# 64 MiB: room for the rings, not for the 64 MiB guest plus the 64 MiB pre-flight asks.
(ulimit -l 65536 && exec rdmae_mig dst --key "$KEY" --addr "$SELF" --port $port $SMALL \
  --drop-ipc-lock --expect fail) >d.txt 2>&1 &
DPID=$!
wait_for listening d.txt 30 || need "the destination did not listen"
t0=$(up_ms)
start_src $SMALL --expect fail
reap $SPID 90 && rc=0 || rc=$?
src_ok $rc; cause s.txt "memlock"; cause d.txt "memlock"
timing s.txt "$t0"
dst_ok 30
finish

begin "dst SIGKILL in pre-flight"
start_dst $KA $SMALL --hold-at preflight --expect fail
start_src $KA $SMALL --expect fail
wait_for "holding at preflight" d.txt 60 || need "no hold at pre-flight"
t0=$(up_ms); kill -9 $DPID
reap $SPID 90 && rc=0 || rc=$?
wait $DPID 2>/dev/null
src_ok $rc; cause s.txt "$DEAD_RE"; timing s.txt "$t0" $((3 * KA_MS))
finish

# ---- faults in the rounds ----
begin "dst SIGKILL mid-round"
start_dst $KA $MID --expect fail
start_src $KA $MID --marks --expect fail
wait_for "round 1 starting" s.txt 60 || need "round 1 never started"
sleep 1
t0=$(up_ms); kill -9 $DPID
reap $SPID 90 && rc=0 || rc=$?
wait $DPID 2>/dev/null
src_ok $rc; cause s.txt "$DEAD_RE"; timing s.txt "$t0" $((3 * KA_MS))
finish

begin "src SIGKILL mid-round"
WHO=dst
start_dst $KA $MID --expect fail
start_src $KA $MID --marks --expect fail
wait_for "round 1 starting" s.txt 60 || need "round 1 never started"
sleep 1
t0=$(up_ms); kill -9 $SPID
wait $SPID 2>/dev/null
dst_ok 60; cause d.txt "$DEAD_RE"; timing d.txt "$t0" $((3 * KA_MS))
finish

begin "dst SIGSTOP mid-round"
# The stopped process's kernel still acknowledges WRITEs, which count as signs
# of life, so the source sees it once it stops writing: out of credits, or at
# the end of the round; then the keepalive, or the send timeout.
start_dst $KA $MID --expect fail
start_src $KA $MID --send-timeout $SEND_TIMEOUT_MS --marks --expect fail
wait_for "round 1 starting" s.txt 60 || need "round 1 never started"
sleep 1
t0=$(up_ms); kill -STOP $DPID
reap $SPID 120 && rc=0 || rc=$?
kill -CONT $DPID
src_ok $rc; cause s.txt "keepalive|no send credit"
timing s.txt "$t0" $((3 * (MID_MS + KA_MS + SEND_TIMEOUT_MS)))
dst_ok 30                     # continued, it finds its connection gone and ends
finish

begin "dst grants no credit mid-round"
# The destination stops reading (its process alive, its keepalive answered by
# its progress thread): with a small receive queue it soon withholds every
# receive, and the source, out of send credits, must fail on its send
# timeout, not on the keepalive (without a credit its probe is a zero-length
# RDMA WRITE, which the destination's NIC acknowledges).
# The send timeout is long here so that keepalive's idle time passes first
# (its traces, RDMAE_DEBUG, must show the probe acknowledged) however slow
# the machine is.
CREDIT_TIMEOUT_MS=8000
start_dst $MID --hold-at round --recv-queue 4096 --credits 16 --expect fail
# shellcheck disable=SC2086
RDMAE_DEBUG=1 rdmae_mig src --key "$KEY" --addr "$SELF" --port $port $KA $MID \
  --send-timeout $CREDIT_TIMEOUT_MS --expect fail >s.txt 2>&1 &
SPID=$!
wait_for "holding at round" d.txt 60 || need "no hold in the rounds"
reap $SPID 90 && rc=0 || rc=$?
t0=$(hold_of d.txt)
src_ok $rc; cause s.txt "no send credit"
if err_of s.txt | grep -q keepalive; then need "the source failed on the keepalive"; fi
grep -q "zero-length WRITE acknowledged" s.txt || need "no credit-free keepalive probe was acknowledged"
[ -z "$t0" ] || timing s.txt "$t0" $((3 * (CREDIT_TIMEOUT_MS + 2000)))
dst_ok 60
finish

# ---- faults after the stop: the source's guest is paused ----
begin "dst SIGKILL before device state"
start_dst $KA $SMALL --expect fail
start_src $KA $SMALL --hold-at state --expect fail
wait_for "holding at state" s.txt 120 || need "no hold before the device state"
t0=$(up_ms); kill -9 $DPID
reap $SPID 90 && rc=0 || rc=$?
wait $DPID 2>/dev/null
src_ok $rc; cause s.txt "$DEAD_RE"; timing s.txt "$t0" $((3 * KA_MS))
finish

begin "dst SIGKILL during device state"
start_dst $KA $SMALL --expect fail
start_src $KA $SMALL --hold-at state-mid --expect fail
wait_for "holding at state-mid" s.txt 120 || need "no hold in the device state"
t0=$(up_ms); kill -9 $DPID
reap $SPID 90 && rc=0 || rc=$?
wait $DPID 2>/dev/null
src_ok $rc; cause s.txt "$DEAD_RE"; timing s.txt "$t0" $((3 * KA_MS))
finish

begin "dst SIGKILL in commit (after COMPLETE)"
# The destination holds once it has the whole state, so COMPLETE is on its
# way: it may have committed, the source cannot know, and must not resume.
start_dst $KA $SMALL --hold-at commit --expect unknown
start_src $KA $SMALL --expect unknown
wait_for "holding at commit" d.txt 120 || need "no hold at the commit"
t0=$(up_ms); kill -9 $DPID
reap $SPID 90 && rc=0 || rc=$?
wait $DPID 2>/dev/null
[ $rc = 0 ] || need "rdmae_mig src exit $rc"
grep -q "outcome unknown, as it should be: the guest stays paused" s.txt ||
  need "the source did not keep its guest paused on an unknown outcome"
if grep -q "source guest still running" s.txt; then need "the source resumed its guest"; fi
cause s.txt "outcome unknown"; timing s.txt "$t0" $((3 * KA_MS))
ERR="outcome unknown, guest kept paused: $(echo "$ERR" | sed -n 's/.*outcome unknown (\(.*\)); the.*/\1/p')"
finish

# ---- the device goes away (last: the test puts it back) ----
begin "rxe0 deleted mid-round"
start_dst $KA $MID --expect fail
start_src $KA $MID --marks --expect fail
wait_for "round 1 starting" s.txt 60 || need "round 1 never started"
sleep 1
t0=$(up_ms)
# The deletion completes once both processes have let go of the device.
$RDMA link delete rxe0 &
delpid=$!
reap $SPID 90 && rc=0 || rc=$?
src_ok $rc; cause s.txt "RDMA device .* was removed|$DEAD_RE"; timing s.txt "$t0" $((3 * KA_MS))
dst_ok 60
reap $delpid 60 || need "rdma link delete rxe0 failed or hung"
$RDMA link add rxe0 type rxe netdev "$NETDEV" || need "rxe0 could not be added again"
i=0
until grep -q ACTIVE /sys/class/infiniband/rxe0/ports/1/state 2>/dev/null; do
  i=$((i + 1)); [ $i -le 300 ] || { need "rxe0 not ACTIVE again after 30 s"; break; }
  sleep 0.1
done
finish

echo
echo "f_matrix: every fault must end with an error naming its cause, the source intact"
printf '%-38s | %-7s | %-96s | %s\n' "fault" "outcome" "source's end (its error, shortened)" "ms"
awk -F'|' '{ printf "%-38s | %-7s | %-96s | %s\n", $1, $2, $3, $4 }' rows.txt
nf=$(grep -c '|FAIL|' rows.txt || true)
echo "f_matrix: $(wc -l <rows.txt) faults, $nf failed"
[ "$nf" = 0 ]
