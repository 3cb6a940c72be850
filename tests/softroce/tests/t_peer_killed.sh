#!/bin/sh
# topology: two
# timeout: 300
# A peer killed mid-transfer: the source streams RDMA WRITEs; the destination
# process is SIGKILLed; the source must end with a clear error in bounded
# time. Then the other way round: the source is killed while the destination
# waits, and the destination must see the disconnect.
set -eu
KEY=$(bench_key)
if [ "$ROLE" = dst ]; then
  rdmae_tt stream server --key "$KEY" --addr "$SELF" --port 7580 --size 16M >s.txt 2>&1 &
  spid=$!
  wait_for listening s.txt 30
  bench_sync ready
  bench_sync streaming 120
  kill -KILL $spid
  echo "destination process killed"
  bench_sync killed
  # Part two: the destination survives the source's death.
  rdmae_tt stream server --key "$KEY" --addr "$SELF" --port 7581 --size 16M --within 60000 >s2.txt 2>&1 &
  spid=$!
  wait_for listening s2.txt 30
  bench_sync ready2
  wait $spid && rc=0 || rc=$?
  cat s2.txt
  bench_sync done 120
  exit $rc
else
  bench_sync ready
  rdmae_tt stream client --key "$KEY" --addr "$PEER" --port 7580 --within 15000 >c.txt 2>&1 &
  cpid=$!
  wait_for "passes done" c.txt 120
  bench_sync streaming
  bench_sync killed
  wait $cpid && rc=0 || rc=$?
  cat c.txt
  [ $rc = 0 ] || exit $rc
  bench_sync ready2
  rdmae_tt stream client --key "$KEY" --addr "$PEER" --port 7581 >c2.txt 2>&1 &
  cpid=$!
  wait_for "passes done" c2.txt 120
  kill -KILL $cpid
  echo "source process killed"
  bench_sync done 120
fi
