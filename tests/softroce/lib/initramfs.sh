# shellcheck shell=bash
# shellcheck disable=SC2012,SC2034
# Sourced by bench.sh. Builds the two initramfs parts of the bench VMs.
#
# The kernel unpacks concatenated (compressed) cpio archives one after the
# other, later files overwriting earlier ones, so the VM's initrd is
#   fixed part (cached in $CACHE, rebuilt only when its key changes)
#   + per-run part (rebuilt every run: project binaries and test scripts).
#
# Fixed part: busybox-static + applet links, /init and the guest helpers, the
# kernel modules below (dependencies first, built-ins skipped), iproute2's ip and
# rdma, the rdma-core/perftest tools, libibverbs' rxe provider, every library
# ldd names for those, libgcc_s.so.1 and the dynamic loader.
# Its key hashes: the kernel (package and version), the versions of the Debian
# packages it copies from, this file, the guest/ tree.

# Modules, in load order (as in doc/../shared/softroce.md). Missing dependencies
# are added from modules.dep; built-in ones are skipped. tun, bridge and vxlan
# are for a nested guest's network (tests/guest/lguest.sh: a bridge in each VM
# joined over the VMs' link, so the guest keeps its address when it moves).
INITRAMFS_MODULES=(crc32_generic udp_tunnel ip6_udp_tunnel ib_core ib_uverbs rdma_rxe
  configfs iw_cm ib_cm rdma_cm rdma_ucm dummy
  virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
  failover net_failover virtio_net tun bridge vxlan)

# The Linux test guest's own initramfs (tests/guest/linux): the same kernel's
# virtio modules, busybox, its init and rdmae-lguest.
LGUEST_MODULES=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
  failover net_failover virtio_net virtio_blk)

# Tools copied into the VM. ip, rdma and bridge go to /usr/sbin (call them by absolute
# path: busybox sh prefers its own "ip" applet), the rest to /usr/bin. jq lets a
# test check the JSON that rdmae-perf --json writes (1 MB with its libraries).
# gnuplot is not here: with libgd's image codecs it needs 57 MB of libraries;
# rdmae-perf --plot leaves its script for another machine to draw instead.
INITRAMFS_SBIN_TOOLS=(ip rdma bridge)
INITRAMFS_BIN_TOOLS=(ibv_devinfo ibv_devices ibv_rc_pingpong
  ib_write_bw ib_write_lat ib_read_bw ib_read_lat ib_send_bw ib_send_lat
  rping ucmatose udaddy jq)

# Packages whose versions go into the key of the fixed part.
INITRAMFS_KEY_PACKAGES=(busybox-static rdma-core ibverbs-providers ibverbs-utils
  rdmacm-utils perftest iproute2 libc6 libgcc-s1 libibverbs1 librdmacm1
  libnl-3-200 libnl-route-3-200 libmnl0 libbpf1 libelf1 libcap2 libbsd0 libpci3 zlib1g
  jq libjq1 libonig5)

INITRAMFS_RXE_PROVIDER=/usr/lib/x86_64-linux-gnu/libibverbs/librxe-rdmav34.so
INITRAMFS_RXE_DRIVER=/etc/libibverbs.d/rxe.driver

_which() { # tool -> absolute path on the host
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin command -v "$1" 2>/dev/null ||
    die "tool '$1' not found on this machine (tests/softroce/deps.sh install)"
}

