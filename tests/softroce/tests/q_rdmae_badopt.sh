#!/bin/sh
# topology: two
# timeout: 900
# needs: qemu
# Bad rdmae: input is refused, before anything connects, with an error that
# names what was wrong:
#   - an option after the address (the old rdmae:H:P,key=...,lanes=N form):
#     the address takes host and port only, and the error names the option
#     and the migration parameters that replaced it;
#   - a bad migration parameter: too many lanes (multifd-channels), a
#     rdmae-secret naming no object, a secret too short for a key, no key
#     and no x-rdmae-insecure, a registration mode that does not exist;
#   - a socket option in the channels form of the address;
#   - what rdmae cannot serve through multifd: the multifd capability off,
#     zero-page-detection legacy, multifd-compression other than none.
#   src: QMP migrate with each returns an error naming it; the guest runs on.
#   dst: QEMU -incoming with each exits non-zero, naming it.
# Nothing listens on the port used, so an error about connecting would show
# that the input was not checked first.
# QM_BAD_OPTS (URI suffixes) and QM_BAD_CHANNEL_OPT (JSON member) can change
# the bad values tried.
# Needs the patched QEMU (RDMAE_QEMU); fails without it.
set -eu
. /usr/libexec/rdmae/qmig.sh
QM_PREFIX="q_rdmae_badopt $ROLE"
qm_need_rdmae
PORT=4454
BAD_OPTS=${QM_BAD_OPTS:-lanes=2 key=/etc/rdmae/migration.key auth=none reg=pin-all}
BAD_CHANNEL_OPT=${QM_BAD_CHANNEL_OPT:-\"to\": 5000}

# option name of "name=value"
optname() { echo "${1%%=*}"; }

# dst_refuses WANT ARGS...: QEMU -incoming with ARGS exits non-zero, and its
# error names WANT.
dst_refuses() {
  want=$1
  shift
  rm -f dst.log
  rc=0
  timeout 300 "$QEMU" -accel tcg -m 16 -nodefaults -display none -L "$QEMU_FW" \
    -kernel "$GUEST_ELF" -global migration.x-multifd=on "$@" >dst.log 2>&1 || rc=$?
  msg=$(tr '\n' ' ' <dst.log)
  qm_say "dst: $*: exit status $rc: $msg"
  [ "$rc" != 0 ] || qm_die "dst: QEMU accepted $*"
  [ "$rc" != 124 ] || qm_die "dst: QEMU did not exit with $* (it waits for a connection?)"
  echo "$msg" | grep -qi -- "$want" || qm_die "dst: the error does not name '$want'"
}

# src_refuses WANT: the source's migrate to rdmae:PEER:PORT (QM_URI_OPTS
# appended) fails, at once or as the migration's error, naming WANT, and
# not because of the connection.
src_refuses() {
  want=$1
  out=$(qm_qmp src "$(qm_migrate_cmd rdmae uri "$PEER" "$PORT")") && rc=0 || rc=$?
  qm_say "src: migrate rdmae:$PEER:$PORT${QM_URI_OPTS:-}: $out"
  if [ "$rc" = 0 ]; then
    # Accepted as a command: the error must then be the migration's.
    qm_migrate_wait src 300
    st=$(jget status <src.mig); err=$(jget error-desc <src.mig || true)
    qm_say "src: ... status $st: $err"
    [ "$st" = failed ] || qm_die "src: migration with ${QM_URI_OPTS:-good options}: status $st, want refused"
    out=$err
  fi
  echo "$out" | grep -qi -- "$want" || qm_die "src: the error does not name '$want'"
  echo "$out" | grep -qiE 'connection refused|no route to host|unreachable|timed out' &&
    qm_die "src: the error is about connecting: the input was not checked first"
  return 0
}

# set_param NAME JSON: migrate-set-parameters on the source.
set_param() {
  qm_qmp src "{\"execute\":\"migrate-set-parameters\",\"arguments\":{\"$1\":$2}}" >/dev/null ||
    qm_die "src: migrate-set-parameters $1=$2 refused"
}

if [ "$ROLE" = dst ]; then
  base="-object secret,id=rdmae-key,file=$QM_KEY,format=raw -global migration.rdmae-secret=rdmae-key"
  for o in $BAD_OPTS; do
    # shellcheck disable=SC2086
    dst_refuses "$(optname "$o")" $base -incoming "rdmae:$SELF:$PORT,$o"
  done
  # shellcheck disable=SC2086
  dst_refuses multifd-channels $base -global migration.multifd-channels=16 -incoming "rdmae:$SELF:$PORT"
  dst_refuses nosuch -global migration.rdmae-secret=nosuch -incoming "rdmae:$SELF:$PORT"
  dst_refuses rdmae-secret -incoming "rdmae:$SELF:$PORT"
  # shellcheck disable=SC2086
  dst_refuses multifd $base -global migration.x-multifd=off -incoming "rdmae:$SELF:$PORT"
  # shellcheck disable=SC2086
  dst_refuses legacy $base -global migration.zero-page-detection=legacy -incoming "rdmae:$SELF:$PORT"
  printf 'short' >short.key
  dst_refuses short -object secret,id=short,file=short.key,format=raw \
    -global migration.rdmae-secret=short -incoming "rdmae:$SELF:$PORT"
  qm_sync end 900
else
  qm_start src
  qm_wait_serial src '^rdmae-guest: filled' 600
  for o in $BAD_OPTS; do
    QM_URI_OPTS=",$o"
    src_refuses "$(optname "$o")"
  done
  QM_URI_OPTS=

  # The multifd capability off (qm_qmp turns it on for rdmae otherwise).
  qm_qmp src '{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"multifd","state":false}]}}' >/dev/null ||
    qm_die "src: migrate-set-capabilities multifd=false refused"
  QM_NO_MULTIFD=1
  src_refuses multifd
  QM_NO_MULTIFD=
  set_param zero-page-detection '"legacy"'
  src_refuses legacy
  set_param zero-page-detection '"multifd"'
  set_param multifd-compression '"zlib"'
  src_refuses zlib
  set_param multifd-compression '"none"'

  set_param multifd-channels 16
  src_refuses multifd-channels
  set_param multifd-channels $((QM_LANES - 1))

  set_param rdmae-secret '"nosuch"'
  src_refuses nosuch
  printf 'short' >short.key
  qm_qmp src "{\"execute\":\"object-add\",\"arguments\":{\"qom-type\":\"secret\",\"id\":\"short\",\"file\":\"$PWD/short.key\",\"format\":\"raw\"}}" >/dev/null ||
    qm_die "src: object-add of the short secret failed"
  set_param rdmae-secret '"short"'
  src_refuses short
  set_param rdmae-secret '""'
  src_refuses rdmae-secret
  set_param rdmae-secret '"rdmae-key"'

  out=$(qm_qmp src '{"execute":"migrate-set-parameters","arguments":{"x-rdmae-registration":"bogus"}}') && rc=0 || rc=$?
  qm_say "src: migrate-set-parameters x-rdmae-registration=bogus: $out"
  [ "$rc" != 0 ] || qm_die "src: x-rdmae-registration=bogus accepted"
  echo "$out" | grep -qi "bogus\|x-rdmae-registration" || qm_die "src: the error does not name the value"

  out=$(qm_qmp src "$(QM_CHANNEL_OPTS=$BAD_CHANNEL_OPT qm_migrate_cmd rdmae channels "$PEER" "$PORT")") && rc=0 || rc=$?
  qm_say "src: migrate (channels, $BAD_CHANNEL_OPT): $out"
  [ "$rc" != 0 ] || qm_die "src: migrate accepted $BAD_CHANNEL_OPT in the channels form"
  o=$(echo "$BAD_CHANNEL_OPT" | sed 's/^ *"\([^"]*\)".*/\1/')
  echo "$out" | grep -qi "'$o'" || qm_die "src: the error does not name '$o'"
  st=$(qm_qmp src query-status | jget status)
  [ "$st" = running ] || qm_die "src: run state '$st' after the refused migrations, want running"
  qm_ticking src 120
  qm_stop src
  qm_sync end 900
fi
qm_say "pass"
