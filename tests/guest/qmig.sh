# shellcheck shell=sh disable=SC3043
# qmig.sh: helpers for the end-to-end tests (tests/softroce/tests/q_*.sh) and
# the demo. Sourced; runs under busybox sh in the bench VMs (and under bash or
# dash on a host, to try things out). The bench puts it in
# /usr/libexec/rdmae/qmig.sh with the nested QEMU, its firmware, the test
# guest and rdmae-qmp (see tests/softroce/lib/initramfs.sh).
#
# A QEMU instance is a NAME in the current directory:
#   NAME.serial  the test guest's console     NAME.qmp  QMP socket
#   NAME.log     QEMU's stdout and stderr     NAME.pid  its process id
#   NAME.rc      its exit status, once it exited
#
# Environment: QEMU (the binary), QEMU_FW (firmware dir, -L), GUEST_ELF,
# GUEST_MEM (MiB, default 128), GUEST_HOT (hot set in KiB, default 1024);
# /etc/rdmae-qemu.env, written by the bench, gives the defaults in the VMs
# (a value set before sourcing this file wins). qm_start takes other guests:
# see there, and lguest.sh for the Linux test guest.

[ -r /etc/rdmae-qemu.env ] && . /etc/rdmae-qemu.env
QEMU=${QEMU:-qemu-system-x86_64}
QEMU_FW=${QEMU_FW:-/usr/share/qemu}
GUEST_ELF=${GUEST_ELF:-/usr/share/rdmae/rdmae-guest.elf}
GUEST_MEM=${GUEST_MEM:-128}
GUEST_HOT=${GUEST_HOT:-1024}
QMP_TIMEOUT=${QMP_TIMEOUT:-120}
# The rdmae: channel authenticates both sides with a pre-shared key: every
# QEMU started here has a 'secret' object, rdmae-key, read from QM_KEY (a
# file written by bench_key in the test's directory, the same key in both
# VMs), and the migration parameter rdmae-secret naming it. A test can set
# QM_KEY before sourcing this file.
QM_KEY=${QM_KEY:-$(bench_key 2>/dev/null || echo "$PWD/key")}
# Lanes: rdmae connects multifd-channels + 1 of them.
QM_LANES=${QM_LANES:-4}

# qm_rdmae_args: the QEMU arguments that give rdmae: its key and lanes, as
# an operator sets them (-global sets a migration parameter for an
# -incoming given on the command line; QMP migrate-set-parameters also
# works). Harmless to other transports.
qm_rdmae_args() {
  echo "-object secret,id=rdmae-key,file=$QM_KEY,format=raw -global migration.rdmae-secret=rdmae-key -global migration.multifd-channels=$((QM_LANES - 1))"
}

qm_say() { echo "${QM_PREFIX:-q}: $*"; }
# QM_ON_DIE: a command qm_die runs first, once (e.g. tell the peer VM).
# QM_FAIL_FILE: a file qm_die writes its reason to (a caller that runs a
# step in a subshell and goes on after a failure reads it there).
qm_die() {
  echo "${QM_PREFIX:-q}: FAIL: $*"
  [ -z "${QM_FAIL_FILE:-}" ] || echo "$*" >"$QM_FAIL_FILE"
  if [ -n "${QM_ON_DIE:-}" ]; then
    local h=$QM_ON_DIE
    QM_ON_DIE=
    eval "$h" || true
  fi
  exit 1
}

# The rdmae tests need the patched QEMU (RDMAE_QEMU on the host when the bench
# runs). Without it they fail, on purpose: a missing channel is not a skip.
qm_need_rdmae() {
  [ "${RDMAE_QEMU_PATCHED:-0}" = 1 ] ||
    qm_die "no QEMU with the rdmae: channel in this VM: set RDMAE_QEMU=\$(qemu-plugin/build.sh | tail -1) when running the bench (this VM has ${QEMU_VERSION:-unknown QEMU})"
}

