#!/bin/sh
# topology: two
# timeout: 150
# Two VMs joined by a QEMU socket link: rping and ib_write_bw -R between them,
# then the host cuts the link (ping fails) and restores it (ping works).
set -eu
set -o pipefail
if [ "$ROLE" = dst ]; then
  rping -s -a "$SELF" -C 10 -v >rping.txt 2>&1 &
  srv=$!
  sleep 1
  bench_sync rping-ready
  wait "$srv" || { echo "rping server failed:"; cat rping.txt; exit 1; }
  echo "rping server: $(grep -c 'ping data' rping.txt || true) pings"

  ib_write_bw -R -d rxe0 -s 65536 -D 2 -F >bw.txt 2>&1 &
  srv=$!
  sleep 1
  bench_sync bw-ready
  wait "$srv" || { echo "ib_write_bw server failed:"; cat bw.txt; exit 1; }
  bench_sync link-done 90
else
  bench_sync rping-ready
  rping -c -a "$PEER" -C 10 -v
  bench_sync bw-ready
  ib_write_bw -R -d rxe0 -s 65536 -D 2 -F "$PEER" | tee bw.txt
  grep -E '^[[:space:]]*65536[[:space:]]+[0-9]+' bw.txt >/dev/null || { echo "no bandwidth line"; exit 1; }
  echo "link_two_hosts: ib_write_bw -R 64 KiB, two VMs: $(awk '$1 == 65536 { print $4 " MB/s" }' bw.txt)"

  ping -c 1 -W 2 "$PEER" >/dev/null || { echo "ping fails before the cut"; exit 1; }
  bench_host link off
  if ping -c 2 -W 1 "$PEER"; then echo "ping still works with the link cut"; exit 1; fi
  echo "link off: ping fails, as it should"
  bench_host link on
  ok=0
  for i in 1 2 3 4 5; do
    if ping -c 1 -W 2 "$PEER"; then ok=1; break; fi
  done
  [ $ok = 1 ] || { echo "ping does not work after the link is restored"; exit 1; }
  echo "link on: ping works again"
  bench_sync link-done 90
fi
