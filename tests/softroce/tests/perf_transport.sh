#!/bin/sh
# topology: one
# timeout: 900
# Benchmark (not part of make check; run with `make perf`): the transport
# against ib_write_bw, side by side in one VM boot, same message sizes and
# QP counts. Absolute figures are those of software emulation; only the
# ratios in one run mean anything. Ends with a 1 GiB transfer over 4 lanes.
set -eu
KEY=$(bench_key)
secs=${PERF_SECONDS:-3}
echo "== ib_write_bw (perftest), one VM, rxe0, $secs s per point"
for q in 1 4; do
  for s in 4096 65536 1048576; do
    ib_write_bw -d rxe0 -s $s -q $q -D $secs -F >srv.txt 2>&1 &
    spid=$!
    bench_wait_listen 18515 20
    ib_write_bw -d rxe0 -s $s -q $q -D $secs -F "$SELF" >cli.txt 2>&1 || { cat cli.txt srv.txt; exit 1; }
    wait $spid || true
    bw=$(awk -v s=$s '$1 == s { print $4 }' cli.txt)
    [ -n "$bw" ] || { echo "no bandwidth line for $s"; cat cli.txt; exit 1; }
    printf 'ib_write_bw: qps %2d  size %8d  %8.1f MB/s\n' $q $s "$bw" | tee -a table.txt
    mpps=$(awk -v s=$s '$1 == s { print $5 }' cli.txt)
    echo "BENCH-RESULT {\"kind\":\"transport\",\"tool\":\"ib_write_bw\",\"qps\":$q,\"size\":$s,\"mib_s\":$bw,\"mpps\":${mpps:-0}}"
  done
done

echo "== rdmae-perf bw: WRITE, same VM, same sizes, QP counts (lanes) and queue depth (128, perftest's default)"
rdmae-perf bw server --key "$KEY" --addr "$SELF" --port 7602 >bs.txt 2>&1 &
spid=$!
wait_for listening bs.txt 30
rdmae-perf bw client --key "$KEY" --addr "$SELF" --port 7602 --tests write --sizes 4K,64K,1M \
  --lanes 1,4 --qd 128 --seconds "$secs" --json bw.json 2>bw.err | tee -a table.txt ||
  { cat bw.err bs.txt; exit 1; }
wait $spid || { cat bs.txt; exit 1; }
jq -c '.points[] | select(.test == "WRITE") | {kind: "transport", tool: "rdmae", qps: .lanes,
  size: .bytes_per_msg, mib_s: .bw_mib_s, mpps: .msg_rate_mpps, cpu_s_per_gib: .cpu_s_per_gib}' bw.json |
  sed 's/^/BENCH-RESULT /'

echo "== rdmae-perf transport (scattered runs, as a migration round posts them), same VM"
rdmae-perf transport server --key "$KEY" --addr "$SELF" --port 7600 --size 64M >ps.txt 2>&1 &
spid=$!
wait_for listening ps.txt 30
rdmae-perf transport client --key "$KEY" --addr "$SELF" --port 7600 --size 64M --runs 4K,64K,1M \
  --lanes 1,4 --seconds $secs | tee -a table.txt rp.txt || { cat ps.txt; exit 1; }
wait $spid
# rdmae-perf's MB is 10^6 bytes, perftest's 2^20: the JSON carries both tools in MiB/s.
sed -n 's/^rdmae-perf: lanes *\([0-9]*\) *run *\([0-9]*\) *\([0-9.]*\) MB\/s *\([0-9.]*\) CPU ms\/GiB.*/\1 \2 \3 \4/p' rp.txt |
  awk '{ printf "BENCH-RESULT {\"kind\":\"transport\",\"tool\":\"rdmae_runs\",\"qps\":%d,\"size\":%d,\"mib_s\":%.1f,\"cpu_ms_per_gib\":%s}\n", $1, $2, $3 * 1e6 / 1048576, $4 }'