# qm_launch NAME [QEMU ARGS...]: starts QEMU in the background with what
# every instance here has (no defaults, no display, QMP on NAME.qmp, output
# in NAME.log); returns once its QMP socket answers.
qm_launch() {
  local n=$1
  shift
  rm -f "$n.serial" "$n.qmp" "$n.log" "$n.pid" "$n.rc"
  : >"$n.serial"
  (
    "$QEMU" -name "$n" -nodefaults -no-user-config -display none \
      -qmp "unix:$n.qmp,server=on,wait=off" "$@" \
      </dev/null >"$n.log" 2>&1 &
    echo $! >"$n.pid"
    rc=0
    wait $! || rc=$?   # the tests run with set -e
    echo $rc >"$n.rc"
  ) &
  local i=0
  while [ ! -s "$n.pid" ]; do sleep 0.1; done
  while ! rdmae-qmp -t 5 "$n.qmp" query-status >/dev/null 2>&1; do
    if [ -f "$n.rc" ]; then
      cat "$n.log"
      qm_die "$n: QEMU exited at start (status $(cat "$n.rc"))"
    fi
    i=$((i + 1))
    [ $i -lt 120 ] || qm_die "$n: QMP does not answer after 120 tries"
    sleep 1
  done
}

# qm_start NAME [QEMU ARGS...]: starts QEMU with a guest, in the background;
# returns once its QMP socket answers. The guest is the bare-metal test guest
# unless the caller names another: GUEST_KERNEL (default GUEST_ELF),
# GUEST_INITRD (default none), GUEST_APPEND (default "hot=GUEST_HOT"),
# GUEST_MEM (MiB) and GUEST_SMP (default 1). Its console is NAME.serial.
qm_start() {
  local n=$1
  shift
  if [ -n "${GUEST_INITRD:-}" ]; then set -- -initrd "$GUEST_INITRD" "$@"; fi
  # shellcheck disable=SC2046
  qm_launch "$n" -accel tcg -smp "${GUEST_SMP:-1}" -m "$GUEST_MEM" -no-reboot -L "$QEMU_FW" \
    -kernel "${GUEST_KERNEL:-$GUEST_ELF}" -append "${GUEST_APPEND:-hot=$GUEST_HOT}" \
    -serial "file:$n.serial" $(qm_rdmae_args) $(qm_incoming_multifd "$@") "$@"
}

# qm_incoming_multifd QEMU ARGS...: the multifd capability for an
# -incoming rdmae: given on the command line (see qm_is_rdmae_migrate).
qm_incoming_multifd() {
  local a
  [ -z "${QM_NO_MULTIFD:-}" ] || return 0
  for a in "$@"; do
    case $a in rdmae:*) echo "-global migration.x-multifd=on"; return 0 ;; esac
  done
}

qm_pid() { cat "$1.pid"; }

# qm_trace_args TRANSPORT: QEMU arguments that enable the transport's setup
# trace events (rdmae: the phases of setup-time, on stderr, i.e. NAME.log).
qm_trace_args() {
  case $1 in
    rdmae) echo "-trace rdmae_setup_conn -trace rdmae_setup_conn_parts -trace rdmae_setup_src -trace rdmae_setup_dst -trace rdmae_reg_modes -trace rdmae_populate -trace rdmae_populate_skipped -trace rdmae_dereg" ;;
  esac
}

# qm_recheck NAME: when RDMAE_TEST_FAULTS names recheck (rdma/faults.h), the
# engine's recheck in NAME.log must say that no page's memory differs from
# the sum that side kept for it (source: no page changed after its last send
# without being sent again; destination: none changed after it was placed).
# Without the fault it checks nothing.
qm_recheck() {
  local l
  case ",${RDMAE_TEST_FAULTS:-}," in *,recheck,*) ;; *) return 0 ;; esac
  l=$(grep 'rdmae recheck: .* summed pages differ' "$1.log" 2>/dev/null | tail -1) || true
  [ -n "$l" ] || qm_die "$1: no 'rdmae recheck' line in $1.log, though RDMAE_TEST_FAULTS=$RDMAE_TEST_FAULTS"
  case $l in
    *": 0 of "*) qm_say "$1: ${l#rdmae }" ;;
    *) grep 'rdmae recheck' "$1.log" | head -8; qm_die "$1: ${l#rdmae }" ;;
  esac
}