# Copy the libraries ldd names for FILE into STAGE, at the same paths.
_copy_libs() { # stage file
  local stage=$1 f=$2 out line p
  out=$(ldd "$f" 2>&1) || {
    grep -q 'not a dynamic executable' <<<"$out" && return 0
    die "ldd $f failed: $out"
  }
  if grep -q 'not found' <<<"$out"; then
    die "ldd $f: $(grep 'not found' <<<"$out" | tr -s ' \t' ' ')"
  fi
  while IFS= read -r line; do
    p=
    case $line in
      *"=> /"*) p=${line#*=> }; p=${p%% (*} ;;
      [[:space:]]/*) p=${line#"${line%%[![:space:]]*}"}; p=${p%% (*} ;;
    esac
    [[ -n $p ]] || continue
    [[ -e $stage$p ]] && continue
    mkdir -p "$stage$(dirname "$p")"
    cp -L "$p" "$stage$p"
  done <<<"$out"
}

_copy_file() { # stage src dest
  mkdir -p "$1$(dirname "$3")"
  cp -L "$2" "$1$3"
}

_cpio_gz() { # dir out   (newc, owned by root, gzip -1, padded to 512 bytes)
  local dir=$1 out=$2 size pad
  (cd "$dir" && find . -mindepth 1 | LC_ALL=C sort |
    cpio --quiet -o -H newc -R 0:0) | gzip -1 >"$out.tmp"
  size=$(stat -c %s "$out.tmp")
  pad=$(( (512 - size % 512) % 512 ))
  [[ $pad -eq 0 ]] || head -c "$pad" /dev/zero >>"$out.tmp"
  mv "$out.tmp" "$out"
}

initramfs_key() {
  {
    echo "kernel $KID"
    dpkg-query -W -f='${Package} ${Version}\n' "${INITRAMFS_KEY_PACKAGES[@]}" 2>/dev/null || true
    echo "modules ${INITRAMFS_MODULES[*]}"
    # Contents only: a key must not change with the checkout's path.
    sha256sum <"$HERE/lib/initramfs.sh"
    (cd "$HERE/guest" && find . -type f | LC_ALL=C sort | xargs sha256sum)
  } | sha256sum | cut -c1-16
}

# Resolve modules (default INITRAMFS_MODULES) against modules.dep /
# modules.builtin; prints "name relpath" lines in load order.
_module_order() {
  local mdir=$KDIR/lib/modules/$KVER want="${*:-${INITRAMFS_MODULES[*]}}"
  awk -v want="$want" '
    function base(p,  b) { b = p; sub(/.*\//, "", b); sub(/\.ko(\.(xz|zst|gz))?$/, "", b); gsub(/-/, "_", b); return b }
    FILENAME ~ /modules\.builtin$/ { builtin[base($1)] = 1; next }
    {
      p = $1; sub(/:$/, "", p); n = base(p); path[n] = p
      deps[n] = ""
      for (i = NF; i >= 2; i--) deps[n] = deps[n] " " $i   # reversed: load last-listed first
    }
    function add(n,  k, m, d) {
      if (n in done) return
      if (!(n in path)) {
        if (n in builtin) { done[n] = 1; print "# builtin " n; return }
        print "ERROR " n; done[n] = 1; return
      }
      m = split(deps[n], d, " ")
      for (k = 1; k <= m; k++) add(base(d[k]))
      done[n] = 1
      print n " " path[n]
    }
    END { k = split(want, w, " "); for (i = 1; i <= k; i++) add(w[i]) }
  ' "$mdir/modules.builtin" "$mdir/modules.dep"
}

# Decompresses the modules and their dependencies into DIR, with DIR/load-order.
_stage_modules() { # dir modules...
  local dir=$1 n rel src mdir=$KDIR/lib/modules/$KVER
  shift
  mkdir -p "$dir"
  : >"$dir/load-order"
  while read -r n rel; do
    case $n in
      "#") vnote "initramfs: module $rel is built in" ; continue ;;
      ERROR) die "kernel module $rel: not in $mdir/modules.dep nor modules.builtin" ;;
    esac
    src=$mdir/$rel
    case $src in
      *.ko) cp "$src" "$dir/$n.ko" ;;
      *.ko.xz) xz -dc "$src" >"$dir/$n.ko" ;;
      *.ko.zst) zstd -qdc "$src" >"$dir/$n.ko" ;;
      *.ko.gz) gzip -dc "$src" >"$dir/$n.ko" ;;
      *) die "unexpected module file $src" ;;
    esac
    echo "$n" >>"$dir/load-order"
  done < <(_module_order "$@")
}

initramfs_fixed() { # sets FIXED_CPIO
  local key stage t p line
  key=$(initramfs_key)
  FIXED_CPIO=$CACHE/initramfs-fixed-$key.cpio.gz
  if [[ -f $FIXED_CPIO ]]; then
    vnote "initramfs: cached fixed part $FIXED_CPIO"
    return 0
  fi
  note "initramfs: building the fixed part (key $key)"
  stage=$WORK/fixed
  rm -rf "$stage"
  mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,usr/libexec/rdmae,etc/libibverbs.d,proc,sys,dev,tmp,run,root,tests,lib/modules/rdmae}
  chmod 1777 "$stage/tmp"

  # busybox and its applets (in /bin only: /usr/bin and /usr/sbin hold the real tools)
  _copy_file "$stage" "$(_which busybox)" /bin/busybox
  file -b "$stage/bin/busybox" 2>/dev/null | grep -q 'dynamically linked' &&
    die "busybox is dynamically linked; install busybox-static"
  for t in $("$stage/bin/busybox" --list); do
    [[ -e $stage/bin/$t || $t == busybox ]] || ln -s busybox "$stage/bin/$t"
  done

  # guest side of the bench
  cp "$HERE/guest/init" "$stage/init"
  chmod 755 "$stage/init"
  cp "$HERE"/guest/bin/* "$stage/usr/libexec/rdmae/"
  chmod 755 "$stage"/usr/libexec/rdmae/*

  _stage_modules "$stage/lib/modules/rdmae" "${INITRAMFS_MODULES[@]}"

  # tools + their libraries
  for t in "${INITRAMFS_SBIN_TOOLS[@]}"; do
    p=$(_which "$t"); _copy_file "$stage" "$p" "/usr/sbin/$t"; _copy_libs "$stage" "$p"
  done
  for t in "${INITRAMFS_BIN_TOOLS[@]}"; do
    p=$(_which "$t"); _copy_file "$stage" "$p" "/usr/bin/$t"; _copy_libs "$stage" "$p"
  done
  [[ -f $INITRAMFS_RXE_PROVIDER ]] || die "$INITRAMFS_RXE_PROVIDER missing (package ibverbs-providers)"
  _copy_file "$stage" "$INITRAMFS_RXE_PROVIDER" "$INITRAMFS_RXE_PROVIDER"
  _copy_libs "$stage" "$INITRAMFS_RXE_PROVIDER"
  _copy_file "$stage" "$INITRAMFS_RXE_DRIVER" "$INITRAMFS_RXE_DRIVER"
  p=$(ldconfig -p 2>/dev/null | awk '$1 == "libgcc_s.so.1" && /x86-64/ { print $NF; exit }')
  [[ -n $p ]] || p=/lib/x86_64-linux-gnu/libgcc_s.so.1
  [[ -f $p ]] || die "libgcc_s.so.1 not found (package libgcc-s1)"
  _copy_file "$stage" "$p" "$p"

  # /etc
  echo 'root:x:0:0:root:/root:/bin/sh' >"$stage/etc/passwd"
  echo 'root:x:0:' >"$stage/etc/group"
  printf '127.0.0.1 localhost\n10.9.9.1 src one\n10.9.9.2 dst\n' >"$stage/etc/hosts"
  echo 'hosts: files' >"$stage/etc/nsswitch.conf"
  printf '/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n' >"$stage/etc/ld.so.conf"
  PATH=$PATH:/usr/sbin:/sbin ldconfig -r "$stage" 2>/dev/null || true

  _cpio_gz "$stage" "$FIXED_CPIO"
  rm -rf "$stage"
  note "initramfs: fixed part $(du -h "$FIXED_CPIO" | cut -f1) -> $FIXED_CPIO"
  # Keep the three newest fixed parts.
  ls -t "$CACHE"/initramfs-fixed-*.cpio.gz 2>/dev/null | tail -n +4 | xargs -r rm -f
}

# Nested QEMU (per-run part, only when a selected test says "# needs: qemu"):
# the QEMU binary that $RDMAE_QEMU names (the patched one, with the rdmae:
# channel), else Debian's, as /usr/local/bin/qemu-system-x86_64 with every
# library ldd names and its TCG module if it has modules; the firmware a
# -kernel guest needs in /usr/share/rdmae/qemu-fw (-L); the test guest, the
# QMP client and the test helpers from build/guest and tests/guest; QEMU's
# migration-test when $RDMAE_QTEST names it (qemu-plugin/qtest.sh
# --build-only: built from the same tree as the patched QEMU); and
# /etc/rdmae-qemu.env, which tells the tests what they got.
INITRAMFS_QEMU_FW=(bios-256k.bin kvmvapic.bin linuxboot.bin linuxboot_dma.bin
  multiboot.bin multiboot_dma.bin pvh.bin)
INITRAMFS_QEMU_FW_DIRS=(/usr/share/seabios /usr/share/qemu)
# QEMU's migration-test ($RDMAE_QTEST, from qemu-plugin/qtest.sh
# --build-only) starts q35 machines with their default devices: the VGA's
# and the e1000e's ROMs besides the firmware above (qemu-plugin/qtest.sh).
INITRAMFS_QTEST_FW=(vgabios-stdvga.bin efi-e1000e.rom)
INITRAMFS_QTEST_FW_DIRS=(/usr/share/seabios /usr/share/qemu /usr/lib/ipxe/qemu)

initramfs_qemu() { # stage
  local stage=$1 q patched=0 f d found ver moddir="" m
  if [[ -n ${RDMAE_QEMU:-} ]]; then
    q=$RDMAE_QEMU patched=1
    [[ -x $q && -f $q ]] || die "RDMAE_QEMU=$q: not an executable file"
  else
    q=$(_which qemu-system-x86_64)
  fi
  ver=$("$q" --version 2>/dev/null | head -1) || die "$q --version failed"
  _copy_file "$stage" "$q" /usr/local/bin/qemu-system-x86_64
  _copy_libs "$stage" "$q"
  # TCG as a module (Debian's build): the module next to the binary (a build
  # tree), in <prefix>/lib/*/qemu, or in the binary's own module dir.
  for d in "$(dirname "$q")" "$(dirname "$q")"/../lib/*/qemu "$(dirname "$q")"/../lib/qemu \
    /usr/lib/x86_64-linux-gnu/qemu; do
    [[ -f $d/accel-tcg-x86_64.so ]] || continue
    [[ $d != /usr/lib/x86_64-linux-gnu/qemu || $q == /usr/bin/* ]] || continue
    moddir=/usr/lib/rdmae-qemu-modules
    for m in "$d"/accel-tcg-*.so; do
      _copy_file "$stage" "$m" "$moddir/$(basename "$m")"
      _copy_libs "$stage" "$m"
    done
    break
  done
  for f in "${INITRAMFS_QEMU_FW[@]}"; do
    found=
    for d in "${INITRAMFS_QEMU_FW_DIRS[@]}"; do
      [[ -f $d/$f ]] && { _copy_file "$stage" "$d/$f" "/usr/share/rdmae/qemu-fw/$f"; found=1; break; }
    done
    [[ -n $found ]] || die "QEMU firmware $f not in ${INITRAMFS_QEMU_FW_DIRS[*]} (packages seabios, qemu-system-data)"
  done
  # QEMU's migration-test, for qt_rdmae: /usr/local/bin/migration-test with
  # its libraries and the firmware its machines need. Without RDMAE_QTEST
  # the env file says so and qt_rdmae fails.
  local qtest=
  if [[ -n ${RDMAE_QTEST:-} ]]; then
    [[ -x $RDMAE_QTEST && -f $RDMAE_QTEST ]] || die "RDMAE_QTEST=$RDMAE_QTEST: not an executable file"
    _copy_file "$stage" "$RDMAE_QTEST" /usr/local/bin/migration-test
    _copy_libs "$stage" "$RDMAE_QTEST"
    for f in "${INITRAMFS_QTEST_FW[@]}"; do
      found=
      for d in "${INITRAMFS_QTEST_FW_DIRS[@]}"; do
        [[ -f $d/$f ]] && { _copy_file "$stage" "$d/$f" "/usr/share/rdmae/qemu-fw/$f"; found=1; break; }
      done
      [[ -n $found ]] || die "QEMU firmware $f not in ${INITRAMFS_QTEST_FW_DIRS[*]} (packages seabios, ipxe-qemu)"
    done
    qtest=/usr/local/bin/migration-test
  fi
  for f in "$BUILD_DIR/guest/rdmae-guest.elf" "$BUILD_DIR/guest/rdmae-qmp"; do
    [[ -f $f ]] || die "$f missing: run 'make guest'"
  done
  _copy_file "$stage" "$BUILD_DIR/guest/rdmae-guest.elf" /usr/share/rdmae/rdmae-guest.elf
  _copy_file "$stage" "$BUILD_DIR/guest/rdmae-qmp" /usr/local/bin/rdmae-qmp
  _copy_libs "$stage" "$BUILD_DIR/guest/rdmae-qmp"
  _copy_file "$stage" "$REPO/tests/guest/qmig.sh" /usr/libexec/rdmae/qmig.sh
  mkdir -p "$stage/etc"
  # Defaults only (:=): a test that sets one of these before sourcing
  # qmig.sh keeps its own.
  {
    echo ': "${QEMU:=/usr/local/bin/qemu-system-x86_64}"'
    echo ': "${QEMU_FW:=/usr/share/rdmae/qemu-fw}"'
    echo ': "${GUEST_ELF:=/usr/share/rdmae/rdmae-guest.elf}"'
    echo "RDMAE_QEMU_PATCHED=$patched"
    echo "RDMAE_QTEST=$qtest"
    printf 'QEMU_VERSION=%q\n' "$ver"
    [[ -z $moddir ]] || echo "QEMU_MODULE_DIR=$moddir; export QEMU_MODULE_DIR"
  } >"$stage/etc/rdmae-qemu.env"
  RUN_QEMU="QEMU $ver from $q$([[ $patched == 1 ]] || echo ' (Debian'"'"'s: no rdmae: channel; set RDMAE_QEMU)')"
  RUN_QEMU="$RUN_QEMU${qtest:+, migration-test from $RDMAE_QTEST}"
}

# The Linux test guest (tests/guest/linux), for tests with "# needs: linux":
# the bench's own Debian kernel, and an initramfs of busybox, the kernel's
# virtio modules, the guest's init and rdmae-lguest. Cached in
# $CACHE/lguest-KEY.cpio.gz; the key hashes the kernel, busybox, the module
# list, this builder and the contents (not the paths) of what goes in.
initramfs_lguest() { # sets LGUEST_CPIO
  local key stage t lg=$BUILD_DIR/guest/rdmae-lguest
  [[ -f $lg ]] || die "$lg missing: run 'make guest'"
  key=$( {
    echo "kernel $KID"
    dpkg-query -W -f='${Package} ${Version}\n' busybox-static 2>/dev/null || true
    echo "modules ${LGUEST_MODULES[*]}"
    sha256sum <"$HERE/lib/initramfs.sh"
    sha256sum <"$REPO/tests/guest/linux/init"
    sha256sum <"$lg"
  } | sha256sum | cut -c1-16)
  LGUEST_CPIO=$CACHE/lguest-$key.cpio.gz
  [[ -f $LGUEST_CPIO ]] && return 0
  note "initramfs: building the Linux test guest's initramfs (key $key)"
  stage=$WORK/lguest
  rm -rf "$stage"
  mkdir -p "$stage"/{bin,sbin,usr/bin,proc,sys,dev,tmp,root}
  _copy_file "$stage" "$(_which busybox)" /bin/busybox
  for t in $("$stage/bin/busybox" --list); do
    [[ -e $stage/bin/$t || $t == busybox ]] || ln -s busybox "$stage/bin/$t"
  done
  file -b "$lg" 2>/dev/null | grep -q 'statically linked' || die "$lg is not statically linked"
  _copy_file "$stage" "$lg" /usr/bin/rdmae-lguest
  cp "$REPO/tests/guest/linux/init" "$stage/init"
  chmod 755 "$stage/init" "$stage/usr/bin/rdmae-lguest"
  _stage_modules "$stage/lib/modules/lguest" "${LGUEST_MODULES[@]}"
  _cpio_gz "$stage" "$LGUEST_CPIO"
  rm -rf "$stage"
  note "initramfs: Linux guest initramfs $(du -h "$LGUEST_CPIO" | cut -f1) -> $LGUEST_CPIO"
  ls -t "$CACHE"/lguest-*.cpio.gz 2>/dev/null | tail -n +4 | xargs -r rm -f
}

# The Linux guest's files in the per-run part, and /etc/rdmae-linux.env.
initramfs_linux() { # stage
  local stage=$1 kernel
  initramfs_lguest
  kernel_pvh
  if [[ -n $LINUX_PVH ]]; then
    _copy_file "$stage" "$LINUX_PVH" /usr/share/rdmae/linux/vmlinux
    kernel=/usr/share/rdmae/linux/vmlinux
  else
    _copy_file "$stage" "$KDIR/vmlinuz" /usr/share/rdmae/linux/vmlinuz
    kernel=/usr/share/rdmae/linux/vmlinuz
  fi
  _copy_file "$stage" "$LGUEST_CPIO" /usr/share/rdmae/linux/initrd.img
  _copy_file "$stage" "$BUILD_DIR/guest/rdmae-lguest" /usr/local/bin/rdmae-lguest
  _copy_file "$stage" "$REPO/tests/guest/lguest.sh" /usr/libexec/rdmae/lguest.sh
  {
    echo ": \"\${LINUX_KERNEL:=$kernel}\""
    echo ": \"\${LINUX_INITRD:=/usr/share/rdmae/linux/initrd.img}\""
    printf 'LINUX_KVER=%q\n' "$KVER"
  } >"$stage/etc/rdmae-linux.env"
  RUN_QEMU="$RUN_QEMU, Linux guest $KVER (${kernel##*/})"
}

