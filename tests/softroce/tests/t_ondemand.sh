#!/bin/sh
# topology: one
# timeout: 400
# On-demand registration on the source: 256 MiB sent through 16 MiB chunks
# with at most 64 MiB pinned at once; then huge-page memory on both sides.
set -eu
KEY=$(bench_key)
rdmae_tt write server --key "$KEY" --addr "$SELF" --port 7560 --size 256M >s.txt 2>&1 &
spid=$!
wait_for listening s.txt 30
rdmae_tt write client --key "$KEY" --addr "$SELF" --port 7560 --size 256M --on-demand --pin-limit 64M | tee c.txt || { kill $spid 2>/dev/null || true; cat s.txt; exit 1; }
wait $spid || { cat s.txt; exit 1; }
pinned=$(sed -n 's/^client: pinned now \([0-9]*\) MiB.*/\1/p' c.txt)
[ -n "$pinned" ] && [ "$pinned" -le 64 ] || { echo "pinned $pinned MiB, over the 64 MiB bound"; exit 1; }

echo 160 >/proc/sys/vm/nr_hugepages
echo "huge pages: $(cat /proc/sys/vm/nr_hugepages) reserved"
rdmae_tt write server --key "$KEY" --addr "$SELF" --port 7561 --size 64M --hugepages >s2.txt 2>&1 &
spid=$!
wait_for listening s2.txt 30
rdmae_tt write client --key "$KEY" --addr "$SELF" --port 7561 --size 64M --hugepages || { kill $spid 2>/dev/null || true; cat s2.txt; exit 1; }
wait $spid || { cat s2.txt; exit 1; }
cat s2.txt
grep -q "page size 2097152" s2.txt || { echo "server memory was not on 2 MiB pages"; exit 1; }
