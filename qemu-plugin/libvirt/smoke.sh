#!/usr/bin/env bash
# A host smoke of the patched libvirt that needs no RDMA, no KVM, no systemd
# and no dbus (root only):
#   - two libvirtd --listen from build.sh's prefix, "src" and "dst", each in a
#     mount namespace of its own where the prefix's etc/libvirt and var are
#     bind-mounted from a private directory (libvirt compiles its privileged
#     paths in, so this is how two daemons and their configuration stay
#     private); TCP without authentication on 127.0.0.1, distinct host UUIDs;
#   - qemu.conf: root, no security driver, no cgroups, no namespaces,
#     stdio_handler="file", and the rdmae key as a libvirt secret
#     (migrate_rdmae_secret_uuid);
#   - the capability probe (migrate-rdmae) and the host's transports;
#   - a domain that boots the bare-metal test guest (build/guest, TCG) with
#     our QEMU as its emulator, domstate --reason, domjobinfo;
#   - virsh migrate --live over rdmae:// without <memtune><hard_limit>:
#     refused by libvirt (memlock); with it: refused by rdmae itself (this
#     host has no RDMA device), and the source domain runs on; the QMP
#     commands libvirt sent the destination's QEMU (multifd on, return-path
#     off, the key's secret object, rdmae-secret, rdmae:[::]:PORT).
#
#   qemu-plugin/libvirt/smoke.sh         (prints each command and its output)
#   SMOKE_KEEP=1 keeps the work directory (logs, configuration).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
[[ $(id -u) -eq 0 ]] || { echo "smoke.sh: run as root" >&2; exit 1; }

LV=$("$here/build.sh" | tail -1) || { echo "smoke.sh: libvirt build failed" >&2; exit 1; }
QEMU=$("$top/qemu-plugin/build.sh" | tail -1) || { echo "smoke.sh: QEMU build failed" >&2; exit 1; }
make -s -C "$top" guest >&2 || { echo "smoke.sh: make guest failed" >&2; exit 1; }
ELF=$top/build/guest/rdmae-guest.elf
[[ -f $ELF ]] || { echo "smoke.sh: no $ELF" >&2; exit 1; }

work=$(mktemp -d /tmp/rdmae-lv-smoke.XXXXXX)
SECRET_UUID=5d1f0b7e-6a40-4d52-9a2c-3c1e7f0a9e01
DOM=rdmae-smoke
declare -A PORT=([src]=16531 [dst]=16532) HOSTUUID=(
  [src]=8a4f0c52-1111-4e6b-9a11-0c5a1d2e3f01 [dst]=8a4f0c52-2222-4e6b-9a11-0c5a1d2e3f02)
pids=()
# <memtune><hard_limit>: libvirt sets QEMU's RLIMIT_MEMLOCK to it, which
# needs CAP_SYS_RESOURCE above the current hard limit. Guest RAM + 64 MiB
# where that is possible; a container without CAP_SYS_RESOURCE gets its own
# hard limit (nothing is pinned here: there is no RDMA device).
HARD_LIMIT_KIB=$(( (128 + 64) * 1024 ))
hl=$(ulimit -Hl)
if [[ $hl != unlimited ]] && ! capsh --has-p=cap_sys_resource 2>/dev/null &&
   ((hl < HARD_LIMIT_KIB)); then
  HARD_LIMIT_KIB=$hl
fi

