# shellcheck shell=sh disable=SC3043
# lvirt.sh: libvirt in a bench VM, for the l_* tests. Sourced after qmig.sh
# (qm_say, qm_die, qm_sync, QM_KEY); runs under busybox sh. The bench puts
# libvirt (qemu-plugin/libvirt/build.sh's prefix, at its own path) into the
# VMs when a test says "# needs: qemu,libvirt"; /etc/rdmae-libvirt.env names
# the prefix (LV).
#
# One libvirtd per VM, as an operator without systemd or dbus runs it:
# libvirtd --listen, TCP on $SELF without authentication (polkit needs dbus;
# the bench's link is private), QEMU as root with no security driver,
# cgroups or namespaces, stdio_handler="file", and the rdmae key as a libvirt
# secret named in qemu.conf (migrate_rdmae_secret_uuid), the value the same
# on both hosts (QM_KEY).

[ -r /etc/rdmae-libvirt.env ] && . /etc/rdmae-libvirt.env
LV=${LV:-}
LV_DIR=${LV_DIR:-/var/tmp/rdmae-lv}
LV_SECRET_UUID=5d1f0b7e-6a40-4d52-9a2c-3c1e7f0a9e01
LV_DOM=${LV_DOM:-rdmae-guest}

lv_virsh() { "$LV/bin/virsh" -c "qemu+tcp://$SELF/system" "$@"; }
lv_virsh_peer() { "$LV/bin/virsh" -c "qemu+tcp://$PEER/system" "$@"; }

# lv_start: configure and start this VM's libvirtd, wait until it answers,
# and define the rdmae key as a secret.
lv_start() {
  local t=0
  [ -n "$LV" ] && [ -x "$LV/sbin/libvirtd" ] ||
    qm_die "no libvirt in this VM (the bench needs RDMAE_LIBVIRT: make check-libvirt)"
  mkdir -p "$LV_DIR"
  cat >"$LV/etc/libvirt/libvirtd.conf" <<CONF
listen_tls = 0
listen_tcp = 1
listen_addr = "$SELF"
auth_tcp = "none"
auth_unix_rw = "none"
auth_unix_ro = "none"
host_uuid = "8a4f0c52-0000-4e6b-9a11-0c5a1d2e3f0${SELF##*.}"
log_level = 3
log_filters = "1:qemu.qemu_monitor 1:qemu.qemu_migration"
log_outputs = "1:file:$LV_DIR/libvirtd.log"
CONF
  # migration_host: libvirt's own (tcp) migration would name this host by
  # its hostname, which nothing resolves here.
  cat >"$LV/etc/libvirt/qemu.conf" <<CONF
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
migration_host = "$SELF"
migrate_rdmae_secret_uuid = "$LV_SECRET_UUID"
CONF
  "$LV/sbin/libvirtd" --listen >"$LV_DIR/libvirtd.out" 2>&1 &
  echo $! >"$LV_DIR/libvirtd.pid"
  until lv_virsh version >/dev/null 2>&1; do
    kill -0 "$(cat "$LV_DIR/libvirtd.pid")" 2>/dev/null ||
      qm_die "libvirtd exited: $(tr '\n' ' ' <"$LV_DIR/libvirtd.out")"
    t=$((t + 1))
    [ $t -le 600 ] || qm_die "libvirtd does not answer on $SELF after 300 s"
    sleep 0.5
  done
  cat >"$LV_DIR/secret.xml" <<XML
<secret ephemeral='no' private='yes'>
  <uuid>$LV_SECRET_UUID</uuid>
  <description>rdmae migration key</description>
</secret>
XML
  lv_virsh secret-define "$LV_DIR/secret.xml" >/dev/null &&
    lv_virsh secret-set-value "$LV_SECRET_UUID" --file "$QM_KEY" --plain >/dev/null ||
    qm_die "the rdmae key as a libvirt secret: refused"
  qm_say "libvirtd $LIBVIRT_VERSION listening on $SELF, the rdmae key as secret $LV_SECRET_UUID"
}

# lv_diag: what libvirt asked of this host's QEMUs (migration commands and
# errors), for a test that failed (QM_ON_DIE=lv_diag).
lv_diag() {
  echo "--- libvirtd on $SELF: QMP migration commands and errors (last 25) ---"
  grep -oE 'QEMU_MONITOR_SEND_MSG: mon=[^ ]* msg=\{"execute":"(migrate[a-z-]*|object-add)".*|QEMU_MONITOR_RECV_EVENT: .*"event": *"MIGRATION".*|error : .*' \
    "$LV_DIR/libvirtd.log" 2>/dev/null | sed 's/"data":"[^"]*"/"data":"..."/; s/"iv":"[^"]*"/"iv":"..."/' |
    tail -25 || true
}

