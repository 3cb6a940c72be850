#!/bin/sh
# topology: two
# timeout: 3000
# needs: qemu
# Benchmark (not part of make check; run with `make bench`): the same test
# guest (tests/guest) migrated by the patched QEMU from the src VM to the dst
# VM over tcp:, QEMU's own rdma: and rdmae:, each for an idle guest and for
# one dirtying at about half the link rate. Per migration: total time,
# downtime, transferred bytes, completed or not, and the source QEMU's CPU
# seconds (/proc/PID/task/*/stat per thread, and /proc/PID/stat for the whole
# process, which keeps the time of threads that exited).
#
# Every figure is printed as one line "BENCH-RESULT {json}" on the console;
# tests/softroce/bench_perf.sh (make bench) collects them on the host.
# Asserts only that the measurements ran: a migration that does not complete
# is a result (completed false), with evidence of where it stuck.
#
# Knobs (edit here; the bench passes no environment into the VMs):
#   PERF_GUEST_MEM MiB of guest RAM, PERF_WAIT s per migration before it is
#   declared stuck, PERF_DOWNTIME_MS the downtime limit (same for all three),
#   PERF_TRANSPORTS, PERF_RDMA_PIN_ALL (QEMU's rdma-pin-all capability for rdma:).
# shellcheck disable=SC3043,SC1091,SC2034
set -eu
. /usr/libexec/rdmae/qmig.sh
QM_PREFIX="perf_migrate $ROLE"
GUEST_MEM=${PERF_GUEST_MEM:-64}
export GUEST_MEM
WAIT=${PERF_WAIT:-300}
DOWNTIME_MS=${PERF_DOWNTIME_MS:-2000}
TRANSPORTS=${PERF_TRANSPORTS:-tcp rdma rdmae}
PIN_ALL=${PERF_RDMA_PIN_ALL:-false}
MAX_BW=$((10 * 1024 * 1024 * 1024))   # 10 GiB/s: QEMU's 128 MiB/s default must not decide
QMP_TIMEOUT=20
HZ=$(getconf CLK_TCK 2>/dev/null || true)
# USER_HZ is 100 on every Linux ABI; busybox may lack getconf.
case $HZ in ''|*[!0-9]*) HZ=100 ;; esac
[ "$ROLE" = src ] || [ "$ROLE" = dst ] || { echo "perf_migrate: topology two only"; exit 1; }
[ "${RDMAE_QEMU_PATCHED:-0}" = 1 ] || qm_die "needs the patched QEMU (RDMAE_QEMU)"

result() { echo "BENCH-RESULT $*"; }

# ---- the link: ib_write_bw between the two VMs (the migration goals' yardstick) ----
link_bw() { # SIZE -> MiB/s (perftest's MB is 2^20 bytes)
  local s=$1 port=$2
  if [ "$ROLE" = dst ]; then
    ib_write_bw -d rxe0 -s "$s" -q 1 -D 3 -F -p "$port" >lsrv.txt 2>&1 &
    local spid=$!
    bench_wait_listen "$port" 20
    qm_sync "link$s"
    wait $spid || true
  else
    qm_sync "link$s"
    sleep 1
    ib_write_bw -d rxe0 -s "$s" -q 1 -D 3 -F -p "$port" "$PEER" >lcli.txt 2>&1 || { cat lcli.txt; qm_die "ib_write_bw to $PEER failed"; }
    awk -v s="$s" '$1 == s { print $4 }' lcli.txt
  fi
}
LINK=
for s in 65536 1048576; do
  bw=$(link_bw $s 18600)
  if [ "$ROLE" = src ]; then
    [ -n "$bw" ] || qm_die "no ib_write_bw figure at $s"
    result "{\"kind\":\"link\",\"tool\":\"ib_write_bw\",\"qps\":1,\"size\":$s,\"mib_s\":$bw}"
    LINK=$bw
  fi
done
# The dirty guest rewrites a hot set of about half a second's worth of link
# bytes: at one dirty-log sync a second that is half the link rate.
if [ "$ROLE" = src ]; then
  HOT_KIB=$(awk -v b="$LINK" -v m="$GUEST_MEM" 'BEGIN { k = int(b * 1024 / 2); if (k > m * 512) k = m * 512; if (k < 1024) k = 1024; print k }')
  qm_send "$(qm_xport 1)" "$HOT_KIB"
else
  HOT_KIB=$(qm_recv "$(qm_xport 1)" 300)
fi
qm_say "link $LINK MiB/s (ib_write_bw, 1 MiB, 1 QP); dirty case: hot set $HOT_KIB KiB"

