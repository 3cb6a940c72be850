#!/usr/bin/env bash
# Checks the test guest on this host, with Debian's QEMU and no RDMA:
#   1. it boots, fills its RAM and its verify passes are ok;
#   2. a tcp: migration between two QEMUs on 127.0.0.1 completes; source RAM
#      at stop and destination RAM before cont hash the same; the guest's
#      verify passes stay ok on the destination;
#   3. a migration stream with one byte flipped in a RAM page makes the guest
#      report VERIFY FAIL on the destination (the check does detect).
#
#   tests/guest/selftest.sh        (after make guest; QEMU=... to pick a binary)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BUILD=${RDMAE_BUILD:-$REPO/build}
export PATH=$BUILD/guest:$PATH
export GUEST_ELF=$BUILD/guest/rdmae-guest.elf
[[ -x $BUILD/guest/rdmae-qmp && -f $GUEST_ELF ]] || { echo "run 'make guest' first" >&2; exit 2; }
W=$(mktemp -d "${TMPDIR:-/tmp}/rdmae-guest-selftest.XXXXXX")
trap 'for p in "$W"/*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null; done; rm -rf "$W"' EXIT
# The firmware the bench copies into the VMs, gathered the same way.
export QEMU_FW=$W/fw
mkdir -p "$QEMU_FW"
for f in bios-256k.bin kvmvapic.bin linuxboot.bin linuxboot_dma.bin multiboot.bin multiboot_dma.bin pvh.bin; do
  for d in /usr/share/seabios /usr/share/qemu; do
    [[ -f $d/$f ]] && { ln -sf "$d/$f" "$QEMU_FW/$f"; break; }
  done
done
cd "$W"
export QM_PREFIX=selftest GUEST_MEM=${GUEST_MEM:-128}
# shellcheck source=qmig.sh
. "$HERE/qmig.sh"
PORT=$((20000 + RANDOM % 20000))

qm_say "1. boot"
qm_start src
qm_guest_ready src

qm_say "2. tcp: migration on 127.0.0.1:$PORT"
qm_start dst -S -incoming "tcp:127.0.0.1:$PORT"
qm_set_params src '"downtime-limit": 2000'
qm_qmp src "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"tcp:127.0.0.1:$PORT\"}}" >/dev/null
qm_migrate_wait src 600 1
qm_check_figures src
hs=$(qm_pmem_hash src src.mem)
hd=$(qm_pmem_hash dst dst.mem)
qm_say "RAM sha256: source at stop $hs, destination before cont $hd"
[[ $hs == "$hd" ]] || qm_die "source and destination RAM differ"
qm_qmp dst cont >/dev/null
qm_verify_after_resume dst
qm_ticking dst
qm_stop src; qm_stop dst

qm_say "3. a flipped byte in the stream is found"
qm_start src
qm_guest_ready src
qm_qmp src '{"execute":"migrate","arguments":{"uri":"exec:cat > '"$W"'/stream"}}' >/dev/null
qm_migrate_wait src 600
[[ $(jget status <src.mig) == completed ]] || qm_die "migration to a file: $(cat src.mig)"
size=$(stat -c %s stream)
# A byte in the middle of the stream lies inside a page of the pattern (RAM is
# nearly all normal pages); flip it.
off=$((size / 2))
b=$(od -An -tu1 -j "$off" -N1 stream | tr -d ' ')
printf "$(printf '\\%03o' $(( (b ^ 0x40) & 255 )))" | dd of=stream bs=1 seek="$off" conv=notrunc status=none
qm_say "flipped byte $off of $size (was $b)"
qm_stop src
qm_start dst -incoming "exec:cat $W/stream"
for _ in $(seq 1 600); do
  grep -q 'VERIFY FAIL' dst.serial && break
  qm_alive dst || break
  sleep 1
done
grep -E 'VERIFY FAIL|verify pass' dst.serial | head -4
grep -q 'VERIFY FAIL' dst.serial || qm_die "the flipped byte was not found"
qm_stop dst
qm_say "all checks passed"
