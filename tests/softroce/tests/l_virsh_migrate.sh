#!/bin/sh
# topology: two
# timeout: 2400
# needs: qemu,libvirt
# virsh migrate over rdmae:// as an operator runs it (issue 20): libvirtd
# (qemu-plugin/libvirt, patched 11.3.0) in both VMs, no systemd or dbus, the
# patched QEMU as the domain's emulator, the rdmae key a libvirt secret on
# both hosts. The domain is the test guest (128 MiB, a 1 MiB hot set),
# defined from XML in the src VM, which drives every step with virsh over
# TCP to both daemons:
#   1. the destination's secret holds another key: the migration is refused
#      with rdmae's own message (authentication), the source domain runs on
#      and the destination has no domain;
#   2. domjobabort while an rdmae:// migration moves data (--bandwidth 1
#      MiB/s keeps it under way): virsh migrate fails as cancelled, the source
#      domain runs on and its guest keeps verifying its memory;
#   3. virsh migrate --live over rdmae:// (--listen-address,
#      --parallel-connections 3): domjobinfo during the move and --completed
#      after it, with figures checked for plausibility; the guest runs on the
#      destination and completes two verify passes of its whole pattern there;
#   4. the reference: the same domain migrates back with libvirt's own (tcp)
#      migration, and its guest verifies itself on the src VM again.
# Only make check-libvirt runs it (make check-long): see doc/testing.md.
set -eu
. /usr/libexec/rdmae/qmig.sh
. /usr/libexec/rdmae/lvirt.sh
QM_PREFIX="l_virsh_migrate $ROLE"
qm_need_rdmae
PORT=4470
MEM=128
DOM=$LV_DOM
DST_URI="qemu+tcp://$PEER/system"

# Each VM tells the other where it stands over qm_send/qm_recv on the
# ports below, and a failure there too, so that neither waits out its
# timeout for a peer that gave up.
P_MIGRATED=$(qm_xport 1) P_VERIFIED=$(qm_xport 2) P_END=$(qm_xport 3)
QM_ON_DIE=lv_diag
lv_start
qm_sync up 900

if [ "$ROLE" = dst ]; then
  msg=$(qm_recv "$P_MIGRATED" 2300)
  [ "$msg" = migrated ] || qm_die "the src VM says: $msg"
  QM_ON_DIE="lv_diag; qm_send $P_VERIFIED 'failed: see the dst VM' 60"
  lv_verify_here
  qm_send "$P_VERIFIED" verified
  QM_ON_DIE=lv_diag
  msg=$(qm_recv "$P_END" 1200)
  [ "$msg" = end ] || qm_die "the src VM says: $msg"
  lv_stop
  qm_say "pass"
  exit 0
fi
QM_ON_DIE="lv_diag; qm_send $P_MIGRATED 'failed: see the src VM' 60"

# ---- src: drives the test ----
lv_domxml "$MEM" 1024 >dom.xml
lv_virsh define dom.xml >/dev/null || qm_die "virsh define refused the domain"
lv_virsh start "$DOM" >/dev/null || qm_die "virsh start $DOM failed: $(tail -5 "$LV_DIR/libvirtd.log")"
lv_wait_serial '^rdmae-guest: filled' 900
lv_wait_serial '^verify pass [0-9]+ ok' 900
qm_say "domain $DOM started: $(grep -m1 '^rdmae-guest: boot' "$LV_DIR/guest.serial" | tr -d '\r')"

# the source domain runs and its guest completes another verify pass
src_runs_on() {
  local st p
  st=$(lv_virsh domstate --reason "$DOM")
  case $st in running*) ;; *) qm_die "src: domain state '$st' after $1, want running" ;; esac
  p=$(lv_serial_count '^verify pass [0-9]+ ok')
  lv_wait_serial '^verify pass [0-9]+ ok' 900 $((p + 1))
  qm_say "src: after $1 the domain is '$st', its guest verifies on: $(grep -E '^verify pass' "$LV_DIR/guest.serial" | tail -1 | tr -d '\r')"
}
dst_has_no_domain() {
  if lv_virsh_peer list --all --name | grep -qx "$DOM"; then
    qm_die "dst: domain $DOM still exists after $1: $(lv_virsh_peer list --all)"
  fi
}
# moving DOMJOBINFO: a migration job that has moved guest memory
moving() {
  [ "$(lv_field "$1" 'Job type')" = Unbounded ] &&
    [ "$(lv_kib "$(lv_field "$1" 'Memory processed')")" -gt 0 ]
}
migrate_rdmae() {
  lv_virsh migrate --live --verbose "$DOM" "$DST_URI" \
    --migrateuri "rdmae://$PEER:$PORT" --listen-address "$PEER" --parallel-connections 3 "$@"
}

