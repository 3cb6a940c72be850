#!/usr/bin/env bash
# rdmae soft-RoCE bench: runs test scripts inside QEMU (TCG) VMs whose Debian
# kernel has rdma_rxe. See doc/testing.md.
#
#   bench.sh                 every test but "demo", the perf_*, scale_* and
#                            downtime_* benchmarks and the l_* (libvirt) tests
#                            (make check-libvirt runs those)
#   bench.sh NAME...         only these tests (tests/softroce/tests/NAME.sh)
#   bench.sh --demo          the test named "demo" (a QEMU guest over rdmae: and tcp:)
#   bench.sh --demo-synthetic  the test named "demo_synthetic" (the engine's own guest)
#   bench.sh --list          list the tests with topology and timeout
# Options: --keep (keep the work dir), -v (same as V=1).
# A test is a file NAME.sh of the tests folder whose first lines say
# "# topology: one|two", "# timeout: SECONDS" and optionally "# needs: qemu"
# (the nested QEMU and the bare-metal test guest) or "# needs: qemu,linux"
# (also the Linux test guest: tests/guest/linux) or "# needs: qemu,libvirt"
# (also libvirt, from RDMAE_LIBVIRT), and "# mem: MIB" for VMs
# of more memory than the topology's default (each VM of the boot gets the
# largest any of its tests asks for). Sourced helper libraries
# go in the folder's lib/ (they reach the VMs as /tests/lib/*.sh) and are
# never run as tests.
# Environment: RDMAE_CACHE (default ~/.cache/rdmae), RDMAE_BUILD (default
# <repo>/build), RDMAE_TESTS_DIR (default tests/softroce/tests), V=1
# (verbose), TMPDIR, RDMAE_QEMU (the QEMU with the rdmae: channel, for the
# tests with "# needs: qemu"; without it they get Debian's QEMU, and the rdmae:
# ones fail), RDMAE_QTEST (QEMU's migration-test from the same tree,
# qemu-plugin/qtest.sh --build-only, for qt_rdmae; without it qt_rdmae fails),
# RDMAE_LIBVIRT (qemu-plugin/libvirt/build.sh's prefix, for the l_* tests).
#
# Output ends with exactly one line "softroce: N passed, M failed"; the exit
# status is non-zero when M > 0.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${RDMAE_CACHE:-${HOME:-/tmp}/.cache/rdmae}
BUILD_DIR=${RDMAE_BUILD:-$REPO/build}
TESTS_DIR=${RDMAE_TESTS_DIR:-$HERE/tests}
V=${V:-0}
KEEP=0
DEMO=0
NEED_QEMU=0   # a selected test runs QEMU inside the VMs ("# needs: qemu")
NEED_LINUX=0  # ... with the Linux test guest ("# needs: qemu,linux")
NEED_LIBVIRT=0  # ... under libvirt ("# needs: qemu,libvirt")

# VM sizes
MEM_ONE=3072 SMP_ONE=2
MEM_TWO=2560 SMP_TWO=1
BOOT_SLACK=180      # s added to the sum of test timeouts, per boot
PER_TEST_SLACK=15   # s per test (barrier, cleanup)
PEER_EXIT_GRACE=30  # s a VM may outlive its peer (topology two)
# Console lines that fail the run (kernel-style, with a printk timestamp).
KERNEL_PROBLEM_RE='Kernel panic - not syncing|^\[ *[0-9]+\.[0-9]+\] .*(BUG:|Oops|general protection fault|KASAN|UBSAN:|kernel BUG at)'

note() { printf '[bench] %s\n' "$*"; }
vnote() { [[ $V != 1 ]] || printf '[bench] %s\n' "$*"; }

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

# ---------------------------------------------------------------- tests ----
declare -A T_TOPO T_TMO T_NEEDS T_MEM RES_STATUS RES_WHY
ALL_TESTS=()
SELECTED=()

hdr() { # file key default
  local v
  v=$(sed -n "1,20s/^# *$2: *\([0-9A-Za-z_,-]*\).*/\1/p" "$1" | head -1)
  printf '%s' "${v:-$3}"
}