# qm_setup_phases NAME: one line with the setup trace events in NAME.log.
qm_setup_phases() {
  local p
  p=$(grep -Eo 'rdmae_(setup_[a-z_]*|reg_modes|populate[a-z_]*) .*' "$1.log" 2>/dev/null | sed 's/^rdmae_setup_//; s/^rdmae_//' | tr '\n' ';' | sed 's/;$//') || true
  [ -z "$p" ] || qm_say "$1: setup phases: $p"
}
# qm_dst_verify_ram XPORT WHAT: on dst, take the source's RAM hash at its
# stop (or why it gave up) from port XPORT, wait for the incoming migration
# to finish, and compare the destination's RAM before cont with it; WHAT
# names the run in the messages.
qm_dst_verify_ram() {
  local msg hs hd
  msg=$(qm_recv "$1" 1800)
  case $msg in
    hash\ *) hs=${msg#hash } ;;
    *) qm_die "the source gave up: $msg" ;;
  esac
  qm_wait_incoming_done dst
  qm_setup_phases dst
  hd=$(qm_pmem_hash dst dst.mem)
  qm_say "RAM sha256: source at stop $hs"
  qm_say "RAM sha256: destination before cont $hd"
  [ "$hs" = "$hd" ] || qm_die "$2: source RAM at stop and destination RAM before cont differ"
  qm_say "$2: source and destination RAM are equal"
}

# qm_dereg NAME: the deregistration trace event in NAME.log (after QEMU has
# closed the channel: on the destination after its guest resumed).
qm_dereg() {
  local p
  p=$(grep -o 'rdmae_dereg .*' "$1.log" 2>/dev/null | sed 's/^rdmae_dereg //' | tail -1) || true
  [ -z "$p" ] || qm_say "$1: dereg: $p"
}
qm_alive() { [ ! -f "$1.rc" ] && kill -0 "$(qm_pid "$1")" 2>/dev/null; }

# qm_qmp NAME COMMAND...: see rdmae-qmp (JSON, bare name or hmp:TEXT).
qm_qmp() {
  local n=$1
  shift
  if [ -z "${QM_NO_MULTIFD:-}" ] && qm_is_rdmae_migrate "$*"; then
    rdmae-qmp -t "$QMP_TIMEOUT" "$n.qmp" '{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"multifd","state":true}]}}' >/dev/null ||
      qm_die "$n: migrate-set-capabilities multifd refused"
  elif qm_is_migrate "$*"; then
    # A QEMU that came in over rdmae: has multifd on; the other transports
    # run as QEMU's defaults have them (the peer was started so).
    rdmae-qmp -t "$QMP_TIMEOUT" "$n.qmp" '{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"multifd","state":false}]}}' >/dev/null ||
      qm_die "$n: migrate-set-capabilities multifd=false refused"
  fi
  rdmae-qmp -t "$QMP_TIMEOUT" "$n.qmp" "$@"
}

# rdmae: moves RAM through multifd, so an operator enables the multifd
# capability on both sides before migrate or migrate-incoming; qm_qmp does
# that for an rdmae migrate command (QM_NO_MULTIFD=1: not, to test the
# refusal), qm_start for an -incoming rdmae: on the command line.
qm_is_migrate() {
  case $1 in
    *'"execute":"migrate"'* | *'"execute":"migrate-incoming"'* | hmp:migrate\ *) return 0 ;;
  esac
  return 1
}

qm_is_rdmae_migrate() {
  case $1 in
    *'"execute":"migrate"'*rdmae* | *'"execute":"migrate-incoming"'*rdmae* | hmp:migrate\ *rdmae:*) return 0 ;;
  esac
  return 1
}

