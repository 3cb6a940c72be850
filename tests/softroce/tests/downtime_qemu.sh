#!/bin/sh
# topology: two
# timeout: 3000
# needs: qemu
# Benchmark (not part of make check; run with `make bench-downtime` or `make
# bench`): does the downtime limit hold with QEMU deciding when to stop the
# guest (issue 19 item 7)? The test guest (tests/guest) of 128 MiB with a
# 3 MiB hot set (hot=3072: rewritten as fast as nested TCG runs it, while it
# sweeps over the rest verifying pages) migrates from a QEMU in the src VM to
# a QEMU in the dst VM, DT_RUNS times over rdmae: and, as the same-run
# reference, DT_TCP_RUNS times over tcp:, alternately (rdmae:, tcp:, rdmae:,
# ...). No migration parameter is set beyond qmig.sh's qm_rdmae_args (the key
# and 4 lanes): QEMU's defaults decide (downtime-limit 300 ms, max-bandwidth
# 128 MiB/s, above the link's rate); the limit is read back from
# query-migrate-parameters and recorded with each run.
#
# Each run has fresh QEMU processes on both sides: the destination waits
# paused (-S -incoming defer, then migrate-incoming in the URI form) while the
# source's guest boots, fills its RAM and completes a verify pass; then
# `migrate` (URI form), and query-migrate on the source every DT_POLL s until
# the migration ends, keeping every expected-downtime it reports (QEMU shows
# it only while the migration runs). Source RAM at stop and destination RAM
# before cont must hash the same (pmemsave, qm_dst_verify_ram's check).
#
# One line "BENCH-RESULT {json}" (kind downtime) per run on the console:
# transport, run, completed, status, limit_ms, downtime_ms, total_ms,
# setup_ms, dirty_sync_count, transferred_bytes, expected_downtime_last_ms
# (the last value sampled before the end), expected_downtime_seen (every
# value sampled while active, in order: before QEMU decides to stop the
# guest), expected_downtime_after_stop (while in status device), polls,
# dirty_pages_rate_max (QEMU updates expected-downtime only once its
# dirty-pages-rate is non-zero), ram_verified; tests/softroce/bench_perf.sh
# collects them under "downtime" with the goals. A migration that fails or
# does not end within DT_WAIT s is a row (completed false, with QEMU's
# error) and the remaining runs go on; the test then fails at its end, as it
# does when a destination's RAM differs. Never judged: the figures.
#
# Knobs (edit here; the bench passes no environment into the VMs):
#   DT_RUNS, DT_TCP_RUNS, DT_WAIT (s per migration), DT_POLL (s between
#   query-migrate polls), DT_GUEST_MEM (MiB), DT_HOT_KIB, DT_RECHECK (1:
#   RDMAE_TEST_FAULTS=recheck: each rdmae: run prints both sides' recheck
#   lines, and a page whose memory differs from the sum its side kept fails
#   that run's migration, naming it; the rehash counts in the downtime, so
#   figures taken with it are not comparable).
# shellcheck disable=SC3043,SC1091,SC2034
set -eu
. /usr/libexec/rdmae/qmig.sh
QM_PREFIX="downtime_qemu $ROLE"
RUNS=${DT_RUNS:-10}
TCP_RUNS=${DT_TCP_RUNS:-10}
WAIT=${DT_WAIT:-300}
POLL=${DT_POLL:-0.2}
GUEST_MEM=${DT_GUEST_MEM:-128}
GUEST_HOT=${DT_HOT_KIB:-3072}
RECHECK=${DT_RECHECK:-0}
export GUEST_MEM GUEST_HOT
if [ "$RECHECK" = 1 ]; then RDMAE_TEST_FAULTS=recheck; export RDMAE_TEST_FAULTS; fi
[ "$ROLE" = src ] || [ "$ROLE" = dst ] || qm_die "topology two only"
qm_need_rdmae
qm_say "QEMU: $QEMU_VERSION; guest $GUEST_MEM MiB, hot set $GUEST_HOT KiB; $RUNS runs over rdmae:, $TCP_RUNS over tcp:"

