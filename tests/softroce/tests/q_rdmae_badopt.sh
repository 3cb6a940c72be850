#!/bin/sh
# topology: two
# timeout: 900
# needs: qemu
# Bad rdmae: options are refused, before anything connects, with an error that
# names the option:
#   src: QMP migrate with each bad URI (and a bad option in the channels
#        form) returns an error naming the option; the guest runs on.
#   dst: QEMU -incoming with a bad URI exits non-zero, naming the option.
# Nothing listens on the port used, so an error about connecting would show
# that the option was not checked first.
# QM_BAD_OPTS (URI suffixes) and QM_BAD_CHANNEL_OPT (JSON member) can change
# the bad values tried.
# Needs the patched QEMU (RDMAE_QEMU); fails without it.
set -eu
. /usr/libexec/rdmae/qmig.sh
QM_PREFIX="q_rdmae_badopt $ROLE"
qm_need_rdmae
PORT=4454
BAD_OPTS=${QM_BAD_OPTS:-lanes=0 reg=bogus lanes=abc keepalive=-1 auth=bogus}
BAD_CHANNEL_OPT=${QM_BAD_CHANNEL_OPT:-\"lanes\": 0}

# option name of "name=value"
optname() { echo "${1%%=*}"; }

if [ "$ROLE" = dst ]; then
  for o in $BAD_OPTS; do
    rm -f dst.log
    rc=0
    timeout 300 "$QEMU" -accel tcg -m 16 -nodefaults -display none -L "$QEMU_FW" \
      -kernel "$GUEST_ELF" -incoming "rdmae:$SELF:$PORT$(qm_auth rdmae),$o" >dst.log 2>&1 || rc=$?
    msg=$(tr '\n' ' ' <dst.log)
    qm_say "dst: -incoming rdmae:$SELF:$PORT,$o: exit status $rc: $msg"
    [ "$rc" != 0 ] || qm_die "dst: QEMU accepted -incoming with $o"
    [ "$rc" != 124 ] || qm_die "dst: QEMU did not exit with $o (it waits for a connection?)"
    echo "$msg" | grep -qi "$(optname "$o")" || qm_die "dst: the error does not name the option '$(optname "$o")'"
  done
  qm_sync end 900
else
  qm_start src
  qm_wait_serial src '^rdmae-guest: filled' 600
  for o in $BAD_OPTS; do
    out=$(qm_qmp src "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"rdmae:$PEER:$PORT$(qm_auth rdmae),$o\"}}") && rc=0 || rc=$?
    qm_say "src: migrate rdmae:$PEER:$PORT,$o: $out"
    if [ "$rc" = 0 ]; then
      # Accepted as a command: the error must then be the migration's, and name the option.
      qm_migrate_wait src 300
      st=$(jget status <src.mig); err=$(jget error-desc <src.mig || true)
      qm_say "src: ... status $st: $err"
      [ "$st" = failed ] || qm_die "src: migration with $o: status $st, want refused"
      out=$err
    fi
    echo "$out" | grep -qi "$(optname "$o")" || qm_die "src: the error does not name the option '$(optname "$o")'"
    echo "$out" | grep -qiE 'connection refused|no route to host|unreachable|timed out' && qm_die "src: the error is about connecting: the option was not checked first"
  done
  out=$(qm_qmp src "$(QM_CHANNEL_OPTS=$BAD_CHANNEL_OPT qm_migrate_cmd rdmae channels "$PEER" "$PORT")") && rc=0 || rc=$?
  qm_say "src: migrate (channels, $BAD_CHANNEL_OPT): $out"
  [ "$rc" != 0 ] || qm_die "src: migrate accepted $BAD_CHANNEL_OPT in the channels form"
  o=$(echo "$BAD_CHANNEL_OPT" | sed 's/^ *"\([^"]*\)".*/\1/')
  echo "$out" | grep -qi "$o" || qm_die "src: the error does not name the option '$o'"
  st=$(qm_qmp src query-status | jget status)
  [ "$st" = running ] || qm_die "src: run state '$st' after the refused migrations, want running"
  qm_ticking src 120
  qm_stop src
  qm_sync end 900
fi
qm_say "pass"