# jget KEY: the first value of "KEY" in the JSON on stdin (number or string).
jget() {
  awk -v k="\"$1\": " '{
    i = index($0, k); if (!i) next
    s = substr($0, i + length(k))
    if (substr(s, 1, 1) == "\"") { s = substr(s, 2); sub(/".*/, "", s) } else sub(/[,} ].*/, "", s)
    print s; found = 1; exit
  } END { exit !found }'
}

# qm_wait_serial NAME ERE [TIMEOUT [COUNT]]: waits until NAME.serial has COUNT
# (default 1) lines matching ERE. Fails on a VERIFY FAIL line or if QEMU exits.
qm_wait_serial() {
  local n=$1 re=$2 to=${3:-600} count=${4:-1} t=0 have
  while :; do
    have=$(grep -cE "$re" "$n.serial" 2>/dev/null || true)
    [ "${have:-0}" -lt "$count" ] || return 0
    if grep -q 'VERIFY FAIL' "$n.serial"; then
      grep -E 'VERIFY|verify pass' "$n.serial" | tail -12
      qm_die "$n: the guest found a mismatch in its memory"
    fi
    if ! qm_alive "$n"; then
      tail -5 "$n.serial"; cat "$n.log"
      qm_die "$n: QEMU exited (status $(cat "$n.rc" 2>/dev/null)) while waiting for /$re/"
    fi
    t=$((t + 1))
    if [ $t -gt "$to" ]; then
      tail -5 "$n.serial"
      qm_die "$n: no $count line(s) matching /$re/ on the guest's console within $to s"
    fi
    sleep 1
  done
}

# Number of the guest's last heartbeat line ("tick N ..."), 0 if none.
qm_last_tick() {
  awk '$1 == "tick" { t = $2 } END { print t + 0 }' "$1.serial"
}

# Last "verify pass N" number, 0 if none.
qm_last_pass() {
  awk '$1 == "verify" && $2 == "pass" { p = $3 } END { print p + 0 }' "$1.serial"
}

# qm_ticking NAME [WAIT]: the guest's heartbeat advances within WAIT s (default 60).
qm_ticking() {
  local n=$1 to=${2:-60} t0 t1 i=0
  t0=$(qm_last_tick "$n")
  while :; do
    t1=$(qm_last_tick "$n")
    if [ "$t1" -gt "$t0" ]; then
      qm_say "$n: guest heartbeat advances (tick $t0 -> $t1)"
      return 0
    fi
    i=$((i + 1))
    [ $i -le "$to" ] || qm_die "$n: guest heartbeat stuck at tick $t0 for $to s"
    sleep 1
  done
}

# qm_guest_ready NAME: the guest filled its RAM and completed a verify pass.
qm_guest_ready() {
  qm_wait_serial "$1" '^rdmae-guest: filled' 600
  qm_wait_serial "$1" '^verify pass [0-9]+ ok' 600
  qm_say "$1: guest running: $(grep -m1 '^rdmae-guest: boot' "$1.serial" | tr -d '\r')"
}

# qm_set_params NAME JSON-MEMBERS: migrate-set-parameters.
qm_set_params() {
  qm_qmp "$1" "{\"execute\":\"migrate-set-parameters\",\"arguments\":{$2}}" >/dev/null ||
    qm_die "$1: migrate-set-parameters {$2} refused"
}

# qm_migrate_wait NAME [TIMEOUT [PROGRESS]]: polls query-migrate every second
# until the status is completed, failed or cancelled; prints a progress line
# each poll when PROGRESS=1. The last answer is in NAME.mig (jget status <NAME.mig).
qm_migrate_wait() {
  local n=$1 to=${2:-900} progress=${3:-0} t=0 j st
  rm -f "$n.expdt"
  while :; do
    j=$(qm_qmp "$n" query-migrate) || qm_die "$n: query-migrate failed"
    echo "$j" >"$n.mig"
    st=$(echo "$j" | jget status || echo none)
    # expected-downtime is only reported while the migration runs: keep the last.
    echo "$j" | jget expected-downtime >"$n.expdt.new" && mv "$n.expdt.new" "$n.expdt"
    if [ "$progress" = 1 ]; then
      echo "$j" | awk -v t="$t" -v st="$st" -v p="${QM_PREFIX:-q}" '
        function num(k,  i, s) { i = index($0, "\"" k "\": "); if (!i) return 0
          s = substr($0, i + length(k) + 4); sub(/[,} ].*/, "", s); return s + 0 }
        { printf "%s: %4d s  %-9s transferred %7.1f MiB  remaining %7.1f MiB  %7.1f Mbit/s  dirty-sync-count %d\n",
            p, t, st, num("transferred") / 1048576, num("remaining") / 1048576, num("mbps"), num("dirty-sync-count") }'
    fi
    case $st in completed|failed|cancelled) return 0 ;; esac
    [ "$st" != none ] || [ $t -lt 60 ] || qm_die "$n: no migration started ($j)"
    t=$((t + 1))
    [ $t -le "$to" ] || { cat "$n.mig"; qm_die "$n: migration still '$st' after $to s"; }
    sleep 1
  done
}

