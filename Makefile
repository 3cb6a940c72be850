# rdmae: RDMA-accelerated memory transfer engine for live migration.
#
#   make          libraries, the perf tool and the verbs test programs
#   make check    every test: lint, host unit tests (ASan+UBSan), then the
#                 soft-RoCE bench: transport and engine tests, and the patched
#                 QEMU (built once and cached: make qemu) migrating a real
#                 guest over rdmae: and tcp: between two VMs, then QEMU's own
#                 migration-test's multifd tests against that binary
#   make check-long  make check, then make qemu-test (11 more minutes: the
#                 whole default set would take a cold CI run past its
#                 budget; doc/testing.md) and make check-libvirt (virsh
#                 migrate over rdmae:// with the patched libvirt 11.3.0)
#   make demo     the main job: a guest migrated over rdmae: on the bench
#   make qemu     QEMU 10.0.2 with the rdmae: channel; prints the binary's path
#   make qemu-test  QEMU's own tests/qtest/migration-test (its default set)
#                 against that binary (qemu-plugin/qtest.sh)
#   make install  librdmae, its headers and rdmae.pc (PREFIX=...)
#   make perf     the benchmarks: rdmae against ib_write_bw in one VM run
#   make bench    transport and migration (tcp:, rdma:, rdmae:) side by side,
#                 and the scale benchmark, bench-results/latest.json;
#                 make bench-scale: the scale benchmark alone (guests of
#                 256 MiB to 2 GiB); make bench-downtime: the downtime
#                 limit with QEMU deciding (10 migrations over rdmae:, 10
#                 over tcp:); make bench-callgrind: engine
#                 instructions per dirty page (doc/performance.md)
#   make deps     install the Debian packages the project needs (idempotent)
#   make fuzz     every libFuzzer harness of tests/fuzz/ for FUZZ_TIME seconds
#                 each (default 60); make check runs each for FUZZ_RUNS
#                 executions (make fuzz-short)

CC       ?= gcc
BUILD    ?= build
CSTD     := -std=c11 -D_GNU_SOURCE
WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CFLAGS   ?= -O2 -g
# Project headers are included by bare name, never by a relative path: the
# public ones include each other as installed (<rdmae/...>), and a file can
# move between directories without its includes changing.
INCS     := -Irdma -Iengine -Iperf
# Debug info names the checkout as ".", so that the same sources build the
# same bytes wherever they are cloned: the installed library is part of the
# QEMU cache key (qemu-plugin/build.sh), the Linux guest of the initramfs's.
REPRO    := -ffile-prefix-map=$(CURDIR)=.
ALLFLAGS := $(CSTD) $(INCS) $(WARN) $(CFLAGS) $(REPRO) -fPIC -pthread -MMD -MP
SANFLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
LIBS     := -lrdmacm -libverbs -lnuma -lhugetlbfs -lxxhash -lcrypto -lpthread -lm

