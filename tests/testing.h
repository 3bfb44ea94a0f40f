// A minimal test harness: each test is a function that records failed checks; main prints one
// line per test and ends with "N passed, N failed".
#ifndef NORMGPT_TESTING_H
#define NORMGPT_TESTING_H
#include "common.h"
#include "config.h"
#include "rng.h"
#include <sys/types.h>

extern int test_failures;  // failed checks in the running test

#define CHECK(cond, ...) do { if (!(cond)) { test_failures++; \
    fprintf(stderr, "    check failed (%s:%d): ", __FILE__, __LINE__); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

typedef struct { const char *name; void (*fn)(void); } TestCase;

// Central finite differences of loss() w.r.t. each of x[0..n) against analytic[0..n).
// Returns the number of entries outside tolerance and reports the worst one under `what`.
int gradcheck(const char *what, real *x, size_t n, const real *analytic, double (*loss)(void *), void *ctx);

// Fill with N(0, std^2) from a test RNG.
void fill_normal(real *x, size_t n, double std, Rng *r);

// Run fn(ctx) in a child process; check that it exits with `code` and that its stderr contains
// `expect` (a file or key name). Returns 1 when both hold.
int expect_exit(void (*fn)(void *), void *ctx, int code, const char *expect);

// `cmd` with each "./train" replaced by $NORMGPT_TRAIN when set (make test-sanitize runs the tests
// against the sanitized trainer that way). run_command does it for every command.
void trainer_command(const char *cmd, char *full, size_t size);

// Run a shell command, capturing stdout+stderr into out (size bytes). Returns the exit status.
int run_command(const char *cmd, char *out, size_t size);

// Start `cmd` (trainer_command applied) in the background, exec'ed by sh so that the pid is the
// trainer's, its output to out_path.
pid_t spawn(const char *cmd, const char *out_path);
// Wait (up to a minute) until `path` exists or the process has ended. Returns 1 if the file appeared.
int wait_for_file(const char *path, pid_t pid);

// A tiny validated Pre-LN model config (test_model.c): every parameter can be checked by finite
// differences in well under a second.
Config tiny_config(int bias, int tied);
// Replace c's block table by the expansion of `placement` x `norm` with the final norm `final_norm`
// (config_validate expands it again).
void use_preset(Config *c, const char *placement, const char *norm, const char *final_norm);
// Every (placement, norm) pair a block can be built with, from the tables (at most max): the count.
int block_matrix(BlockSpec *out, int max);
// Make every block of c `spec`, the final norm auto (exact BHyT for the BHyT placements).
void use_block(Config *c, BlockSpec spec);

// Test tables of each file.
extern const TestCase method_tests[];
extern const TestCase kernel_tests[], model_tests[], data_config_tests[], cli_tests[];
extern const TestCase norm_tests[], convert_tests[], dist_tests[], generate_tests[], torch_tests[], diag_tests[];
extern const TestCase tokenizer_tests[], export_tests[], plot_tests[], checkpoint_tests[], bf16_tests[];
extern const TestCase robust_tests[];

#endif
