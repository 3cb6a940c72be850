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
# Option sets are split on purpose (SC2086); the rows use the settings
# through eval (SC2034).
# shellcheck disable=SC2086,SC2034
set -u
# shellcheck source=lib/fmatrix.sh
. /tests/lib/fmatrix.sh
KEY=$(bench_key)
MID_MS=8000                  # round 1 at the cap: 96 MiB of data, 32 MiB of zero pages
SMALL="--size 64M --rate 1"
SEND_TIMEOUT_MS=3000
CREDIT_TIMEOUT_MS=8000       # see "dst grants no credit mid-round"
# A killed peer: its CM disconnect, or a WRITE that finds its memory gone
# (the kernel deregisters it first) or gets no acknowledgement.
DEAD_RE="closed by the peer|remote access error|retry counter exceeded"
port=7910
(umask 077 && head -c 32 /dev/urandom >key2)
: >rows.txt

# ---- the faults: one row each, in the order they run ----
# Each row is a list of shell words (quoted where they hold blanks; $VARS
# expand when the row runs), a row going on after a trailing backslash:
#  1 name
#  2 dst setup   shell run in the destination's process before rdmae_mig (-: none)
#  3 dst options of rdmae_mig dst (--key, --addr and --port are given)
#  4 src setup   the same for the source
#  5 src options
#  6 wait        "FILE SECONDS LINE": the fault waits until FILE has LINE (-: at once)
#  7 delay       seconds from there to the fault
#  8 fault       kill_dst, kill_src (SIGKILL), stop_dst (SIGSTOP), del_rxe, - (none:
#                the options are the fault)
#  9 t0          the time column starts: start (the source's start), fault, or
#                hold (the destination's "holding at")
# 10 src end     fail: an error, its guest running with its memory intact, within
#                the seconds after the colon; unknown: the outcome unknown, the
#                guest kept paused; killed: the source is the victim
# 11 src error   what the source's error must say (grep -E; -: not checked)
# 12 dst error   what the destination's must say
# 13 bound       ms the reporting side may take, from t0 (-: none); the source
#                reports, or the destination when the source is killed
# 14 dst end     seconds the destination has to end by itself, its checks passed
#                (-: it is killed)
# 15 also        a further check (a function below; -: none)
# The faults before any data moves come first, then those in the rounds, then
# those after the stop (the source's guest paused), then the device going away
# (last: the test puts it back).
FAULTS=$(cat <<'EOF'
"wrong key"                       'KEY=$PWD/key2' "$SMALL --expect fail" - "$SMALL --expect fail" \
  - 0 - start fail:90 "authentication failed" "authentication failed" 15000 30 -
"RAM layout mismatch"             - "$SMALL --dst-size 32M --expect fail" - "$SMALL --expect fail" \
  - 0 - start fail:90 "block 'pc.ram'" "block 'pc.ram'" - 30 -
"memlock too low (dst)"           'ulimit -l 65536' "$SMALL --drop-ipc-lock --expect fail" - "$SMALL --expect fail" \
  - 0 - start fail:90 memlock memlock - 30 -
"dst SIGKILL in pre-flight"       - "$FM_KA $SMALL --hold-at preflight --expect fail" - "$FM_KA $SMALL --expect fail" \
  "d.txt 60 holding at preflight" 0 kill_dst fault fail:90 "$DEAD_RE" - $((3 * FM_KA_MS)) - -
"dst SIGKILL mid-round"           - "$FM_KA $FM_MID --expect fail" - "$FM_KA $FM_MID --marks --expect fail" \
  "s.txt 60 round 1 starting" 1 kill_dst fault fail:90 "$DEAD_RE" - $((3 * FM_KA_MS)) - -
"src SIGKILL mid-round"           - "$FM_KA $FM_MID --expect fail" - "$FM_KA $FM_MID --marks --expect fail" \
  "s.txt 60 round 1 starting" 1 kill_src fault killed - "$DEAD_RE" $((3 * FM_KA_MS)) 60 -
"dst SIGSTOP mid-round"           - "$FM_KA $FM_MID --expect fail" \
  - "$FM_KA $FM_MID --send-timeout $SEND_TIMEOUT_MS --marks --expect fail" \
  "s.txt 60 round 1 starting" 1 stop_dst fault fail:120 "keepalive|no send credit" - \
  $((3 * (MID_MS + FM_KA_MS + SEND_TIMEOUT_MS))) 30 -
"dst grants no credit mid-round"  - "$FM_MID --hold-at round --recv-queue 4096 --credits 16 --expect fail" \
  'export RDMAE_DEBUG=1' "$FM_KA $FM_MID --send-timeout $CREDIT_TIMEOUT_MS --expect fail" \
  "d.txt 60 holding at round" 0 - hold fail:90 "no send credit" - $((3 * (CREDIT_TIMEOUT_MS + 2000))) 60 \
  credit_free_probe
"dst SIGKILL before device state" - "$FM_KA $SMALL --expect fail" - "$FM_KA $SMALL --hold-at state --expect fail" \
  "s.txt 120 holding at state" 0 kill_dst fault fail:90 "$DEAD_RE" - $((3 * FM_KA_MS)) - -
"dst SIGKILL during device state" - "$FM_KA $SMALL --expect fail" - "$FM_KA $SMALL --hold-at state-mid --expect fail" \
  "s.txt 120 holding at state-mid" 0 kill_dst fault fail:90 "$DEAD_RE" - $((3 * FM_KA_MS)) - -
"dst SIGKILL in commit (after COMPLETE)" - "$FM_KA $SMALL --hold-at commit --expect unknown" \
  - "$FM_KA $SMALL --expect unknown" \
  "d.txt 120 holding at commit" 0 kill_dst fault unknown:90 "outcome unknown" - $((3 * FM_KA_MS)) - -
"rxe0 deleted mid-round"          - "$FM_KA $FM_MID --expect fail" - "$FM_KA $FM_MID --marks --expect fail" \
  "s.txt 60 round 1 starting" 1 del_rxe fault fail:90 "RDMA device .* was removed|$DEAD_RE" - \
  $((3 * FM_KA_MS)) 60 -
EOF
)
# Why some rows are as they are:
# - memlock: 64 MiB is room for the rings, not for the 64 MiB guest plus the
#   64 MiB pre-flight asks; --drop-ipc-lock, since root's CAP_IPC_LOCK lifts
#   the limit.
# - SIGSTOP: the stopped process's kernel still acknowledges WRITEs, which
#   count as signs of life, so the source sees it once it stops writing: out
#   of credits, or at the end of the round; then the keepalive, or the send
#   timeout. Continued, the destination finds its connection gone and ends.
# - no credit: the destination stops reading (its process alive, its
#   keepalive answered by its progress thread): with a small receive queue it
#   soon withholds every receive, and the source, out of send credits, must
#   fail on its send timeout, not on the keepalive (without a credit its probe
#   is a zero-length RDMA WRITE, which the destination's NIC acknowledges).
#   The send timeout is long so that keepalive's idle time passes first (its
#   traces, RDMAE_DEBUG, must show the probe acknowledged) however slow the
#   machine is.
# - commit: the destination holds once it has the whole state, so COMPLETE is
#   on its way: it may have committed, the source cannot know, and must not
#   resume.
# - rxe0: the deletion completes once both processes have let go of the device.

