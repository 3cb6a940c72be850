#!/bin/sh
# topology: one
# timeout: 500
# Cancel in each phase (after pre-flight, during the rounds, during the
# device state), from each side. The source's guest keeps running with its
# memory untouched, the destination reports cancelled, and neither process
# leaves a thread or a registration behind (checked by rdmae_mig itself).
set -eu
KEY=$(bench_key)
port=7820
for phase in preflight round state; do
  for side in src dst; do
    port=$((port + 1))
    echo "--- cancel at $phase by $side"
    rdmae_mig dst --key "$KEY" --addr "$SELF" --port $port --size 64M --expect cancel \
      --cancel-at $phase --cancel-side $side >d.txt 2>&1 &
    dpid=$!
    wait_for listening d.txt 30
    rdmae_mig src --key "$KEY" --addr "$SELF" --port $port --size 64M --rate 2 --expect cancel \
      --cancel-at $phase --cancel-side $side --quiet >s.txt 2>&1 && rc=0 || rc=$?
    wait $dpid && drc=0 || drc=$?
    sed 's/^/  /' s.txt d.txt | grep -E "ended|cancel|PASS|FAIL|running|threads" || true
    [ $rc = 0 ] && [ $drc = 0 ] || { echo "cancel at $phase by $side misbehaved:"; cat s.txt d.txt; exit 1; }
  done
done
echo "e_cancel: every phase and side behaved"
