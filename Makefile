# fspo build. `make` builds ./fspo; `make test` and `make demo` first run
# scripts/deps.sh, which installs what is missing (Debian packages).

CC       := mpicc
PKGS     := openblas hdf5 yaml-0.1 jansson
BUILD    ?= build
# -march=native: the binary is built where it runs (on a cluster, build on
# the compute node type). -fno-math-errno lets sqrtf inline; no fast-math,
# so results stay comparable with the PyTorch reference.
OPT      ?= -O2 -march=native -fno-math-errno
SAN      ?=
# recursive (=) so pkg-config runs only when a compile needs it, after deps
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   = $(shell pkg-config --libs $(PKGS))
CFLAGS_ALL = -std=c11 -D_POSIX_C_SOURCE=200809L $(OPT) $(SAN) -g -Wall -Wextra -Wshadow -Wno-unused-parameter \
             -I. $(PKG_CFLAGS) $(CFLAGS)
# oneDNN (libdnnl-dev) for the bf16 products: Debian's 2.6 ships no
# pkg-config file; it runs on OpenMP (libgomp), which src/bf16.c sets to one
# thread per caller
DNNL_LIBS  := -ldnnl -lgomp
LDLIBS_ALL = $(SAN) $(PKG_LIBS) $(DNNL_LIBS) -lm $(LDLIBS)

SRCS      := $(wildcard src/*.c src/cli/*.c mpi/*.c io/*.c)
LIB_OBJS  := $(patsubst %.c,$(BUILD)/%.o,$(filter-out src/cli/main.c,$(SRCS)))
MAIN_OBJ  := $(BUILD)/src/cli/main.o
TEST_SRCS := $(wildcard tests/test_*.c)
TEST_BINS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRCS))
TEST_LIB  := $(BUILD)/tests/golden.o $(BUILD)/tests/check.o $(BUILD)/tests/gradcheck.o
# test_model and test_bf16 count allocations in the step loop through these wrappers (tests/alloccount.c)
WRAP_ALLOC := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=posix_memalign

# other build trees (build-san, build-vg) keep their binary apart so all coexist
ifeq ($(BUILD),build)
FSPO_BIN := fspo
else
FSPO_BIN := $(BUILD)/fspo
endif

# libFuzzer harnesses (tests/fuzz/): clang builds them over the parsers only
FUZZ_SECONDS ?= 60
FUZZ_NAMES   := config jsonl tokenizer tokenizer_json h5file safetensors
FUZZ_BINS    := $(patsubst %,build-fuzz/fuzz_%,$(FUZZ_NAMES))
FUZZ_SRCS    := src/fault.c src/duration.c io/config.c io/jsonl_read.c io/ckpt.c io/dataset.c io/h5util.c io/inspect.c io/tokenizer_json.c \
                io/hf.c io/safetensors.c \
                src/model.c src/ops.c src/bf16.c src/peak.c src/pool.c src/optim.c src/batch.c src/pack.c src/tokenizer.c src/util.c \
                src/tokenizer_bpe.c src/unicode.c src/unicode_tables.c
HAVE_CLANG   := $(shell command -v clang 2>/dev/null)

.PHONY: all test demo small bench clean sanitize deps tests fuzz soak valgrind
all: $(FSPO_BIN)

$(FSPO_BIN): $(MAIN_OBJ) $(LIB_OBJS)
	$(CC) -o $@ $^ $(LDLIBS_ALL)

$(BUILD)/%.o: %.c $(wildcard src/*.h src/cli/*.h mpi/*.h io/*.h tests/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c -o $@ $<

$(BUILD)/tests/test_model $(BUILD)/tests/test_bf16: $(BUILD)/tests/%: tests/%.c $(LIB_OBJS) $(TEST_LIB) \
		$(BUILD)/tests/alloccount.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ $^ $(WRAP_ALLOC) $(LDLIBS_ALL)

$(BUILD)/tests/test_%: tests/test_%.c $(LIB_OBJS) $(TEST_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ $^ $(LDLIBS_ALL)

tests: $(FSPO_BIN) $(TEST_BINS) $(if $(HAVE_CLANG),$(if $(filter build,$(BUILD)),$(FUZZ_BINS)))

build-fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_SRCS) $(wildcard src/*.h io/*.h)
	@mkdir -p build-fuzz
	clang -std=c11 -D_POSIX_C_SOURCE=200809L -g -O1 -Wno-psabi -fsanitize=fuzzer,address,undefined -I. \
		$(PKG_CFLAGS) -o $@ $< $(FUZZ_SRCS) $(PKG_LIBS) $(DNNL_LIBS) -lm

# every harness for FUZZ_SECONDS each; findings land in build-fuzz/
fuzz: deps
	@$(MAKE) --no-print-directory $(FUZZ_BINS)
	@bash tests/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_NAMES)

deps:
	@bash scripts/deps.sh

test: deps
	@$(MAKE) --no-print-directory tests
	@BUILD=$(BUILD) FSPO=./$(FSPO_BIN) bash tests/run.sh

# ASan + UBSan build of the binary and the tests, then the whole suite on it.
sanitize: deps
	@$(MAKE) --no-print-directory BUILD=build-san OPT="-O1 -march=native" \
		SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" tests
	@BUILD=build-san FSPO=./build-san/fspo ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0 \
		LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 bash tests/run.sh

# SIGKILL soak: SOAK_TRIALS (default 20) trials per kind (mpirun, one rank,
# rank 0 inside a checkpoint write), each resumed and compared bit for bit
soak: deps
	@$(MAKE) --no-print-directory all $(BUILD)/tests/test_pack
	@SOAK_TRIALS=$${SOAK_TRIALS:-20} bash scripts/soak.sh

# valgrind memcheck on short runs of the main paths (scripts/valgrind.sh);
# build-vg has no AVX-512, which valgrind 3.19 cannot decode
valgrind: deps
	@command -v valgrind >/dev/null || { echo "valgrind missing: apt-get install valgrind"; exit 1; }
	@$(MAKE) --no-print-directory BUILD=build-vg OPT="-O1 -march=x86-64-v3" build-vg/fspo build-vg/tests/test_pack
	@BUILD=build-vg bash scripts/valgrind.sh

bench: deps
	@$(MAKE) --no-print-directory all
	@bash scripts/bench.sh

demo: deps
	@$(MAKE) --no-print-directory all
	@bash scripts/demo.sh

# the longer tier: the r2 model of docs/results.md experiment 18 from scratch (~1 hour on 2 cores, resumable)
small: deps
	@$(MAKE) --no-print-directory all
	@FSPO_TIER=small bash scripts/demo.sh

clean:
	rm -rf build build-san build-vg build-fuzz fspo
