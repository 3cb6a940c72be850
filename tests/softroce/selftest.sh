#!/usr/bin/env bash
# Self-test of the soft-RoCE bench itself: runs the scripts in selftest/
# (a pass, a failure, a timeout, a kernel panic, a two-VM test whose src side
# fails, then the two-VM link test, which must pass after it) and checks that
# bench.sh reports each one as it should. About 1.5 minutes. Exit 0 if so.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=$(mktemp "${TMPDIR:-/tmp}/rdmae-selftest.XXXXXX")
trap 'rm -f "$out"' EXIT
rc=0
RDMAE_TESTS_DIR=$HERE/selftest "$HERE/bench.sh" "$@" 2>&1 | tee "$out" || rc=$?
bad=0
expect() { # regex what
  if grep -Eq -- "$1" "$out"; then echo "selftest: ok    $2"; else echo "selftest: WRONG $2 (no line matching: $1)"; bad=1; fi
}
expect '^  pass  a_pass ' 'a passing test passes'
expect '^  FAIL  b_fail .*rc=3' 'a failing test fails with its rc'
expect '^  FAIL  c_timeout .*timed out' 'a test over its timeout is killed and fails'
expect 'killing leftover process .*sleep 100' 'processes a test leaves behind are killed'
expect '^  FAIL  z_panic .*Kernel panic' 'a kernel panic fails the test that caused it'
expect '^  FAIL  t1_src_fails .*src: fail.*dst: fail' 'a two-VM test fails if one side fails'
expect '^  pass  t2_link ' 'the two VMs resynchronise at the next test'
expect '\[host\] link off' 'the host acts on a link request'
expect '^softroce: 2 passed, 4 failed$' 'the summary line'
[[ $(grep -c '^softroce: [0-9]* passed, [0-9]* failed$' "$out") == 1 ]] || { echo "selftest: WRONG summary line count"; bad=1; }
[[ $(tail -1 "$out") =~ ^softroce: ]] || { echo "selftest: WRONG last line"; bad=1; }
[[ $rc -ne 0 ]] || { echo "selftest: WRONG bench.sh exited 0 despite failures"; bad=1; }
if [[ $bad == 0 ]]; then echo "selftest: all checks passed"; else echo "selftest: FAILED"; fi
exit $bad
