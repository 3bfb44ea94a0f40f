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
// The best of many short 512^3 sgemm calls (about half a second in all), in FLOP/s: load from other
// programs can lower it only when it lasts through every call.
double measure_sgemm_peak(void);
// Model FLOP utilization in percent, and the remark that goes with it: above 100% the peak it is
// measured against was itself measured while other programs loaded the machine ("" otherwise).
double mfu_percent(double flops_per_token, double tok_s, double peak, const char **remark);
// What a training run of m (built, or only planned by gpt_plan) must hold (parameters, gradients,
// AdamW's two moments, activations, and the bf16 copies of a bf16 run), printed as one line, in bytes.
// Exits when it exceeds the memory available (MemAvailable, and what a cgroup limit leaves), times
// the ranks on this machine.
double memory_budget(const GPT *m);
double peak_rss_bytes(void);

#endif
