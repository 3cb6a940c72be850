# shellcheck shell=sh disable=SC3043
# lguest.sh: the Linux test guest (tests/guest/linux) in the bench VMs.
# Sourced after qmig.sh by tests with "# needs: qemu,linux"; the bench puts
# it in /usr/libexec/rdmae/lguest.sh with the guest's kernel and initramfs.
#
# The guest is Debian's kernel (the bench's own) with an initramfs whose
# init runs three workloads (rdmae-lguest): a self-checking memory pattern,
# a disk writer that reads back with O_DIRECT, and a UDP/TCP echo server.
# Its devices:
#   virtio-net  on a tap in bridge br0 of each bench VM; the two bridges are
#               joined by VXLAN over the VMs' link (eth0), so the guest keeps
#               its address 10.10.0.10 whichever VM it runs in
#   virtio-blk  one image exported over NBD from the dst VM by a QEMU with
#               no machine (-machine none), attached on both sides: migration
#               does not copy disks, so both must see the same one
#   serial      NAME.serial, the guest's console and its verdicts
[ -r /etc/rdmae-linux.env ] && . /etc/rdmae-linux.env
LG_IP=10.10.0.10
LG_PORT=7
LG_MAC=52:54:00:10:10:0a
LG_NBD_PORT=10809
LG_MEM_MIB=${LG_MEM_MIB:-16}
LG_HOT_KIB=${LG_HOT_KIB:-2048}
LG_BLOCKS=${LG_BLOCKS:-256}
# The kernel's console messages that mean the move hurt the guest. Each is
# specific: a blanket "warning" would fail on what TCG alone makes the
# kernel say.
LG_BAD_KLOG='soft lockup|hung_task|blocked for more than|virtio.*(error|fail)|I/O error|blk_update_request|clocksource.*(watchdog|unstable)|Marking clocksource|timekeeping watchdog'

# The guest's part of qm_start: kernel, initramfs, command line, memory.
lg_guest() {
  GUEST_KERNEL=$LINUX_KERNEL
  GUEST_INITRD=$LINUX_INITRD
  GUEST_MEM=${LG_GUEST_MEM:-256}
  GUEST_APPEND="console=ttyS0 quiet panic=-1 lguest.ip=$LG_IP/24 lguest.mem=$LG_MEM_MIB lguest.hot=$LG_HOT_KIB lguest.blocks=$LG_BLOCKS lguest.port=$LG_PORT"
  export GUEST_KERNEL GUEST_INITRD GUEST_MEM GUEST_APPEND
}

# lg_net_up: br0 with 10.10.0.1 (src VM) or 10.10.0.2 (dst VM), joined to
# the peer VM's br0 by vxlan0 over eth0.
lg_net_up() {
  local me
  [ "$ROLE" = src ] && me=1 || me=2
  $IP link add br0 type bridge || qm_die "ip link add br0 type bridge (bridge module?)"
  $IP link set br0 up
  $IP addr add "10.10.0.$me/24" dev br0
  $IP link add vxlan0 type vxlan id 42 local "$SELF" remote "$PEER" dstport 4789 dev "$NETDEV" ||
    qm_die "ip link add vxlan0 (vxlan module?)"
  $IP link set vxlan0 mtu 1500
  $IP link set vxlan0 master br0
  $IP link set vxlan0 up
  qm_say "network: br0 10.10.0.$me/24, vxlan0 to $PEER"
}

# lg_tap NAME: puts QEMU NAME's tap (created at its start) into br0.
lg_tap() {
  $IP link set "lg-$1" master br0 || qm_die "$1: tap lg-$1 not in br0"
  $IP link set "lg-$1" up
}

# The guest's devices, for qm_start: network on tap lg-NAME, disk over NBD.
lg_devices() { # NAME
  echo "-netdev tap,id=n1,ifname=lg-$1,script=no,downscript=no" \
    "-device virtio-net-pci,netdev=n1,mac=$LG_MAC,romfile=" \
    "-blockdev driver=nbd,node-name=vd0,server.type=inet,server.host=10.9.9.2,server.port=$LG_NBD_PORT,export=disk" \
    "-device virtio-blk-pci,drive=vd0"
}

