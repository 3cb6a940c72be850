#!/bin/sh
# topology: two
# timeout: 300
# Addressing: connect by IPv4, by host name, by IPv6, with a local bind
# address; and the setup errors, each with its clear message: a bind address
# no RDMA device has, a port nobody listens on, a host that does not answer.
set -eu
KEY=$(bench_key)
$IP -6 addr add "fd00:9::$( [ "$ROLE" = src ] && echo 1 || echo 2)/64" dev "$NETDEV" nodad
echo "10.9.9.2 dsthost" >>/etc/hosts
# rxe learns the new GID from the netdev; give it a moment to appear.
i=0; until grep -q "fd00:0009" /sys/class/infiniband/rxe0/ports/1/gids/* 2>/dev/null || [ $i -ge 50 ]; do sleep 0.1; i=$((i+1)); done

serve() { # port [addr]
  rdmae_tt negotiate server --key "$KEY" --addr "${2:-$SELF}" --port "$1" >"s$1.txt" 2>&1 &
  spid=$!
  wait_for listening "s$1.txt" 30
}
if [ "$ROLE" = dst ]; then
  serve 7701; bench_sync v4; wait $spid || { cat s7701.txt; exit 1; }
  serve 7702; bench_sync name; wait $spid || { cat s7702.txt; exit 1; }
  serve 7703 fd00:9::2; bench_sync v6; wait $spid || { cat s7703.txt; exit 1; }
  serve 7704; bench_sync bind; wait $spid || { cat s7704.txt; exit 1; }
  bench_sync errors 120
  echo "dst: every connection was served"
else
  bench_sync v4
  rdmae_tt negotiate client --key "$KEY" --addr 10.9.9.2 --port 7701 | tee c.txt
  bench_sync name
  rdmae_tt negotiate client --key "$KEY" --addr dsthost --port 7702 | tee -a c.txt
  bench_sync v6
  rdmae_tt negotiate client --key "$KEY" --addr fd00:9::2 --port 7703 | tee -a c.txt
  grep -q "\[fd00:9::2\]:7703" c.txt || { echo "no IPv6 peer in the output"; exit 1; }
  bench_sync bind
  rdmae_tt negotiate client --key "$KEY" --addr 10.9.9.2 --port 7704 --bind 10.9.9.1 | tee -a c.txt
  echo "--- errors"
  rdmae_tt negotiate client --key "$KEY" --addr 10.9.9.2 --port 7704 --bind 10.9.9.77 \
    --expect-fail "no RDMA device has address 10.9.9.77"
  rdmae_tt negotiate client --key "$KEY" --addr 10.9.9.2 --port 7799 --expect-fail "connection refused by 10.9.9.2:7799"
  rdmae_tt negotiate client --key "$KEY" --addr 10.9.9.99 --port 7704 --timeout 2000 --expect-fail "10.9.9.99:7704: timed out after 2000 ms"
  bench_sync errors
fi
