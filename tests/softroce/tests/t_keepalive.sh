#!/bin/sh
# topology: one
# timeout: 120
# Keepalive: the client process is SIGSTOPped (its kernel still ACKs at the
# transport level); the server's probe goes unanswered and the connection
# ends with a clear error within idle + timeout (1 s + 1 s) plus slack.
set -eu
KEY=$(bench_key)
rdmae_tt hold server --key "$KEY" --addr "$SELF" --port 7570 --keepalive 1000 --keepalive-timeout 1000 --expect-error keepalive --within 8000 >s.txt 2>&1 &
spid=$!
wait_for listening s.txt 30
rdmae_tt hold client --key "$KEY" --addr "$SELF" --port 7570 --keepalive 60000 >c.txt 2>&1 &
cpid=$!
wait_for holding c.txt 30
kill -STOP $cpid
echo "client $cpid stopped"
wait $spid && rc=0 || rc=$?
kill -KILL $cpid 2>/dev/null || true
wait $cpid 2>/dev/null || true
cat s.txt
exit $rc
