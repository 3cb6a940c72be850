# Included by the top-level Makefile: the test guest and the QMP client the
# end-to-end tests run inside the bench VMs (tests/guest/guest.c, qmp.c).
#   make guest   -> $(BUILD)/guest/rdmae-guest.elf, $(BUILD)/guest/rdmae-qmp,
#                   $(BUILD)/guest/rdmae-lguest (the Linux test guest's
#                   workloads, static: it runs in the guest's own initramfs)

GUEST_DIR   := $(BUILD)/guest
GUEST_ELF   := $(GUEST_DIR)/rdmae-guest.elf
GUEST_QMP   := $(GUEST_DIR)/rdmae-qmp
GUEST_CFLAGS := -m32 -march=i686 -ffreestanding -fno-pic -fno-pie -fno-stack-protector \
  -fno-asynchronous-unwind-tables -mgeneral-regs-only -nostdlib -O2 -g \
  $(CSTD) $(WARN) $(REPRO)

$(GUEST_DIR)/boot.o: tests/guest/boot.S
	@mkdir -p $(dir $@)
	$(CC) $(GUEST_CFLAGS) -c $< -o $@
$(GUEST_DIR)/guest.o: tests/guest/guest.c
	@mkdir -p $(dir $@)
	$(CC) $(GUEST_CFLAGS) -c $< -o $@
$(GUEST_ELF): $(GUEST_DIR)/boot.o $(GUEST_DIR)/guest.o tests/guest/guest.ld
	ld -m elf_i386 -n -static --no-warn-rwx-segments -T tests/guest/guest.ld -o $@ $(GUEST_DIR)/boot.o $(GUEST_DIR)/guest.o
$(GUEST_QMP): tests/guest/qmp.c
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) $(REPRO) -O2 -g -o $@ $<

GUEST_LGUEST := $(GUEST_DIR)/rdmae-lguest
$(GUEST_LGUEST): tests/guest/linux/lguest.c
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) $(REPRO) -O2 -g -static -o $@ $<

guest: $(GUEST_ELF) $(GUEST_QMP) $(GUEST_LGUEST)