# libvirt (qemu-plugin/libvirt/build.sh), for tests with "# needs: libvirt":
# libvirtd, virsh, the QEMU and secret drivers, libvirt_iohelper and the CPU
# map, at the prefix's own path ($RDMAE_LIBVIRT: libvirt compiles its
# paths in and finds its libraries by rpath), debug info stripped (71 MB
# installed, most of it debug info and locales); /etc/passwd and /etc/group
# with root (the VMs have none, and qemu.conf's user = "root" is looked
# up); and /etc/rdmae-libvirt.env.
initramfs_libvirt() { # stage
  local stage=$1 lv=${RDMAE_LIBVIRT:-} f rel files=()
  [[ -n $lv ]] || die "a selected test needs libvirt: set RDMAE_LIBVIRT to qemu-plugin/libvirt/build.sh's prefix (make check-libvirt does)"
  [[ -x $lv/sbin/libvirtd && -x $lv/bin/virsh ]] || die "RDMAE_LIBVIRT=$lv: no sbin/libvirtd or bin/virsh there"
  for f in "$lv"/sbin/libvirtd "$lv"/bin/virsh "$lv"/libexec/libvirt_iohelper \
    "$lv"/lib/libvirt.so.0* "$lv"/lib/libvirt-qemu.so.0* \
    "$lv"/lib/libvirt/connection-driver/libvirt_driver_qemu.so \
    "$lv"/lib/libvirt/connection-driver/libvirt_driver_secret.so; do
    [[ -f $f && ! -L $f ]] || continue
    _copy_file "$stage" "$f" "$f"
    strip --strip-debug "$stage$f"
    files+=("$f")
  done
  # The sonames before ldd's walk, which would copy them unstripped.
  for f in "$lv"/lib/libvirt.so.0 "$lv"/lib/libvirt-qemu.so.0; do
    [[ -L $f ]] && cp -P "$f" "$stage$f"
  done
  for f in "${files[@]}"; do _copy_libs "$stage" "$f"; done
  for rel in share/libvirt/cpu_map etc/libvirt; do
    [[ -d $lv/$rel ]] || die "RDMAE_LIBVIRT=$lv: no $rel"
    mkdir -p "$stage$lv/$rel"
    cp -a "$lv/$rel/." "$stage$lv/$rel/"
  done
  mkdir -p "$stage/etc" "$stage$lv/var/run" "$stage$lv/var/lib" "$stage$lv/var/log" "$stage$lv/var/cache"
  echo 'root:x:0:0:root:/root:/bin/sh' >"$stage/etc/passwd"
  echo 'root:x:0:' >"$stage/etc/group"
  printf 'LV=%q\nLIBVIRT_VERSION=%q\n' "$lv" "$("$lv/bin/virsh" --version)" >"$stage/etc/rdmae-libvirt.env"
  _copy_file "$stage" "$REPO/tests/guest/lvirt.sh" /usr/libexec/rdmae/lvirt.sh
  RUN_QEMU="$RUN_QEMU, libvirt $("$lv/bin/virsh" --version) from $lv"
}