uptime_cs() { awk '{ printf "%d\n", $1 * 100 }' /proc/uptime; }

# bg_step FAILFILE FUNC ARGS...: runs FUNC in a subshell that keeps set -e
# (a subshell in an if or || list would not), with qm_die writing its reason
# to FAILFILE; returns its status.
bg_step() {
  local f="$1" rc=0
  shift
  rm -f "$f"
  (QM_FAIL_FILE=$PWD/$f; QM_ON_DIE=; "$@") &
  wait $! || rc=$?
  [ $rc = 0 ] || [ -s "$f" ] || echo "exited with status $rc" >"$f"
  return $rc
}

# ---- destination ----
dst_prepare() { # TRANSPORT PORT
  qm_start dst -S -incoming defer
  qm_qmp dst "{\"execute\":\"migrate-incoming\",\"arguments\":{\"uri\":\"$1:$SELF:$2\"}}" >/dev/null ||
    qm_die "dst: migrate-incoming $1:$SELF:$2 refused"
}
dst_verify() { # WHAT (the source's "hash H" is in dst.hash)
  local hs hd
  hs=$(sed 's/^hash //' dst.hash)
  qm_wait_incoming_done dst 300
  hd=$(qm_pmem_hash dst dst.mem)
  qm_say "$1: RAM sha256 source at stop $hs, destination before cont $hd"
  [ "$hs" = "$hd" ] || qm_die "$1: source RAM at stop and destination RAM before cont differ"
}
dst_run() { # TRANSPORT PORT N
  local tr="$1" port="$2" go=$(($3 * 3 - 2)) hashp=$(($3 * 3 - 1)) verd=$(($3 * 3)) msg v
  if bg_step dst.fail dst_prepare "$tr" "$port"; then
    qm_send "$(qm_xport $go)" incoming
  else
    qm_send "$(qm_xport $go)" "failed: dst: $(cat dst.fail)"
  fi
  msg=$(qm_recv "$(qm_xport $hashp)" $((WAIT + 900)))
  case $msg in
    hash\ *)
      echo "$msg" >dst.hash
      if bg_step dst.fail dst_verify "$tr run $3"; then v="ram equal"; else v="failed: dst: $(cat dst.fail)"; fi ;;
    *) v="skipped: $msg" ;;
  esac
  qm_send "$(qm_xport $verd)" "$v"
  [ "$RECHECK" != 1 ] || [ "$tr" != rdmae ] || qm_say "$tr run $3: destination's $(grep -h 'rdmae recheck' dst.log | sed 's/^rdmae //' | tr '\n' ' ')"
  qm_stop dst
  kill "$(qm_pid dst)" 2>/dev/null || true
}

