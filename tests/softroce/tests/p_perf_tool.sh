#!/bin/sh
# topology: one
# timeout: 420
# rdmae-perf as a user runs it, server and client in one VM: bw (WRITE, READ
# and SEND over a small sweep), lat (percentiles), migrate (a 64 MiB guest
# dirtied by two threads, on huge pages, verified byte for byte by the
# destination; then a 32 MiB one on 4 KiB pages, populated ahead by a server
# told the size; then --reg odp, which rxe refuses), and transport as make perf
# runs it. Every --json output must parse (jq) and say what ran. Behaviour
# only: no figure is compared with a speed.
set -eu
KEY=$(bench_key)
fail() { echo "FAIL: $*"; exit 1; }
# Server in the background, its output in $1.
serve() {
  out=$1
  shift
  rdmae-perf "$@" --key "$KEY" --addr "$SELF" >"$out" 2>&1 &
  spid=$!
  wait_for listening "$out" 30
}
finish() { # server output, what
  wait $spid && rc=0 || rc=$?
  [ "$rc" = 0 ] || { cat "$1"; fail "$2 server exited with $rc"; }
}

echo "== bw: WRITE, READ, SEND; 4 KiB and 1 MiB; 1 and 4 lanes; queue depth 8 and 128"
serve bws.txt bw server --port 7620
# stderr to a file: not a terminal, so progress comes as plain lines (the console is a tty).
rdmae-perf bw client --key "$KEY" --addr "$SELF" --port 7620 --sizes 4K,1M --lanes 1,4 \
  --qd 8,128 --seconds 1 --json bw.json 2>bwc.err || { cat bwc.err bws.txt; fail "bw client"; }
finish bws.txt bw
cat bwc.err bws.txt
jq -e '.mode == "bw"' bw.json >/dev/null || fail "bw.json: not a bw run"
# 2 sizes x 2 lanes x 2 depths for WRITE and READ; SEND once per depth (lane 0 only).
n=$(jq '.points | length' bw.json)
[ "$n" = 20 ] || fail "bw.json: $n points, 20 expected"
for t in WRITE READ SEND; do
  jq -e --arg t "$t" '[.points[] | select(.test == $t and .bytes > 0 and .iterations > 0
    and .seconds > 0 and .bw_mb_s > 0)] | length > 0' bw.json >/dev/null ||
    fail "bw.json: no $t point that moved data"
done
jq -e '[.points[] | select(.test == "READ")] | length == 8' bw.json >/dev/null ||
  fail "bw.json: READ points missing"

echo "== lat: SEND ping-pong, WRITE, READ; 64 B and 4 KiB"
serve lats.txt lat server --port 7630
rdmae-perf lat client --key "$KEY" --addr "$SELF" --port 7630 --sizes 64,4K --iters 300 \
  --json lat.json 2>latc.err || { cat latc.err lats.txt; fail "lat client"; }
finish lats.txt lat
cat latc.err lats.txt
jq -e '.mode == "lat" and (.points | length) == 6' lat.json >/dev/null ||
  fail "lat.json: 6 points expected"
jq -e '[.points[] | select(.iterations == 300 and .min_us > 0 and .min_us <= .p50_us
  and .p50_us <= .p99_us and .p99_us <= .p99_9_us and .p99_9_us <= .max_us)] | length == 6' \
  lat.json >/dev/null || fail "lat.json: percentiles out of order or missing"

echo "== migrate: 64 MiB, hot set dirtied at 4 MB/s by 2 threads, huge pages where reserved"
echo 160 >/proc/sys/vm/nr_hugepages
echo "huge pages: $(cat /proc/sys/vm/nr_hugepages) reserved"
serve ms.txt migrate server --port 7640 --json md.json
rdmae-perf migrate client --key "$KEY" --addr "$SELF" --port 7640 --size 64M --rate 4 \
  --pattern hotset --dirtiers 2 --downtime 300 --json mig.json --plot mig.png 2>mc.err ||
  { cat mc.err ms.txt; fail "migrate client"; }
