#!/bin/sh
# topology: one
# timeout: 400
# A vCPU that dirties faster than the link (capped at 24 MB/s, dirtying at
# 80 MB/s) never converges: the source says so after --max-rounds rounds,
# cancels, never claims success, and its guest keeps running.
set -eu
KEY=$(bench_key)
rdmae_mig dst --key "$KEY" --addr "$SELF" --port 7810 --size 256M --expect noconverge >d.txt 2>&1 &
dpid=$!
wait_for listening d.txt 30
rdmae_mig src --key "$KEY" --addr "$SELF" --port 7810 --size 256M --rate 80 --bw-cap 24 --max-rounds 3 \
  --expect noconverge | tee s.txt && rc=0 || rc=$?
wait $dpid && drc=0 || drc=$?
cat d.txt
[ $rc = 0 ] && [ $drc = 0 ] || exit 1
grep -q "did not converge" s.txt || { echo "no 'did not converge' message"; exit 1; }
if grep -q "migration committed" s.txt; then echo "claimed success"; exit 1; fi