# ---- source ----
src_prepare() {
  qm_start src
  qm_guest_ready src
  qm_qmp src query-migrate-parameters >src.params || qm_die "src: query-migrate-parameters failed"
}
# src_migrate TRANSPORT PORT: migrate and poll; leaves src.mig (the last
# answer), src.exp (expected-downtime per poll while it ran) and src.hash
# ("hash H" when completed). Returns 0 when it ran to an end, completed or
# not (the row says which); dies only when QEMU could not be driven.
src_migrate() {
  local tr="$1" port="$2" j st e t0 now
  : >src.exp
  : >src.exp2
  : >src.progress
  qm_qmp src "$(qm_migrate_cmd "$tr" uri "$PEER" "$port")" >migrate.out ||
    qm_die "src: migrate refused: $(cat migrate.out)"
  t0=$(uptime_cs)
  while :; do
    j=$(qm_qmp src query-migrate) || qm_die "src: query-migrate failed"
    now=$(uptime_cs)
    echo "$j" >src.mig
    # One awk per poll: status expected-downtime dirty-sync-count remaining dirty-pages-rate.
    # shellcheck disable=SC2046
    set -- $(echo "$j" | awk 'function v(k,  i, s) { i = index($0, "\"" k "\": "); if (!i) return "-"
        s = substr($0, i + length(k) + 4); if (substr(s, 1, 1) == "\"") { s = substr(s, 2); sub(/".*/, "", s) }
        else sub(/[,} ].*/, "", s); return s }
      { print v("status"), v("expected-downtime"), v("dirty-sync-count"), v("remaining"), v("dirty-pages-rate"); exit }')
    st=${1:-none} e=${2:--}
    # The values QEMU shows while the migration runs (not while it sets up),
    # apart: while active (before it decides to stop the guest) and after.
    if [ "$e" != - ]; then
      case $st in
        active) echo "$e" >>src.exp; echo "$e" >src.explast ;;
        pre-switchover|device) echo "$e" >>src.exp2; echo "$e" >src.explast ;;
      esac
    fi
    echo "$((now - t0)) $*" >>src.progress
    case $st in completed|failed|cancelled) break ;; esac
    if [ $((now - t0)) -gt $((WAIT * 100)) ]; then
      qm_say "src: $tr: still '$st' after $WAIT s: cancelling; progress (cs status expected-downtime rounds remaining dirty-pages-rate), last lines:"
      tail -5 src.progress | sed 's/^/      /'
      qm_qmp src migrate_cancel >/dev/null 2>&1 || true
      echo "{\"return\": {\"status\": \"active after $WAIT s, cancelled\"}}" >src.mig
      return 0
    fi
    sleep "$POLL"
  done
  if [ "$st" = completed ]; then
    echo "hash $(qm_pmem_hash src src.mem)" >src.hash
  fi
}
src_run() { # TRANSPORT PORT N RUN
  local tr="$1" port="$2" go=$(($3 * 3 - 2)) hashp=$(($3 * 3 - 1)) verd=$(($3 * 3)) run="$4"
  local msg ready=1 why="" ver limit ok=false seen seen2 last polls dpr
  local status total_time downtime setup_time transferred remaining total mbps dirty_sync_count \
    normal duplicate normal_bytes expected_downtime
  rm -f src.mig src.exp src.exp2 src.explast src.hash src.params src.progress
  bg_step src.fail src_prepare || { ready=0; why="src: $(cat src.fail)"; }
  msg=$(qm_recv "$(qm_xport $go)" 900)
  [ "$msg" = incoming ] || { [ $ready = 0 ] || why=$msg; ready=0; }
  if [ $ready = 1 ]; then
    qm_say "src: run $run: migrate $tr:$PEER:$port ($GUEST_MEM MiB guest, hot set $GUEST_HOT KiB)"
    bg_step src.fail src_migrate "$tr" "$port" || why="src: $(cat src.fail)"
  fi
  if [ -s src.hash ]; then qm_send "$(qm_xport $hashp)" "$(cat src.hash)"
  else qm_send "$(qm_xport $hashp)" "failed: ${why:-migration $(jget status <src.mig 2>/dev/null || echo 'not run')}"; fi
  ver=$(qm_recv "$(qm_xport $verd)" 900)
  limit=$(jget downtime-limit <src.params 2>/dev/null || echo null)
  if [ -f src.mig ]; then
    eval "$(qm_figures src)"
  else
    status="not run"
  fi
  [ "$status" = completed ] && ok=true
  [ -n "$why" ] || [ $ok = true ] || why="$(jget error-desc <src.mig 2>/dev/null || true)"
  seen=$(tr -d '\r' <src.exp 2>/dev/null | tr '\n' , | sed 's/,$//')
  seen2=$(tr -d '\r' <src.exp2 2>/dev/null | tr '\n' , | sed 's/,$//')
  polls=$(awk 'END { print NR }' src.progress 2>/dev/null || echo 0)
  dpr=$(awk '$6 != "-" && $6 + 0 > m { m = $6 + 0 } END { print m + 0 }' src.progress 2>/dev/null || echo 0)
  if [ -s src.progress ]; then
    qm_say "$tr run $run: the query-migrate polls where status, expected-downtime, rounds or dirty-pages-rate changed (cs since migrate, status, expected-downtime, dirty-sync-count, remaining, dirty-pages-rate):"
    awk '{ k = $2 " " $3 " " $4 " " $6 } k != p { print "      " $0; p = k }' src.progress
  fi
  last=$(cat src.explast 2>/dev/null || true)
  n() { case $1 in ''|*[!0-9]*) echo null ;; *) echo "$1" ;; esac; }
  echo "BENCH-RESULT {\"kind\":\"downtime\",\"transport\":\"$tr\",\"run\":$run,\"completed\":$ok,\"status\":\"$status\",\"why\":\"$(printf '%s' "$why" | tr -d '"\\\r' | tr '\n' ' ')\",\"limit_ms\":$(n "$limit"),\"downtime_ms\":$(n "${downtime:-}"),\"total_ms\":$(n "${total_time:-}"),\"setup_ms\":$(n "${setup_time:-}"),\"dirty_sync_count\":$(n "${dirty_sync_count:-}"),\"transferred_bytes\":$(n "${transferred:-}"),\"expected_downtime_last_ms\":$(n "$last"),\"expected_downtime_seen\":[$seen],\"expected_downtime_after_stop\":[$seen2],\"polls\":$(n "$polls"),\"dirty_pages_rate_max\":$(n "$dpr"),\"ram_verified\":$([ "$ver" = "ram equal" ] && echo true || echo false),\"guest_mib\":$GUEST_MEM,\"hot_kib\":$GUEST_HOT}"
  qm_say "$tr run $run: $status${why:+ ($why)}; downtime ${downtime:--} ms (limit ${limit} ms), total ${total_time:--} ms, setup ${setup_time:--} ms, rounds ${dirty_sync_count:--}, expected-downtime seen [${seen}] while active, [${seen2}] after the guest stopped; destination: $ver"
  echo "$tr $run $ok $(n "${downtime:-}") $(n "$limit") $(echo "$ver" | tr ' ' _)" >>runs.txt
  [ "$RECHECK" != 1 ] || [ "$tr" != rdmae ] || qm_say "$tr run $run: source's $(grep -h 'rdmae recheck' src.log | sed 's/^rdmae //' | tr '\n' ' ')"
  qm_stop src
  kill "$(qm_pid src)" 2>/dev/null || true
}