discover_tests() {
  local f n
  for f in "$TESTS_DIR"/*.sh; do
    [[ -f $f ]] || continue
    n=$(basename "$f" .sh)
    [[ $n =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]*$ ]] || { note "skipping $f: bad test name"; continue; }
    T_TOPO[$n]=$(hdr "$f" topology "")
    T_TMO[$n]=$(hdr "$f" timeout 300)
    T_NEEDS[$n]=$(hdr "$f" needs "")
    T_MEM[$n]=$(hdr "$f" mem 0)
    case ${T_TOPO[$n]} in one|two) ;; *)
      echo "bench.sh: $f: header '# topology: one|two' missing or wrong" >&2; exit 2 ;;
    esac
    [[ ${T_TMO[$n]} =~ ^[0-9]+$ ]] || { echo "bench.sh: $f: bad '# timeout:'" >&2; exit 2; }
    [[ ${T_MEM[$n]} =~ ^[0-9]+$ ]] || { echo "bench.sh: $f: bad '# mem:' (MiB)" >&2; exit 2; }
    ALL_TESTS+=("$n")
  done
}

# ------------------------------------------------------------- summary ----
SUMMARY_DONE=0
summary() {
  local t pass=0 fail=0
  [[ $SUMMARY_DONE == 0 ]] || return 0
  SUMMARY_DONE=1
  echo "[bench] ---- results ----"
  for t in "${SELECTED[@]}"; do
    if [[ ${RES_STATUS[$t]:-} == pass ]]; then
      pass=$((pass + 1)); printf '  pass  %-28s %s\n' "$t" "${RES_WHY[$t]:-}"
    else
      fail=$((fail + 1)); printf '  FAIL  %-28s %s\n' "$t" "${RES_WHY[$t]:-did not run}"
    fi
  done
  echo "softroce: $pass passed, $fail failed"
  [[ $fail -eq 0 ]]
}

die() {
  echo "[bench] error: $*" >&2
  local t
  for t in "${SELECTED[@]}"; do
    [[ -n ${RES_STATUS[$t]:-} ]] || { RES_STATUS[$t]=fail; RES_WHY[$t]="not run: bench setup failed"; }
  done
  summary || true
  exit 1
}

# ------------------------------------------------------------- cleanup ----
WORK=
QEMU_PIDS=()
BG_PIDS=()
cleanup() {
  local p
  for p in "${QEMU_PIDS[@]}" "${BG_PIDS[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  if [[ -n $WORK && -d $WORK ]]; then
    if [[ $KEEP == 1 ]]; then note "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  fi
}
trap cleanup EXIT
trap 'echo "[bench] interrupted" >&2; exit 130' INT TERM

# ------------------------------------------------------------------ VMs ----
monitor() { # socket command
  printf '%s\n' "$2" | timeout 10 socat -t 1 - "UNIX-CONNECT:$1" >/dev/null 2>&1
}

# Follows one VM's console log: prints it (prefixed), records events for the
# summary in $WORK/NAME.events, and acts on "@@host" requests.
follow_vm() { # name log qemu_pid prefix monitors...
  local name=$1 log=$2 qpid=$3 prefix=$4; shift 4
  local mons=("$@") ev=$WORK/$name.events cur=boot line rest t st m
  : >"$ev"
  tail -n +1 -s 0.2 -F --pid="$qpid" "$log" 2>/dev/null | while IFS= read -r line || [[ -n $line ]]; do
    line=${line//$'\r'/}
    printf '%s%s\n' "$prefix" "$line"
    case $line in
      *"@@ready "*) echo "ready $EPOCHREALTIME" >>"$ev" ;;
      *"@@begin "*) rest=${line#*@@begin }; cur=${rest%% *}; echo "begin $cur $EPOCHREALTIME" >>"$ev" ;;
      *"@@result "*)
        rest=${line#*@@result }; t=${rest%% *}; rest=${rest#* }; st=${rest%% *}; rest=${rest#"$st"}
        echo "result $t $st ${rest# }" >>"$ev" ;;
      *"@@setup-failed"*) echo "setup-failed ${line#*@@setup-failed}" >>"$ev" ;;
      *"@@barrier-mismatch"*) echo "problem $cur barrier mismatch: ${line#*@@barrier-mismatch }" >>"$ev" ;;
      *"@@kernel-problem "*) echo "problem $cur kernel: ${line#*@@kernel-problem }" >>"$ev" ;;
      *"@@done "*) echo "done $EPOCHREALTIME" >>"$ev" ;;
      *"@@host link off"* | *"@@host link on"*)
        rest=${line#*@@host link }; st=${rest%% *}
        for m in "${mons[@]}"; do
          monitor "$m" "set_link n0 $st" || printf '%s[host] monitor %s: set_link failed\n' "$prefix" "$m"
        done
        printf '%s[host] link %s (set_link n0 %s on both VMs)\n' "$prefix" "$st" "$st" ;;
    esac
    if [[ $line =~ $KERNEL_PROBLEM_RE ]]; then
      echo "problem $cur kernel: $line" >>"$ev"
    fi
  done
}

free_port() {
  local p i
  for i in $(seq 1 50); do
    p=$(( 20000 + RANDOM % 30000 ))
    ss -Htan "( sport = :$p or dport = :$p )" 2>/dev/null | grep -q . || { echo "$p"; return 0; }
  done
  die "no free TCP port found"
}

wait_listen() { # port timeout_s pid
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    ss -Hltn "sport = :$1" 2>/dev/null | grep -q . && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

qemu_cmd() { # name mem smp append extra...
  local name=$1 mem=$2 smp=$3 append=$4; shift 4
  # shellcheck disable=SC2054
  QCMD=(qemu-system-x86_64 -name "rdmae-$name" -accel tcg,thread=multi -cpu max
    -m "$mem" -smp "$smp" -nodefaults -no-user-config -display none -no-reboot
    -L /usr/share/seabios -L /usr/share/qemu
    -kernel "$KDIR/vmlinuz" -initrd "$WORK/initrd.img" -append "$append"
    -serial "file:$WORK/$name.console" -monitor "unix:$WORK/$name.mon,server=on,wait=off"
    "$@")
}

start_qemu() { # name  (uses QCMD) -> QPID
  : >"$WORK/$1.console"
  vnote "qemu: ${QCMD[*]}"
  "${QCMD[@]}" </dev/null >"$WORK/$1.qemu.log" 2>&1 8<&- 9<&- &
  QPID=$!
  QEMU_PIDS+=("$QPID")
  echo "$EPOCHREALTIME" >"$WORK/$1.start"
}

# Runs the tests of one topology in one boot; fills RES_STATUS/RES_WHY.
run_topology() { # topo tests...
  local topo=$1; shift
  local tests=("$@") names=() pids=() fpids=() mons=() t sum=0 bound csv append base mem
  local i p port tries n alive first_exit now
  for t in "${tests[@]}"; do sum=$((sum + T_TMO[$t])); done
  bound=$((sum + BOOT_SLACK + PER_TEST_SLACK * ${#tests[@]}))
  csv=$(IFS=,; echo "${tests[*]}")
  base="console=ttyS0 panic=-1 oops=panic nowatchdog rcupdate.rcu_cpu_stall_suppress=1 rdmae.topo=$topo rdmae.tests=$csv rdmae.v=$V"
  [[ $V == 1 ]] || base="$base quiet"
  (( ${#base} < 1900 )) || die "kernel command line too long (${#base} chars): run fewer tests per call"

  # Per VM: the topology's default, or more where a test says "# mem:".
  if [[ $topo == one ]]; then mem=$MEM_ONE; else mem=$MEM_TWO; fi
  for t in "${tests[@]}"; do (( T_MEM[$t] <= mem )) || mem=${T_MEM[$t]}; done
  note "== topology $topo: ${tests[*]} (bound ${bound} s, $mem MiB per VM)"
  local need avail
  if [[ $topo == one ]]; then need=$mem; else need=$((2 * mem)); fi
  avail=$(awk '$1 == "MemAvailable:" { print int($2 / 1024) }' /proc/meminfo)
  if (( avail < need + 512 )); then
    note "warning: the VMs may use $need MiB of guest RAM, the host has $avail MiB available"
  fi
  if [[ $topo == one ]]; then
    names=(one)
    mons=("$WORK/one.mon")
    qemu_cmd one "$mem" "$SMP_ONE" "$base rdmae.role=one"
    start_qemu one; pids=("$QPID")
  else
    names=(src dst)
    mons=("$WORK/src.mon" "$WORK/dst.mon")
    for tries in 1 2 3; do
      port=$(free_port)
      qemu_cmd dst "$mem" "$SMP_TWO" "$base rdmae.role=dst" \
        -netdev "socket,id=n0,listen=127.0.0.1:$port" \
        -device "virtio-net-pci,netdev=n0,mac=52:54:00:09:09:02,romfile="
      start_qemu dst
      if wait_listen "$port" 20 "$QPID"; then break; fi
      note "dst QEMU did not listen on port $port: $(tail -3 "$WORK/dst.qemu.log")"
      kill "$QPID" 2>/dev/null || true; wait "$QPID" 2>/dev/null || true
      [[ $tries -lt 3 ]] || die "cannot start the dst VM"
    done
    pids=("$QPID")
    qemu_cmd src "$mem" "$SMP_TWO" "$base rdmae.role=src" \
      -netdev "socket,id=n0,connect=127.0.0.1:$port" \
      -device "virtio-net-pci,netdev=n0,mac=52:54:00:09:09:01,romfile="
    start_qemu src; pids=("$QPID" "${pids[@]}")
  fi

  for i in "${!names[@]}"; do
    n=${names[$i]}
    if [[ $topo == one ]]; then p=""; else p="$n| "; fi
    follow_vm "$n" "$WORK/$n.console" "${pids[$i]}" "$p" "${mons[@]}" 8<&- 9<&- &
    fpids+=("$!"); BG_PIDS+=("$!")
  done

  # Watchdog: global bound; a VM outliving its peer too long is stuck.
  local start=$SECONDS
  first_exit=
  while :; do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=$((alive + 1)); done
    [[ $alive -gt 0 ]] || break
    now=$SECONDS
    if (( now - start > bound )); then
      note "topology $topo: over its bound of $bound s; killing QEMU"
      echo "the boot overran its bound of $bound s" >"$WORK/$topo.killed"
      kill "${pids[@]}" 2>/dev/null || true
      break
    fi
    if (( alive < ${#pids[@]} )); then
      [[ -n $first_exit ]] || first_exit=$now
      if (( now - first_exit > PEER_EXIT_GRACE )); then
        note "topology $topo: one VM ended $PEER_EXIT_GRACE s ago, the other still runs; killing it"
        echo "its peer VM had ended $PEER_EXIT_GRACE s before" >"$WORK/$topo.killed"
        kill "${pids[@]}" 2>/dev/null || true
        break
      fi
    fi
    sleep 0.5
  done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for p in "${fpids[@]}"; do wait "$p" 2>/dev/null || true; done
  for n in "${names[@]}"; do
    if grep -qE 'qemu-system|error|Error' "$WORK/$n.qemu.log" 2>/dev/null; then
      note "$n: QEMU said: $(head -5 "$WORK/$n.qemu.log")"
    fi
  done

  collect_results "$topo" "${#names[@]}" "${names[@]}" "${tests[@]}"
}

collect_results() { # topo nvms names... tests...
  local topo=$1 nv=$2; shift 2
  local names=("${@:1:$nv}") tests=("${@:$((nv + 1))}")
  local n t ev st why line r0 r1 bt killed=""
  [[ -f $WORK/$topo.killed ]] && killed=$(cat "$WORK/$topo.killed")
  for n in "${names[@]}"; do
    ev=$WORK/$n.events
    r0=$(cat "$WORK/$n.start")
    r1=$(awk '$1 == "ready" { print $2; exit }' "$ev")
    if [[ -n $r1 ]]; then
      bt=$(awk -v a="$r0" -v b="$r1" 'BEGIN { printf "%.1f", b - a }')
      note "$n: booted in $bt s (QEMU start to rxe0 ACTIVE)"
      echo "$topo $n $bt" >>"$WORK/boot-times"
    fi
    line=$(awk '$1 == "setup-failed" { sub(/^[^ ]+ ?/, ""); print; exit }' "$ev")
    [[ -z $line ]] || note "$n: VM setup failed:$line"
  done
  for t in "${tests[@]}"; do
    st=pass why=""
    for n in "${names[@]}"; do
      ev=$WORK/$n.events
      line=$(awk -v t="$t" '$1 == "result" && $2 == t { sub(/^[^ ]+ [^ ]+ ?/, ""); print; exit }' "$ev" | sed 's/^ *//')
      if [[ -z $line ]]; then
        st=fail
        line="no result"
        awk -v t="$t" '$1 == "begin" && $2 == t { f = 1 } END { exit !f }' "$ev" && line="$line (started, never finished)"
        [[ -z $killed ]] || line="$line; VM killed: $killed"
      elif [[ $line != pass* ]]; then
        st=fail
      fi
      if [[ ${#names[@]} -gt 1 ]]; then why="$why${why:+; }$n: $line"; else why=$line; fi
      while IFS= read -r p; do
        [[ -n $p ]] || continue
        st=fail; why="$why; $n $p"
      done < <(awk -v t="$t" '$1 == "problem" && $2 == t { sub(/^[^ ]+ [^ ]+ ?/, ""); print }' "$ev")
    done
    RES_STATUS[$t]=$st
    RES_WHY[$t]="($topo) $why"
  done
  # Kernel problems outside any test (boot, poweroff): fail the last test.
  for n in "${names[@]}"; do
    while IFS= read -r p; do
      [[ -n $p ]] || continue
      t=${tests[-1]}
      RES_STATUS[$t]=fail; RES_WHY[$t]="${RES_WHY[$t]}; $n outside tests: $p"
    done < <(awk '$1 == "problem" && $2 == "boot" { sub(/^[^ ]+ [^ ]+ ?/, ""); print }' "$WORK/$n.events")
  done
}

# ----------------------------------------------------------------- main ----
main() {
  local a names=() t topo
  discover_tests
  while [[ $# -gt 0 ]]; do
    a=$1; shift
    case $a in
      --keep) KEEP=1 ;;
      --demo) DEMO=1 ;;
      --demo-synthetic) DEMO=2 ;;
      -v|--verbose) V=1 ;;
      --list)
        for t in "${ALL_TESTS[@]}"; do
          printf '%-28s topology %s, timeout %s s%s\n' "$t" "${T_TOPO[$t]}" "${T_TMO[$t]}" \
            "$( (( T_MEM[$t] == 0 )) || echo ", ${T_MEM[$t]} MiB per VM")"
        done
        exit 0 ;;
      -h|--help) usage; exit 0 ;;
      -*) echo "bench.sh: unknown option $a" >&2; usage >&2; exit 2 ;;
      *) names+=("${a%.sh}") ;;
    esac
  done
  if [[ $DEMO == 1 ]]; then
    names=(demo)
  elif [[ $DEMO == 2 ]]; then
    names=(demo_synthetic)
  elif [[ ${#names[@]} -eq 0 ]]; then
    for t in "${ALL_TESTS[@]}"; do
      [[ $t == demo || $t == demo_* || $t == perf_* || $t == scale_* || $t == downtime_* || $t == l_* ]] || names+=("$t")
    done
  fi
  for t in "${names[@]}"; do
    [[ -n ${T_TOPO[$t]:-} ]] || { echo "bench.sh: no test '$t' ($TESTS_DIR/$t.sh); have: ${ALL_TESTS[*]}" >&2; exit 2; }
    [[ " ${SELECTED[*]} " == *" $t "* ]] || SELECTED+=("$t")
    case ,${T_NEEDS[$t]}, in *,qemu,*) NEED_QEMU=1 ;; esac
    case ,${T_NEEDS[$t]}, in *,linux,*) NEED_QEMU=1 NEED_LINUX=1 ;; esac
    case ,${T_NEEDS[$t]}, in *,libvirt,*) NEED_QEMU=1 NEED_LIBVIRT=1 ;; esac
  done

  for t in qemu-system-x86_64 socat flock timeout cpio gzip ldd ss apt-cache apt-get dpkg-deb; do
    command -v "$t" >/dev/null || die "'$t' not found: run tests/softroce/deps.sh install"
  done
  PATH=$PATH:/usr/sbin:/sbin command -v depmod >/dev/null || die "'depmod' not found: run tests/softroce/deps.sh install"

  mkdir -p "$CACHE" || die "cannot create cache dir $CACHE"
  # Two locks: the cache dir's (protects the cache) and a machine-wide one
  # (two bench runs never share the 2 cores, whatever their caches).
  local glock=${RDMAE_LOCK:-/tmp/rdmae-bench.lock}
  [[ -e $glock ]] || (umask 0; : >"$glock") 2>/dev/null || true
  exec 8<"$glock" || die "cannot open lock file $glock"
  exec 9>"$CACHE/bench.lock" || die "cannot open $CACHE/bench.lock"
  if ! flock -n 8 || ! flock -n 9; then
    note "another bench run holds $glock or $CACHE/bench.lock; waiting (up to 2 h)"
    { flock -w 7200 8 && flock -w 7200 9; } || die "could not take the bench locks within 2 h"
  fi

  WORK=$(mktemp -d "${TMPDIR:-/tmp}/rdmae-bench.XXXXXX")
  local t0=$SECONDS
  # shellcheck source=lib/kernel.sh
  source "$HERE/lib/kernel.sh"
  # shellcheck source=lib/initramfs.sh
  source "$HERE/lib/initramfs.sh"
  kernel_fetch
  note "kernel: $KID"
  initramfs_fixed
  initramfs_run "$WORK/run.cpio.gz"
  cat "$FIXED_CPIO" "$WORK/run.cpio.gz" >"$WORK/initrd.img"
  note "initramfs: per-run part with $RUN_BINARIES project binaries${RUN_QEMU:+, $RUN_QEMU}; ready after $((SECONDS - t0)) s"

  for topo in one two; do
    local list=()
    for t in "${SELECTED[@]}"; do [[ ${T_TOPO[$t]} == "$topo" ]] && list+=("$t"); done
    [[ ${#list[@]} -eq 0 ]] || run_topology "$topo" "${list[@]}"
  done
  note "total $((SECONDS - t0)) s"
  summary
}

main "$@"
