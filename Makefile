# rdmae: RDMA-accelerated memory transfer engine for live migration.
#
#   make          libraries, the perf tool and the verbs test programs
#   make check    every test: lint, host unit tests (ASan+UBSan), soft-RoCE bench
#   make demo     the main job, on the soft-RoCE bench
#   make perf     the benchmarks: rdmae against ib_write_bw in one VM run
#   make deps     install the Debian packages the project needs (idempotent)

CC       ?= gcc
BUILD    ?= build
CSTD     := -std=c11 -D_GNU_SOURCE
WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CFLAGS   ?= -O2 -g
ALLFLAGS := $(CSTD) $(WARN) $(CFLAGS) -fPIC -pthread -MMD -MP
SANFLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
LIBS     := -lrdmacm -libverbs -lnuma -lhugetlbfs -lxxhash -lpthread -lm

RDMA_SRC   := $(wildcard rdma/*.c)
ENGINE_SRC := $(wildcard engine/*.c)
PERF_SRC   := $(wildcard perf/*.c)
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

$(PERF_BIN): $(call rel_obj,$(PERF_SRC)) $(REL_LIBS)
	$(CC) $(ALLFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/san/unit/%: $(BUILD)/san/tests/unit/%.o $(SAN_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) $(SANFLAGS) -o $@ $^ $(LIBS) -lcmocka

$(BUILD)/san/verbs/%: $(BUILD)/san/tests/verbs/%.o $(SAN_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) $(SANFLAGS) -o $@ $^ $(LIBS)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# ---- dependencies ----
deps:
	tests/softroce/deps.sh install
deps-check:
	@tests/softroce/deps.sh check || tests/softroce/deps.sh install

# ---- tests ----
unit: deps-check $(UNIT_BINS)
	@tests/unit/run.sh $(UNIT_BINS)

lint: deps-check
	@tests/lint.sh

BENCH := RDMAE_BUILD=$(abspath $(BUILD)) tests/softroce/bench.sh

softroce: deps-check all
	$(BENCH)

check: deps-check
	$(MAKE) lint
	$(MAKE) unit
	$(MAKE) softroce

demo: deps-check all
	$(BENCH) --demo

perf: deps-check all
	$(BENCH) perf_transport

clean:
	rm -rf $(BUILD)