# ---- CPU of the source QEMU ----
# threads PID: "tid ticks comm" for every thread now (utime + stime).
threads() {
  local f t line rest comm
  for f in /proc/"$1"/task/*/stat; do
    line=$(cat "$f" 2>/dev/null) || continue
    comm=${line#*(}; comm=${comm%)*}
    rest=${line##*) }
    # shellcheck disable=SC2086
    set -- $rest
    t=${f%/stat}
    echo "${t##*/} $((${12} + ${13})) $comm"
  done
}
proc_ticks() { # PID: utime + stime of the whole process, exited threads included
  local line rest
  line=$(cat /proc/"$1"/stat)
  rest=${line##*) }
  # shellcheck disable=SC2086
  set -- $rest
  echo $((${12} + ${13}))
}
# cpu_sample PID: keeps the latest figure of every thread seen in cpu.acc.
cpu_sample() {
  threads "$1" >cpu.now 2>/dev/null || return 0
  awk '{ a[$1] = $0 } END { for (k in a) print a[k] }' cpu.acc cpu.now >cpu.tmp && mv cpu.tmp cpu.acc
}

# Where the source or destination QEMU is stuck: what query-migrate says,
# each thread's state, kernel stack and system call, and QEMU's own messages.
evidence() { # NAME
  local n=$1 pid t
  pid=$(qm_pid "$n")
  qm_say "EVIDENCE $n: query-status: $(rdmae-qmp -t 10 "$n.qmp" query-status 2>&1 | tr -d '\n')"
  qm_say "EVIDENCE $n: query-migrate: $(rdmae-qmp -t 10 "$n.qmp" query-migrate 2>&1 | tr -d '\n')"
  for t in /proc/"$pid"/task/*; do
    [ -d "$t" ] || continue
    qm_say "EVIDENCE $n: thread ${t##*/} ($(cat "$t/comm" 2>/dev/null)) state $(awk '/^State/ { print $2, $3 }' "$t/status" 2>/dev/null) wchan $(cat "$t/wchan" 2>/dev/null) syscall $(cut -d' ' -f1-3 "$t/syscall" 2>/dev/null)"
    sed 's/^/      /' "$t/stack" 2>/dev/null | head -12 || true
  done
  qm_say "EVIDENCE $n: QEMU stderr (last 30 lines of $(wc -l <"$n.log") ):"
  tail -30 "$n.log" | sed 's/^/      /'
  if [ -s "$n.trace" ]; then
    qm_say "EVIDENCE $n: rdma trace events (count by name):"
    awk '{ sub(/^[0-9]+@[0-9.]+:/, ""); e = $1; sub(/[ (].*/, "", e); c[e]++ } END { for (e in c) printf "      %8d %s\n", c[e], e }' "$n.trace" | sort -rn | awk 'NR <= 25'
    qm_say "EVIDENCE $n: last rdma trace lines:"
    tail -15 "$n.trace" | sed 's/^/      /'
  fi
}

# QEMU options for a transport: the rdma: case also logs QEMU's qemu_rdma_*
# trace events (log backend, to NAME.trace), the evidence if it sticks.
trace_opts() { [ "$1" = rdma ] && echo "-trace enable=qemu_rdma_* -trace enable=rdma_* -D $2.trace"; return 0; }

set_caps() { # NAME TRANSPORT
  [ "$2" = rdma ] || return 0
  qm_qmp "$1" "{\"execute\":\"migrate-set-capabilities\",\"arguments\":{\"capabilities\":[{\"capability\":\"rdma-pin-all\",\"state\":$PIN_ALL}]}}" >/dev/null ||
    qm_die "$1: rdma-pin-all refused"
}

