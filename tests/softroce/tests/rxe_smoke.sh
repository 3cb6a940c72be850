#!/bin/sh
# topology: one
# timeout: 90
# rxe0 is up in the one-VM topology, and ib_write_bw (server and client in
# this VM, through the same rxe0) moves data.
set -eu
set -o pipefail
ibv_devinfo -d rxe0 | tee devinfo.txt
grep -q 'state:[[:space:]]*PORT_ACTIVE' devinfo.txt || { echo "rxe0 port not PORT_ACTIVE"; exit 1; }

ib_write_bw -d rxe0 -s 65536 -D 2 -F >server.txt 2>&1 &
srv=$!
bench_wait_listen 18515 20
ib_write_bw -d rxe0 -s 65536 -D 2 -F "$SELF" | tee client.txt
wait "$srv" || { echo "ib_write_bw server failed:"; cat server.txt; exit 1; }
grep -E '^[[:space:]]*65536[[:space:]]+[0-9]+' client.txt >/dev/null || { echo "no bandwidth line"; exit 1; }
echo "rxe_smoke: ib_write_bw 64 KiB, one VM: $(awk '$1 == 65536 { print $4 " MB/s" }' client.txt)"
