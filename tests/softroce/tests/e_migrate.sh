#!/bin/sh
# topology: two
# timeout: 600
# Live migration of a 256 MiB synthetic guest between the two hosts while its
# vCPU dirties pages at 4 MB/s: pre-copy rounds until the expected downtime
# fits 300 ms, stop, final round, device state, commit. The destination
# rebuilds every page from the device state and compares byte for byte.
set -eu
KEY=$(bench_key)
if [ "$ROLE" = dst ]; then
  rdmae_mig dst --key "$KEY" --addr "$SELF" --port 7801 --size 256M >d.txt 2>&1 &
  dpid=$!
  wait_for listening d.txt 30
  bench_sync ready
  wait $dpid && rc=0 || rc=$?
  cat d.txt
  exit $rc
else
  bench_sync ready
  rdmae_mig src --key "$KEY" --addr "$PEER" --port 7801 --size 256M --rate 4 --downtime 300
fi