cleanup() {
  virsh_src destroy "$DOM" >/dev/null 2>&1
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  if [[ -n ${SMOKE_KEEP:-} ]]; then echo "smoke.sh: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

virsh_at() { local side=$1; shift; "$LV/bin/virsh" -c "qemu+tcp://127.0.0.1:${PORT[$side]}/system" "$@"; }
virsh_src() { virsh_at src "$@"; }
# run CMD...: print it and its output (stdout and stderr), return its status
run() { echo "\$ ${*/#$LV\/bin\//}"; "$@" 2>&1; local rc=$?; echo "[exit $rc]"; return $rc; }

head -c 32 /dev/urandom >"$work/migration.key"
chmod 600 "$work/migration.key"
mkdir -p "$LV/var"
for side in src dst; do
  d=$work/$side
  mkdir -p "$d/etc" "$d/var/run" "$d/var/lib" "$d/var/log" "$d/var/cache"
  cp -a "$LV/etc/libvirt/." "$d/etc/"
  cat >"$d/etc/libvirtd.conf" <<CONF
listen_tls = 0
listen_tcp = 1
listen_addr = "127.0.0.1"
tcp_port = "${PORT[$side]}"
auth_tcp = "none"
auth_unix_rw = "none"
auth_unix_ro = "none"
host_uuid = "${HOSTUUID[$side]}"
log_level = 3
log_filters = "1:qemu.qemu_monitor"
log_outputs = "1:file:$d/libvirtd.log"
CONF
  cat >"$d/etc/qemu.conf" <<CONF
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
migrate_rdmae_secret_uuid = "$SECRET_UUID"
CONF
  unshare --mount --propagation private bash -c '
    mount --bind "$1/etc" "$2/etc/libvirt" && mount --bind "$1/var" "$2/var" &&
    exec "$2/sbin/libvirtd" --listen' smoke "$d" "$LV" >"$d/libvirtd.out" 2>&1 &
  pids+=($!)
done
for side in src dst; do
  for _ in $(seq 100); do virsh_at "$side" version >/dev/null 2>&1 && break; sleep 0.2; done
  virsh_at "$side" version >/dev/null 2>&1 || { echo "smoke.sh: libvirtd $side did not answer"; cat "$work/$side/libvirtd.out"; exit 1; }
done

echo "== libvirt $("$LV/bin/virsh" --version), QEMU $QEMU"
for side in src dst; do
  cat >"$work/secret.xml" <<XML
<secret ephemeral='no' private='yes'>
  <uuid>$SECRET_UUID</uuid>
  <description>rdmae migration key</description>
</secret>
XML
  virsh_at "$side" secret-define "$work/secret.xml" >/dev/null &&
    virsh_at "$side" secret-set-value "$SECRET_UUID" --file "$work/migration.key" --plain >/dev/null ||
    { echo "smoke.sh: the $side secret failed"; exit 1; }
done
echo "== the key: a private libvirt secret on both daemons, $SECRET_UUID (qemu.conf migrate_rdmae_secret_uuid)"

echo "== host migration transports (virsh capabilities)"
virsh_src capabilities | sed -n '/<uri_transports>/,/<\/uri_transports>/p' | grep '<uri_transport>'

domxml() {  # domxml WITH_HARD_LIMIT
  cat <<XML
<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>$DOM</name>
  <memory unit='MiB'>128</memory>
  $( [[ $1 = 1 ]] && echo "<memtune><hard_limit unit='KiB'>$HARD_LIMIT_KIB</hard_limit></memtune>" )
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$ELF</kernel>
    <cmdline>hot=1024</cmdline>
  </os>
  <on_reboot>destroy</on_reboot>
  <devices>
    <emulator>$QEMU</emulator>
    <controller type='usb' model='none'/>
    <serial type='file'><source path='$work/guest.serial'/></serial>
    <memballoon model='none'/>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-L'/><qemu:arg value='/usr/share/qemu'/>
    <qemu:arg value='-L'/><qemu:arg value='/usr/share/seabios'/>
  </qemu:commandline>
</domain>
XML
}

migrate() {
  run "$LV/bin/virsh" -c "qemu+tcp://127.0.0.1:${PORT[src]}/system" migrate --live --verbose "$DOM" \
    "qemu+tcp://127.0.0.1:${PORT[dst]}/system" --migrateuri rdmae://127.0.0.1:4999 "$@"
}

echo "== 1. a domain without <memtune><hard_limit>"
domxml 0 >"$work/dom.xml"
run virsh_src define "$work/dom.xml"
run virsh_src start "$DOM"
echo "== the capability probe (QEMU capabilities cache of each emulator)"
for f in "$work"/src/var/cache/libvirt/qemu/capabilities/*.xml; do
  echo "$(sed -n 's|.*<emulator>\(.*\)</emulator>.*|\1|p' "$f"): $(grep -o "migrate-rdmae*" "$f" | tr '\n' ' ')"
done
migrate
run virsh_src domstate --reason "$DOM"
run virsh_src destroy "$DOM"
run virsh_src undefine "$DOM"

echo "== 2. with <memtune><hard_limit> $HARD_LIMIT_KIB KiB"
domxml 1 >"$work/dom.xml"
run virsh_src define "$work/dom.xml"
run virsh_src start "$DOM"
sleep 2
run virsh_src domstate --reason "$DOM"
run virsh_src domjobinfo "$DOM"
echo "guest console: $(tr -d '\r' <"$work/guest.serial" | tail -1)"
# No --parallel: the rdmae:// URI implies it, and sets multifd-channels on
# both sides.
migrate --parallel-connections 3
run virsh_src domstate --reason "$DOM"
run virsh_src domjobinfo --completed "$DOM"
echo "== what libvirt asked of the destination's QEMU (QMP, from its log)"
grep -o 'QEMU_MONITOR_SEND_MSG: mon=[^ ]* msg={"execute":"\(object-add\|migrate-set-capabilities\|migrate-set-parameters\|migrate-incoming\)".*' \
  "$work/dst/libvirtd.log" | sed 's/^[^{]*//; s/"data":"[^"]*"/"data":"..."/; s/"iv":"[^"]*"/"iv":"..."/' |
  sed 's/{"capability":"\([a-z-]*\)","state":true}/\1/g; s/{"capability":"[a-z-]*","state":false},\{0,1\}//g' |
  sed 's/,\]/]/; s/,"id":"libvirt-[0-9]*"//; s/ fd=-1$//'
echo "(capabilities: only those turned on are listed)"
echo "== done"
