#!/bin/sh
# topology: one
# timeout: 200
# After the source has sent COMPLETE the destination may commit at any
# moment. Here it stops answering (stalls longer than the source's 2 s
# message timeout) right before its commit: the source must report the
# outcome as unknown (-ENOTRECOVERABLE) and leave its guest paused, never
# resume it as if the migration had simply failed.
set -eu
KEY=$(bench_key)
rdmae_mig dst --key "$KEY" --addr "$SELF" --port 7860 --size 32M --stall 5000 --expect unknown >d.txt 2>&1 &
dpid=$!
wait_for listening d.txt 30
rdmae_mig src --key "$KEY" --addr "$SELF" --port 7860 --size 32M --rate 1 --timeout 2000 --expect unknown \
  | tee s.txt && rc=0 || rc=$?
wait $dpid && drc=0 || drc=$?
cat d.txt
[ $rc = 0 ] && [ $drc = 0 ] || exit 1
grep -q "outcome unknown" s.txt || { echo "the source did not say the outcome is unknown"; exit 1; }
if grep -q "source guest still running" s.txt; then echo "the source resumed its guest"; exit 1; fi
