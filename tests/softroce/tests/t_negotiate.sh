#!/bin/sh
# topology: one
# timeout: 240
# Negotiation over rxe: success (with the server allowing fewer lanes than
# asked), and each kind of mismatch, named by field on the side that detects it.
set -eu
KEY=$(bench_key)
port=7500
# server_args client_args expected-field-on-server expected-field-on-client
run_case() {
  name=$1 sargs=$2 cargs=$3 sexp=$4 cexp=$5
  port=$((port + 1))
  echo "--- negotiate: $name"
  rm -f s.txt
  # shellcheck disable=SC2086
  rdmae_tt negotiate server --key "$KEY" --addr "$SELF" --port $port $sargs ${sexp:+--expect-fail "$sexp"} >s.txt 2>&1 &
  spid=$!
  wait_for listening s.txt 30
  # shellcheck disable=SC2086
  rdmae_tt negotiate client --key "$KEY" --addr "$SELF" --port $port $cargs ${cexp:+--expect-fail "$cexp"} || { echo "client side of '$name' failed"; kill $spid 2>/dev/null || true; cat s.txt; exit 1; }
  wait $spid || { echo "server side of '$name' failed:"; cat s.txt; exit 1; }
  sed 's/^/  server: /' s.txt
}
run_case "success, 4 lanes asked, server allows 2" "--lanes 2" "--lanes 4" "" ""
grep -q "2 lanes" s.txt || { echo "server did not settle on 2 lanes"; exit 1; }
grep -q "version 0x0201" s.txt || { echo "server did not settle on version 2.1"; exit 1; }
grep -q "receives 255 on lane 0, 32 on the others" s.txt || { echo "2.1: lane 1 did not keep 32 receives"; exit 1; }
run_case "a 2.0 server: 2.0 negotiated, every lane with the full ring" "--lanes 2 --min-version 0x0200 --max-version 0x0200" "--lanes 2" "" ""
grep -q "version 0x0200" s.txt || { echo "server did not settle on version 2.0"; exit 1; }
grep -q "receives 255 on lane 0, 255 on the others" s.txt || { echo "2.0: lane 1 did not keep the full ring"; exit 1; }
run_case "version ranges do not overlap" "" "--min-version 0x0300 --max-version 0x0300" "version" "version"
run_case "client's max fragmented size below the floor" "" "--frag-size 4096" "max_fragmented_size" "max_fragmented_size"
run_case "client's max rw size below the floor" "" "--rw-size 1024" "max_rw_size" "max_rw_size"
run_case "server's preferred send size over the client's max receive" "--send-size 16384" "--recv-size 8192" "refused it" "preferred_send_size"
echo "t_negotiate: all cases behaved"
