#!/bin/sh
# topology: two
# timeout: 300
# The cable between the two hosts is cut mid-transfer: the source (WRITE
# retries exhausted) and the destination (keepalive unanswered) both end with
# a clear error in bounded time. The link is restored afterwards.
set -eu
KEY=$(bench_key)
if [ "$ROLE" = dst ]; then
  rdmae_tt stream server --key "$KEY" --addr "$SELF" --port 7590 --size 16M --keepalive 2000 --keepalive-timeout 2000 >s.txt 2>&1 &
  spid=$!
  wait_for listening s.txt 30
  bench_sync ready
  wait $spid && rc=0 || rc=$?
  cat s.txt
  bench_sync done 120
  exit $rc
else
  bench_sync ready
  rdmae_tt stream client --key "$KEY" --addr "$PEER" --port 7590 --within 20000 --keepalive 2000 --keepalive-timeout 2000 >c.txt 2>&1 &
  cpid=$!
  wait_for "passes done" c.txt 120
  bench_host link off
  wait $cpid && rc=0 || rc=$?
  cat c.txt
  bench_host link on 60
  bench_sync done 120
  exit $rc
fi
