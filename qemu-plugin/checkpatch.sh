#!/usr/bin/env bash
# QEMU's own style check (scripts/checkpatch.pl from the same orig tarball the
# series applies to) over every patch of qemu-plugin/patches/ and, with
# --file, over our new QEMU files (qemu-plugin/src/). Any error or warning
# fails: upstream's reviewers read its output first. tests/lint.sh runs it.
#
#   qemu-plugin/checkpatch.sh            everything
#   qemu-plugin/checkpatch.sh FILE...    these patches or files only
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=qemu-plugin/tarball.sh
. "$here/tarball.sh"

tarball=$(qemu_tarball) || { echo "checkpatch: no QEMU $VERSION source to take checkpatch.pl from" >&2; exit 1; }
dir=$CACHE/checkpatch-${SHA256:0:16}
script=$dir/checkpatch.pl
if [[ ! -f $script ]]; then
  tmp=$(mktemp -d "$CACHE/checkpatch.XXXXXX")
  tar -xJf "$tarball" -C "$tmp" --strip-components=2 "qemu-$VERSION/scripts/checkpatch.pl"
  mkdir -p "$dir"
  mv "$tmp/checkpatch.pl" "$script.tmp" && mv "$script.tmp" "$script"
  rm -rf "$tmp"
fi

if [[ $# -gt 0 ]]; then
  items=("$@")
else
  mapfile -t items < <(find "$here/patches" -maxdepth 1 -name '*.patch' | LC_ALL=C sort
                       find "$here/src" -type f \( -name '*.c' -o -name '*.h' \) | LC_ALL=C sort)
fi
[[ ${#items[@]} -gt 0 ]] || { echo "checkpatch: nothing to check" >&2; exit 1; }

fail=0
for f in "${items[@]}"; do
  args=(--no-tree)
  [[ $f == *.patch ]] || args+=(--file)
  out=$(perl "$script" "${args[@]}" "$f" 2>&1) || true
  total=$(grep -m1 '^total:' <<<"$out" || true)
  if [[ $total == "total: 0 errors, 0 warnings,"* ]]; then
    printf 'checkpatch: %s: clean\n' "${f#"$here"/}"
  else
    printf '%s\n' "$out"
    printf 'checkpatch: %s: %s\n' "${f#"$here"/}" "${total:-no verdict}"
    fail=1
  fi
done
[[ $fail = 0 ]] || { echo "checkpatch: QEMU's style check failed (above)"; exit 1; }
