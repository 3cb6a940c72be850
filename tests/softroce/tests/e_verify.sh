#!/bin/sh
# topology: two
# timeout: 600
# Verification is the source's choice unless the destination insists: a
# source that skips it (--no-verify) migrates the 256 MiB guest of e_migrate
# (compare the two runs' totals), and the same source is refused by a
# destination that requires verification, with the reason on both sides.
set -eu
KEY=$(bench_key)
if [ "$ROLE" = dst ]; then
  rdmae_mig dst --key "$KEY" --addr "$SELF" --port 7870 --size 256M >d.txt 2>&1 &
  dpid=$!
  wait_for listening d.txt 30
  bench_sync one
  wait $dpid && rc=0 || rc=$?
  cat d.txt
  [ "$rc" = 0 ] || exit 1
  grep -q "NOT verified" d.txt || { echo "the destination did not say it was unverified"; exit 1; }
  rdmae_mig dst --key "$KEY" --addr "$SELF" --port 7871 --size 64M --require-verify >d2.txt 2>&1 &
  dpid=$!
  wait_for listening d2.txt 30
  bench_sync two
  wait $dpid && rc=0 || rc=$?
  cat d2.txt
  [ "$rc" != 0 ] || { echo "committed without the verification it requires"; exit 1; }
  grep -q "requires" d2.txt || { echo "the destination did not say why"; exit 1; }
else
  bench_sync one
  rdmae_mig src --key "$KEY" --addr "$PEER" --port 7870 --size 256M --rate 4 --downtime 300 --no-verify
  bench_sync two
  rdmae_mig src --key "$KEY" --addr "$PEER" --port 7871 --size 64M --rate 1 --no-verify >s2.txt 2>&1 && rc=0 || rc=$?
  cat s2.txt
  [ "$rc" != 0 ] || { echo "the source committed past a destination that requires verification"; exit 1; }
  grep -q "requires" s2.txt || { echo "the source did not say why"; exit 1; }
fi
