#!/bin/sh
# topology: two
# timeout: 2700
# needs: qemu,linux
# A real Linux guest with virtio devices moves across the two bench VMs:
# Debian's kernel with virtio-net (a bridge in each VM, joined by VXLAN),
# virtio-blk (one image over NBD from the dst VM, seen by both sides) and a
# serial console, running a self-checking memory workload, a disk writer that
# reads back with O_DIRECT and an echo server (tests/guest/lguest.sh).
#
#   1. src VM boots the guest (QEMU g1) and waits for every workload's first OK.
#   2. rdmae: g1 (src VM) -> g2 (dst VM), while a request stream from the
#      src VM runs against the guest (UDP every 200 ms, TCP once a second on
#      one connection).
#   3. tcp:, the reference, same guest: g2 (dst VM) -> g3 (src VM), with a
#      request stream from the dst VM.
# After each move: guest RAM at the source's stop equals the destination's
# before cont (sha256 of all of it); after cont both workloads complete two
# more passes, all OK, the disk read back with O_DIRECT; the guest answers
# the network; the TCP connection survived; no kernel message of the kinds
# in LG_BAD_KLOG on either side. Lost UDP requests are printed, not asserted.
# Needs the patched QEMU (RDMAE_QEMU); fails without it.
set -eu
. /usr/libexec/rdmae/qmig.sh
. /usr/libexec/rdmae/lguest.sh
QM_PREFIX="q_linux_migrate $ROLE"
qm_need_rdmae
lg_guest
# QEMU's own default: what a user gets without tuning.
DOWNTIME_MS=300

lg_net_up
[ "$ROLE" = dst ] && lg_storage_start
qm_sync storage 900

# One move: the guest goes from QEMU g$((STEP - 1)) in the VM of role FROM
# to a new QEMU g$STEP in the other VM, over TRANSPORT.
move() { # FROM TRANSPORT PORT STEP
  local from=$1 tr=$2 port=$3 step=$4 old new msg hs hd st
  old=g$((step - 1)) new=g$step
  if [ "$ROLE" != "$from" ]; then
    # shellcheck disable=SC2046
    qm_start "$new" -S -incoming "$tr:$SELF:$port" $(lg_devices "$new")
    lg_tap "$new"
    qm_say "$new: waits for the guest on $tr:$SELF:$port"
    qm_sync "incoming-$step" 900
    QM_ON_DIE="qm_send $(qm_xport $((2 * step + 1))) 'failed: see the $ROLE VM'"
    msg=$(qm_recv "$(qm_xport $((2 * step)))" 1800)
    case $msg in
      hash\ *) hs=${msg#hash } ;;
      *) qm_die "the source gave up: $msg" ;;
    esac
    qm_wait_incoming_done "$new"
    hd=$(qm_pmem_hash "$new" "$new.mem")
    [ "$hs" = "$hd" ] || qm_die "$tr: source RAM at stop ($hs) and destination RAM before cont ($hd) differ"
    qm_say "$tr: source and destination RAM are equal ($GUEST_MEM MiB, sha256 $hd)"
    qm_qmp "$new" cont >/dev/null || qm_die "$new: cont failed"
    lg_after_resume "$new"
    lg_cpu "$new"
    lg_net_probe "$new"
    QM_ON_DIE=
    qm_send "$(qm_xport $((2 * step + 1)))" "resumed"
    return 0
  fi
  lg_client_start
  lg_cpu "$old"
  qm_sync "incoming-$step" 900
  QM_ON_DIE="qm_send $(qm_xport $((2 * step))) 'failed: see the $ROLE VM'"
  qm_set_params "$old" "\"downtime-limit\": $DOWNTIME_MS"
  qm_say "$old: migrating the Linux guest over $tr: to $PEER:$port"
  qm_qmp "$old" "$(qm_migrate_cmd "$tr" uri "$PEER" "$port")" >migrate.out ||
    qm_die "$old: migrate refused: $(cat migrate.out)"
  qm_migrate_wait "$old" 1800 1
  st=$(jget status <"$old.mig")
  [ "$st" = completed ] || qm_die "$old: migration $st: $(jget error-desc <"$old.mig" || true)"
  st=$(qm_qmp "$old" query-status | jget status)
  [ "$st" = postmigrate ] || qm_die "$old: run state '$st' after the migration, want postmigrate"
  hs=$(qm_pmem_hash "$old" "$old.mem")
  QM_ON_DIE=
  qm_send "$(qm_xport $((2 * step)))" "hash $hs"
  lg_check_console "$old"
  msg=$(qm_recv "$(qm_xport $((2 * step + 1)))" 1800)
  if [ "$msg" != resumed ]; then
    touch client.stop; wait "$LG_CLIENT" || true
    qm_say "requests across the move: $(cat client.out)"
    lg_net_evidence
    qm_die "the destination did not resume: $msg"
  fi
  # TCP retransmits what the downtime held back, with back-off: give it time.
  sleep 10
  lg_client_stop
  eval "$(qm_figures "$old")"
  # shellcheck disable=SC2154
  ROW="$tr $total_time $downtime $setup_time $transferred $(echo "$LG_NET" | awk '{
    for (i = 1; i < NF; i++) { if ($i == "lost") l = $(i + 1); if ($i == "longest-gap") g = $(i + 1);
      if ($i == "sent" && !s) s = $(i + 1) }
    print s + 0, l + 0, g + 0 }')"
  qm_say "RESULT $tr: total-time $total_time ms, downtime $downtime ms, setup-time $setup_time ms, transferred $transferred B; $LG_NET"
  qm_stop "$old"
}

# ---- 1. boot ----
if [ "$ROLE" = src ]; then
  LG_START_UP=$(cut -d' ' -f1 /proc/uptime)
  # shellcheck disable=SC2046
  qm_start g1 $(lg_devices g1)
  lg_tap g1
  lg_wait_ready g1
  BOOT_S=$LG_BOOT_S
fi
qm_sync booted 1800

# ---- 2. rdmae: src VM -> dst VM ----
move src rdmae 4470 2
[ "$ROLE" = src ] && ROW_RDMAE=$ROW
qm_sync moved-rdmae 900

# ---- 3. tcp: dst VM -> src VM, the reference ----
move dst tcp 4471 3
if [ "$ROLE" = dst ]; then
  qm_send "$(qm_xport 9)" "$ROW"
  # The disk goes last: the guest in the src VM still uses it.
  qm_sync guest-stopped 900
  qm_stop stor
  qm_say "pass"
  exit 0
fi
ROW_TCP=$(qm_recv "$(qm_xport 9)" 600)
qm_stop g3
qm_sync guest-stopped 900
qm_say "Linux guest ($GUEST_MEM MiB, kernel $LINUX_KVER): booted to its workloads in $BOOT_S s"
printf '%s\n%s\n' "$ROW_RDMAE" "$ROW_TCP" | awk -v p="$QM_PREFIX" '
  BEGIN { printf "%s: %-8s %10s %12s %10s %12s %10s %10s %14s\n", p, "", "total ms", "downtime ms", "setup ms", "transferred", "requests", "lost", "longest gap ms" }
  { printf "%s: %-8s %10s %12s %10s %12s %10s %10s %14s\n", p, $1 ":", $2, $3, $4, $5, $6, $7, $8 }'
qm_say "after each move: RAM equal, memory and disk workloads OK, network answers, TCP connection kept, no kernel errors"
qm_say "pass"
