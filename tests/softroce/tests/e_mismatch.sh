#!/bin/sh
# topology: one
# timeout: 200
# Pre-flight refuses a destination whose blocks differ, by size and by name,
# with an error naming the block on both sides; no guest data moves.
set -eu
KEY=$(bench_key)
check() {
  what=$1 dargs=$2 port=$3
  echo "--- pre-flight mismatch: $what"
  # shellcheck disable=SC2086
  rdmae_mig dst --key "$KEY" --addr "$SELF" --port $port --size 64M $dargs --expect mismatch >d.txt 2>&1 &
  dpid=$!
  wait_for listening d.txt 30
  rdmae_mig src --key "$KEY" --addr "$SELF" --port $port --size 64M --rate 1 --expect mismatch >s.txt 2>&1 && rc=0 || rc=$?
  wait $dpid && drc=0 || drc=$?
  cat s.txt d.txt
  [ $rc = 0 ] && [ $drc = 0 ] || exit 1
  grep -q "pre-flight passed" s.txt && { echo "pre-flight passed on a mismatch"; exit 1; }
  grep -Eq "$4" s.txt || { echo "source error does not say '$4'"; exit 1; }
  grep -Eq "$4" d.txt || { echo "destination error does not say '$4'"; exit 1; }
}
check "size" "--dst-size 32M" 7840 "pc.ram.*(size|bytes)"
check "name" "--dst-name pc.ram.other" 7841 "pc.ram"

# Huge pages: required by the source and present at the destination, a
# migration goes through; required but absent, pre-flight refuses it.
echo 160 >/proc/sys/vm/nr_hugepages
echo "--- huge pages required and present"
rdmae_mig dst --key "$KEY" --addr "$SELF" --port 7842 --size 64M --hugepages on >d.txt 2>&1 &
dpid=$!
wait_for listening d.txt 30
rdmae_mig src --key "$KEY" --addr "$SELF" --port 7842 --size 64M --rate 1 --hugepages on --quiet >s.txt 2>&1 && rc=0 || rc=$?
wait $dpid && drc=0 || drc=$?
grep -hE "verified|PASS|FAIL|ended" s.txt d.txt
[ $rc = 0 ] && [ $drc = 0 ] || { cat s.txt d.txt; exit 1; }
echo "--- huge pages required, destination on small pages"
rdmae_mig dst --key "$KEY" --addr "$SELF" --port 7843 --size 64M --expect mismatch >d.txt 2>&1 &
dpid=$!
wait_for listening d.txt 30
rdmae_mig src --key "$KEY" --addr "$SELF" --port 7843 --size 64M --rate 1 --hugepages on --expect mismatch >s.txt 2>&1 && rc=0 || rc=$?
wait $dpid && drc=0 || drc=$?
cat s.txt d.txt
[ $rc = 0 ] && [ $drc = 0 ] || exit 1
grep -Eiq "huge" d.txt || { echo "destination error does not mention huge pages"; exit 1; }
