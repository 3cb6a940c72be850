#!/bin/sh
# topology: two
# timeout: 300
# The bench's proof: the destination VM registers 64 MiB and advertises it;
# the source VM RDMA-WRITEs a pattern into it in scattered 256 KiB runs over
# rdma_cm; the destination checks every byte.
set -eu
KEY=$(bench_key)
if [ "$ROLE" = dst ]; then
  rdmae_tt write server --key "$KEY" --addr "$SELF" --port 7540 --size 64M >s.txt 2>&1 &
  spid=$!
  wait_for listening s.txt 30
  bench_sync ready
  wait $spid && rc=0 || rc=$?
  cat s.txt
  exit $rc
else
  bench_sync ready
  rdmae_tt write client --key "$KEY" --addr "$PEER" --port 7540 --size 64M --run 256K --scatter
fi