# qm_figures NAME: prints the figures of the last query-migrate (NAME.mig)
# as KEY=VALUE lines (fields absent print as empty).
qm_figures() {
  local f=$1.mig k
  for k in status total-time downtime setup-time transferred \
    remaining total mbps dirty-sync-count normal duplicate normal-bytes; do
    echo "$(echo "$k" | tr '-' '_')=$(jget "$k" <"$f" || true)"
  done
  echo "expected_downtime=$(jget expected-downtime <"$f" || cat "$1.expdt" 2>/dev/null || true)"
}

# qm_check_figures NAME: query-migrate of a completed migration is plausible.
qm_check_figures() {
  local n=$1 status total_time downtime expected_downtime setup_time transferred \
    remaining total mbps dirty_sync_count normal duplicate normal_bytes
  eval "$(qm_figures "$n")"
  [ "$status" = completed ] || qm_die "$n: status '$status', want completed"
  for v in total_time downtime setup_time transferred total normal duplicate dirty_sync_count; do
    eval "x=\${$v}"
    # shellcheck disable=SC2154
    case $x in ''|*[!0-9]*) cat "$n.mig"; qm_die "$n: query-migrate: $v missing or not a number ('$x')" ;; esac
  done
  [ "$transferred" -gt 0 ] || qm_die "$n: transferred is 0"
  [ "$total_time" -gt 0 ] || qm_die "$n: total-time is 0"
  [ "$downtime" -le "$total_time" ] || qm_die "$n: downtime $downtime ms > total-time $total_time ms"
  [ "$dirty_sync_count" -ge 1 ] || qm_die "$n: dirty-sync-count $dirty_sync_count"
  # Every guest page was sent as a normal page or reported as zero (duplicate).
  local pages=$((GUEST_MEM * 256))
  [ $((normal + duplicate)) -ge $((pages * 9 / 10)) ] ||
    qm_die "$n: normal $normal + duplicate $duplicate pages < 90% of the guest's $pages pages"
  # The pattern covers most of RAM: at least that much went as normal pages.
  [ "$normal" -ge $((pages * 3 / 4)) ] ||
    qm_die "$n: only $normal normal pages for a guest that writes ~$((pages * 9 / 10)) of $pages pages"
  [ "$transferred" -ge $((normal * 4096 * 9 / 10)) ] ||
    qm_die "$n: transferred $transferred bytes < the $normal normal pages"
  qm_say "$n: query-migrate returned: $(tr -d '\n' <"$n.mig")"
  qm_say "$n: query-migrate plausible: status $status, total-time $total_time ms, downtime $downtime ms, setup-time $setup_time ms, transferred $transferred bytes, normal $normal + duplicate $duplicate pages, dirty-sync-count $dirty_sync_count"
}

# qm_pmem_hash NAME FILE: pmemsave of the guest's whole RAM, sha256.
qm_pmem_hash() {
  local n=$1 f=$2 h
  rm -f "$f"
  qm_qmp "$n" "{\"execute\":\"pmemsave\",\"arguments\":{\"val\":0,\"size\":$((GUEST_MEM * 1048576)),\"filename\":\"$PWD/$f\"}}" >/dev/null ||
    qm_die "$n: pmemsave failed"
  [ "$(stat -c %s "$f")" -eq $((GUEST_MEM * 1048576)) ] || qm_die "$n: pmemsave wrote $(stat -c %s "$f") bytes"
  h=$(sha256sum "$f" | cut -d' ' -f1)
  rm -f "$f"
  echo "$h"
}

