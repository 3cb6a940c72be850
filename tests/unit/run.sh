#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Run cmocka unit test binaries, show their output, and sum up their tests:
#   tests/unit/run.sh build/san/unit/test_wire build/san/unit/test_credits ...
# Exits non-zero if any test failed or any binary did not finish cleanly (a
# crash, a sanitizer report or a missing binary counts as a failure).
set -u

passed=0
failed=0
bad_bins=()

if [ $# -eq 0 ]; then
	echo "usage: $0 TEST_BINARY..." >&2
	exit 2
fi

# cmocka may have been told to write XML or TAP; the summary lines below need its default.
export CMOCKA_MESSAGE_OUTPUT=STDOUT
unset CMOCKA_XML_FILE

# The number in the last line of this test's output that matches $1 (one \(group\)), or nothing.
count() {
	sed -n "s/$1/\\1/p" "$tmp/out" "$tmp/err" | tail -n 1
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for bin in "$@"; do
	name=$(basename "$bin")
	case "$bin" in */*) ;; *) bin="./$bin" ;; esac
	echo "=== $name"
	if [ ! -x "$bin" ]; then
		echo "$name: not found or not executable"
		failed=$((failed + 1))
		bad_bins+=("$name")
		continue
	fi

	# The streams are kept apart: cmocka writes its summary to stderr while
	# stdout is block-buffered, and a pipe shared by both could splice them
	# mid-line and hide a summary line from the parser.
	"$bin" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	cat "$tmp/out" "$tmp/err"

	# cmocka's summary: "[  PASSED  ] N test(s)." and "[  FAILED  ] N test(s), listed below:".
	ran=$(count '^\[==========\] Running \([0-9][0-9]*\) test(s)\..*')
	p=$(count '^\[  PASSED  \] \([0-9][0-9]*\) test(s)\..*')
	f=$(count '^\[  FAILED  \] \([0-9][0-9]*\) test(s).*')
	ok=$(cat "$tmp/out" "$tmp/err" | grep -c '^\[       OK \]')

	if [ -z "$p" ] && [ -z "$f" ]; then
		# No summary: the binary died mid-run (signal, sanitizer abort).
		# Trust the tests seen to pass; every other one failed, and at least one.
		ran=${ran:-0}
		p=$ok
		f=$((ran > p ? ran - p : 1))
		echo "$name: no cmocka summary (exit status $rc)"
	else
		p=${p:-0}
		f=${f:-0}
		if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
			# All passed, then the binary failed anyway (e.g. LeakSanitizer at exit).
			f=1
			echo "$name: tests passed but exit status is $rc"
		fi
	fi

	passed=$((passed + p))
	failed=$((failed + f))
	if [ "$f" -gt 0 ] || [ "$rc" -ne 0 ]; then
		bad_bins+=("$name")
	fi
done

if [ ${#bad_bins[@]} -gt 0 ]; then
	echo "failing: ${bad_bins[*]}"
fi
echo "unit: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ ${#bad_bins[@]} -eq 0 ]
