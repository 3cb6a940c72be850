#!/usr/bin/env bash
# Static checks: rdma/'s include graph (no cycle among its headers), clang's
# thread-safety analysis of rdma/, then cppcheck and clang-tidy over every C
# file of the project, then QEMU's checkpatch over the QEMU series.
# Every step must be clean; any finding fails `make check`.
set -euo pipefail
cd "$(dirname "$0")/.."

# rdma/'s include graph: each file and the project headers it includes, so a
# reader sees the layering at a glance; headers that include each other in a
# cycle fail (tsort names the loop). Then the layers (rdma/internal.h's file
# map): no file includes a header of a layer above its own, and no file calls
# a function defined in a file of a layer above its own. Public headers
# (rdmae_*.h) declare types every layer shares and sit in L0, but for
# rdmae_write.h, bulk.c's API; calls through any of them are caught by the
# call check. `tests/lint.sh graph` runs this step only.
LAYERS='
  wire.c 0 credits.c 0 frag.c 0 pace.c 0 runs.c 0 auth.c 0 err.c 0 time.c 0
  opts.c 0 opts.h 0 faults.c 0 faults.h 0
  rdmae_auth.h 0 rdmae_conn.h 0 rdmae_credits.h 0 rdmae_err.h 0 rdmae_frag.h 0
  rdmae_pace.h 0 rdmae_runs.h 0 rdmae_time.h 0 rdmae_tsa.h 0 rdmae_wire.h 0
  qp.c 1 qp.h 1 mem.c 1 mem.h 1 populate.c 1 rdmae_region.h 1 dev.c 1 dev.h 1 rdmae_dev.h 1
  mr.c 1 mr.h 1
  conn.c 2 lane.c 2 msg.c 2 negotiate.c 2 connect.c 2 listen.c 2 progress.c 2 attach.c 2
  internal.h 2
  bulk.c 3 rdmae_write.h 3
'
include_graph() {
  local edges defs calls bad=0
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
  # Every file of rdma/ has a layer.
  for f in rdma/*.c rdma/*.h; do
    f=${f#rdma/}
    awk -v f="$f" -v t="$LAYERS" 'BEGIN { n = split(t, a, /[ \n]+/)
      for (i = 1; i < n; i++) if (a[i] == f) exit 0; exit 1 }' ||
      { echo "lint: rdma/$f has no layer in tests/lint.sh (LAYERS) and rdma/internal.h"; bad=1; }
  done
  echo "lint: rdma/ layers (L0 pure, L1 qp/mem/dev/mr, L2 connection, L3 bulk): includes point down"
  awk -v t="$LAYERS" 'BEGIN { n = split(t, a, /[ \n]+/); for (i = 1; i < n; i++) if (a[i] != "") { L[a[i]] = a[i + 1]; i++ } }
       ($1 in L) && ($2 in L) && L[$2] > L[$1] {
         printf "lint: %s (L%d) includes %s (L%d), a layer above it\n", $1, L[$1], $2, L[$2]; bad = 1 }
       END { exit bad }' <<<"$edges" || bad=1
  # Calls: a function is the file's that defines it (a definition starts a
  # line, a prototype ends with ";"); a call names it followed by "(".
  defs=$(awk 'FNR == 1 { f = FILENAME; sub(/.*\//, "", f) }
              /^[a-z]/ && !/;[ \t]*$/ && match($0, /rdmae_[a-z0-9_]+\(/) {
                print substr($0, RSTART, RLENGTH - 1), f }' rdma/*.c)
  calls=$(awk 'FNR == 1 { f = FILENAME; sub(/.*\//, "", f) }
               !/^[a-z]/ { s = $0
                 while (match(s, /rdmae_[a-z0-9_]+[ \t]*\(/)) {
                   n = substr(s, RSTART, RLENGTH); sub(/[ \t]*\($/, "", n); print f, n
                   s = substr(s, RSTART + RLENGTH) } }' rdma/*.c | sort -u)
  echo "lint: rdma/ layers: calls point down"
  awk -v t="$LAYERS" 'BEGIN { n = split(t, a, /[ \n]+/); for (i = 1; i < n; i++) if (a[i] != "") { L[a[i]] = a[i + 1]; i++ } }
       FNR == NR { def[$1] = $2; next }
       ($2 in def) && (def[$2] in L) && ($1 in L) && L[def[$2]] > L[$1] {
         printf "lint: %s (L%d) calls %s of %s (L%d), a layer above it\n", $1, L[$1], $2, def[$2], L[def[$2]]
         bad = 1 }
       END { exit bad }' <(echo "$defs") <(echo "$calls") || bad=1
  [ $bad = 0 ] || { echo "lint: rdma/'s layers are broken (rdma/internal.h, file map)"; return 1; }
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

# QEMU's files of ours (qemu-plugin/src/) build only inside QEMU's tree, with
# its headers: QEMU's own checkpatch judges them, at the end.
mapfile -t files < <(git ls-files '*.c' ':!qemu-plugin/src/' 2>/dev/null ||
                     find rdma engine perf tests -name '*.c')
[ ${#files[@]} -gt 0 ] || { echo "lint: no C files found"; exit 1; }

jobs=$(nproc 2>/dev/null || echo 2)
echo "lint: cppcheck on ${#files[@]} files"
cppcheck -j "$jobs" --quiet --error-exitcode=1 --inline-suppr --std=c11 -D_GNU_SOURCE -Irdma -Iengine -Iperf \
  --enable=warning,style,performance,portability \
  --suppress=missingIncludeSystem --suppress=unusedFunction \
  "${files[@]}"

# Left out: the analyzer's "insecure API" check flags every memcpy/memset, which C
# code cannot avoid; the padding check flags option structs, where layout follows
# meaning (hot structures are laid out by hand).
checks='clang-analyzer-*,bugprone-*,-bugprone-easily-swappable-parameters,-bugprone-reserved-identifier,-clang-analyzer-security.insecureAPI.DeprecatedOrUnsafeBufferHandling,-clang-analyzer-optin.performance.Padding'
# One clang-tidy per core: serially it was the longest step of make check's
# lint on two cores. One file per run: with several, the analyzer's va_list
# state leaks from one file into the next (clang 14 reports every vsnprintf
# as "called with an uninitialized va_list"). Each run prints its findings
# in one piece, so parallel runs do not interleave.
echo "lint: clang-tidy on ${#files[@]} files ($jobs at a time)"
export checks
printf '%s\0' "${files[@]}" |
  xargs -0 -n 1 -P "$jobs" sh -c 'out=$(clang-tidy --quiet --checks="$checks" --warnings-as-errors="*" "$@" -- \
      -std=c11 -D_GNU_SOURCE -Irdma -Iengine -Iperf 2>&1) || { printf "%s\n" "$out"; exit 1; }' clang-tidy-batch ||
  { echo "lint: clang-tidy found problems"; exit 1; }

# The QEMU series and our QEMU files, by QEMU's scripts/checkpatch.pl (from
# the orig tarball; fetched once into the cache).
echo "lint: QEMU's checkpatch on qemu-plugin/patches/ and qemu-plugin/src/"
qemu-plugin/checkpatch.sh
echo "lint: clean"