# Tiny data exchange between the two VMs over eth0 (bench_sync only meets).
# qm_send PORT TEXT [TIMEOUT]: to the peer VM; retries until it listens
# (default 600 s).
qm_send() {
  local end=$(( $(cut -d. -f1 /proc/uptime) + ${3:-600} ))
  until echo "$2" | nc -w 5 "$PEER" "$1" 2>/dev/null; do
    [ "$(cut -d. -f1 /proc/uptime)" -lt "$end" ] || qm_die "cannot send to $PEER:$1 within ${3:-600} s"
    sleep 0.2
  done
}
# qm_recv PORT [TIMEOUT]: prints what the peer sent.
# busybox nc ends at the first EOF on either side: with stdin at EOF from the
# start it can quit before the peer's bytes are read. Its stdin here is a
# FIFO held open until nc is done.
qm_recv() {
  local f=.qm_recv.$1 sp rc=0
  rm -f "$f"; mkfifo "$f"
  sleep "${2:-600}" >"$f" &
  sp=$!
  timeout "${2:-600}" nc -l -p "$1" <"$f" || rc=$?
  kill "$sp" 2>/dev/null; wait "$sp" 2>/dev/null; rm -f "$f"
  [ $rc = 0 ] || qm_die "nothing received on port $1"
}

# qm_sync LABEL [TIMEOUT]: rendezvous of the two VMs, as bench_sync, but with
# qm_send/qm_recv (ports 9500 + 20 x test index + n).
qm_sync() {
  local n got
  n=$(cat .qm_sync 2>/dev/null || echo 0)
  echo $((n + 1)) >.qm_sync
  if [ "$ROLE" = dst ]; then
    got=$(qm_recv $((9500 + 20 * ${BENCH_INDEX:-0} + n)) "${2:-600}")
    [ "$got" = "$1" ] || qm_die "sync: dst at '$1', src at '$got'"
  elif [ "$ROLE" = src ]; then
    qm_send $((9500 + 20 * ${BENCH_INDEX:-0} + n)) "$1" "${2:-600}"
  fi
}

# qm_verify_after_resume NAME: two complete verify passes on NAME's console
# (the second started after the resume), none failed.
qm_verify_after_resume() {
  qm_wait_serial "$1" '^verify pass [0-9]+ ' 900 2
  grep -qE '^verify pass [0-9]+ FAIL|VERIFY FAIL' "$1.serial" && qm_die "$1: the guest reports a mismatch"
  qm_say "$1: guest verdict after resume: $(grep -E '^verify pass' "$1.serial" | tail -1 | tr -d '\r') (every page of its pattern checked on this side)"
}

qm_stop() { # NAME: quit QEMU if it runs
  qm_alive "$1" && { rdmae-qmp -t 10 "$1.qmp" quit >/dev/null 2>&1 || kill "$(qm_pid "$1")" 2>/dev/null; }
  local i=0
  while qm_alive "$1" && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  return 0
}

# Port for the n-th qm_send/qm_recv of a test (bench_sync uses 8000-8600).
qm_xport() { echo $((9000 + 10 * ${BENCH_INDEX:-0} + $1)); }

# Wait until the destination QEMU has loaded the whole migration (-S: it then
# stays paused).
qm_wait_incoming_done() {
  local n=$1 to=${2:-900} t=0 st
  while :; do
    st=$(qm_qmp "$n" query-status | jget status) || qm_die "$n: query-status failed"
    case $st in paused|postmigrate|running) return 0 ;; esac
    qm_alive "$n" || qm_die "$n: QEMU exited during the incoming migration: $(cat "$n.log")"
    t=$((t + 1))
    [ $t -le "$to" ] || qm_die "$n: still '$st' $to s after the source completed"
    sleep 1
  done
}

# qm_migrate_cmd TRANSPORT MODE HOST PORT: the source's migrate command.
# MODE: uri (QMP migrate "uri"), channels (QMP "channels"), hmp (migrate -d).
# QM_URI_OPTS is appended to the URI in the uri/hmp forms; QM_CHANNEL_OPTS
# (JSON members, e.g. "to": 5000) to the channel's address. The key and the
# lanes are migration parameters (qm_rdmae_args), never in the address.
qm_migrate_cmd() {
  local tr=$1 mode=$2 host=$3 port=$4 addr
  case $mode in
    uri) echo "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"$tr:$host:$port${QM_URI_OPTS:-}\"}}" ;;
    hmp) echo "hmp:migrate -d $tr:$host:$port${QM_URI_OPTS:-}" ;;
    channels)
      if [ "$tr" = tcp ]; then
        addr="{\"transport\":\"socket\",\"type\":\"inet\",\"host\":\"$host\",\"port\":\"$port\"}"
      else
        addr="{\"transport\":\"$tr\",\"host\":\"$host\",\"port\":\"$port\"${QM_CHANNEL_OPTS:+,$QM_CHANNEL_OPTS}}"
      fi
      echo "{\"execute\":\"migrate\",\"arguments\":{\"channels\":[{\"channel-type\":\"main\",\"addr\":$addr}]}}" ;;
  esac
}

