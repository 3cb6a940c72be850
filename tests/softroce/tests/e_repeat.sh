#!/bin/sh
# topology: one
# timeout: 600
# Fifty migrations back to back in one process pair, each with a fresh guest,
# connection and session and each verified byte for byte. After every one,
# both processes count what they hold: open fds, heap in use, VmPin (pages
# pinned by registrations) and the MRs, QPs, CQs, PDs and cm_ids the kernel
# tracks for them. After the first (warm-up) migration none of it may grow;
# VmSize by less than a page per migration (ASan's quarantine bookkeeping
# maps a page now and then). VmRSS is printed, not judged: the quarantine
# keeps freed blocks (up to 256 MiB), so it grows by design; with the
# quarantine off (ASAN_OPTIONS=quarantine_size_mb=0) it stays flat.
# In the middle of the first one they check that the counters do see its
# MRs and pinned pages, so that "no growth" is not a blind check.
set -eu
KEY=$(bench_key)
N=50
rdmae_mig dst --key "$KEY" --addr "$SELF" --port 7870 --size 16M --repeat $N --quiet >d.txt 2>&1 &
dpid=$!
wait_for listening d.txt 30
t0=$(cut -d' ' -f1 /proc/uptime)
rdmae_mig src --key "$KEY" --addr "$SELF" --port 7870 --size 16M --rate 1 --repeat $N --quiet \
  >s.txt 2>&1 && rc=0 || rc=$?
wait $dpid && drc=0 || drc=$?
t1=$(cut -d' ' -f1 /proc/uptime)
grep -hE "usage|growth|grew|blind|FAIL|PASS" s.txt d.txt
n=$(grep -c "verified byte for byte" d.txt || true)
c=$(grep -c "migration committed" s.txt || true)
if [ $rc != 0 ] || [ $drc != 0 ] || [ "$n" != $N ] || [ "$c" != $N ]; then
  echo "e_repeat: src exit $rc, dst exit $drc, $c committed, $n verified of $N; the ends of the logs:"
  tail -40 s.txt
  tail -40 d.txt
  exit 1
fi
echo "e_repeat: $N migrations in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s," \
  "all verified; nothing grew after the first"