: >runs.txt
k=0
i=1
while [ $i -le "$RUNS" ] || [ $i -le "$TCP_RUNS" ]; do
  for tr in rdmae tcp; do
    if [ "$tr" = rdmae ]; then [ $i -le "$RUNS" ] || continue; else [ $i -le "$TCP_RUNS" ] || continue; fi
    k=$((k + 1))
    qm_sync "run-$k" 900
    if [ "$ROLE" = dst ]; then dst_run "$tr" $((4800 + k)) $k; else src_run "$tr" $((4800 + k)) $k $i; fi
  done
  i=$((i + 1))
done

if [ "$ROLE" = src ]; then
  # The goals' figures per transport; bench_perf.sh computes them again from
  # the rows and prints each goal met or missed.
  for tr in rdmae tcp; do
    awk -v tr="$tr" -v p="$QM_PREFIX" '$1 == tr {
        n++; lim = $5; if ($3 == "true" && $4 != "null" && $4 <= $5) ok++
        if ($3 != "true") nc++; else if ($4 > max) max = $4 }
      END { if (!n) exit
        printf "%s: %s: downtime <= limit (%s ms) in %d of %d runs; max %d ms = %.2f x limit; %d not completed\n",
          p, tr, lim, ok, n, max, (lim > 0 ? max / lim : 0), nc }' runs.txt
  done
  bad=$(awk '$3 != "true" || $6 != "ram_equal"' runs.txt | wc -l)
  if [ "$bad" -gt 0 ]; then
    qm_say "runs that failed or whose RAM was not verified equal:"
    awk '$3 != "true" || $6 != "ram_equal"' runs.txt | sed 's/^/      /'
    qm_die "$bad of $k runs failed (see their rows)"
  fi
fi
qm_say "done"
