#!/bin/sh
# topology: one
# timeout: 900
# 1 GiB of RDMA WRITE across 4 lanes, verified by checksum and byte for
# byte, under a short keepalive (t_write1g, the same transfer with the
# defaults, once died of keepalive; it is folded in here, since this
# transfer asks strictly more of the same path). A deep WRITE
# queue allowed on purpose (1024 WRs of 1 MiB per lane) and a short keepalive
# (probe after 1 s idle, 3 s to answer, against 10 s + 5 s by default) on
# both sides. Before pacing, a probe answer waited behind the whole 1 GiB
# transfer (12.5 s measured on this bench):
#  1. a live connection survives the server's long registration (1 GiB
#     pinned before it answers) and a 1 GiB transfer during which the WRITE
#     target sees no message; the pacing budget, not the WR count, bounds
#     what a probe answer waits behind;
#  2. a writer SIGSTOPped mid-transfer is still found dead by the target
#     within the bound (idle + answer time, plus slack for a busy machine).
set -eu
KEY=$(bench_key)
KA="--keepalive 1000 --keepalive-timeout 3000 --writes-in-flight 1024"

echo "== 1: long registration and long transfer, short keepalive"
# shellcheck disable=SC2086
rdmae_tt write server --key "$KEY" --addr "$SELF" --port 7590 --size 1G --lanes 4 $KA >s.txt 2>&1 &
spid=$!
wait_for listening s.txt 30
# shellcheck disable=SC2086
rdmae_tt write client --key "$KEY" --addr "$SELF" --port 7590 --size 1G --lanes 4 $KA >c.txt 2>&1 && rc=0 || rc=$?
wait $spid && src=0 || src=$?
cat s.txt c.txt
[ $rc = 0 ] && [ $src = 0 ] || { echo "FAIL: the live connection did not survive"; exit 1; }
grep -q "server verified every byte" c.txt
# Every lane must have carried WRITEs.
for l in 0 1 2 3; do
  grep -Eq "^lane $l: writes [1-9]" c.txt || { echo "FAIL: lane $l carried no WRITEs"; exit 1; }
done
# What a probe answer could wait behind: the budget, far below 4 lanes x 1024 x 1 MiB.
most=$(sed -n 's/^pacing: budget [0-9.]* MiB, most in flight \([0-9]*\).*/\1/p' c.txt)
echo "most WRITE bytes in flight: $most MiB (the WR bound alone would allow 4096 MiB)"
[ -n "$most" ] && [ "$most" -le 64 ]

echo "== 2: the writer stops mid-transfer; the target must notice"
# shellcheck disable=SC2086
rdmae_tt write server --key "$KEY" --addr "$SELF" --port 7591 --size 1G --lanes 4 $KA >s2.txt 2>&1 &
spid=$!
wait_for listening s2.txt 30
# shellcheck disable=SC2086
rdmae_tt write client --key "$KEY" --addr "$SELF" --port 7591 --size 1G --lanes 4 $KA >c2.txt 2>&1 &
cpid=$!
wait_for "pin-all in" c2.txt 120
sleep 1
t0=$(cut -d' ' -f1 /proc/uptime)
kill -STOP $cpid
echo "writer $cpid stopped at uptime $t0"
wait $spid && src=0 || src=$?
t1=$(cut -d' ' -f1 /proc/uptime)
kill -KILL $cpid 2>/dev/null || true
wait $cpid 2>/dev/null || true
cat s2.txt
[ $src != 0 ] || { echo "FAIL: the server did not notice the stopped writer"; exit 1; }
grep -q "keepalive: no answer" s2.txt || { echo "FAIL: not a keepalive error"; exit 1; }
ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%d", (b - a) * 1000 }')
echo "stopped writer detected after $ms ms (bound 1000 + 3000 ms, 15000 ms with slack)"
[ "$ms" -le 15000 ]