echo "== 1 GiB in one pass, 1 MiB runs, 4 lanes"
rdmae-perf transport server --key "$KEY" --addr "$SELF" --port 7601 --size 1G >ps.txt 2>&1 &
spid=$!
wait_for listening ps.txt 60
rdmae-perf transport client --key "$KEY" --addr "$SELF" --port 7601 --size 1G --runs 1M --lanes 4 \
  --seconds 0 | tee -a table.txt || { cat ps.txt; exit 1; }
wait $spid
ib_write_bw -d rxe0 -s 1048576 -q 4 -n 256 -F >srv.txt 2>&1 &
spid=$!
bench_wait_listen 18515 20
ib_write_bw -d rxe0 -s 1048576 -q 4 -n 256 -F "$SELF" >cli.txt 2>&1 || { cat cli.txt; exit 1; }
wait $spid || true
printf 'ib_write_bw: 1 GiB as 4 x 256 x 1 MiB  %s MB/s\n' "$(awk '$1 == 1048576 { print $4 }' cli.txt)" | tee -a table.txt
echo "== rdmae-perf migrate: 256 MiB guest, hot set dirtied at 8 MB/s by 2 threads"
rdmae-perf migrate server --key "$KEY" --addr "$SELF" --port 7603 >ms.txt 2>&1 &
spid=$!
wait_for listening ms.txt 30
rdmae-perf migrate client --key "$KEY" --addr "$SELF" --port 7603 --size 256M --rate 8 \
  --pattern hotset --dirtiers 2 --downtime 300 --json mig.json --plot mig.png 2>mc.err | tee -a table.txt ||
  { cat mc.err ms.txt; exit 1; }
wait $spid || { cat ms.txt; exit 1; }
jq -c '{kind: "perf_migrate", size_mib: 256, rounds: .totals.rounds, total_ms: .totals.total_ms,
  downtime_ms: .totals.downtime_actual_ms, expected_downtime_ms: .totals.downtime_expected_ms,
  src_cpu_s: .totals.src_cpu_s, dst_cpu_s: .totals.dst_cpu_s, verified: .totals.dst_verified,
  connect_ms: .totals.connect_ms, setup_ms: .totals.first_write_ms, first_write_ms: .totals.first_write_ms,
  dst_reg_ms: .totals.dst_reg_ms, dst_reg_before_first_write_ms: .totals.dst_reg_before_first_write_ms,
  ms_per_gib: .totals.ms_per_gib}' mig.json |
  sed 's/^/BENCH-RESULT /'
# No gnuplot in the VM: the host draws the plot from this script (make bench).
echo "@@plot-script-begin"
cat mig.gp
echo "@@plot-script-end"
echo "== verification's cost: 128 MiB at 4 MB/s, verified and not, alternately, twice each"
port=7604
for run in 1 2; do
  for v in on off; do
    extra=; [ $v = off ] && extra=--no-verify
    rdmae-perf migrate server --key "$KEY" --addr "$SELF" --port $port >vs.txt 2>&1 &
    spid=$!
    wait_for listening vs.txt 30
    # shellcheck disable=SC2086
    rdmae-perf migrate client --key "$KEY" --addr "$SELF" --port $port --size 128M --rate 4 \
      --downtime 300 --quiet $extra --json v.json 2>/dev/null >/dev/null || { cat vs.txt; exit 1; }
    wait $spid || { cat vs.txt; exit 1; }
    jq -c --arg v $v '{kind: "verify_cost", verify: ($v == "on"), total_ms: .totals.total_ms,
      rounds: .totals.rounds, downtime_ms: .totals.downtime_actual_ms, hash_ms: .totals.hash_ms,
      src_cpu_s: .totals.src_cpu_s, dst_cpu_s: .totals.dst_cpu_s, dst_verified: .totals.dst_verified}' v.json |
      sed 's/^/BENCH-RESULT /'
    port=$((port + 1))
  done
done
echo "== summary"
cat table.txt