# ---- 1. another key on the destination: refused by rdmae ----
head -c 32 /dev/urandom >wrong.key
lv_virsh_peer secret-set-value "$LV_SECRET_UUID" --file wrong.key --plain >/dev/null ||
  qm_die "dst: setting the wrong key refused"
if migrate_rdmae >refused.out 2>&1; then
  qm_die "the migration succeeded with different keys: $(cat refused.out)"
fi
err=$(tr '\r' '\n' <refused.out | grep 'error:' | tail -1)
qm_say "1. different keys: virsh says: $err"
echo "$err" | grep -q 'rdmae' || qm_die "the error does not come from rdmae: $err"
echo "$err" | grep -qi 'authenticat' || qm_die "the error does not name authentication: $err"
src_runs_on "the refused migration"
dst_has_no_domain "the refused migration"
lv_virsh_peer secret-set-value "$LV_SECRET_UUID" --file "$QM_KEY" --plain >/dev/null ||
  qm_die "dst: restoring the key refused"

# ---- 2. domjobabort mid-way ----
rm -f abort.rc
(set +e; migrate_rdmae --bandwidth 1 >abort.out 2>&1; echo $? >abort.rc) &
mig=$!
t=0
while :; do
  [ ! -f abort.rc ] || qm_die "the migration ended before the test could abort it: $(cat abort.out)"
  ji=$(lv_virsh domjobinfo "$DOM" 2>&1 || true)
  if moving "$ji"; then
    break
  fi
  t=$((t + 1)); [ $t -le 900 ] || qm_die "no migration data moved within 900 s: $ji"
  sleep 0.5
done
qm_say "2. under way: Memory processed $(lv_field "$ji" 'Memory processed'), Memory remaining $(lv_field "$ji" 'Memory remaining'); virsh domjobabort"
# domjobabort returns once QEMU has taken migrate_cancel (libvirt does not
# wait for the cancelled state); virsh migrate ends after it.
timeout -s KILL 300 "$LV/bin/virsh" -c "qemu+tcp://$SELF/system" domjobabort "$DOM" >jobabort.out 2>&1 ||
  lv_stuck "virsh domjobabort failed or still waits after 300 s: $(cat jobabort.out)"
t=0
while [ ! -f abort.rc ]; do
  t=$((t + 1)); [ $t -le 300 ] || lv_stuck "virsh migrate still runs 300 s after domjobabort"
  sleep 1
done
# Not a bare wait: libvirtd is this shell's child too.
wait "$mig"
[ "$(cat abort.rc)" != 0 ] || qm_die "virsh migrate succeeded after domjobabort: $(cat abort.out)"
err=$(tr '\r' '\n' <abort.out | grep 'error:' | tail -1)
qm_say "2. virsh migrate says: $err"
echo "$err" | grep -qi 'cancel' || qm_die "virsh migrate's error does not say it was cancelled: $err"
src_runs_on "domjobabort"
dst_has_no_domain "domjobabort"

# ---- 3. the migration over rdmae:// ----
rm -f mig.rc during.txt
(set +e; migrate_rdmae >mig.out 2>&1; echo $? >mig.rc) &
mig=$!
while [ ! -f mig.rc ]; do
  ji=$(lv_virsh domjobinfo "$DOM" 2>/dev/null || true)
  if moving "$ji"; then
    echo "$ji" >during.txt
  fi
  sleep 1
done
wait "$mig"
[ "$(cat mig.rc)" = 0 ] || qm_die "virsh migrate over rdmae:// failed: $(tr '\r' '\n' <mig.out | tail -5)"
qm_say "3. virsh migrate over rdmae:// completed"
if [ -s during.txt ]; then
  qm_say "3. virsh domjobinfo during the move (the last sample):"
  sed 's/^/    /' during.txt