cat mc.err
finish ms.txt migrate
cat ms.txt
grep -q "PASSED" ms.txt || fail "the destination did not report its check"
jq -e '.totals.completed and .totals.dst_verified and .totals.dst_pages_checked == 16384
  and .totals.rounds >= 2 and ([.rounds[] | select(.final)] | length) == 1
  and .totals.downtime_actual_ms > 0 and .totals.src_cpu_s >= 0 and .totals.dst_cpu_s > 0' \
  mig.json >/dev/null || { cat mig.json; fail "mig.json: not a verified migration"; }
jq -e '.memory.source.huge_pages[0] and .memory.destination.huge_pages[0]' mig.json >/dev/null ||
  fail "mig.json: 160 huge pages reserved, yet the guests are not on them"
jq -e '.role == "destination" and .totals.verified and .totals.pages_checked == 16384' \
  md.json >/dev/null || fail "md.json: the destination's account is wrong"
# No gnuplot in the VM: the script is left for another machine, with every round in it.
[ -f mig.png ] || grep -q "gnuplot" mc.err || fail "no plot and no word about gnuplot"
rounds=$(jq '.rounds | length' mig.json)
[ "$(sed -n '/^\$rounds << EOD/,/^EOD/p' mig.gp | grep -c '^[0-9]')" = "$rounds" ] ||
  fail "mig.gp: not one line per round"
echo "@@plot-script-begin"
cat mig.gp
echo "@@plot-script-end"
echo "@@json-begin"
cat mig.json
echo "@@json-end"

echo "== migrate: 32 MiB, sequential at 2 MB/s, 4 KiB pages, the server told the size"
serve ms2.txt migrate server --port 7641 --hugepages off --size 32M
rdmae-perf migrate client --key "$KEY" --addr "$SELF" --port 7641 --size 32M --rate 2 \
  --pattern sequential --hugepages off --quiet --json mig2.json || { cat ms2.txt; fail "migrate 2"; }
finish ms2.txt "migrate 2"
cat ms2.txt
jq -e '.totals.dst_verified and (.memory.source.huge_pages[0] | not)' mig2.json >/dev/null ||
  fail "mig2.json: not verified, or on huge pages when told not to"
# Told the size, the server populated while it waited; rxe has no ODP, so both sides
# pin; each side's deregistration came after COMMIT_OK.
grep -q "populated 32 MiB of guest RAM" ms2.txt || fail "the server did not populate ahead"
jq -e '.totals.dst_populate_before_connect_ms > 0 and .totals.dst_reg_before_connect_ms == 0
  and .totals.src_reg_mode == "pin-all" and .totals.dst_reg_mode == "pin-all"
  and .totals.dst_dereg_ms > 0 and .totals.dst_dereg_after_commit_ms >= .totals.dst_dereg_ms
  and .totals.src_dereg_ms > 0 and .totals.src_dereg_after_commit_ms >= .totals.src_dereg_ms' \
  mig2.json >/dev/null || { jq .totals mig2.json; fail "mig2.json: populate, modes or dereg wrong"; }

echo "== migrate: --reg odp on rxe (no ODP): refused in pre-flight, naming the device"
serve ms3.txt migrate server --port 7642 --hugepages off
rc=0
rdmae-perf migrate client --key "$KEY" --addr "$SELF" --port 7642 --size 8M --rate 0 \
  --hugepages off --reg odp --quiet >mc3.txt 2>&1 || rc=$?
wait $spid || true
cat mc3.txt ms3.txt
[ "$rc" != 0 ] || fail "--reg odp on rxe migrated"
grep -q "reg=odp on the source: device rxe0 has no on-demand paging for RC WRITE" mc3.txt ||
  fail "--reg odp: not the pre-flight's error naming the device"

echo "== transport, as make perf runs it"
serve ts.txt transport server --port 7650 --size 16M
rdmae-perf transport client --key "$KEY" --addr "$SELF" --port 7650 --size 16M --runs 64K \
  --lanes 1 --seconds 1 | tee tc.txt || { cat ts.txt; fail "transport client"; }
finish ts.txt transport
grep -Eq '^rdmae-perf: lanes +1 +run +65536 +[0-9.]+ MB/s' tc.txt || fail "transport's line changed"
echo "p_perf_tool: ok"
