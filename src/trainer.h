// The trainer: what one optimizer step does (train_step: micro-batches, the all-reduce over the
// data-parallel ranks, gradient clipping, AdamW, outlier skipping), the run state a run carries
// from step to step, and the validation loss. train.c runs the loop around it.
#ifndef NORMGPT_TRAINER_H
#define NORMGPT_TRAINER_H
#include "config.h"
#include "data.h"
#include "diagnostics.h"
#include "model.h"
#include "optim.h"

// Everything besides the weights and AdamW's moments that a run needs to continue exactly where it
// stopped. The trainer alone changes it; checkpoint.h saves it and loads it back.
typedef struct {
    long step;               // optimizer steps completed
    uint64_t data_position;  // training windows consumed, in the shuffled order of data.h
    uint64_t sample_rng;     // state of the sampling RNG
    // (loss, grad norm) of the last n_history steps that were not skipped, oldest first: the window
    // train.skip_outliers compares a step against, saved so that a resumed run skips the same steps
    int n_history;
    double history[MAX_OUTLIER_WINDOW][2];
    int world_size;          // data-parallel ranks that trained the last step (1 without MPI)
} RunState;

// A step's global batch is the next total_batch_tokens / seq_len windows of the shuffled stream,
// whatever the number of ranks: rank r reads the r-th of `world` equal consecutive slices, in
// `accum` micro-batches of the largest size up to train.batch_size that divides its slice.
typedef struct {
    long slice;         // windows per rank and step
    int micro_windows;  // windows per micro-batch
    long accum;         // micro-batches per rank and step
} BatchSplit;

// The split for `world` ranks; exits (naming the keys) when the windows do not divide evenly.
BatchSplit batch_split(const Config *cfg, int world);

typedef struct {
    // set by the caller
    const Config *cfg;
    GPT *model;
    AdamW *opt;
    RunState *st;
    Dataset *train;
    BatchSplit split;
    FILE *log;              // log.jsonl on rank 0, /dev/null elsewhere: the diagnostics lines
    const char *run_dir;    // named when a non-finite loss stops the run
    // set by trainer_init
    long bhyt_refresh;      // steps between refreshes of BHyT's weight-derived c
    Diagnostics diag;
    int *inputs, *targets;  // one micro-batch, (micro_windows, seq_len) each
    double *rank_scalars;   // each rank's loss and stop signal, for the all-reduce
} Trainer;

typedef struct {
    double loss, grad_norm, lr;
    int skipped;      // an outlier under train.skip_outliers: no update
    int stop_signal;  // SIGINT or SIGTERM reached a rank: the step was discarded, st is unchanged (else 0)
} StepResult;

// With the caller's fields set: allocate a step's buffers (once: nothing is allocated inside a step).
void trainer_init(Trainer *t);
// Before anything else in the program: the SIGINT and SIGTERM handlers whose signal train_step
// reports (a second signal exits at once, status 128 + signal). Commands that do not train release
// them: the default action again, taken at once for a signal that already came.
void install_stop_handlers(void);
void release_stop_handlers(void);
void trainer_free(Trainer *t);
// Optimizer step st->step + 1 over the global batch at st->data_position; advances both. A pending
// signal, checked between micro-batches, discards the step (stop_signal set, nothing advanced). A
// non-finite loss or gradient norm ends the program naming the step and where it first appears.
StepResult train_step(Trainer *t);

// Every rank starts from rank 0's parameters, AdamW state and run state.
void share_run(GPT *m, AdamW *opt, RunState *st);

// The validation windows (data.val) and the buffers evaluation uses.
typedef struct {
    Dataset data;
    int *inputs, *targets;  // (batch_size, seq_len)
    double *batch_losses;   // (eval.batches), or (eval.batches, 1 + blocks) after validation_probe
} Validation;

// When data.val holds fewer than eval.batches * train.batch_size windows, lowers eval.batches to
// what it holds, with a printed note; exits (naming the keys) when it holds less than one batch.
void validation_open(Validation *v, Config *cfg);
void validation_close(Validation *v);
// Mean loss over the eval.batches fixed batches; the same number for any number of ranks.
double validation_loss(Validation *v, GPT *m, const Config *cfg);
// The layer-removal probe on the same batches: returns the mean loss of the whole model (validation_loss's
// number) and writes skipped[l], the mean loss of the model without block l, for every block.
double validation_probe(Validation *v, GPT *m, const Config *cfg, double *skipped);

#endif