# lg_storage_start (dst VM): a 16 MiB image, served over NBD to both VMs.
lg_storage_start() {
  rm -f disk.img
  truncate -s 16M disk.img
  qm_launch stor -machine none -blockdev "driver=file,filename=$PWD/disk.img,node-name=disk0"
  qm_qmp stor "{\"execute\":\"nbd-server-start\",\"arguments\":{\"addr\":{\"type\":\"inet\",\"data\":{\"host\":\"0.0.0.0\",\"port\":\"$LG_NBD_PORT\"}}}}" >/dev/null ||
    qm_die "stor: nbd-server-start refused"
  qm_qmp stor '{"execute":"block-export-add","arguments":{"type":"nbd","id":"e0","node-name":"disk0","name":"disk","writable":true}}' >/dev/null ||
    qm_die "stor: block-export-add refused"
  qm_say "storage: disk.img (16 MiB) exported over NBD on port $LG_NBD_PORT"
}

# lg_count NAME ERE: how many console lines match.
lg_count() { grep -cE "$2" "$1.serial" 2>/dev/null || true; }

# lg_wait_ready NAME: the guest booted and each workload reported once.
# Prints the boot time (QEMU start to "lguest: ready") in LG_BOOT_S.
lg_wait_ready() {
  local n=$1 t0 t1
  t0=${LG_START_UP:-$(cut -d' ' -f1 /proc/uptime)}
  qm_wait_serial "$n" '^lguest: ready' 1200
  t1=$(cut -d' ' -f1 /proc/uptime)
  LG_BOOT_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", b - a }')
  qm_say "$n: the guest's init runs after $LG_BOOT_S s; waiting for each workload's first verdict"
  lg_check_console "$n"
  qm_wait_serial "$n" '^echo listening' 300
  qm_wait_serial "$n" '^mem pass [0-9]+ OK' 600
  qm_wait_serial "$n" '^disk pass [0-9]+ OK' 600
  lg_check_console "$n"
  qm_say "$n: Linux guest ready ($LG_BOOT_S s from QEMU start, first verdicts $(awk -v a="$t1" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.0f", b - a }') s later: $(lg_verdict "$n" mem), $(lg_verdict "$n" disk)): $(grep -m1 '^lguest: ready' "$n.serial" | tr -d '\r')"
}

# lg_check_console NAME: no BAD verdict, no SETUP FAILED, no kernel message
# of the kinds in LG_BAD_KLOG.
lg_check_console() {
  local n=$1 bad
  bad=$(grep -E '^(mem|disk) pass [0-9]+ BAD|SETUP FAILED|WORKLOAD ENDED' "$n.serial" | head -5 || true)
  [ -z "$bad" ] || qm_die "$n: the guest reports: $bad"
  bad=$(grep -iE "$LG_BAD_KLOG" "$n.serial" | head -5 || true)
  [ -z "$bad" ] || qm_die "$n: the guest's kernel says: $bad"
}

# lg_verdict NAME mem|disk: the workload's last verdict and how long its
# pass took ("mem pass 12 OK (3400 ms)"): a slow guest shows up in the log.
lg_verdict() {
  grep -E "^$2 pass" "$1.serial" | tail -1 | tr -d '\r' | awk '{
    ms = ""; for (i = 5; i < NF; i++) if ($i == "ms") ms = " (" $(i + 1) " ms)"
    print $1, $2, $3, $4 ms }'
}

# lg_after_resume NAME: both workloads complete two more passes after the
# resume (the second wholly after it), all OK.
lg_after_resume() {
  local n=$1 m d
  m=$(lg_count "$n" '^mem pass [0-9]+ ')
  d=$(lg_count "$n" '^disk pass [0-9]+ ')
  qm_wait_serial "$n" '^mem pass [0-9]+ ' 900 $((m + 2))
  qm_wait_serial "$n" '^disk pass [0-9]+ ' 900 $((d + 2))
  lg_check_console "$n"
  LG_MEM_VERDICT=$(lg_verdict "$n" mem)
  LG_DISK_VERDICT=$(lg_verdict "$n" disk)
  qm_say "$n: after resume: $LG_MEM_VERDICT, $LG_DISK_VERDICT (read back with O_DIRECT)"
}

