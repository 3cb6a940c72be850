#!/usr/bin/env bash
# Static checks: rdma/'s include graph (no cycle among its headers), clang's
# thread-safety analysis of rdma/, then cppcheck and clang-tidy over every C
# file of the project.
# Every step must be clean; any finding fails `make check`.
set -euo pipefail
cd "$(dirname "$0")/.."

# rdma/'s include graph: each file and the project headers it includes, so a
# reader sees the layering at a glance; headers that include each other in a
# cycle fail (tsort names the loop). `tests/lint.sh graph` runs this step only.
include_graph() {
  local edges
  edges=$(awk 'FNR == 1 { f = FILENAME; sub(/.*\//, "", f) }
               /^[ \t]*#[ \t]*include[ \t]*"/ {
                 h = $0; sub(/^[^"]*"/, "", h); sub(/".*$/, "", h); print f, h }' \
          rdma/*.c rdma/*.h)
  echo "lint: rdma/ include graph (file: the project headers it includes)"
  awk '{ deps[$1] = deps[$1] " " $2 } END { for (f in deps) print "  " f ":" deps[f] }' \
    <<<"$edges" | sort
  if ! awk '$1 ~ /\.h$/ && $2 ~ /\.h$/' <<<"$edges" | tsort >/dev/null; then
    echo "lint: rdma/ headers include each other in a cycle (the loop is above)"
    return 1
  fi
}
include_graph
[ "${1:-}" != graph ] || exit 0

# Lock rules: clang's thread-safety analysis over rdma/ proves that every
# caller of a _locked function holds the connection lock (contracts in
# rdma/internal.h, macros in rdma/rdmae_tsa.h). -Wno-thread-safety-precise:
# a lane's lock is l->conn->lock, and clang cannot tell l->conn is the c whose
# lock the caller holds; calling with no lock at all still fails.
# `tests/lint.sh tsa` runs this step only.
thread_safety() {
  local f fail=0
  echo "lint: clang -Wthread-safety on rdma/"
  for f in rdma/*.c; do
    clang -fsyntax-only -Wthread-safety -Wno-thread-safety-precise -Werror -std=c11 \
      -D_GNU_SOURCE -Irdma -Iengine -Iperf "$f" || fail=1
  done
  [ $fail = 0 ] || { echo "lint: thread-safety analysis found a lock rule broken"; return 1; }
}
thread_safety
[ "${1:-}" != tsa ] || exit 0

mapfile -t files < <(git ls-files '*.c' 2>/dev/null || find rdma engine perf tests -name '*.c')
[ ${#files[@]} -gt 0 ] || { echo "lint: no C files found"; exit 1; }

echo "lint: cppcheck on ${#files[@]} files"
cppcheck --quiet --error-exitcode=1 --inline-suppr --std=c11 -D_GNU_SOURCE -Irdma -Iengine -Iperf \
  --enable=warning,style,performance,portability \
  --suppress=missingIncludeSystem --suppress=unusedFunction \
  "${files[@]}"

# Left out: the analyzer's "insecure API" check flags every memcpy/memset, which C
# code cannot avoid; the padding check flags option structs, where layout follows
# meaning (hot structures are laid out by hand).
checks='clang-analyzer-*,bugprone-*,-bugprone-easily-swappable-parameters,-bugprone-reserved-identifier,-clang-analyzer-security.insecureAPI.DeprecatedOrUnsafeBufferHandling,-clang-analyzer-optin.performance.Padding'
echo "lint: clang-tidy on ${#files[@]} files"
fail=0
for f in "${files[@]}"; do
  out=$(clang-tidy --quiet --checks="$checks" --warnings-as-errors='*' "$f" -- \
        -std=c11 -D_GNU_SOURCE -Irdma -Iengine -Iperf 2>&1) || { echo "$out"; fail=1; }
done
[ $fail = 0 ] || { echo "lint: clang-tidy found problems"; exit 1; }
echo "lint: clean"