# qm_e2e TRANSPORT MODE PORT [PROGRESS]: the whole check, run in both VMs.
#   dst: QEMU -S -incoming TRANSPORT:SELF:PORT (channels: -incoming defer,
#        then migrate-incoming with channels); waits for the source's hash.
#   src: boots the guest, waits for its first verify pass, migrates (downtime
#        limit QM_DOWNTIME_MS, default 2000), polls query-migrate, checks the
#        figures, hashes RAM at stop (pmemsave), sends the hash and figures.
#   dst: once loaded, hashes RAM before cont and compares; cont; waits for two
#        verify passes (the second wholly after the resume) and the heartbeat.
# Prints the figures as "figures TRANSPORT total_ms downtime_ms bytes ..." in
# QM_FIGURES (a file) on src.
qm_e2e() {
  local tr=$1 mode=$2 port=$3 progress=${4:-0} st hs hd msg
  if [ "$ROLE" = dst ]; then
    if [ "$mode" = channels ]; then
      # shellcheck disable=SC2046
      qm_start dst -S -incoming defer $(qm_trace_args "$tr")
      local ch
      ch=$(qm_migrate_cmd "$tr" channels "$SELF" "$port" | sed 's/"execute":"migrate"/"execute":"migrate-incoming"/')
      qm_qmp dst "$ch" >/dev/null || qm_die "dst: migrate-incoming refused"
    else
      # shellcheck disable=SC2046
      qm_start dst -S -incoming "$tr:$SELF:$port${QM_URI_OPTS:-}" $(qm_trace_args "$tr")
    fi
    qm_say "dst: QEMU waits for the guest on $tr:$SELF:$port ($mode form)"
    qm_sync ready 900
    qm_dst_verify_ram "$(qm_xport 1)" "$tr, $GUEST_MEM MiB"
    qm_recheck dst
    qm_qmp dst cont >/dev/null || qm_die "dst: cont failed"
    qm_verify_after_resume dst
    qm_ticking dst
    qm_stop dst
    qm_dereg dst
  else
    # shellcheck disable=SC2046
    qm_start src $(qm_trace_args "$tr")
    qm_guest_ready src
    qm_set_params src "\"downtime-limit\": ${QM_DOWNTIME_MS:-2000}"
    qm_sync ready 900
    QM_ON_DIE='qm_send "$(qm_xport 1)" "failed: see the source VM"'
    qm_say "src: migrating over $tr: to $PEER:$port ($mode form)"
    if ! qm_qmp src "$(qm_migrate_cmd "$tr" "$mode" "$PEER" "$port")" >migrate.out; then
      qm_die "src: migrate refused: $(cat migrate.out)"
    fi
    # HMP reports a refused migrate as text, not as a QMP error.
    if [ "$mode" = hmp ] && [ -s migrate.out ]; then
      qm_say "src: HMP said: $(cat migrate.out)"
      grep -qi 'error' migrate.out && qm_die "src: HMP migrate refused: $(cat migrate.out)"
    fi
    qm_migrate_wait src "${QM_MIGRATE_TIMEOUT:-1800}" "$progress"
    st=$(jget status <src.mig)
    if [ "$st" != completed ]; then
      cat src.mig
      qm_die "src: migration $st: $(jget error-desc <src.mig || true)"
    fi
    st=$(qm_qmp src query-status | jget status)
    [ "$st" = postmigrate ] || qm_die "src: run state '$st' after the migration, want postmigrate"
    hs=$(qm_pmem_hash src src.mem)
    QM_ON_DIE=
    qm_send "$(qm_xport 1)" "hash $hs"
    qm_recheck src
    qm_check_figures src
    qm_setup_phases src
    eval "$(qm_figures src)"
    # shellcheck disable=SC2154
    qm_say "RESULT $tr: total-time ${total_time} ms, downtime ${downtime} ms (expected ${expected_downtime:-?} ms), setup-time ${setup_time} ms, transferred $transferred bytes, dirty-sync-count $dirty_sync_count, $(awk -v b="$transferred" -v t="$total_time" 'BEGIN { printf "%.1f MB/s", (t > 0 ? b / t / 1000 : 0) }')"
    [ -z "${QM_FIGURES:-}" ] || qm_figures src >"$QM_FIGURES"
    qm_stop src
    qm_dereg src
  fi
}