# lv_stuck WHAT: a step that should have ended did not: print what QEMU and
# libvirt say (query-migrate through libvirt, each QEMU thread's name and
# where it waits in the kernel), then fail.
lv_stuck() {
  local p t
  for p in /proc/[0-9]*; do
    grep -q qemu-system "$p/cmdline" 2>/dev/null || continue
    p=${p#/proc/}
    for t in /proc/"$p"/task/*; do
      echo "  qemu $p thread $(cat "$t/comm" 2>/dev/null): $(cat "$t/wchan" 2>/dev/null) $(awk '{print $3}' "$t/stat" 2>/dev/null) $(tr '\n' ' ' <"$t/stack" 2>/dev/null | cut -c1-300)"
    done
  done
  qm_say "$1: QEMU's query-migrate: $(timeout -s KILL 30 "$LV/bin/virsh" -c "qemu+tcp://$SELF/system" qemu-monitor-command "$LV_DOM" '{"execute":"query-migrate"}' 2>&1)"
  qm_die "$1"
}

lv_stop() {
  local p
  p=$(cat "$LV_DIR/libvirtd.pid" 2>/dev/null) || return 0
  kill "$p" 2>/dev/null || true
  while kill -0 "$p" 2>/dev/null; do sleep 0.2; done
}

# lv_domxml MEM_MIB HOT_KIB: the test guest as a libvirt domain. hard_limit:
# rdmae pins guest RAM on both hosts, and libvirt refuses an rdmae://
# migration without it (guest RAM + 64 MiB for QEMU's own pinned buffers).
# The console goes to a file of the same path on both hosts, truncated when a
# QEMU opens it: after a move it holds only what the guest printed there.
lv_domxml() {
  cat <<XML
<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>$LV_DOM</name>
  <memory unit='MiB'>$1</memory>
  <memtune><hard_limit unit='MiB'>$(($1 + 64))</hard_limit></memtune>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$GUEST_ELF</kernel>
    <cmdline>hot=$2</cmdline>
  </os>
  <on_reboot>destroy</on_reboot>
  <devices>
    <emulator>$QEMU</emulator>
    <controller type='usb' model='none'/>
    <serial type='file'><source path='$LV_DIR/guest.serial'/></serial>
    <memballoon model='none'/>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-L'/><qemu:arg value='$QEMU_FW'/>
  </qemu:commandline>
</domain>
XML
}

# lv_serial_count ERE: lines of the guest's console (on this host) matching.
lv_serial_count() { grep -cE "$1" "$LV_DIR/guest.serial" 2>/dev/null || true; }

# lv_wait_serial ERE [TIMEOUT [COUNT]]: until the guest's console on this
# host has COUNT lines matching ERE; fails on the guest's VERIFY FAIL.
lv_wait_serial() {
  local re=$1 to=${2:-600} count=${3:-1} t=0 have
  while :; do
    have=$(lv_serial_count "$re")
    [ "${have:-0}" -lt "$count" ] || return 0
    if grep -qE 'VERIFY FAIL|^verify pass [0-9]+ FAIL' "$LV_DIR/guest.serial" 2>/dev/null; then
      grep -E 'VERIFY|verify pass' "$LV_DIR/guest.serial" | tail -12
      qm_die "the guest found a mismatch in its memory"
    fi
    t=$((t + 1))
    [ $t -le "$to" ] || { tail -5 "$LV_DIR/guest.serial" 2>/dev/null; qm_die "no $count line(s) /$re/ on the guest's console within $to s"; }
    sleep 1
  done
}

# lv_verify_here: the guest runs on this host and checks its memory: two
# verify passes completed here, none failed (the console file is this
# host's, opened by the QEMU that runs the guest now).
lv_verify_here() {
  lv_wait_serial '^verify pass [0-9]+ ok' 900 2
  qm_say "guest on this host: $(grep -E '^verify pass' "$LV_DIR/guest.serial" | tail -1 | tr -d '\r') (every page of its pattern checked), $(grep -E '^tick' "$LV_DIR/guest.serial" | tail -1 | tr -d '\r')"
}

# lv_field TEXT NAME: a value of virsh domjobinfo's output ("Name:  value",
# padded with blanks on both sides of the value).
lv_field() {
  echo "$1" | awk -v k="$2:" 'index($0, k) == 1 { sub(/^[^:]*: */, ""); sub(/[ \t\r]+$/, ""); print; exit }'
}

# lv_num VALUE: the number in front of "5 ms" (integer part).
lv_num() { echo "$1" | awk '{ printf "%d", $1 }'; }
# lv_kib VALUE: a size as virsh prints it ("512.000 KiB", "1.234 MiB") in KiB.
lv_kib() {
  echo "$1" | awk '{ n = $1; u = $2
    if (u == "B" || u == "bytes") n /= 1024; else if (u == "MiB") n *= 1024
    else if (u == "GiB") n *= 1048576; else if (u == "TiB") n *= 1073741824
    printf "%d", n }'
}
