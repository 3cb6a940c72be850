#!/bin/sh
# topology: one
# timeout: 300
# One 16 MiB message each way, fragmented into sends and reassembled.
set -eu
KEY=$(bench_key)
rdmae_tt frag server --key "$KEY" --addr "$SELF" --port 7530 --size 16M >s.txt 2>&1 &
spid=$!
wait_for listening s.txt 30
rdmae_tt frag client --key "$KEY" --addr "$SELF" --port 7530 --size 16M || { kill $spid 2>/dev/null || true; cat s.txt; exit 1; }
wait $spid || { cat s.txt; exit 1; }
cat s.txt
