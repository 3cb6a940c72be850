#!/bin/sh
# topology: one
# timeout: 300
# A listener survives bad peers: a client whose negotiation fails, one with
# the wrong key, and a connection that is not rdmae at all (rping: foreign
# private data), are logged and dropped; the server goes on accepting, and a real client that
# comes after them transfers and is verified.
set -eu
KEY=$(bench_key)
rdmae_tt write server --key "$KEY" --addr "$SELF" --port 7595 --size 64M --lanes 4 >s.txt 2>&1 &
spid=$!
wait_for listening s.txt 30
echo "-- a client with a version range the server does not speak"
rdmae_tt negotiate client --key "$KEY" --addr "$SELF" --port 7595 --min-version 0x0300 --max-version 0x0300 \
  --expect-fail version
echo "-- a client with the wrong key"
(umask 077 && printf 'a-key-the-server-does-not-have\n' >wrong)
rdmae_tt negotiate client --key wrong --addr "$SELF" --port 7595 --expect-fail "authentication failed"
echo "-- a foreign rdma_cm client (rping)"
timeout 20 rping -c -a "$SELF" -p 7595 -C 1 -v >rp.txt 2>&1 || true
sleep 1
echo "-- the real client"
rdmae_tt write client --key "$KEY" --addr "$SELF" --port 7595 --size 64M --lanes 4 >c.txt 2>&1 ||
  { cat c.txt s.txt; kill $spid 2>/dev/null; exit 1; }
wait $spid || { cat s.txt; exit 1; }
cat s.txt
grep -q "server verified every byte" c.txt
grep -q "dropped a connection from .*version" s.txt || { echo "FAIL: the bad negotiation was not logged"; exit 1; }
grep -q "dropped a connection from .*does not know the key" s.txt || { echo "FAIL: the wrong key was not logged"; exit 1; }
grep -q "refused a connection" s.txt || { echo "FAIL: the foreign connection was not logged"; exit 1; }
echo "t_listener: the server outlived both bad peers"
