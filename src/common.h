// Shared types and helpers for every normgpt source file.
#ifndef NORMGPT_COMMON_H
#define NORMGPT_COMMON_H

#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <cblas.h>
#include "fastmath.h"

// `real` is the element type of parameters, activations and gradients. The trainer is built with
// float (fp32, sgemm); the test binary is built with -DNORMGPT_DOUBLE so that the very same kernels
// can be checked against central finite differences in double precision.
#ifdef NORMGPT_DOUBLE
typedef double real;
#define cblas_gemm cblas_dgemm
#define cblas_gemv cblas_dgemv
#define REAL_NAME "float64"
#define real_exp exp
#define real_log log
#define real_tanh tanh
#define real_erf erf
#define real_sqrt sqrt
#else
typedef float real;
#define cblas_gemm cblas_sgemm
#define cblas_gemv cblas_sgemv
#define REAL_NAME "float32"
#define real_exp fast_expf
#define real_log logf
#define real_tanh fast_tanhf
#define real_erf fast_erff
#define real_sqrt sqrtf
#endif

// Errors: die() for anything fatal (one line naming the file, key or argument at fault), warn() for
// what the program survives; besides the usage text (cli.c), nothing else writes to stderr or exits.
#define EXIT_CONFIG 2  // the exit status of a bad config or command line; every other error exits 1
// Print "error: " and one line to stderr and exit with `code`.
void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
// Set only by the fuzz harnesses (fuzz/): die() then longjmps here with `code` instead of printing
// and exiting, so that one process can feed a parser thousands of bad inputs. Whatever the parser
// had allocated or opened when it died is the harness's to release. NULL in every other program.
extern jmp_buf *die_jump;
// Put after "error: " in every message: "rank R: " on the ranks other than 0 of an MPI run (dist.c).
extern char die_prefix[32];
// Have die() call `cleanup` (NULL: nothing) before it exits, e.g. to remove what a refused start created.
void at_die(void (*cleanup)(void));
// Print "warning: " and one line to stderr, and carry on.
void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void *xcalloc(size_t n, size_t size);
double now_seconds(void);
// Write `size` bytes to path via a temporary file, fsync and rename: readers never see a partial
// file. Returns 0, or -1 with errno set (nothing left behind).
int write_file_atomic(const char *path, const void *data, size_t size);
// mkdir -p. Returns 0 or -1 with errno set.
int make_dirs(const char *path);
// Open an input file (config, shard, checkpoint, tokenizer, log) for reading. Anything but a regular
// file or a symlink to one is refused without blocking: a FIFO would hang, a device never end.
// Returns the stream, or NULL with *why set ("not a regular file", or strerror's text).
FILE *open_input(const char *path, const char **why);

// The little-endian uint32 at p (file headers: shards, tokenizer, checkpoints).
static inline uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

// 64-bit FNV-1a: the hash `h` (start from FNV_OFFSET) continued over n bytes (checkpoint checksums,
// the ranks' check that they hold the same parameters).
#define FNV_OFFSET 0xcbf29ce484222325ull
uint64_t fnv1a(uint64_t h, const void *data, size_t n);

#endif
