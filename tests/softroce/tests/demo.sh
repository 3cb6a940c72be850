#!/bin/sh
# topology: two
# timeout: 2400
# needs: qemu
# make demo: a real guest moved over RDMA. The test guest (tests/guest: a
# bare-metal program that fills its RAM with a self-checking pattern and keeps
# rewriting a hot set) runs in a QEMU inside the src VM and live-migrates with
# "migrate rdmae:" to a QEMU inside the dst VM, over soft-RoCE (rxe0 on both
# sides of a virtual cable). Progress each second, then the figures; then the
# same guest over QEMU's own rdma: (the like-for-like column: the same rxe
# cost per byte) and over tcp:, on the same link, all three side by side.
# Needs the patched QEMU (RDMAE_QEMU, which make demo sets); without it, only
# the tcp: half runs and the demo fails.
set -eu
. /usr/libexec/rdmae/qmig.sh
QM_PREFIX="demo $ROLE"
[ "$ROLE" = src ] && QM_PREFIX=demo
say() { [ "$ROLE" = src ] && echo "rdmae demo: $*"; return 0; }
# QEMU's own default downtime limit: what a user gets without tuning.
QM_DOWNTIME_MS=${DEMO_DOWNTIME_MS:-300}
export QM_DOWNTIME_MS

say "two hosts (VMs), each with its own kernel and rxe device, joined by a virtual cable"
say "QEMU: $QEMU_VERSION, nested (TCG) in each VM; guest: $GUEST_MEM MiB, pattern over ~$((GUEST_MEM - 4)) MiB, hot set $GUEST_HOT KiB rewritten continuously"
say "downtime limit $QM_DOWNTIME_MS ms; the guest checks every page of its pattern on the destination after cont"

rc=0
if [ "${RDMAE_QEMU_PATCHED:-0}" = 1 ]; then
  say "---- 1/3: migrate rdmae:$PEER:4460 ----"
  QM_FIGURES=$PWD/rdmae.fig qm_e2e rdmae uri 4460 1
else
  say "---- 1/3: rdmae: NOT RUN: this QEMU has no rdmae: channel (make demo builds it; bench.sh needs RDMAE_QEMU) ----"
  rc=1
fi
qm_sync between-1 900
# QEMU's own rdma: pays the same per-byte cost of rxe under TCG as rdmae:,
# so it is the like-for-like column. It may not complete: then its column
# says why and the demo goes on (its subshell's qm_die ends only the step).
say "---- 2/3: migrate rdma:$PEER:4462 (QEMU's own RDMA transport, same guest, same link) ----"
rm -f rdma.why
if ! (QM_FAIL_FILE=$PWD/rdma.why QM_MIGRATE_TIMEOUT=600 QM_FIGURES=$PWD/rdma.fig qm_e2e rdma uri 4462 1); then
  [ -s rdma.why ] || echo "failed without a reason" >rdma.why
  say "rdma: did not complete: $(cat rdma.why)"
  rdmae-qmp -t 10 src.qmp migrate_cancel >/dev/null 2>&1 || true
  qm_stop src; qm_stop dst
  echo "status=not completed" >rdma.fig
fi
qm_sync between-2 900
say "---- 3/3: migrate tcp:$PEER:4461 (the reference, same guest, same link) ----"
QM_FIGURES=$PWD/tcp.fig qm_e2e tcp uri 4461 1

if [ "$ROLE" = src ]; then
  row() { # label key [scale]
    local a b c
    a=$(sed -n "s/^$2=//p" rdmae.fig 2>/dev/null || true)
    b=$(sed -n "s/^$2=//p" rdma.fig 2>/dev/null || true)
    c=$(sed -n "s/^$2=//p" tcp.fig 2>/dev/null || true)
    printf '  %-28s %16s %16s %16s\n' "$1" "${a:--}$3" "${b:--}$3" "${c:--}$3"
  }
  thr() { # file -> MB/s
    [ -f "$1" ] || { echo -; return; }
    awk -F= '$1 == "transferred" { b = $2 } $1 == "total_time" { t = $2 }
      END { if (t > 0) printf "%.1f MB/s", b / t / 1000; else print "-" }' "$1"
  }
  mib() { [ -f "$1" ] || { echo -; return; }; awk -F= '$1 == "transferred" { m = sprintf("%.1f MiB", $2 / 1048576) } END { print (m == "" ? "-" : m) }' "$1"; }
  echo
  say "results (same guest, same run, same two VMs):"
  printf '  %-28s %16s %16s %16s\n' "" "rdmae:" "rdma:" "tcp:"
  row "status" status ""
  row "total time" total_time " ms"
  row "setup time" setup_time " ms"
  row "downtime, expected" expected_downtime " ms"
  row "downtime, actual" downtime " ms"
  row "transferred" transferred " B"
  printf '  %-28s %16s %16s %16s\n' "" "$(mib rdmae.fig)" "$(mib rdma.fig)" "$(mib tcp.fig)"
  printf '  %-28s %16s %16s %16s\n' "throughput (transferred/total)" "$(thr rdmae.fig)" "$(thr rdma.fig)" "$(thr tcp.fig)"
  row "rounds (dirty-sync-count)" dirty_sync_count ""
  row "normal pages" normal ""
  row "zero pages" duplicate ""
  [ ! -s rdma.why ] || say "rdma: did not complete: $(cat rdma.why)"
  say "rdmae: and rdma: pay the same per-byte cost of soft-RoCE under nested TCG, so their columns compare the two RDMA designs; tcp: rides virtio-net without rxe's per-byte CPU work, so these figures cannot show the line rate or the CPU a real RDMA NIC saves (doc/performance.md)."
  [ "$rc" = 0 ] || say "FAIL: the rdmae: half did not run (no patched QEMU)"
fi
exit $rc
