# normgpt — `make` builds ./train (`make MPI=1`: with MPI, for data-parallel runs under mpirun); `make train` installs what is missing, builds and trains the
# default config; `make test` builds and runs the test suite; `make compare SPEC=...` trains and plots
# the variants of a compare spec; `make test-sanitize` runs it again
# under AddressSanitizer + UndefinedBehaviorSanitizer; `make fuzz` fuzzes the parsers (needs clang).

CC ?= gcc
MULTIARCH := $(shell $(CC) -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
# Pick the OpenMP build of OpenBLAS on purpose (and pin it with an rpath): then OpenBLAS and our
# kernels share one OpenMP thread pool instead of two runtimes fighting over the cores.
BLAS_DIR := /usr/lib/$(MULTIARCH)/openblas-openmp
PKGS := PKG_CONFIG_PATH=$(BLAS_DIR)/pkgconfig pkg-config
DEP_CFLAGS = $(shell $(PKGS) --cflags openblas libcjson)
DEP_LIBS = $(shell $(PKGS) --libs openblas libcjson) -Wl,-rpath,$(BLAS_DIR)
# oneDNN (libdnnl-dev) runs the bf16 matmuls of train.precision=bf16. Debian ships no pkg-config file
# for it: when the compiler finds its header, build with NORMGPT_DNNL and link it; without it (or with
# `make DNNL=0`) the build is fp32 only. Debian's libdnnl uses libgomp, the OpenMP runtime of
# OpenBLAS and of our kernels: still one thread pool.
DNNL ?= $(shell echo '\#include <oneapi/dnnl/dnnl.h>' | $(CC) -E -x c - >/dev/null 2>&1 && echo 1)
ifeq ($(DNNL),1)
DEP_CFLAGS += -DNORMGPT_DNNL
DEP_LIBS += -ldnnl
endif

CFLAGS ?= -O3 -march=native
CFLAGS += -std=gnu11 -fopenmp -Wall -Wextra -Wno-unused-parameter -MMD -MP $(DEP_CFLAGS)
LDLIBS = $(DEP_LIBS) -fopenmp -lm

LIB_SRCS := $(filter-out src/train.c,$(wildcard src/*.c))
FLOAT_OBJS := $(patsubst src/%.c,build/float/%.o,$(LIB_SRCS))
DOUBLE_OBJS := $(patsubst src/%.c,build/double/%.o,$(LIB_SRCS))
TEST_SRCS := $(wildcard tests/*.c)
TEST_OBJS := $(patsubst tests/%.c,build/double/tests/%.o,$(TEST_SRCS))

.PHONY: all train test bench bench-matmul compare deps test-deps dev-deps test-sanitize fuzz clean

# MPI touches one file: src/dist.c, compiled by the MPI wrapper with NORMGPT_MPI into build/mpi/, and
# linked by the wrapper with the same objects as build/train. Without MPI=1, nothing involves MPI.
MPICC ?= mpicc
TRAIN := $(if $(filter 1,$(MPI)),build/mpi/train,build/train)

all: $(TRAIN)
	@ln -sf $(TRAIN) train

build/train: build/float/train.o $(FLOAT_OBJS)
	$(CC) -o $@ $^ $(LDLIBS)

build/mpi/train: build/float/train.o $(filter-out build/float/dist.o,$(FLOAT_OBJS)) build/mpi/dist.o
	$(MPICC) -o $@ $^ $(LDLIBS)

build/mpi/dist.o: src/dist.c | build/mpi
	$(MPICC) $(CFLAGS) -DNORMGPT_MPI -c -o $@ $<

build/float/%.o: src/%.c | build/float
	$(CC) $(CFLAGS) -c -o $@ $<

# The tests run the same sources in double precision, for finite-difference gradient checks.
build/double/%.o: src/%.c | build/double/tests
	$(CC) $(CFLAGS) -DNORMGPT_DOUBLE -c -o $@ $<

build/double/tests/%.o: tests/%.c | build/double/tests
	$(CC) $(CFLAGS) -DNORMGPT_DOUBLE -Isrc -c -o $@ $<

build/run_tests: $(TEST_OBJS) $(DOUBLE_OBJS)
	$(CC) -o $@ $^ $(LDLIBS)

# The PyTorch parity test's C side: the fp32 trainer's logits, loss and gradients for one batch.
build/grad_dump: build/float/tests/tools/grad_dump.o $(FLOAT_OBJS)
	$(CC) -o $@ $^ $(LDLIBS)

build/float/tests/tools/%.o: tests/tools/%.c | build/float/tests/tools
	$(CC) $(CFLAGS) -Isrc -c -o $@ $<

build/matmul_bench: build/float/bench/matmul_bench.o $(FLOAT_OBJS)
	$(CC) -o $@ $^ $(LDLIBS)

build/float/bench/%.o: bench/%.c | build/float/bench
	$(CC) $(CFLAGS) -Isrc -c -o $@ $<

build/float build/double/tests build/mpi build/float/tests/tools build/float/bench:
	mkdir -p $@

# Train and plot the variants of a compare spec (scripts/compare): make compare SPEC=path/to/spec.json
# (no default: the depth study's sweep is 48 runs). Plotting needs matplotlib only, not PyTorch.
compare:
ifndef SPEC
	@echo "usage: make compare SPEC=path/to/spec.json   (the spec format: README, Comparing variants;" >&2
	@echo "       e.g. SPEC=docs/experiments/depth_study/specs/A_sweep_n6.json, the depth study's 6-layer lr sweep)" >&2
	@exit 2
endif
	@bash scripts/install_deps.sh --plot
	$(MAKE) all
	/usr/bin/python3 scripts/compare $(SPEC)

# Sanitizer build of the trainer and the tests. gcc, not clang: its ASan works with libgomp, so
# OpenBLAS and our kernels keep sharing one OpenMP runtime.
SAN_FLAGS := -O2 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
SAN_CFLAGS = -std=gnu11 -fopenmp -Wall -Wextra -Wno-unused-parameter -MMD -MP $(DEP_CFLAGS) $(SAN_FLAGS)

build/asan/train: build/asan/float/train.o $(patsubst src/%.c,build/asan/float/%.o,$(LIB_SRCS))
	$(CC) $(SAN_FLAGS) -o $@ $^ $(LDLIBS)

build/asan/run_tests: $(patsubst tests/%.c,build/asan/double/tests/%.o,$(TEST_SRCS)) \
                      $(patsubst src/%.c,build/asan/double/%.o,$(LIB_SRCS))
	$(CC) $(SAN_FLAGS) -o $@ $^ $(LDLIBS)

build/asan/float/%.o: src/%.c | build/asan/float
	$(CC) $(SAN_CFLAGS) -c -o $@ $<

build/asan/double/%.o: src/%.c | build/asan/double/tests
	$(CC) $(SAN_CFLAGS) -DNORMGPT_DOUBLE -c -o $@ $<

build/asan/double/tests/%.o: tests/%.c | build/asan/double/tests
	$(CC) $(SAN_CFLAGS) -DNORMGPT_DOUBLE -Isrc -c -o $@ $<

build/asan/float build/asan/double/tests:
	mkdir -p $@

# Fuzz targets: clang's libFuzzer with ASan + UBSan. The kernels' OpenMP pragmas are left out
# (a fuzz target runs on one thread); the few omp_* calls take their declarations from clang's omp.h
# (package libomp-dev) and resolve to the libgomp that OpenBLAS links: one OpenMP runtime.
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := config shard checkpoint
FUZZ_CFLAGS = -g -O1 -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Wno-unknown-pragmas \
              -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Isrc $(DEP_CFLAGS)

build/fuzz/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz.h $(LIB_SRCS) $(wildcard src/*.h)
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(LIB_SRCS) $(DEP_LIBS) -lgomp -lm

deps:
	@bash scripts/install_deps.sh

test-deps:
	@bash scripts/install_deps.sh --test

dev-deps:
	@bash scripts/install_deps.sh --dev

train: deps
	$(MAKE) all
	./train --config configs/default.json --overwrite

# The data-parallel tests run build/mpi/train under mpiexec, so the suite needs MPI (scripts/install_deps.sh).
test: test-deps
	$(MAKE) all build/mpi/train build/run_tests build/grad_dump
	build/run_tests

# Speed against the sgemm peak and PyTorch (fp32 and bf16, four ways), thread scaling, memory,
# generation and the matmul products (bench/bench.py). Run it on an otherwise idle machine: other
# programs on the same cores distort every ratio.
bench: test-deps
	$(MAKE) all build/matmul_bench
	/usr/bin/python3 bench/bench.py

# oneDNN bf16 against OpenBLAS sgemm and oneDNN fp32 on the model's matmul shapes (bench/matmul_bench.c),
# with sgemm's own core (OPENBLAS_CORETYPE unset), passive OpenMP waits and 2 threads.
bench-matmul: build/matmul_bench
	env -u OPENBLAS_CORETYPE OMP_WAIT_POLICY=passive OMP_NUM_THREADS=2 build/matmul_bench

# Leaks are checked in the trainer (die() exits with what it had allocated still referenced from
# the stack, which is not a leak), not in the test binary: the children it forks to watch die()
# inherit the parent's OpenMP threads as corpses, which LeakSanitizer warns about on every exit.
# A sanitizer report exits 86, which no test expects (the trainer's own errors exit 1 or 2).
SAN_ENV := UBSAN_OPTIONS=print_stacktrace=1:exitcode=86 ASAN_OPTIONS=exitcode=86
test-sanitize: test-deps
	$(MAKE) all build/mpi/train build/asan/train build/asan/run_tests build/grad_dump
	$(SAN_ENV):detect_leaks=0 NORMGPT_TRAIN="env $(SAN_ENV):detect_leaks=1 build/asan/train" build/asan/run_tests

# Each target first runs every input of its corpus in tests/fuzz_corpus/ (the seeds and the inputs
# of crashes found and fixed), then fuzzes for FUZZ_SECONDS; new inputs go to build/fuzz/corpus/,
# the output to build/fuzz/TARGET.log. Leaks are not checked: die() leaves what it had allocated.
fuzz: dev-deps
	$(MAKE) $(patsubst %,build/fuzz/fuzz_%,$(FUZZ_TARGETS))
	for t in $(FUZZ_TARGETS); do \
	    mkdir -p build/fuzz/corpus/$$t && echo "fuzz_$$t: $(FUZZ_SECONDS) s" && \
	    ASAN_OPTIONS=detect_leaks=0 build/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	        -artifact_prefix=build/fuzz/crash_$$t- build/fuzz/corpus/$$t tests/fuzz_corpus/$$t \
	        > build/fuzz/$$t.log 2>&1 || { tail -n 60 build/fuzz/$$t.log; exit 1; }; \
	    grep -E '^(Done|stat::number_of_executed_units|stat::new_units_added)' build/fuzz/$$t.log; \
	done

clean:
	rm -rf build train

-include $(wildcard build/*/*.d build/*/*/*.d build/*/*/*/*.d)
