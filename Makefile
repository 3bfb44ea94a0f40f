# normgpt — `make` builds ./train; `make train` installs what is missing, builds and trains the
# default config; `make test` builds and runs the test suite.

CC ?= gcc
MULTIARCH := $(shell $(CC) -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
# Pick the OpenMP build of OpenBLAS on purpose (and pin it with an rpath): then OpenBLAS and our
# kernels share one OpenMP thread pool instead of two runtimes fighting over the cores.
BLAS_DIR := /usr/lib/$(MULTIARCH)/openblas-openmp
PKGS := PKG_CONFIG_PATH=$(BLAS_DIR)/pkgconfig pkg-config
DEP_CFLAGS = $(shell $(PKGS) --cflags openblas libcjson)
DEP_LIBS = $(shell $(PKGS) --libs openblas libcjson) -Wl,-rpath,$(BLAS_DIR)

CFLAGS ?= -O3 -march=native
CFLAGS += -std=gnu11 -fopenmp -Wall -Wextra -Wno-unused-parameter -MMD -MP $(DEP_CFLAGS)
LDLIBS = $(DEP_LIBS) -fopenmp -lm

LIB_SRCS := $(filter-out src/train.c,$(wildcard src/*.c))
FLOAT_OBJS := $(patsubst src/%.c,build/float/%.o,$(LIB_SRCS))
DOUBLE_OBJS := $(patsubst src/%.c,build/double/%.o,$(LIB_SRCS))
TEST_SRCS := $(wildcard tests/*.c)
TEST_OBJS := $(patsubst tests/%.c,build/double/tests/%.o,$(TEST_SRCS))

.PHONY: all train test deps clean

all: build/train
	@ln -sf build/train train

build/train: build/float/train.o $(FLOAT_OBJS)
	$(CC) -o $@ $^ $(LDLIBS)

build/float/%.o: src/%.c | build/float
	$(CC) $(CFLAGS) -c -o $@ $<

# The tests run the same sources in double precision, for finite-difference gradient checks.
build/double/%.o: src/%.c | build/double/tests
	$(CC) $(CFLAGS) -DNORMGPT_DOUBLE -c -o $@ $<

build/double/tests/%.o: tests/%.c | build/double/tests
	$(CC) $(CFLAGS) -DNORMGPT_DOUBLE -Isrc -c -o $@ $<

build/run_tests: $(TEST_OBJS) $(DOUBLE_OBJS)
	$(CC) -o $@ $^ $(LDLIBS)

build/float build/double/tests:
	mkdir -p $@

deps:
	@bash scripts/install_deps.sh

train: deps
	$(MAKE) all
	./train --config configs/default.json --overwrite

test: deps
	$(MAKE) all build/run_tests
	build/run_tests

clean:
	rm -rf build train

-include $(wildcard build/*/*.d build/*/*/*.d)
