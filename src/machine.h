// Facts about the machine a command runs on: the threads it uses, the sgemm peak MFU is measured
// against, the memory a run needs against the memory there is, and what it actually used.
#ifndef NORMGPT_MACHINE_H
#define NORMGPT_MACHINE_H
#include "config.h"
#include "model.h"

#define MiB 1048576.0

// Set OpenMP's and OpenBLAS's threads to train.threads, or (0) this machine's cores split evenly
// among the ranks running on it. Returns the count.
int use_threads(const Config *cfg);
// One line: the thread count, OpenBLAS's build and the sgemm core it picked.
void print_machine(int threads);
// The best of a few 1024^3 sgemm calls, in FLOP/s.
double measure_sgemm_peak(void);
// What a training run of cfg must hold (parameters, gradients, AdamW's two moments, activations),
// printed as one line, in bytes. Exits, before anything is allocated, when it exceeds the memory
// available (MemAvailable, and what a cgroup limit leaves), times the ranks on this machine.
double memory_budget(const Config *cfg);
double peak_rss_bytes(void);

#endif