# ---- a fault: inject_X; settle_X once the source has ended (before the
# destination is waited for); restore_X at the end of the case ----
inject_kill_dst() { kill -9 $DPID; }
settle_kill_dst() { wait $DPID 2>/dev/null; }
restore_kill_dst() { :; }
inject_kill_src() { kill -9 $SPID; }
settle_kill_src() { :; }
restore_kill_src() { :; }
inject_stop_dst() { kill -STOP $DPID; }
settle_stop_dst() { kill -CONT $DPID; }
restore_stop_dst() { :; }
inject_del_rxe() { $RDMA link delete rxe0 & delpid=$!; }
settle_del_rxe() { :; }
restore_del_rxe() {
  fm_reap $delpid 60 || fm_need "rdma link delete rxe0 failed or hung"
  $RDMA link add rxe0 type rxe netdev "$NETDEV" || fm_need "rxe0 could not be added again"
  i=0
  until grep -q ACTIVE /sys/class/infiniband/rxe0/ports/1/state 2>/dev/null; do
    i=$((i + 1)); [ $i -le 300 ] || { fm_need "rxe0 not ACTIVE again after 30 s"; break; }
    sleep 0.1
  done
}

# ---- checks ----
# The source ended as it must: an error, its guest running, its memory intact.
src_failed() { # exit status of rdmae_mig src --expect fail
  [ "$1" = 0 ] || fm_need "rdmae_mig src exit $1"
  grep -q "source memory intact" s.txt || fm_need "the source's memory was not found intact"
  grep -q "source guest still running" s.txt || fm_need "the source's guest is not running"
}
# After COMPLETE: the outcome unknown, the guest kept paused.
src_unknown() { # exit status of rdmae_mig src --expect unknown
  [ "$1" = 0 ] || fm_need "rdmae_mig src exit $1"
  grep -q "outcome unknown, as it should be: the guest stays paused" s.txt ||
    fm_need "the source did not keep its guest paused on an unknown outcome"
  if grep -q "source guest still running" s.txt; then fm_need "the source resumed its guest"; fi
}
cause() { # FILE REGEX: the error names the cause; the first one checked goes in the table
  e=$(fm_err_of "$1")
  if [ -z "$e" ]; then fm_need "no error from ${1%.txt}"; return; fi
  [ -n "$ERR" ] || ERR=$e
  echo "$e" | grep -Eq "$2" || fm_need "${1%.txt}'s error does not say '$2'"
}
timing() { # FILE T0 [BOUND_MS]
  e=$(fm_end_of "$1")
  [ -n "$e" ] || { fm_need "no end time from ${1%.txt}"; return; }
  MS=$((e - $2))
  [ $MS -ge 0 ] || MS=0
  [ -z "${3:-}" ] || [ $MS -le "$3" ] || fm_need "took $MS ms, bound $3 ms"
}
credit_free_probe() {
  if fm_err_of s.txt | grep -q keepalive; then fm_need "the source failed on the keepalive"; fi
  grep -q "zero-length WRITE acknowledged" s.txt || fm_need "no credit-free keepalive probe was acknowledged"
}