# qm_midway TRANSPORT PORT: src side of the failure tests. Boots a guest that
# rewrites a 64 MiB hot set, sets a downtime limit of 1 ms and a bandwidth
# cap, so that the migration cannot complete on its own, starts it (URI
# form) and returns once it is active and has sent something.
qm_midway() {
  local tr=$1 port=$2 t=0 j st x
  GUEST_HOT=65536 qm_start src
  qm_guest_ready src
  qm_set_params src '"downtime-limit": 1, "max-bandwidth": 8388608'
  qm_sync ready 900
  qm_say "src: migrating over $tr: to $PEER:$port (cannot converge: 64 MiB hot set, 1 ms downtime limit)"
  qm_qmp src "$(qm_migrate_cmd "$tr" uri "$PEER" "$port")" >/dev/null || qm_die "src: migrate refused"
  while :; do
    j=$(qm_qmp src query-migrate)
    echo "$j" >src.mig
    st=$(echo "$j" | jget status || echo none)
    x=$(echo "$j" | jget transferred || echo 0)
    case $st in
      active) [ "$x" -gt 0 ] && break ;;
      completed|failed|cancelled) qm_die "src: migration '$st' before the test could act: $j" ;;
    esac
    t=$((t + 1)); [ $t -le 900 ] || qm_die "src: migration not active after 900 s: $j"
    sleep 1
  done
  sleep 3
  j=$(qm_qmp src query-migrate)
  qm_say "src: migration under way: status $(echo "$j" | jget status), transferred $(echo "$j" | jget transferred) bytes, dirty-sync-count $(echo "$j" | jget dirty-sync-count || echo -)"
}

# qm_source_survives: after a failed or cancelled migration the source guest
# runs on: run state running, heartbeat advancing, a later verify pass ok.
qm_source_survives() {
  local st p
  st=$(qm_qmp src query-status | jget status)
  [ "$st" = running ] || qm_die "src: run state '$st' after the migration ended, want running"
  qm_ticking src 120
  p=$(qm_last_pass src)
  qm_wait_serial src "^verify pass $((p + 1)) " 900
  grep -qE 'VERIFY FAIL|^verify pass [0-9]+ FAIL' src.serial && qm_die "src: the guest reports a mismatch"
  qm_say "src: guest runs on: $(grep -E '^verify pass' src.serial | tail -1 | tr -d '\r'), $(grep -E '^tick' src.serial | tail -1 | tr -d '\r')"
}

# qm_dst_exit_error [TIMEOUT]: the destination QEMU exits, with a non-zero
# status and a message. Prints the message.
qm_dst_exit_error() {
  local to=${1:-600} t=0 rc
  while qm_alive dst; do
    t=$((t + 1))
    if [ $t -gt "$to" ]; then
      qm_say "dst: QEMU log: $(tr '\n' ' ' <dst.log)"
      qm_die "dst: QEMU still runs $to s after the source ended the migration"
    fi
    [ $((t % 30)) != 0 ] ||
      qm_say "dst: QEMU still runs after $t s: $(rdmae-qmp -t 10 dst.qmp query-status query-migrate 2>&1 | tr '\n' ' ')"
    sleep 1
  done
  t=0
  while [ ! -f dst.rc ] && [ $t -lt 100 ]; do sleep 0.1; t=$((t + 1)); done
  rc=$(cat dst.rc 2>/dev/null || echo unknown)
  qm_say "dst: QEMU exited with status $rc: $(tr '\n' ' ' <dst.log)"
  [ "$rc" != 0 ] || qm_die "dst: QEMU exited with status 0 after a failed incoming migration"
  grep -q . dst.log || qm_die "dst: QEMU exited without a message"
}
