#!/bin/sh
# topology: two
# timeout: 120
# Placeholder demo (the lead replaces it with the QEMU migration demo).
set -eu
set -o pipefail
[ "$ROLE" = src ] && echo "rdmae demo: the QEMU channel (rdmae: URI) does not exist yet; running the soft-RoCE link check instead"
if [ "$ROLE" = dst ]; then
  rping -s -a "$SELF" -C 10 -v >rping.txt 2>&1 &
  srv=$!
  sleep 1
  bench_sync rping-ready
  wait "$srv" || { echo "rping server failed:"; cat rping.txt; exit 1; }
  ib_write_bw -R -d rxe0 -s 65536 -D 2 -F >bw.txt 2>&1 &
  srv=$!
  sleep 1
  bench_sync bw-ready
  wait "$srv" || { echo "ib_write_bw server failed:"; cat bw.txt; exit 1; }
else
  bench_sync rping-ready
  rping -c -a "$PEER" -C 10 -v
  bench_sync bw-ready
  ib_write_bw -R -d rxe0 -s 65536 -D 2 -F "$PEER" | tee bw.txt
  grep -E '^[[:space:]]*65536[[:space:]]+[0-9]+' bw.txt >/dev/null || { echo "no bandwidth line"; exit 1; }
  echo "rdmae demo: ib_write_bw -R 64 KiB between the two VMs: $(awk '$1 == 65536 { print $4 " MB/s" }' bw.txt)"
fi
