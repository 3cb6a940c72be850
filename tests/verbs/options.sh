#!/usr/bin/env bash
# The command lines of the two migration drivers, on the host: rdmae_mig and
# rdmae-perf migrate take the options they share (perf/rdmae_migopt.h) the
# same way, refuse a bad value with exit status 2 and a message that names the
# option and the value, and accept every option set the bench tests give them.
# No RDMA device is needed: a command line is judged before any device is
# touched, and a good one then fails to connect or listen (status 1), or
# listens (on a host with a device) until the timeout ends it.
#
#   tests/verbs/options.sh RDMAE_MIG RDMAE_PERF      (make unit runs it)
# Prints one line per check and "options: N passed, M failed"; exits non-zero
# when M > 0.
set -euo pipefail
MIG=$1
PERF=$2
ADDR=(--addr 127.0.0.1 --port 1 --auth-none)
passed=0
failed=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT

ok() { passed=$((passed + 1)); }
ko() { failed=$((failed + 1)); echo "options: FAIL: $*"; sed 's/^/  | /' "$out"; }

# run PROG ARGS...: its status in rc, its stderr and stdout in $out.
run() { rc=0; timeout 10 "$@" >"$out" 2>&1 </dev/null || rc=$?; }

# bad WANT PROG ARGS...: status 2 and one line "NAME: WANT (--help lists the options)".
bad() {
  local want=$1
  shift
  run "$@"
  if [[ $rc == 2 ]] && grep -qF ": $want (--help lists the options)" "$out"; then ok
  else ko "'${*##*/}' gave status $rc, want 2 and '$want'"; fi
}

# good PROG ARGS...: the command line is taken (not a usage error).
good() {
  run "$@"
  if [[ $rc != 2 ]] && ! grep -q -- "--help lists the options\|^usage:" "$out"; then ok
  else ko "'${*##*/}' refused (status $rc)"; fi
}

# Each driver, in each role, with the shared options.
drivers=("$MIG src" "$MIG dst" "$PERF migrate client" "$PERF migrate server")

# ---- a bad value of a shared option: the same message from both drivers ----
while read -r opt val want; do
  for d in "${drivers[@]}"; do
    # shellcheck disable=SC2086  # a driver is a command and its role
    bad "$opt '$val': $want" $d "${ADDR[@]}" "$opt" "$val"
  done
done <<'EOF'
--size 1Q not a size (a number with an optional K, M or G)
--size 512K less than 1048576 bytes
--size -1M not a size (a number with an optional K, M or G)
--rate -1 not a rate in MB/s (a number >= 0)
--rate 8x not a rate in MB/s (a number >= 0)
--downtime 1.5 not a whole number from 0 to 86400000
--max-rounds 0 not a whole number from 1 to 4294967295
--bw-cap fast not a rate in MB/s (a number >= 0)
--lanes 0 not a whole number from 1 to 16
--lanes 17 not a whole number from 1 to 16
--lanes 4x not a whole number from 1 to 16
--hugepages yes not auto, on or off
--timeout -1 not a whole number from 0 to 2147483647
EOF
for d in "${drivers[@]}"; do
  # --hugepages takes a value in both: a bare one is a usage error.
  # shellcheck disable=SC2086
  run $d "${ADDR[@]}" --hugepages
  if [[ $rc == 2 ]] && grep -q "requires an argument" "$out"; then ok; else ko "$d --hugepages without a value: status $rc"; fi
  # shellcheck disable=SC2086
  good $d "${ADDR[@]}" --size 64M --rate 0.5 --downtime 300 --max-rounds 3 --bw-cap 16 --lanes 16 \
    --hugepages off --no-verify --timeout 2000
  # shellcheck disable=SC2086
  run $d --help
  if [[ $rc == 0 ]] && grep -q -- "--hugepages auto|on|off" "$out"; then ok; else ko "$d --help: status $rc"; fi
done

# ---- each driver's own options ----
bad "--expect 'bogus': not converge, noconverge, cancel, mismatch, unknown or fail" \
  "$MIG" src "${ADDR[@]}" --expect bogus
