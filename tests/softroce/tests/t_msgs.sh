#!/bin/sh
# topology: one
# timeout: 400
# 100k small messages with a small receive queue: the reader starts late, so
# the sender exhausts its credit window and continues as credits come back.
set -eu
KEY=$(bench_key)
rdmae_tt msgs server --key "$KEY" --addr "$SELF" --port 7520 --count 100000 --recv-queue 64K >s.txt 2>&1 &
spid=$!
wait_for listening s.txt 30
rdmae_tt msgs client --key "$KEY" --addr "$SELF" --port 7520 --count 100000 || { kill $spid 2>/dev/null || true; cat s.txt; exit 1; }
wait $spid || { cat s.txt; exit 1; }
cat s.txt
