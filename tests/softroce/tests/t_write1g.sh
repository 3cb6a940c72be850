#!/bin/sh
# topology: one
# timeout: 600
# 1 GiB of RDMA WRITE across 4 lanes, verified by checksum and byte for byte.
set -eu
KEY=$(bench_key)
rdmae_tt write server --key "$KEY" --addr "$SELF" --port 7550 --size 1G --lanes 4 >s.txt 2>&1 &
spid=$!
wait_for listening s.txt 30
rdmae_tt write client --key "$KEY" --addr "$SELF" --port 7550 --size 1G --lanes 4 | tee c.txt || { kill $spid 2>/dev/null || true; cat s.txt; exit 1; }
wait $spid || { cat s.txt; exit 1; }
cat s.txt
# Every lane must have carried WRITEs.
for l in 0 1 2 3; do
  grep -Eq "^lane $l: writes [1-9]" c.txt || { echo "lane $l carried no WRITEs"; exit 1; }
done