# lg_net_probe NAME: a request stream from this VM until the guest answers
# (2 s windows, up to 180 s); prints how long that took. NAME's console is
# shown if it never answers.
lg_net_probe() {
  local n=$1 out sp t0 t1 i=0
  t0=$(cut -d' ' -f1 /proc/uptime)
  while :; do
    rm -f probe.stop
    (sleep 2; touch probe.stop) &
    sp=$!
    out=$(rdmae-lguest netclient "$LG_IP" "$LG_PORT" probe.stop 2>&1) || true
    # Not a bare wait: the QEMU launchers are this shell's children too.
    wait "$sp" || true
    case $out in
      *" udp sent "*" answered 0 "*) ;;
      *" udp sent "*) break ;;
    esac
    i=$((i + 1))
    if [ $i -ge 90 ]; then
      lg_net_evidence
      qm_say "$n: console (last 15 lines):"; tail -15 "$n.serial" | sed 's/^/    /'
      qm_die "the guest does not answer the network after the move (180 s): $out"
    fi
  done
  t1=$(cut -d' ' -f1 /proc/uptime)
  LG_PROBE_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", b - a }')
  qm_say "network after the move: answered within $LG_PROBE_S s of the workloads' check ($i silent windows of 2 s): $out"
}

# lg_cpu NAME: where this VM's CPU goes for 5 s: QEMU NAME's busiest
# threads, and the whole VM's busy share (a guest that slows down after a
# move is starved by something on its new host).
lg_cpu() {
  local pid t
  pid=$(qm_pid "$1")
  for t in /proc/"$pid"/task/*; do
    echo "${t##*/} $(cut -d' ' -f14,15 "$t/stat" 2>/dev/null | awk '{ print $1 + $2 }') $(cat "$t/comm" 2>/dev/null | tr ' ' '_')"
  done >cpu0.txt
  head -1 /proc/stat >stat0.txt
  sleep 5
  for t in /proc/"$pid"/task/*; do
    echo "${t##*/} $(cut -d' ' -f14,15 "$t/stat" 2>/dev/null | awk '{ print $1 + $2 }') $(cat "$t/comm" 2>/dev/null | tr ' ' '_')"
  done >cpu1.txt
  head -1 /proc/stat >stat1.txt
  qm_say "$1: CPU over 5 s: VM busy $(cat stat0.txt stat1.txt | awk '{ b = $2 + $3 + $4 + $7 + $8; t = b + $5 + $6 } NR == 1 { b0 = b; t0 = t } NR == 2 { printf "%.0f%%", 100 * (b - b0) / (t - t0) }'); QEMU threads (ticks of 10 ms): $(awk 'FNR == NR { a[$1] = $2; next } { d = $2 - a[$1]; if (d > 0) printf "%s=%d ", $3, d }' cpu0.txt cpu1.txt)"
}

# What this VM knows of the guest's address, when the network fails.
lg_net_evidence() {
  qm_say "evidence: ping: $(ping -c 2 -W 2 "$LG_IP" 2>&1 | tail -2 | tr '\n' ' ')"
  qm_say "evidence: neighbours: $($IP neigh show dev br0 2>&1 | tr '\n' ';')"
  qm_say "evidence: br0 fdb: $(/usr/sbin/bridge fdb show br br0 2>&1 | grep -i "$LG_MAC" | tr '\n' ';')"
  qm_say "evidence: links: $($IP -br link 2>&1 | tr '\n' ';')"
  qm_say "evidence: processes: $(top -b -n 1 2>/dev/null | sed -n '5,12p' | tr -s ' ' | tr '\n' ';')"
}

# lg_client_start / lg_client_stop: the request stream that crosses a move.
lg_client_start() {
  rm -f client.stop client.out
  rdmae-lguest netclient "$LG_IP" "$LG_PORT" client.stop >client.out 2>&1 &
  LG_CLIENT=$!
}
lg_client_stop() {
  touch client.stop
  wait "$LG_CLIENT" || { lg_net_evidence; qm_die "netclient: $(cat client.out)"; }
  LG_NET=$(cat client.out)
  case $LG_NET in
    *"conn ok"*) ;;
    *) lg_net_evidence; qm_die "the guest's TCP connection did not survive the move: $LG_NET" ;;
  esac
  qm_say "requests across the move: $LG_NET"
}
