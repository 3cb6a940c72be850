#!/bin/sh
# topology: one
# timeout: 300
# Lane-addressed transfers: the client runs one thread per lane, each
# writing its own slices of the buffer with rdmae_write_lane and then saying
# "placed" with rdmae_send_lane on the same lane; the server runs one thread
# per lane receiving with rdmae_recv_lane and checks that lane's slice as
# soon as its message has arrived (RC ordering within one QP), then the
# whole buffer.
set -eu
KEY=$(bench_key)
rdmae_tt lanes server --key "$KEY" --addr "$SELF" --port 7530 --size 64M --count 16 \
  >s.txt 2>&1 &
spid=$!
wait_for listening s.txt 30
rdmae_tt lanes client --key "$KEY" --addr "$SELF" --port 7530 --size 64M --count 16 --lanes 4 ||
  { kill $spid 2>/dev/null || true; cat s.txt; exit 1; }
wait $spid || { cat s.txt; exit 1; }
cat s.txt
grep -q "every byte matches" s.txt || { echo "FAIL: the server did not verify the buffer"; exit 1; }