RDMA_SRC   := $(wildcard rdma/*.c)
ENGINE_SRC := $(wildcard engine/*.c)
PERF_SRC   := $(wildcard perf/*.c)
# The synthetic guest of rdmae-perf migrate, shared with the test driver rdmae_mig.
GUEST_SRC  := perf/guest.c
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
VERBS_SRC  := $(wildcard tests/verbs/*.c)

# Two flavours of every object: release ($(BUILD)/rel) and sanitized ($(BUILD)/san).
rel_obj = $(patsubst %.c,$(BUILD)/rel/%.o,$(1))
san_obj = $(patsubst %.c,$(BUILD)/san/%.o,$(1))

REL_LIBS := $(BUILD)/rel/librdmae_engine.a $(BUILD)/rel/librdmae_rdma.a
SAN_LIBS := $(BUILD)/san/librdmae_engine.a $(BUILD)/san/librdmae_rdma.a

UNIT_BINS  := $(patsubst tests/unit/%.c,$(BUILD)/san/unit/%,$(UNIT_SRC))
# Verbs tests run inside the VM with the sanitizers on: teardown must leak nothing.
VERBS_BINS := $(patsubst tests/verbs/%.c,$(BUILD)/san/verbs/%,$(VERBS_SRC))
PERF_BIN   := $(BUILD)/rel/rdmae-perf

.PHONY: all check demo perf deps deps-check unit lint softroce clean
# Objects are inputs of several targets; keep them between runs.
.SECONDARY:
all: $(REL_LIBS) $(PERF_BIN) $(VERBS_BINS)

$(BUILD)/rel/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) -c $< -o $@
$(BUILD)/san/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) $(SANFLAGS) -c $< -o $@

$(BUILD)/rel/librdmae_rdma.a: $(call rel_obj,$(RDMA_SRC))
	@mkdir -p $(dir $@); rm -f $@; ar rcs $@ $^
$(BUILD)/san/librdmae_rdma.a: $(call san_obj,$(RDMA_SRC))
	@mkdir -p $(dir $@); rm -f $@; ar rcs $@ $^
$(BUILD)/rel/librdmae_engine.a: $(call rel_obj,$(ENGINE_SRC))
	@mkdir -p $(dir $@); rm -f $@; ar rcs $@ $^
$(BUILD)/san/librdmae_engine.a: $(call san_obj,$(ENGINE_SRC))
	@mkdir -p $(dir $@); rm -f $@; ar rcs $@ $^
$(BUILD)/san/librdmae_guest.a: $(call san_obj,$(GUEST_SRC))
	@mkdir -p $(dir $@); rm -f $@; ar rcs $@ $^

$(PERF_BIN): $(call rel_obj,$(PERF_SRC)) $(REL_LIBS)
	$(CC) $(ALLFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/san/unit/%: $(BUILD)/san/tests/unit/%.o $(SAN_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) $(SANFLAGS) -o $@ $^ $(LIBS) -lcmocka
# Tests over the mock verbs layer: mock_verbs.o defines the verbs (and
# rdma/mem.c's functions) the library's objects call, which take precedence
# over the shared libraries' and the library's own mem.o; mock_conn.o builds
# connections over them (reading mr.c's internals through mr.h);
# mock_fixture.o is the setup and checks those tests share.
MOCK_OBJS := $(BUILD)/san/tests/unit/mock_verbs.o $(BUILD)/san/tests/unit/mock_conn.o \
             $(BUILD)/san/tests/unit/mock_fixture.o
$(BUILD)/san/unit/test_mock_%: $(BUILD)/san/tests/unit/test_mock_%.o $(MOCK_OBJS) $(SAN_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) $(SANFLAGS) -o $@ $^ $(LIBS) -lcmocka
# qp.c alone (L1), its neighbours stubbed: the mock verbs, the clock, the
# error helper and nothing else of the transport; the test is qp.c's owner.
QP_UNIT_OBJS := $(call san_obj,rdma/qp.c rdma/time.c rdma/err.c) $(BUILD)/san/tests/unit/mock_verbs.o
$(BUILD)/san/unit/test_qp: $(BUILD)/san/tests/unit/test_qp.o $(QP_UNIT_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) $(SANFLAGS) -o $@ $^ $(LIBS) -lcmocka

$(BUILD)/san/verbs/%: $(BUILD)/san/tests/verbs/%.o $(BUILD)/san/librdmae_guest.a $(SAN_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) $(SANFLAGS) -o $@ $^ $(LIBS)

# Named as targets, so make builds them for the rule above like any object.
$(MOCK_OBJS):

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# ---- dependencies ----
deps:
	tests/softroce/deps.sh install
	qemu-plugin/deps.sh install
deps-check:
	@tests/softroce/deps.sh check || tests/softroce/deps.sh install
	@qemu-plugin/deps.sh check || qemu-plugin/deps.sh install

# ---- tests ----
# Then the migration drivers' command lines, on the host (no device needed).
unit: deps-check $(UNIT_BINS) $(BUILD)/san/verbs/rdmae_mig $(PERF_BIN)
	@tests/unit/run.sh $(UNIT_BINS)
	@tests/verbs/options.sh $(BUILD)/san/verbs/rdmae_mig $(PERF_BIN)

lint: deps-check
	@tests/lint.sh

# ---- fuzzing: libFuzzer harnesses of the wire parsers (tests/fuzz/, doc/testing.md) ----
# Built by clang with libFuzzer, ASan and UBSan, in objects of their own. Only
# the pure code the harnesses reach: the parsers and what they call, no verbs.
FUZZ_CC      ?= clang
FUZZ_TIME    ?= 60
FUZZ_RUNS    ?= 200000
FUZZ_LIB_SRC := rdma/wire.c rdma/auth.c rdma/frag.c rdma/credits.c rdma/err.c \
                engine/proto.c engine/commit_rules.c
FUZZ_SRC     := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS    := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/bin/%,$(FUZZ_SRC))
FUZZ_LIB     := $(BUILD)/fuzz/librdmae_fuzz.a
FUZZ_SAN     := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
                -fno-sanitize-recover=all
fuzz_obj = $(patsubst %.c,$(BUILD)/fuzz/%.o,$(1))

$(BUILD)/fuzz/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CSTD) $(INCS) $(WARN) $(FUZZ_SAN) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@
$(FUZZ_LIB): $(call fuzz_obj,$(FUZZ_LIB_SRC))
	@mkdir -p $(dir $@); rm -f $@; ar rcs $@ $^
$(BUILD)/fuzz/bin/%: $(BUILD)/fuzz/tests/fuzz/%.o $(FUZZ_LIB)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $^ -lcrypto
# The seed corpora come from the real encoders; regenerate them after a wire change.
$(BUILD)/fuzz/gen_corpus: $(BUILD)/fuzz/tests/fuzz/gen_corpus.o $(FUZZ_LIB)
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer-no-link -o $@ $^ -lcrypto

.PHONY: fuzz fuzz-short fuzz-build fuzz-corpus
fuzz-build: deps-check $(FUZZ_BINS)
# Bounded by executions, not time: a loaded machine runs as much as an idle one.
fuzz-short: fuzz-build
	@rm -rf $(BUILD)/fuzz/short
	@tests/fuzz/run.sh runs $(FUZZ_RUNS) $(BUILD)/fuzz/short $(FUZZ_BINS)
# The corpus grows across runs in $(BUILD)/fuzz/long.
fuzz: fuzz-build
	@tests/fuzz/run.sh time $(FUZZ_TIME) $(BUILD)/fuzz/long $(FUZZ_BINS)
fuzz-corpus: deps-check $(BUILD)/fuzz/gen_corpus
	rm -rf tests/fuzz/corpus
	$(BUILD)/fuzz/gen_corpus tests/fuzz/corpus

BENCH := RDMAE_BUILD=$(abspath $(BUILD)) tests/softroce/bench.sh
# The end-to-end tests and the demo run the patched QEMU (built once, cached
# outside the work tree: qemu-plugin/build.sh) nested in the bench VMs; qt_rdmae
# runs there QEMU's migration-test built from the same tree (qtest.sh --build-only).
WITH_QEMU := RDMAE_QEMU=$$(qemu-plugin/build.sh | tail -n 1) && export RDMAE_QEMU && \
  RDMAE_QTEST=$$(qemu-plugin/qtest.sh --build-only | tail -n 1) && export RDMAE_QTEST &&

softroce: deps-check all guest
	$(WITH_QEMU) $(BENCH)

# Builds use every core (CI's machine has two); what runs after them (unit
# tests, fuzzers, the bench) stays serial, as each recipe runs it.
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
check: deps-check
	$(MAKE) lint
	$(MAKE) -j$(JOBS) unit
	$(MAKE) -j$(JOBS) fuzz-short
	$(MAKE) -j$(JOBS) softroce
	$(MAKE) qemu-test-multifd

demo: deps-check all guest
	$(WITH_QEMU) $(BENCH) --demo

perf: deps-check all
	$(BENCH) perf_transport

# make bench: ib_write_bw against rdmae, the test guest over tcp:, rdma:
# and rdmae:, and the scale benchmark (make bench-scale: rdmae-perf migrate
# at 256 MiB, 1 GiB and 2 GiB, QEMU's setup-time at 128 and 512 MiB), and the
# downtime benchmark (make bench-downtime: the test guest with a 3 MiB hot set
# migrated 10 times over rdmae: and 10 over tcp: at QEMU's default downtime
# limit), in one bench run; writes bench-results/latest.{json,md,log}
# (doc/performance.md). Not part of make check: speed is not a test.
.PHONY: bench bench-scale bench-downtime bench-callgrind
bench: deps-check all guest
	$(WITH_QEMU) RDMAE_BUILD=$(abspath $(BUILD)) tests/softroce/bench_perf.sh
bench-scale: deps-check all guest
	$(WITH_QEMU) RDMAE_BUILD=$(abspath $(BUILD)) tests/softroce/bench_perf.sh scale_perf scale_qemu
bench-downtime: deps-check all guest
	$(WITH_QEMU) RDMAE_BUILD=$(abspath $(BUILD)) tests/softroce/bench_perf.sh downtime_qemu

# The engine's instructions per dirty page (bitmap to posted WRITE), verbs
# stubbed, under callgrind on the host: perf/callgrind/.
PAGECOST := $(BUILD)/rel/pagecost
PAGECOST_WRAP := -Wl,--wrap=ibv_reg_mr,--wrap=ibv_reg_mr_iova2,--wrap=ibv_dereg_mr,--wrap=rdma_create_qp
$(PAGECOST): $(BUILD)/rel/perf/callgrind/pagecost.o $(BUILD)/rel/perf/callgrind/stub_verbs.o $(REL_LIBS)
	$(CC) $(ALLFLAGS) -o $@ $^ $(PAGECOST_WRAP) $(LIBS)
bench-callgrind: $(PAGECOST)
	perf/callgrind/run.sh $(PAGECOST)

# ---- the test guest (tests/guest/) and the engine-only demo ----
.PHONY: guest demo-synthetic
include tests/guest/guest.mk

demo-synthetic: deps-check all
	$(BENCH) --demo-synthetic

clean:
	rm -rf $(BUILD)

# ---- install: librdmae.a, public headers and rdmae.pc for other builds (QEMU) ----
#   make install PREFIX=/some/dir
# Unchanged files keep their time stamps (install -C), so a build that depends
# on the installed headers does not rebuild for nothing.
PREFIX     ?= /usr/local
PUB_HDRS   := engine/rdmae_engine.h rdma/rdmae_conn.h rdma/rdmae_region.h rdma/rdmae_err.h \
              rdma/rdmae_wire.h rdma/rdmae_dev.h rdma/rdmae_runs.h
REL_ONE_LIB := $(BUILD)/rel/librdmae.a

$(REL_ONE_LIB): $(call rel_obj,$(ENGINE_SRC)) $(call rel_obj,$(RDMA_SRC))
	@mkdir -p $(dir $@); rm -f $@; ar rcs $@ $^

# The archive is static only, so Libs names what it needs (a shared build
# would move these to Libs.private). Written at every install: it holds PREFIX.
define RDMAE_PC
prefix=$(abspath $(PREFIX))
includedir=$${prefix}/include
libdir=$${prefix}/lib

Name: rdmae
Description: RDMA memory-transfer engine for VM live migration
Version: 1.0
Cflags: -I$${includedir}
Libs: -L$${libdir} -lrdmae -lrdmacm -libverbs -lnuma -lhugetlbfs -lxxhash -lcrypto -lpthread -lm
Libs.private: -lrdmacm -libverbs -lnuma -lhugetlbfs -lxxhash -lcrypto -lpthread -lm
endef
export RDMAE_PC

.PHONY: install
install: $(REL_ONE_LIB)
	@printf '%s\n' "$$RDMAE_PC" > $(BUILD)/rel/rdmae.pc
	install -d $(PREFIX)/lib/pkgconfig $(PREFIX)/include/rdmae
	install -C -m 644 $(REL_ONE_LIB) $(PREFIX)/lib/librdmae.a
	install -C -m 644 $(PUB_HDRS) $(PREFIX)/include/rdmae/
	install -C -m 644 $(BUILD)/rel/rdmae.pc $(PREFIX)/lib/pkgconfig/rdmae.pc

# ---- QEMU 10.0.2 with the rdmae: migration channel (qemu-plugin/) ----
# Cached in ~/.cache/rdmae/qemu; the last line printed is the binary's path.
.PHONY: qemu
qemu:
	qemu-plugin/build.sh

# QEMU's own migration test suite (tests/qtest/migration-test) built from the
# same tree and run against the patched binary. make check runs its multifd
# tests (what issue 19 changes; about 3 minutes); the whole default set
# (precopy, multifd, postcopy: 11 minutes here) would take a cold make check
# from 26 to 37.5 minutes against CI's 40, so it is make check-long
# (doc/testing.md, "QEMU's own migration tests").
QTEST_CHECK_PATHS := /x86_64/migration/multifd
.PHONY: qemu-test qemu-test-multifd check-long check-libvirt
qemu-test: deps-check
	qemu-plugin/qtest.sh
qemu-test-multifd: deps-check
	qemu-plugin/qtest.sh $(QTEST_CHECK_PATHS)
check-long: deps-check
	$(MAKE) check
	$(MAKE) qemu-test
	$(MAKE) check-libvirt

# virsh migrate over rdmae:// in the bench VMs (tests/softroce/tests/l_*.sh),
# with libvirt 11.3.0 patched and built once, cached outside the work tree
# (qemu-plugin/libvirt/build.sh: 4 to 8 minutes cold, a second warm).
# build.sh installs libvirt's own build dependencies (its deps.sh).
check-libvirt: deps-check all guest
	$(WITH_QEMU) RDMAE_LIBVIRT=$$(qemu-plugin/libvirt/build.sh | tail -n 1) && export RDMAE_LIBVIRT && \
	  $(BENCH) l_virsh_migrate
