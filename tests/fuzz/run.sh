#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Run libFuzzer harnesses one after the other (doc/testing.md, "Fuzzing"):
#
#   tests/fuzz/run.sh runs N WORKDIR BIN...    N executions each (make fuzz-short)
#   tests/fuzz/run.sh time S WORKDIR BIN...    S seconds each (make fuzz)
#
# Each harness starts from its committed seeds, tests/fuzz/corpus/NAME, read
# only: what it finds goes to WORKDIR/corpus/NAME (libFuzzer writes to its
# first corpus directory). A crash, a leak, a sanitizer report or a timeout
# fails the harness; its input is kept as WORKDIR/artifacts/NAME-*. Prints
# one line per harness with its executions, then "fuzz: N passed, M failed";
# exits non-zero if any failed. Extra libFuzzer flags: FUZZ_FLAGS.
set -u

if [ $# -lt 4 ] || { [ "$1" != runs ] && [ "$1" != time ]; }; then
	echo "usage: $0 runs|time N WORKDIR BIN..." >&2
	exit 2
fi
mode=$1 amount=$2 work=$3
shift 3
seeds_root="$(cd "$(dirname "$0")" && pwd)/corpus"

# Most harnesses parse fixed-size structs; engine messages need room for
# RDMAE_PROTO_MAX_RUNS + 1 runs (16 KiB and a little).
max_len() {
	case "$1" in
	fuzz_proto) echo 20000 ;;
	*) echo 4096 ;;
	esac
}

passed=0 failed=0 total=0
for bin in "$@"; do
	name=$(basename "$bin")
	corpus="$work/corpus/$name" art="$work/artifacts"
	log="$work/$name.log"
	mkdir -p "$corpus" "$art"
	seeds=()
	[ -d "$seeds_root/$name" ] && seeds=("$seeds_root/$name")
	if [ "$mode" = runs ]; then limit=(-runs="$amount"); else limit=(-max_total_time="$amount"); fi
	start=$(date +%s%N)
	# shellcheck disable=SC2086  # FUZZ_FLAGS is a list of flags
	"$bin" "${limit[@]}" -max_len="$(max_len "$name")" -timeout=30 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix="$art/$name-" ${FUZZ_FLAGS:-} \
		"$corpus" ${seeds[@]+"${seeds[@]}"} >"$log" 2>&1
	rc=$?
	ms=$(( ($(date +%s%N) - start) / 1000000 ))
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	units=$(find "$corpus" -type f | wc -l)
	if [ $rc -eq 0 ] && [ -n "$execs" ]; then
		passed=$((passed + 1))
		total=$((total + execs))
		printf '%-16s %10s executions in %4d.%01d s (%d/s), work corpus %d\n' "$name" \
			"$execs" $((ms / 1000)) $((ms % 1000 / 100)) $((execs * 1000 / (ms > 0 ? ms : 1))) \
			"$units"
	else
		failed=$((failed + 1))
		echo "$name: FAILED (exit $rc) after $((ms / 1000)) s; from its log, $log:"
		grep -m 5 -E 'check failed|ERROR: |runtime error|SUMMARY' "$log"
		echo "..."
		tail -n 12 "$log"
		find "$art" -name "$name-*" | sed 's/^/  input: /'
	fi
done
echo "fuzz: $total executions in all"
echo "fuzz: $passed passed, $failed failed"
[ $failed -eq 0 ]