# ---- one fault: the positional parameters are a row ----
run_fault() {
  name=$1 dsetup=$2 dopts=$3 ssetup=$4 sopts=$5 waitfor=$6 delay=$7 fault=$8 t0from=$9
  shift 9
  send=$1 sre=$2 dre=$3 bound=$4 dend=$5 also=$6
  WHY="" ERR="" MS=- WHO=src t0=
  [ "$send" != killed ] || WHO=dst
  port=$((port + 1))
  echo "--- $name"
  [ "$dsetup" != - ] || dsetup=:
  [ "$ssetup" != - ] || ssetup=:
  (eval "$dsetup" && exec rdmae_mig dst --key "$KEY" --addr "$SELF" --port $port $dopts) >d.txt 2>&1 &
  DPID=$!
  wait_for listening d.txt 30 || fm_need "the destination did not listen"
  [ "$t0from" != start ] || t0=$(fm_up_ms)
  (eval "$ssetup" && exec rdmae_mig src --key "$KEY" --addr "$SELF" --port $port $sopts) >s.txt 2>&1 &
  SPID=$!
  if [ "$waitfor" != - ]; then
    set -- $waitfor
    wfile=$1 wsecs=$2
    shift 2
    wait_for "$*" "$wfile" "$wsecs" || fm_need "no '$*' from ${wfile%.txt} within $wsecs s"
  fi
  [ "$delay" = 0 ] || sleep "$delay"
  if [ "$fault" != - ]; then
    [ "$t0from" != fault ] || t0=$(fm_up_ms)
    inject_$fault
  fi
  if [ "$send" = killed ]; then
    wait $SPID 2>/dev/null
  else
    fm_reap $SPID "${send#*:}" && rc=0 || rc=$?
  fi
  [ "$fault" = - ] || settle_$fault
  [ "$dend" = - ] || { fm_reap $DPID "$dend" && drc=0 || drc=$?; [ $drc = 0 ] || fm_need "rdmae_mig dst exit $drc"; }
  case $send in
  fail:*) src_failed $rc ;;
  unknown:*) src_unknown $rc ;;
  esac
  [ "$sre" = - ] || cause s.txt "$sre"
  [ "$dre" = - ] || cause d.txt "$dre"
  [ "$t0from" != hold ] || t0=$(fm_hold_of d.txt)
  [ "$bound" != - ] || bound=
  # A hold the destination did not report leaves nothing to time from.
  [ -z "$t0" ] || timing "$([ $WHO = src ] && echo s.txt || echo d.txt)" "$t0" $bound
  [ "$also" = - ] || $also
  [ "$fault" = - ] || restore_$fault
  case $send in
  unknown:*) ERR="outcome unknown, guest kept paused: $(echo "$ERR" | sed -n 's/.*outcome unknown (\(.*\)); the.*/\1/p')" ;;
  esac
  for p in $(pidof rdmae_mig); do fm_need "rdmae_mig pid $p left running"; kill -9 "$p"; done
  short=$(echo "$ERR" | tr '|' '/' | cut -c1-96)
  [ $WHO = src ] || short="dst: $short"
  if [ -z "$WHY" ]; then
    echo "  pass: $short ($MS ms)"
    echo "$name|pass|$short|$MS" >>rows.txt
  else
    echo "  FAIL: $WHY"
    sed 's/^/  src| /' s.txt
    sed 's/^/  dst| /' d.txt
    echo "$name|FAIL|$(echo "$WHY" | tr '|' '/')|$MS" >>rows.txt
  fi
  : >s.txt
  : >d.txt
}

# shellcheck disable=SC2162  # read without -r: a trailing backslash goes on with the next line
while read row <&3; do
  [ -n "$row" ] || continue
  eval "set -- $row"
  run_fault "$@"
done 3<<EOF
$FAULTS
EOF

echo
echo "f_matrix: every fault must end with an error naming its cause, the source intact"
fm_table_head source
while IFS='|' read -r f o e m; do fm_table_row "$f" "$o" "$e" "$m"; done <rows.txt
nf=$(grep -c '|FAIL|' rows.txt || true)
echo "f_matrix: $(wc -l <rows.txt) faults, $nf failed"
[ "$nf" = 0 ]
