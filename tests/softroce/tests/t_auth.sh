#!/bin/sh
# topology: one
# timeout: 240
# Authentication by a pre-shared key: the right key connects; a wrong key,
# or a key on one side only, fails on both sides with an error that says so
# and names the peer; a missing key without --auth-none, a key file that
# group or others can read and a key that is too short are refused before
# anything connects; --auth-none on both sides works and warns.
set -eu
KEY=$(bench_key)
(umask 077 && printf 'a-different-key-0123456789abcdef\n' >wrong)
port=7620
# name server_args client_args expected-on-server expected-on-client
run_case() {
  name=$1 sargs=$2 cargs=$3 sexp=$4 cexp=$5
  port=$((port + 1))
  echo "--- auth: $name"
  rm -f s.txt c.txt
  # shellcheck disable=SC2086
  rdmae_tt negotiate server --addr "$SELF" --port $port $sargs ${sexp:+--expect-fail "$sexp"} >s.txt 2>&1 &
  spid=$!
  wait_for listening s.txt 30
  # shellcheck disable=SC2086
  rdmae_tt negotiate client --addr "$SELF" --port $port $cargs ${cexp:+--expect-fail "$cexp"} >c.txt 2>&1 ||
    { echo "client side of '$name' failed:"; cat c.txt; kill $spid 2>/dev/null || true; cat s.txt; exit 1; }
  wait $spid || { echo "server side of '$name' failed:"; cat s.txt; exit 1; }
  sed 's/^/  client: /' c.txt
  sed 's/^/  server: /' s.txt
}
# The whole sentence, with the peer's address: --expect-fail matches a substring only.
says() { # file regex who
  grep -q "$2" "$1" || { echo "FAIL: the $3's error is not '$2'"; cat "$1"; exit 1; }
}
# A refusal before anything connects: one side alone, no peer.
refused() { # name side args expected
  echo "--- auth: $1"
  # shellcheck disable=SC2086
  rdmae_tt negotiate $2 --addr "$SELF" --port 7699 $3 --expect-fail "$4" >r.txt 2>&1 ||
    { echo "FAIL: '$1' was not refused with '$4'"; cat r.txt; exit 1; }
  sed 's/^/  /' r.txt
}

run_case "the right key" "--key $KEY" "--key $KEY" "" ""
says c.txt "^PASS" client
grep -q "auth=none" c.txt s.txt && { echo "FAIL: a warning about auth=none with a key"; exit 1; }

run_case "a wrong key" "--key $KEY" "--key wrong" "the peer does not know the key" "the peer does not know the key"
says s.txt "authentication failed with $SELF:[0-9]*: the peer does not know the key (its proof does not match)" server
says c.txt "authentication failed with $SELF:$port: the peer does not know the key (it rejected our proof)" client

run_case "a key on the server only" "--key $KEY" "--auth-none" "authentication failed" "authentication failed"
says s.txt "authentication failed with $SELF:[0-9]*: the peer sent no proof (it runs with auth=none)" server
says c.txt "authentication failed with $SELF:$port: the peer requires a key and we run with auth=none" client

run_case "a key on the client only" "--auth-none" "--key $KEY" "authentication failed" "authentication failed"
says s.txt "authentication failed with $SELF:[0-9]*: the peer offers a key, but this listener runs with auth=none" server
says c.txt "authentication failed with $SELF:$port: the peer runs with auth=none and we have a key" client

run_case "auth=none on both sides" "--auth-none" "--auth-none" "" ""
says c.txt "^PASS" client
says s.txt "warning: listener $SELF:$port: auth=none" server
says c.txt "warning: connection to $SELF:$port: auth=none" client

refused "no key, no --auth-none (server)" server "" "listener $SELF:7699: no key: give a key file"
refused "no key, no --auth-none (client)" client "" "connection to $SELF:7699: no key: give a key file"
refused "both a key and --auth-none" client "--key $KEY --auth-none" "both a key file ($KEY) and auth=none given"
cp "$KEY" loose
chmod 640 loose
refused "a key file the group can read (server)" server "--key loose" "key file loose: group or others have access (mode 0640)"
chmod 604 loose
refused "a key file others can read (client)" client "--key loose" "key file loose: group or others have access (mode 0604)"
(umask 077 && printf 'short\n' >short)
refused "a key that is too short" client "--key short" "key file short: too short (6 bytes, at least 16)"
refused "a key file that does not exist" client "--key nosuchkey" "key file nosuchkey: No such file or directory"
echo "t_auth: all cases behaved"