# ---- one migration ----
CASE_N=1
run_case() { # TRANSPORT CASE PORT
  local tr=$1 cs=$2 port=$3 hot=1024 msg j st t p0 p1 vcpu other
  CASE_N=$((CASE_N + 1))
  [ "$cs" = dirty ] && hot=$HOT_KIB
  if [ "$ROLE" = dst ]; then
    # shellcheck disable=SC2046
    qm_start dst -name dst,debug-threads=on -S -incoming defer $(trace_opts "$tr" dst)
    set_caps dst "$tr"
    qm_qmp dst "{\"execute\":\"migrate-incoming\",\"arguments\":{\"uri\":\"$tr:$SELF:$port\"}}" >/dev/null ||
      qm_die "dst: migrate-incoming $tr:$SELF:$port refused"
    qm_sync "ready-$tr-$cs" 900
    msg=$(qm_recv "$(qm_xport "$CASE_N")" $((WAIT + 900)))
    case $msg in
      completed) qm_wait_incoming_done dst 120 ;;
      *) qm_say "dst: source says: $msg"; evidence dst ;;
    esac
    qm_stop dst
    kill "$(qm_pid dst)" 2>/dev/null || true
    return 0
  fi
  # shellcheck disable=SC2046
  GUEST_HOT=$hot qm_start src -name src,debug-threads=on $(trace_opts "$tr" src)
  qm_guest_ready src
  qm_set_params src "\"downtime-limit\": $DOWNTIME_MS, \"max-bandwidth\": $MAX_BW"
  set_caps src "$tr"
  qm_sync "ready-$tr-$cs" 900
  pid=$(qm_pid src)
  threads "$pid" >cpu.base
  cp cpu.base cpu.acc
  p0=$(proc_ticks "$pid")
  # The guest's page writes per second: its last two heartbeats before the migration.
  wps=$(awk '$1 == "tick" { p = w; w = $4 } END { print (p > 0 ? w - p : 0) }' src.serial)
  t=0
  st=none
  qm_say "src: migrate $tr:$PEER:$port ($cs guest: hot set $hot KiB, $GUEST_MEM MiB)"
  qm_qmp src "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"$tr:$PEER:$port\"}}" >migrate.out ||
    qm_say "src: migrate refused: $(cat migrate.out)"
  : >progress.txt
  maxdr=0
  while :; do
    cpu_sample "$pid"
    if j=$(qm_qmp src query-migrate 2>&1); then
      echo "$j" >src.mig
      st=$(echo "$j" | jget status || echo none)
      dr=$(echo "$j" | jget dirty-pages-rate || echo 0)
      [ "${dr:-0}" -le "$maxdr" ] || maxdr=$dr
      echo "$t $st $(echo "$j" | jget transferred || echo 0) $(echo "$j" | jget remaining || echo 0) $(echo "$j" | jget dirty-sync-count || echo 0) $dr" >>progress.txt
    else
      echo "$t query-migrate-no-answer" >>progress.txt
      qm_say "src: query-migrate did not answer within $QMP_TIMEOUT s at $t s: $j"
    fi
    case $st in completed|failed|cancelled) break ;; esac
    [ $((t % 30)) != 0 ] || [ $t = 0 ] || qm_say "src: $t s: $(tail -1 progress.txt)"
    t=$((t + 1))
    [ $t -le "$WAIT" ] || break
    qm_alive src || break
    sleep 1
  done
  p1=$(proc_ticks "$pid" 2>/dev/null || echo "$p0")
  cpu_sample "$pid"
  completed=false
  [ "$st" = completed ] && completed=true
  if [ "$completed" = false ]; then
    qm_say "src: $tr $cs: status '$st' after $t s (bound $WAIT s): collecting evidence"
    qm_say "src: progress (s status transferred remaining dirty-sync-count dirty-pages-rate), every 10th poll:"
    awk 'NR % 10 == 1' progress.txt | sed 's/^/      /'
    evidence src
    rdmae-qmp -t 10 src.qmp migrate_cancel >/dev/null 2>&1 || true
  fi
  # CPU: whole process from /proc/PID/stat; per thread from task/*/stat (threads
  # that exited keep their last sample); vCPU threads ("CPU n/TCG") apart.
  vcpu=$(awk 'FNR == NR { b[$1] = $2; next } $3 == "CPU" { s += $2 - b[$1] } END { print s + 0 }' cpu.base cpu.acc)
  other=$(awk 'FNR == NR { b[$1] = $2; next } $3 != "CPU" { s += $2 - b[$1] } END { print s + 0 }' cpu.base cpu.acc)
  per=$(awk 'FNR == NR { b[$1] = $2; next } { d = $2 - b[$1]; if (d > 0) { n = $0; sub(/^[^ ]+ [^ ]+ /, "", n); c[n] += d } }
    END { for (k in c) { printf "%s%s=%d", sep, k, c[k]; sep = "," } }' cpu.base cpu.acc)
  eval "$(qm_figures src)"
  # shellcheck disable=SC2154
  result "$(awk -v tr="$tr" -v cs="$cs" -v ok="$completed" -v st="$st" -v tt="${total_time:-}" -v dt="${downtime:-}" \
    -v xb="${transferred:-0}" -v su="${setup_time:-}" -v ps="$p0" -v pe="$p1" -v hz="$HZ" -v vc="$vcpu" -v ot="$other" -v el="$t" \
    -v mem="$GUEST_MEM" -v hot="$hot" -v wps="$wps" -v dr="$maxdr" -v ds="${dirty_sync_count:-0}" -v per="$per" 'BEGIN {
      if (tt == "" || ok != "true") tt = el * 1000
      if (dt == "" || ok != "true") dt = "null"
      if (su == "" || ok != "true") su = "null"
      printf "{\"kind\":\"migration\",\"transport\":\"%s\",\"case\":\"%s\",\"completed\":%s,\"status\":\"%s\",", tr, cs, ok, st
      printf "\"total_ms\":%d,\"downtime_ms\":%s,\"setup_ms\":%s,\"transferred_bytes\":%d,", tt, dt, su, xb
      printf "\"src_cpu_s\":%.2f,\"src_cpu_vcpu_s\":%.2f,\"src_cpu_other_s\":%.2f,", (pe - ps) / hz, vc / hz, (pe - ps - vc) / hz
      printf "\"src_cpu_threads_s\":%.2f,\"threads\":\"%s\",", (vc + ot) / hz, per
      printf "\"guest_mib\":%d,\"hot_kib\":%d,\"guest_writes_per_s\":%.0f,\"dirty_pages_rate_max\":%d,\"dirty_sync_count\":%d}",
        mem, hot, wps, dr, ds }')"
  [ "$completed" = true ] || st="$st after $t s"
  qm_send "$(qm_xport "$CASE_N")" "$st"
  qm_stop src
  kill "$(qm_pid src)" 2>/dev/null || true
}

port=4600
for tr in $TRANSPORTS; do
  for cs in idle dirty; do
    run_case "$tr" "$cs" $port
    port=$((port + 1))
    sleep 1
  done
done
qm_say "done"
