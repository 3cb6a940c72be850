#!/bin/sh
# topology: two
# timeout: 2400
# needs: qemu
# mem: 3584
# Benchmark (not part of make check; run with `make bench-scale` or `make
# bench`): how QEMU's setup-time scales with the guest. The test guest
# (tests/guest, idle: its default 1 MiB hot set) of 128 MiB and of 512 MiB
# migrates from a QEMU in the src VM to a QEMU in the dst VM over rdmae: and
# tcp:, as libvirt drives it: the destination QEMU waits paused with
# -incoming defer, the source's guest is up, then migrate-incoming and,
# right after it (no idle wait that would let the destination prepare),
# migrate; both in the QMP "channels" form. Parameters as perf_migrate's:
# downtime-limit 2000 ms, max-bandwidth 10 GiB/s. Per migration, from
# query-migrate on the source: setup-time, total-time, downtime; the rdmae:
# setup phases (trace events) are printed as q_rdmae_migrate prints them.
#
# Every row is printed as one line "BENCH-RESULT {json}" (kind scale_qemu)
# on the console; tests/softroce/bench_perf.sh collects them under "scale".
# Asserts only that the measurements ran and that the memory moved: the
# migration completes, its query-migrate figures are plausible, and source
# RAM at stop hashes the same as destination RAM before cont (pmemsave of
# all guest RAM). Never a speed.
#
# Knobs (edit here; the bench passes no environment into the VMs):
#   SCALE_QEMU_SIZES guest sizes in MiB, SCALE_QEMU_TRANSPORTS.
# shellcheck disable=SC3043,SC1091,SC2034
set -eu
. /usr/libexec/rdmae/qmig.sh
QM_PREFIX="scale_qemu $ROLE"
SIZES=${SCALE_QEMU_SIZES:-128 512}
TRANSPORTS=${SCALE_QEMU_TRANSPORTS:-rdmae tcp}
MAX_BW=$((10 * 1024 * 1024 * 1024))
[ "$ROLE" = src ] || [ "$ROLE" = dst ] || qm_die "topology two only"
qm_need_rdmae
qm_say "QEMU: $QEMU_VERSION"

# One migration. N numbers the case: its two messages use qm_xport 2N-1
# (dst to src: migrate-incoming done) and 2N (src to dst: RAM hash).
run_case() { # TRANSPORT MiB PORT N
  local tr="$1" mib="$2" port="$3" go=$(($4 * 2 - 1)) hashp=$(($4 * 2)) msg hs st
  GUEST_MEM=$mib
  if [ "$ROLE" = dst ]; then
    # shellcheck disable=SC2046
    qm_start dst -S -incoming defer $(qm_trace_args "$tr")
    qm_sync "ready-$tr-$mib" 900
    QM_ON_DIE="qm_send $(qm_xport $go) 'failed: see the destination VM'"
    qm_qmp dst "$(qm_migrate_cmd "$tr" channels "$SELF" "$port" |
      sed 's/"execute":"migrate"/"execute":"migrate-incoming"/')" >/dev/null ||
      qm_die "dst: migrate-incoming refused"
    qm_send "$(qm_xport $go)" incoming
    QM_ON_DIE=
    qm_dst_verify_ram "$(qm_xport $hashp)" "$tr, $mib MiB"
    qm_stop dst
    return 0
  fi
  # shellcheck disable=SC2046
  qm_start src $(qm_trace_args "$tr")
  qm_guest_ready src
  qm_set_params src "\"downtime-limit\": 2000, \"max-bandwidth\": $MAX_BW"
  qm_sync "ready-$tr-$mib" 900
  QM_ON_DIE="qm_send $(qm_xport $hashp) 'failed: see the source VM'"
  msg=$(qm_recv "$(qm_xport $go)" 900)
  [ "$msg" = incoming ] || qm_die "dst: '$msg' instead of incoming"
  qm_qmp src "$(qm_migrate_cmd "$tr" channels "$PEER" "$port")" >migrate.out ||
    qm_die "src: migrate refused: $(cat migrate.out)"
  qm_say "src: migrate $tr: $mib MiB guest, issued right after the destination's migrate-incoming"
  qm_migrate_wait src 1800
  st=$(jget status <src.mig)
  [ "$st" = completed ] || { cat src.mig; qm_die "src: migration $st: $(jget error-desc <src.mig || true)"; }
  hs=$(qm_pmem_hash src src.mem)
  QM_ON_DIE=
  qm_send "$(qm_xport $hashp)" "hash $hs"
  qm_check_figures src
  qm_setup_phases src
  local status total_time downtime setup_time transferred remaining total mbps dirty_sync_count \
    normal duplicate normal_bytes expected_downtime
  eval "$(qm_figures src)"
  qm_say "$tr: $mib MiB: setup-time $setup_time ms, total-time $total_time ms, downtime $downtime ms, transferred $transferred bytes, dirty-sync-count $dirty_sync_count"
  echo "BENCH-RESULT {\"kind\":\"scale_qemu\",\"transport\":\"$tr\",\"guest_bytes\":$((mib * 1048576)),\"setup_ms\":$setup_time,\"total_ms\":$total_time,\"downtime_ms\":$downtime,\"transferred_bytes\":$transferred,\"dirty_sync_count\":$dirty_sync_count,\"completed\":true}"
  qm_stop src
}

n=0
for mib in $SIZES; do
  for tr in $TRANSPORTS; do
    n=$((n + 1))
    run_case "$tr" "$mib" $((4700 + n)) $n
    sleep 1
  done
done
qm_say "done"
