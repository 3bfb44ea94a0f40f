// Normalization operators, each a forward/backward pair side by side. A block holds its norms as
// `Norm` values, so a block's placement code never needs to know which operator it is calling.
// Shapes: N rows (tokens) of C features; statistics are per row. Every backward ACCUMULATES (+=)
// into dinp and into the parameter gradients. Formulas: docs/norms.md.
#ifndef NORMGPT_NORMS_H
#define NORMGPT_NORMS_H
#include "common.h"

// NORM_NONE: no norm (a model without a final norm, or a block spec not yet given one).
typedef enum {
    NORM_NONE = -1,
    NORM_LAYERNORM, NORM_RMSNORM, NORM_CRMSNORM, NORM_DYT, NORM_BHYT, NORM_DERF, NORM_KINDS
} NormKind;

typedef struct Norm {
    NormKind kind;
    real eps;               // LayerNorm, RMSNorm, CRMSNorm, BHyT
    real kappa;             // BHyT bound (fixed, default 10)
    real *weight, *bias;    // gain (C) or NULL (affine-free), bias (C) or NULL
    real *scale;            // learnable scalar: DyT and Derf alpha, BHyT lambda; NULL for the others
    real *shift;            // learnable scalar added inside the squashing function: Derf s; NULL for the others
    real *dweight, *dbias, *dscale, *dshift;  // their gradients, same layout
    // LayerNorm Scaling: the output is multiplied by lns_scale (0 = off), folded into the gain
    // multiply: norm_forward/norm_backward run the operator with gain lns_scale * weight (lns_scale
    // alone for an operator without a gain) and bias lns_scale * bias, held in lns_scratch (4 C reals:
    // gain, bias and their gradients), and scale the parameter gradients back.
    real lns_scale;
    real *lns_scratch;
} Norm;

// Reals of saved statistics per row (what a backward needs besides its input).
#define NORM_STATS_PER_ROW 2

// Where a norm sits: its learnable scalar (if any) takes its initial value from a per-site key.
typedef enum { NORM_SITE_ATTN, NORM_SITE_FFN, NORM_SITE_FINAL, NORM_SITES } NormSite;

// When a norm has a per-feature bias (init 0).
typedef enum {
    BIAS_NEVER,
    BIAS_WITH_MODEL_BIAS,     // with model.bias
    BIAS_ON_CENTERED_STREAM,  // with model.bias on the zero-mean stream, where it makes RMSNorm equal LayerNorm
    BIAS_ALWAYS,              // whatever model.bias says (Derf's reference code keeps beta with bias=False)
} BiasRule;

// The elementwise function an operator's rows pass through: y = w * f(z) (+ b).
typedef enum { SQUASH_NONE, SQUASH_TANH, SQUASH_ERF } Squash;

// Norm operators as data: one row per operator, read by config validation (names), the model's
// parameter layout (parameters, inits, epsilon), the block table, diagnostics and docs/norms.md.
// A new operator is one row here plus its forward/backward pair and their tests.
typedef struct {
    const char *name;  // as written in model.norm, model.final_norm and model.blocks[].norm
    void (*forward)(const Norm *nm, real *out, real *stats, const real *inp, int N, int C);
    void (*backward)(const Norm *nm, real *dinp, const real *dout, const real *inp, const real *stats, int N, int C);
    int has_scale;                   // one learnable scalar (DyT and Derf alpha, BHyT lambda) ...
    size_t scale_init[NORM_SITES];   // ... initialised from the double at this offset in Config, per site,
    size_t scale_unset;              // or, when that key is 0 ("unset") and this offset is nonzero, from this one
    int has_shift;                   // a learnable scalar shift inside f (Derf's s) ...
    size_t shift_init;               // ... initialised from the double at this offset in Config (every site)
    int has_weight;                  // a per-feature gain, init 1
    BiasRule bias;
    double fixed_eps;                // > 0: this epsilon whatever model.norm_eps says; 0: model.norm_eps
    int compresses_stream;           // runs on the (d-1)-wide zero-mean stream: the whole model must use it
    Squash squash;                   // y = w * f(k * x * r + shift): diagnostics report the saturated share
    int tanh_rstd;                   // with r the row's saved rstd and k = scale / kappa (BHyT); else r = 1, k = scale
} NormOp;

extern const NormOp NORM_OPS[NORM_KINDS];

// The operator named `name`, or NORM_NONE.
NormKind norm_by_name(const char *name);

// out (N,C) = norm(inp (N,C)); stats (N * NORM_STATS_PER_ROW) saved for the backward. Dispatch
// through NORM_OPS.
void norm_forward(const Norm *nm, real *out, real *stats, const real *inp, int N, int C);
// dinp (N,C) += d/dinp; parameter gradients +=.
void norm_backward(const Norm *nm, real *dinp, const real *dout, const real *inp, const real *stats, int N, int C);

// LayerNorm: y = (x - mean) * rstd * weight + bias, rstd = (var + eps)^-1/2. stats: mean, rstd.
void layernorm_forward(real *out, real *stats, const real *inp, const real *weight, const real *bias,
                       real eps, int N, int C);
void layernorm_backward(real *dinp, real *dweight, real *dbias, const real *dout, const real *inp,
                        const real *stats, const real *weight, int N, int C);

// RMSNorm: y = x * rstd * weight + bias, rstd = (mean(x^2) + eps)^-1/2; weight may be NULL (no
// gain), bias is NULL except in the zero-mean-stream model, where it makes RMSNorm equal LayerNorm.
// stats: rstd, mean(x^2).
void rmsnorm_forward(real *out, real *stats, const real *inp, const real *weight, const real *bias, real eps,
                     int N, int C);
