// Per-kernel wall-clock accounting for ./train --profile. Kernels are called from the main thread
// between parallel regions, so timing a call measures that kernel alone. Off (the default), a timed
// call costs one branch.
#ifndef NORMGPT_PROFILE_H
#define NORMGPT_PROFILE_H
#include <stdio.h>

extern int profile_enabled;

double profile_start(void);  // 0 when profiling is off
// Charge the time since `start` (and `flops` of work, 0 if not a matmul) to `section`, a string
// literal naming the kernel, e.g. "matmul fc (fwd)".
void profile_stop(const char *section, double start, double flops);
// The table, sorted by time: ms per step, share of the step, GFLOP/s where flops were given.
// `step_seconds` is the mean measured step time the shares refer to.
void profile_print(FILE *out, long steps, double step_seconds);

#define TIMED(section, flops, call) \
    do { double t_start_ = profile_start(); call; profile_stop(section, t_start_, flops); } while (0)

#endif
