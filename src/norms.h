// Normalization operators, each a forward/backward pair side by side. A block holds its norms as
// `Norm` values, so a block's placement code never needs to know which operator it is calling.
// Shapes: N rows (tokens) of C features; statistics are per row.
#ifndef NORMGPT_NORMS_H
#define NORMGPT_NORMS_H
#include "common.h"

typedef enum { NORM_LAYERNORM } NormKind;

typedef struct {
    NormKind kind;
    real eps;
    real *weight, *bias;    // parameters (gain, C; bias, C or NULL)
    real *dweight, *dbias;  // their gradients, same layout
} Norm;

// Reals of saved statistics per row (what the backward needs besides the input).
#define NORM_STATS_PER_ROW 2

// out (N,C) = norm(inp (N,C)); stats (N * NORM_STATS_PER_ROW) saved for the backward.
void norm_forward(const Norm *nm, real *out, real *stats, const real *inp, int N, int C);
// dinp (N,C) += d/dinp; dweight, dbias += their gradients.
void norm_backward(const Norm *nm, real *dinp, const real *dout, const real *inp, const real *stats, int N, int C);

// LayerNorm: y = (x - mean) / sqrt(var + eps) * weight + bias. stats per row: mean, rstd.
void layernorm_forward(real *out, real *stats, const real *inp, const real *weight, const real *bias,
                       real eps, int N, int C);
void layernorm_backward(real *dinp, real *dweight, real *dbias, const real *dout, const real *inp,
                        const real *stats, const real *weight, int N, int C);

#endif
