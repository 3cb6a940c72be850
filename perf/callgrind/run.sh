#!/usr/bin/env bash
# make bench-callgrind: the engine's instructions per dirty page on the save
# path (bitmap to posted RDMA WRITE, verbs stubbed), under callgrind, for a
# few dirty patterns; and what verification's page hashing adds per page.
#
#   perf/callgrind/run.sh PAGECOST_BINARY
# Environment: PAGECOST_MIB (guest RAM, default 64), PAGECOST_ROUNDS (4),
# PAGECOST_LANES (4), RDMAE_RESULTS (default <repo>/bench-results).
# Writes RESULTS/callgrind.json and RESULTS/callgrind.txt (the figures and
# callgrind_annotate of the dense and alternate patterns).
set -euo pipefail
bin=$(realpath "$1")
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=${RDMAE_RESULTS:-$REPO/bench-results}
MIB=${PAGECOST_MIB:-64}
ROUNDS=${PAGECOST_ROUNDS:-4}
LANES=${PAGECOST_LANES:-4}
GOAL=100   # the issue's goal: instructions per dirty page (issue 10)
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Instructions collected (Ir) in a callgrind output file.
ir() { awk '$1 == "totals:" || $1 == "summary:" { print $2; exit }' "$1"; }

json="["
sep=
: >"$work/report.txt"
for pat in dense alternate sparse64 random10 hash; do
  if [[ $pat == hash ]]; then toggles=(--toggle-collect=bench_hash); else
    toggles=(--toggle-collect=bench_walk --toggle-collect=stub_reap); fi
  out=$work/cg.$pat
  valgrind --tool=callgrind --callgrind-out-file="$out" "${toggles[@]}" \
    "$bin" "$pat" "$MIB" "$ROUNDS" "$LANES" >"$work/$pat.txt" 2>"$work/$pat.err" ||
    { cat "$work/$pat.err"; exit 1; }
  line=$(grep '^pagecost:' "$work/$pat.txt")
  pages=$(awk '{ print $4 }' <<<"$line")
  wrs=$(awk '{ print $10 }' <<<"$line")
  total=$(ir "$out")
  per=$(awk -v t="$total" -v p="$pages" -v r="$ROUNDS" 'BEGIN { printf "%.1f", t / (p * r) }')
  perwr=$(awk -v t="$total" -v w="$wrs" -v r="$ROUNDS" 'BEGIN { if (w > 0) printf "%.1f", t / w; else print "null" }')
  pages_per_wr=$(awk -v p="$pages" -v w="$wrs" -v r="$ROUNDS" 'BEGIN { if (w > 0) printf "%.2f", p * r / w; else print "null" }')
  if [[ $pat == hash ]]; then
    printf '%-10s %10s Ir over %d pages x %d rounds: %8s instructions per page (hashing for verification, 4 KiB pages)\n' \
      "$pat" "$total" "$pages" "$ROUNDS" "$per" | tee -a "$work/report.txt"
  else
    printf '%-10s %10s Ir over %d pages x %d rounds: %8s instructions per dirty page (%s per WRITE WR, %s pages per WR)\n' \
      "$pat" "$total" "$pages" "$ROUNDS" "$per" "$perwr" "$pages_per_wr" | tee -a "$work/report.txt"
  fi
  json+="$sep{\"pattern\":\"$pat\",\"pages\":$pages,\"rounds\":$ROUNDS,\"lanes\":$LANES,\"instructions\":$total,\"per_page\":$per,\"per_wr\":$perwr,\"pages_per_wr\":$pages_per_wr}"
  sep=,
  if [[ $pat == dense || $pat == alternate ]]; then
    { echo; echo "==== callgrind_annotate, $pat (inclusive, top 25) ===="
      callgrind_annotate --inclusive=yes "$out" 2>/dev/null | awk '/^Ir/ { p = 1 } p && n++ < 40'
      echo; echo "==== callgrind_annotate, $pat (self, top 20) ===="
      callgrind_annotate "$out" 2>/dev/null | awk '/^Ir/ { p = 1 } p && n++ < 25'; } >>"$work/annotate.txt"
  fi
done
json+="]"
worst=$(jq -r '[.[] | select(.pattern != "hash") | .per_page] | max' <<<"$json")
jq --argjson goal "$GOAL" --arg mib "$MIB" \
  '{goal_per_page: $goal, guest_mib: ($mib | tonumber), worst_per_page: ([.[] | select(.pattern != "hash") | .per_page] | max), patterns: .}' \
  <<<"$json" >"$OUT/callgrind.json"
{ cat "$work/report.txt"; echo; echo "worst pattern: $worst instructions per dirty page (goal <= $GOAL)"; cat "$work/annotate.txt"; } >"$OUT/callgrind.txt"
echo
echo "worst pattern: $worst instructions per dirty page (goal <= $GOAL); details: $OUT/callgrind.txt, $OUT/callgrind.json"
