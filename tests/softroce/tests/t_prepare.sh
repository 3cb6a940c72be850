#!/bin/sh
# topology: two
# timeout: 300
# Registration off the connection's path: the destination opens the device
# of its address and prepares (populates, registers) 64 MiB BEFORE it
# listens; each connection, once negotiated and authenticated, gets that
# region attached and advertised; the source WRITEs a pattern, the
# destination checks every byte. Twice: the second connection reuses the
# region the first one left registered.
set -eu
KEY=$(bench_key)
if [ "$ROLE" = dst ]; then
  rdmae_tt prepare server --key "$KEY" --addr "$SELF" --port 7545 --size 64M --count 2 >s.txt 2>&1 &
  spid=$!
  wait_for listening s.txt 30
  bench_sync ready
  wait $spid && rc=0 || rc=$?
  cat s.txt
  [ $rc = 0 ] || exit $rc
  prep=$(grep -n "before listening" s.txt | cut -d: -f1)
  listen=$(grep -n "listening on" s.txt | cut -d: -f1)
  [ -n "$prep" ] && [ -n "$listen" ] && [ "$prep" -lt "$listen" ] ||
    { echo "FAIL: the region was not prepared before listening"; exit 1; }
  [ "$(grep -c 'region attached' s.txt)" = 2 ] || { echo "FAIL: not attached twice"; exit 1; }
  [ "$(grep -c 'every byte matches' s.txt)" = 2 ] || { echo "FAIL: not verified twice"; exit 1; }
  grep -q "connection 1 closed, the region stays registered" s.txt ||
    { echo "FAIL: the first connection did not close cleanly"; exit 1; }
else
  bench_sync ready
  rdmae_tt prepare client --key "$KEY" --addr "$PEER" --port 7545 --size 64M --count 2 --run 256K --scatter
fi
