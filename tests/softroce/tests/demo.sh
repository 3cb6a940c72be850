#!/bin/sh
# topology: two
# timeout: 2400
# needs: qemu
# make demo: a real guest moved over RDMA. The test guest (tests/guest: a
# bare-metal program that fills its RAM with a self-checking pattern and keeps
# rewriting a hot set) runs in a QEMU inside the src VM and live-migrates with
# "migrate rdmae:" to a QEMU inside the dst VM, over soft-RoCE (rxe0 on both
# sides of a virtual cable). Progress each second, then the figures; then the
# same guest over tcp: on the same link, and both side by side.
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
  say "---- 1/2: migrate rdmae:$PEER:4460 ----"
  QM_FIGURES=$PWD/rdmae.fig qm_e2e rdmae uri 4460 1
else
  say "---- 1/2: rdmae: NOT RUN: this QEMU has no rdmae: channel (make demo builds it; bench.sh needs RDMAE_QEMU) ----"
  rc=1
fi
qm_sync between 900
say "---- 2/2: migrate tcp:$PEER:4461 (the reference, same guest, same link) ----"
QM_FIGURES=$PWD/tcp.fig qm_e2e tcp uri 4461 1

if [ "$ROLE" = src ]; then
  row() { # label key [scale]
    local a b
    a=$(sed -n "s/^$2=//p" rdmae.fig 2>/dev/null || true); b=$(sed -n "s/^$2=//p" tcp.fig 2>/dev/null || true)
    printf '  %-28s %18s %18s\n' "$1" "${a:--}$3" "${b:--}$3"
  }
  thr() { # file -> MB/s
    [ -f "$1" ] || { echo -; return; }
    awk -F= '$1 == "transferred" { b = $2 } $1 == "total_time" { t = $2 }
      END { if (t > 0) printf "%.1f MB/s", b / t / 1000; else print "-" }' "$1"
  }
  mib() { [ -f "$1" ] || { echo -; return; }; awk -F= '$1 == "transferred" { printf "%.1f MiB", $2 / 1048576 }' "$1"; }
  echo
  say "results (same guest, same run, same two VMs):"
  printf '  %-28s %18s %18s\n' "" "rdmae:" "tcp:"
  row "status" status ""
  row "total time" total_time " ms"
  row "setup time" setup_time " ms"
  row "downtime, expected" expected_downtime " ms"
  row "downtime, actual" downtime " ms"
  row "transferred" transferred " B"
  printf '  %-28s %18s %18s\n' "" "$(mib rdmae.fig)" "$(mib tcp.fig)"
  printf '  %-28s %18s %18s\n' "throughput (transferred/total)" "$(thr rdmae.fig)" "$(thr tcp.fig)"
  row "rounds (dirty-sync-count)" dirty_sync_count ""
  row "normal pages" normal ""
  row "zero pages" duplicate ""
  say "throughput is what nested software emulation gives (TCG inside TCG, soft-RoCE): compare the two columns, not the figures with real hardware"
  [ "$rc" = 0 ] || say "FAIL: the rdmae: half did not run (no patched QEMU)"
fi
exit $rc
