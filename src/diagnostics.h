// Per-block training diagnostics: what each block's gradients, hidden states and tanh sites look
// like at one step, read from the activations the last forward saved and from the gradient buffer
// (nothing is recomputed through the model). Formulas and the papers' figures they follow:
// README.md, "Diagnostics".
//
// Per block l, with x = the block's input, y = its output (N tokens of S features):
//   grad_norm      ||dL/d theta_l||_2 over all of block l's parameters
//   ffn_grad_norm  the same over its two FFN weight matrices only (HybridNorm's Fig. 2)
//   rms            sqrt(mean over tokens and features of y^2)
//   var            mean over tokens of the biased variance of y over features (BHyT's Fig. 3)
//   angle          mean over tokens of arccos(cos(x, y)) / pi: 0 = the block leaves the direction alone
//   scale1/scale2  DyT or Derf alpha, or BHyT lambda, of the block's first and second norm (NaN elsewhere)
//   sat1/sat2      fraction of |tanh| or |erf| > 0.95 at those DyT/BHyT/Derf sites (NaN at other norms)
//   ms_approx/ms_actual  BHyT's second site: mean over tokens of the mean square it assumes
//                  (block input's mean(x^2) + correction) and of the actual mean(h^2) (NaN elsewhere)
//   shift1/shift2  Derf's shift s of the block's first and second norm (NaN elsewhere)
//   out_rms1/out_rms2  Peri-LN: RMS of the attention and FFN outputs before their output norms (the
//                  sublayer output size the norm removes; NaN for blocks without output norms)
// With train.recompute only the block outputs stay saved per block: sat, ms and out_rms are then NaN.
// Cost: one pass over each block's saved input, output and norm inputs plus one over the gradients,
// O(L N S + n_params), against O(L N S^2) for a step.
#ifndef NORMGPT_DIAGNOSTICS_H
#define NORMGPT_DIAGNOSTICS_H
#include "model.h"

typedef struct {
    int L;
    double *grad_norm, *ffn_grad_norm, *rms, *var, *angle, *scale1, *scale2, *sat1, *sat2, *ms_approx, *ms_actual;
    double *shift1, *shift2;
    double *out_rms1, *out_rms2;
} Diagnostics;

// Allocate for m's blocks (once, outside the training loop).
void diag_init(Diagnostics *d, const GPT *m);
void diag_free(Diagnostics *d);
// Compute from the last forward of (B,T) and the gradients accumulated so far (call before the
// optimizer step, so parameters, activations and gradients belong to the same step).
void diag_compute(Diagnostics *d, const GPT *m, int B, int T);
// One JSON line {"step":..,"diag":{"grad_norm":[per block],..}} (NaN written as null).
void diag_write_json(const Diagnostics *d, long step, FILE *out);
// The layer-removal probe's result as JSON at path: {"step", "val_loss" (full model),
// "skip_val_loss" and "delta" (skip_val_loss - val_loss), per block}; dies naming path if unwritable.
void diag_write_removal_json(const char *path, long step, double full, const double *skipped, int L);

#endif
