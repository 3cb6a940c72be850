# shellcheck shell=sh disable=SC2034  # the settings are for the scripts that source it
# fmatrix.sh: what the engine's fault-matrix tests (f_matrix, f_matrix_two)
# share. Sourced, never run as a test; the bench puts it in /tests/lib.
# Runs under busybox sh in the bench VMs.
#
# A fault is injected into a migration between two rdmae_mig processes; the
# side that reports prints "<side>: migration ended: ERROR (-ERRNO)" and
# "end time: T ms since boot" (CLOCK_BOOTTIME, as /proc/uptime), which the
# helpers below read back. Failed checks accumulate in WHY through fm_need;
# a case passes when WHY is empty.

# The keepalive of every case that needs one: idle 2 s, then 2 s for the answer.
FM_KA="--keepalive 2000 --keepalive-timeout 2000"
FM_KA_MS=4000
# "Mid-round" is one second into a round 1 that lasts about six: a 128 MiB
# guest at a 16 MB/s cap.
FM_MID="--size 128M --rate 1 --bw-cap 16"
WHY=""

# Milliseconds since boot, the clock of rdmae_mig's "end time".
fm_up_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
# A zombie has ended: only its status is left to collect.
fm_alive() { [ -e "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
# fm_reap PID SECONDS: wait for PID's exit (its status), or SIGKILL it after SECONDS.
fm_reap() {
  fm_i=0
  while fm_alive "$1" && [ $fm_i -lt $(($2 * 10)) ]; do sleep 0.1; fm_i=$((fm_i + 1)); done
  if fm_alive "$1"; then echo "  pid $1 still running after $2 s: killed"; kill -9 "$1"; fi
  wait "$1"
}
# The error a side's migration ended with, its end time, and when it began a hold.
fm_err_of() { sed -n 's/^[a-z]*: migration ended: \(.*\) (-[0-9]*)$/\1/p' "$1" | tail -1; }
fm_end_of() { sed -n 's/.*end time: \([0-9]*\) ms since boot.*/\1/p' "$1" | tail -1; }
fm_hold_of() { sed -n 's/.*holding at .* (from \([0-9]*\) ms since boot).*/\1/p' "$1" | tail -1; }
fm_need() { WHY="${WHY:+$WHY; }$1"; }

# The result table, one row per fault: fm_table_head SIDE, fm_table_row NAME OUTCOME ERROR MS.
fm_table_head() {
  printf '%-38s | %-7s | %-96s | %s\n' "fault" "outcome" "$1's end (its error, shortened)" "ms"
}
fm_table_row() { printf '%-38s | %-7s | %-96s | %s\n' "$1" "$2" "$(echo "$3" | cut -c1-96)" "$4"; }