else
  qm_say "3. no domjobinfo sample caught the move with data processed (it was quicker than a poll)"
fi
done_ji=$(lv_virsh domjobinfo --completed "$DOM" 2>&1) || qm_die "virsh domjobinfo --completed: $done_ji"
qm_say "3. virsh domjobinfo --completed (source):"
echo "$done_ji" | sed 's/^/    /'
[ "$(lv_field "$done_ji" 'Job type')" = Completed ] || qm_die "domjobinfo --completed: job type is not Completed"
case $(lv_field "$done_ji" 'Operation') in *[Mm]igration*) ;; *) qm_die "domjobinfo --completed: not a migration" ;; esac
total=$(($(lv_kib "$(lv_field "$done_ji" 'Memory total')") / 1024))
processed=$(lv_kib "$(lv_field "$done_ji" 'Memory processed')")
elapsed=$(lv_num "$(lv_field "$done_ji" 'Time elapsed')")
downtime=$(lv_num "$(lv_field "$done_ji" 'Total downtime')")
[ "$total" -ge $((MEM * 9 / 10)) ] && [ "$total" -le "$MEM" ] ||
  qm_die "domjobinfo: Memory total $total MiB for a $MEM MiB guest"
[ "$processed" -gt 0 ] || qm_die "domjobinfo: no memory processed"
[ "$elapsed" -gt 0 ] && [ "$downtime" -gt 0 ] && [ "$downtime" -lt "$elapsed" ] ||
  qm_die "domjobinfo: downtime $downtime ms, elapsed $elapsed ms"
st=$(lv_virsh_peer domstate --reason "$DOM")
case $st in running*) ;; *) qm_die "dst: domain state '$st' after the migration, want running" ;; esac
qm_say "3. dst: domain $st"
in_ji=$(lv_virsh_peer domjobinfo --completed "$DOM" 2>&1) || qm_die "dst: virsh domjobinfo --completed: $in_ji"
qm_say "3. virsh domjobinfo --completed (destination):"
echo "$in_ji" | sed 's/^/    /'
qm_send "$P_MIGRATED" migrated
msg=$(qm_recv "$P_VERIFIED" 1200)
[ "$msg" = verified ] || qm_die "the dst VM says: $msg"
QM_ON_DIE="lv_diag; qm_send $P_END 'failed: see the src VM' 60"
# Both moves' figures from the destination's side.
jline() { # DOMJOBINFO: elapsed, libvirt's total downtime (the source's stop to
  # the resume at the end of Finish), QEMU's own where libvirt has it
  local q
  q=$(lv_field "$1" 'Downtime w/o network')
  echo "elapsed $(lv_num "$(lv_field "$1" 'Time elapsed')") ms, total downtime $(lv_num "$(lv_field "$1" 'Total downtime')") ms${q:+ (QEMU's $(lv_num "$q") ms)}, memory processed $(lv_field "$1" 'Memory processed')"
}
rdmae_line="rdmae://    $(jline "$in_ji")"

# ---- 4. the reference: back with libvirt's own migration ----
rm -f back.rc
lv_virsh_peer migrate --live --verbose "$DOM" "qemu+tcp://$SELF/system" >back.out 2>&1 ||
  qm_die "virsh migrate back (libvirt's tcp migration) failed: $(tr '\r' '\n' <back.out | tail -5)"
back_ji=$(lv_virsh domjobinfo --completed "$DOM" 2>&1) || qm_die "virsh domjobinfo --completed after the move back: $back_ji"
qm_say "4. back over libvirt's own migration (tcp); virsh domjobinfo --completed (destination):"
echo "$back_ji" | sed 's/^/    /'
lv_verify_here
qm_say "same run, same domain and link (the destination's domjobinfo --completed):"
qm_say "  $rdmae_line"
qm_say "  tcp (back)  $(jline "$back_ji")"
qm_send "$P_END" end
lv_virsh destroy "$DOM" >/dev/null 2>&1 || true
lv_virsh undefine "$DOM" >/dev/null 2>&1 || true
lv_stop
qm_say "pass"
