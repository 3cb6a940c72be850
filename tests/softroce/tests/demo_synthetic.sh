#!/bin/sh
# topology: two
# timeout: 600
# make demo-synthetic: the engine on the soft-RoCE bench, between two hosts,
# with its own synthetic guest (make demo migrates a QEMU guest instead).
# The guest is rdmae_mig's synthetic one: RAM blocks and a vCPU thread
# dirtying pages at 8 MB/s, checked byte for byte on the destination.
set -eu
KEY=$(bench_key)
say() { [ "$ROLE" = src ] && echo "rdmae demo: $*"; return 0; }
say "the engine alone, with a synthetic guest (make demo: a QEMU guest over migrate rdmae:)"
say "two hosts (VMs), each with its own kernel and rxe device, joined by a virtual cable"

say "step 1/3: the link, measured by ib_write_bw (64 KiB WRITEs, 1 QP, 3 s)"
if [ "$ROLE" = dst ]; then
  ib_write_bw -R -d rxe0 -s 65536 -D 3 -F >bw.txt 2>&1 &
  srv=$!
  sleep 1
  bench_sync bw
  wait $srv || { cat bw.txt; exit 1; }
else
  bench_sync bw
  ib_write_bw -R -d rxe0 -s 65536 -D 3 -F "$PEER" >bw.txt 2>&1 || { cat bw.txt; exit 1; }
  say "ib_write_bw: $(awk '$1 == 65536 { print $4 }' bw.txt) MB/s"
fi

say "step 2/3: the rdmae transport over the same link (64 KiB and 1 MiB runs, 1 and 4 lanes)"
if [ "$ROLE" = dst ]; then
  rdmae-perf transport server --key "$KEY" --addr "$SELF" --port 7610 --size 64M >ps.txt 2>&1 &
  srv=$!
  wait_for listening ps.txt 30
  bench_sync perf
  wait $srv || { cat ps.txt; exit 1; }
else
  bench_sync perf
  rdmae-perf transport client --key "$KEY" --addr "$PEER" --port 7610 --size 64M --runs 64K,1M --lanes 1,4 --seconds 3
fi

say "step 3/3: live migration of a 512 MiB guest dirtying 8 MB/s, downtime limit 300 ms"
if [ "$ROLE" = dst ]; then
  rdmae_mig dst --key "$KEY" --addr "$SELF" --port 7811 --size 512M >d.txt 2>&1 &
  dpid=$!
  wait_for listening d.txt 30
  bench_sync mig
  wait $dpid && rc=0 || rc=$?
  cat d.txt
  bench_sync end 120
  exit $rc
else
  bench_sync mig
  rdmae_mig src --key "$KEY" --addr "$PEER" --port 7811 --size 512M --rate 8 --downtime 300
  bench_sync end 120
  say "done: the destination holds the guest's memory as it was at stop, checked page by page"
fi