# Per-run part: project binaries (build/san/verbs/*, build/rel/rdmae-perf) in
# /usr/local/bin with their libraries, and every test script in /tests.
initramfs_run() { # out
  local out=$1 stage=$WORK/run f n=0
  rm -rf "$stage"
  mkdir -p "$stage/usr/local/bin" "$stage/tests"
  for f in "$BUILD_DIR"/san/verbs/* "$BUILD_DIR"/rel/rdmae-perf; do
    [[ -f $f && -x $f ]] || continue
    cp "$f" "$stage/usr/local/bin/"
    _copy_libs "$stage" "$f"
    n=$((n + 1))
  done
  cp "$TESTS_DIR"/*.sh "$stage/tests/"
  # Sourced helper libraries: in /tests/lib, never run as tests.
  if [[ -d $TESTS_DIR/lib ]]; then
    mkdir -p "$stage/tests/lib"
    cp "$TESTS_DIR"/lib/*.sh "$stage/tests/lib/"
  fi
  RUN_QEMU=
  [[ ${NEED_QEMU:-0} != 1 ]] || initramfs_qemu "$stage"
  [[ ${NEED_LINUX:-0} != 1 ]] || initramfs_linux "$stage"
  [[ ${NEED_LIBVIRT:-0} != 1 ]] || initramfs_libvirt "$stage"
  _cpio_gz "$stage" "$out"
  RUN_BINARIES=$n
  rm -rf "$stage"
}