void rmsnorm_backward(real *dinp, real *dweight, real *dbias, const real *dout, const real *inp, const real *stats,
                      const real *weight, int N, int C);

// CRMSNorm on a compressed (C = d-1 wide) zero-mean stream: the implicit d-th feature is -sum(x),
// so rstd = ((sum x^2 + (sum x)^2) / (C+1) + eps)^-1/2 and y = x * rstd (no affine). weight is NULL
// but for a fixed (not learned) per-feature factor: LayerNorm Scaling's, see Norm.
// stats: rstd, sum(x).
void crmsnorm_forward(real *out, real *stats, const real *inp, const real *weight, real eps, int N, int C);
void crmsnorm_backward(real *dinp, const real *dout, const real *inp, const real *stats, const real *weight, int N,
                       int C);

// DyT: y = weight * tanh(alpha * x) + bias; alpha one learnable scalar; bias may be NULL. No stats.
void dyt_forward(real *out, const real *inp, const real *alpha, const real *weight, const real *bias, int N, int C);
void dyt_backward(real *dinp, real *dalpha, real *dweight, real *dbias, const real *dout, const real *inp,
                  const real *alpha, const real *weight, int N, int C);

// Derf: y = weight * erf(alpha * x + shift) + bias; alpha and shift learnable scalars; bias may be NULL.
// No stats. The backward's alpha and shift gradients are sums over all N*C terms in a fixed order.
void derf_forward(real *out, const real *inp, const real *alpha, const real *shift, const real *weight,
                  const real *bias, int N, int C);
void derf_backward(real *dinp, real *dalpha, real *dshift, real *dweight, real *dbias, const real *dout,
                   const real *inp, const real *alpha, const real *shift, const real *weight, int N, int C);

// BHyT, exact form: y = weight * tanh(lambda/kappa * x * rstd), rstd = (mean(x^2) + eps)^-1/2.
// stats: rstd, mean(x^2) (the block statistic the second site reuses).
void bhyt_forward(real *out, real *stats, const real *inp, const real *lambda, const real *weight, real kappa,
                  real eps, int N, int C);
void bhyt_backward(real *dinp, real *dlambda, real *dweight, const real *dout, const real *inp, const real *stats,
                   const real *lambda, const real *weight, real kappa, int N, int C);

// BHyT, approximate (second) site of a block: scales h by the block INPUT's statistic plus a
// weight-derived correction instead of h's own: y = weight * tanh(lambda/kappa * h * rstd2),
// rstd2 = (mean_sq_x + correction + eps)^-1/2, where mean_sq_x is mean(x^2) of the block input x,
// read from the site-1 stats (site1_stats[2n+1], as written by bhyt_forward). rstd2 (N) is saved.
// The backward adds to dh and the parameter gradients, and writes dmean_sq (N, overwritten) =
// dL/d mean_sq_x, which the block routes to x with mean_square_backward.
void bhyt_shared_forward(real *out, real *rstd2, const real *h, const real *site1_stats, real correction,
                         const real *lambda, const real *weight, real kappa, real eps, int N, int C);
void bhyt_shared_backward(real *dh, real *dmean_sq, real *dlambda, real *dweight, const real *dout, const real *h,
                          const real *rstd2, const real *lambda, const real *weight, real kappa, int N, int C);
// dx (N,C) += d mean(x^2) / dx * dmean_sq = (2/C) * dmean_sq[n] * x.
void mean_square_backward(real *dx, const real *dmean_sq, const real *x, int N, int C);

// QKV-norm (HybridNorm): RMSNorm over each head's hs features of q (H heads), k and v (Hkv heads
// each), with one gain of size hs per projection shared across heads. qkv rows are tokens laid
// out [q: H*hs | k: Hkv*hs | v: Hkv*hs]. stats: N * (H + 2*Hkv) rstd values.
void qkvnorm_forward(real *out, real *stats, const real *qkv, const real *gq, const real *gk, const real *gv,
                     real eps, int N, int H, int Hkv, int hs);
// dqkv overwritten (not accumulated); dgq, dgk, dgv +=.
void qkvnorm_backward(real *dqkv, real *dgq, real *dgk, real *dgv, const real *dout, const real *qkv,
                      const real *stats, const real *gq, const real *gk, const real *gv, int N, int H, int Hkv, int hs);

// QK-norm: RMSNorm (no bias) of q (H heads) and k (Hkv heads) of qkv rows [q | k | v]; v is copied.
// Head mode (full = 0): one row per (token, head) of hs features, gains of size hs shared by all heads;
// full mode: one row per token over all of q (H*hs) and one over all of k (Hkv*hs), per-channel gains.
// gq, gk NULL: no gain. stats: per token H + Hkv (head) or 2 (full) rstd values; size with
// QKNORM_STATS_PER_TOKEN.
#define QKNORM_STATS_PER_TOKEN(H, Hkv) ((H) + (Hkv))
void qknorm_forward(real *out, real *stats, const real *qkv, const real *gq, const real *gk, real eps, int full,
                    int N, int H, int Hkv, int hs);
// dqkv overwritten (not accumulated); dgq, dgk +=.
void qknorm_backward(real *dqkv, real *dgq, real *dgk, const real *dout, const real *qkv, const real *stats,
                     const real *gq, const real *gk, int full, int N, int H, int Hkv, int hs);

#endif