bad "--cancel-at 'never': not preflight, round or state" "$MIG" src "${ADDR[@]}" --cancel-at never
bad "--cancel-side 'left': not src or dst" "$MIG" src "${ADDR[@]}" --cancel-side left
bad "--hold-at 'commit': not a point of the source (state, state-mid)" "$MIG" src "${ADDR[@]}" --hold-at commit
bad "--hold-at 'round:0': MS is not a number of milliseconds above 0" "$MIG" dst "${ADDR[@]}" --hold-at round:0
bad "--sessions '9': not a whole number from 1 to 8" "$MIG" src "${ADDR[@]}" --sessions 9
bad "--warmup must be below --repeat" "$MIG" src "${ADDR[@]}" --repeat 3 --warmup 3
bad "--credits '70000': not a whole number from 1 to 65535" "$MIG" src "${ADDR[@]}" --credits 70000
bad "--keepalive '2s': not a whole number from 0 to 2147483647" "$MIG" src "${ADDR[@]}" --keepalive 2s
bad "--recv-queue 'lots': not a size (a number with an optional K, M or G)" "$MIG" dst "${ADDR[@]}" --recv-queue lots
bad "--addr is required" "$MIG" src --auth-none
bad "the first argument must be src or dst" "$MIG" source "${ADDR[@]}"
bad "unexpected argument 'extra'" "$MIG" src "${ADDR[@]}" extra
bad "--pattern 'zigzag': not uniform, hotset or sequential" "$PERF" migrate client "${ADDR[@]}" --pattern zigzag
bad "--dirtiers '0': not a whole number from 1 to 16" "$PERF" migrate client "${ADDR[@]}" --dirtiers 0
bad "--numa 'near': not a node number or none" "$PERF" migrate client "${ADDR[@]}" --numa near
bad "--hot '1Q': not a size (a number with an optional K, M or G)" "$PERF" migrate client "${ADDR[@]}" --hot 1Q
bad "--addr is required" "$PERF" migrate client --auth-none
bad "the first argument must be server or client" "$PERF" migrate src "${ADDR[@]}"

# ---- the option sets the bench tests use (tests/softroce/tests/*.sh) ----
KA="--keepalive 2000 --keepalive-timeout 2000"
while read -r role opts; do
  # shellcheck disable=SC2086
  good "$MIG" "$role" "${ADDR[@]}" $opts
done <<EOF
dst --size 64M --expect fail
src --size 64M --rate 1 --expect fail
dst --size 64M --rate 1 --dst-size 32M --expect fail
dst --size 64M --rate 1 --drop-ipc-lock --expect fail
dst $KA --size 64M --rate 1 --hold-at preflight --expect fail
src $KA --size 128M --rate 1 --bw-cap 16 --send-timeout 3000 --marks --expect fail
dst --size 128M --rate 1 --bw-cap 16 --hold-at round --recv-queue 4096 --credits 16 --expect fail
src $KA --size 64M --rate 1 --hold-at state-mid --expect fail
dst $KA --size 64M --rate 1 --hold-at commit --expect unknown
src --size 64M --rate 1 --hugepages on --quiet
src --size 64M --rate 1 --hugepages on --expect mismatch
dst --size 64M --hugepages on
src --size 256M --rate 80 --bw-cap 24 --max-rounds 3 --expect noconverge
src --size 64M --cancel-at round --cancel-side src --expect cancel
dst --size 64M --cancel-at state --cancel-side dst --expect cancel
dst --size 32M --repeat 50 --warmup 2 --quiet
src --size 32M --sessions 6 --lanes 2 --on-demand --no-verify
dst --size 64M --require-verify --stall 2000 --timeout 2000 --dst-name other.ram
EOF
while read -r role opts; do
  # shellcheck disable=SC2086
  good "$PERF" migrate "$role" "${ADDR[@]}" $opts
done <<'EOF'
server --json md.json
client --size 64M --rate 4 --pattern hotset --dirtiers 2 --quiet --json mig.json
server --hugepages off
client --size 32M --rate 2 --pattern sequential --hugepages off --quiet --json mig2.json
client --size 128M --rate 4 --no-verify --numa none --hot 8M --plot m.png
EOF

echo "options: $passed passed, $failed failed"
[[ $failed == 0 ]]
