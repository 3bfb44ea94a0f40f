// AdamW with decoupled weight decay, learning-rate schedules and global gradient-norm clipping.
#ifndef NORMGPT_OPTIM_H
#define NORMGPT_OPTIM_H
#include "common.h"
#include "config.h"
#include "kernels.h"
#include "model.h"

typedef struct {
    real *m, *v;     // first and second moments, laid out like the parameters
    long t;          // optimizer steps taken (for bias correction)
} AdamW;

void adamw_init(AdamW *opt, size_t n);
void adamw_free(AdamW *opt);
// One update of every tensor of `model`. Gradients are multiplied by grad_scale first (clipping);
// weight decay applies only to tensors flagged `decay` (matrices and embeddings).
void adamw_step(AdamW *opt, GPT *model, double lr, double grad_scale, double beta1, double beta2,
                double eps, double weight_decay);

// Learning rate for optimizer step `s` (0-based) under the configured schedule.
double lr_schedule(const Config *c, long s);
// Scale factor that clips a gradient of norm `norm` to `max_norm` (1 when max_norm is 0 = off).
double clip_scale(double norm, double max_norm);

#endif
