#include "norms.h"
#include "config.h"
#include "kernels.h"
#include <stddef.h>
#include <math.h>
#include <string.h>

// Scalar gradients are summed over this many row chunks (chunked_sum): the same bits for any thread count.
#define ROW_CHUNKS 64

// Every operator here but LayerNorm maps a row elementwise as y = w * f(k * (x * r) + shift) (+ b), with
// f = tanh, erf or the identity and r a per-row scale: RMSNorm r = rstd, k = 1; BHyT r = rstd, k =
// lambda/kappa; DyT r = 1, k = alpha; Derf r = 1, k = alpha, f = erf with its shift (0 for the others);
// CRMSNorm, QKV-norm and QK-norm are RMSNorm on other statistics or row layouts. One description of the
// rows serves the backward and the parameter reduction, so they cannot drift apart.
typedef struct {
    int heads, ld;     // a token holds `heads` rows of C at offsets h * C; tokens are ld apart
    const real *r;     // scale of row (n, h): r[n * r_stride + h]; r_stride 0 gives one scale for all rows
    int r_stride;
    const real *mean;  // LayerNorm only (same indexing), subtracted before scaling; NULL for the others
    real k, shift;
    Squash fn;
} RowMap;

// How a row's scale r depends on the input: the part of the backward beyond the elementwise map.
typedef enum {
    STAT_FIXED,     // r is a constant (DyT)
    STAT_OWN,       // r = (mean(x^2) + eps)^-1/2 of the row itself
    STAT_CRMS,      // r = ((sum x^2 + (sum x)^2) / (C+1) + eps)^-1/2, sum x saved at r[n * r_stride + 1]
    STAT_EXTERNAL,  // r comes from another tensor's statistic: write dL/d(statistic) per token (heads = 1)
} StatPath;

static const real unit_scale = 1;

// Only erf has a shift (Derf): the other functions' code stays as it was, bit for bit.
static inline real map_value(real x, real r, real k, real shift, Squash fn) {
    real z = k * (x * r);
    return fn == SQUASH_TANH ? real_tanh(z) : fn == SQUASH_ERF ? real_erf(z + shift) : z;
}

// f'(z): 1 - tanh^2, (2/sqrt(pi)) e^(-z^2) (which underflows to 0 where erf is saturated), or 1.
static inline real squash_slope(real z, Squash fn) {
    if (fn == SQUASH_TANH) { real t = real_tanh(z); return 1 - t * t; }
    if (fn == SQUASH_ERF) return (real)M_2_SQRTPI * real_exp(-z * z);
    return 1;
}

// A gain or bias that may be NULL is tested outside the loops, here and in every vectorized loop of
// the kernels: tested inside, `w ? w[c] : 1` compiles to a masked load from address NULL + c, which
// AMD CPUs serve with a slow fault-suppression assist on every vector (it made BHyT's forward, which
// has no bias, 6x slower than DyT's, and CRMSNorm's backward, which has no gain, 5x LayerNorm's).
static inline void map_row_forward(real *y, const real *x, const real *w, const real *b, real r, real k,
                                   real shift, Squash fn, int C) {
    if (w && b) for (int c = 0; c < C; c++) y[c] = w[c] * map_value(x[c], r, k, shift, fn) + b[c];
    else if (w) for (int c = 0; c < C; c++) y[c] = w[c] * map_value(x[c], r, k, shift, fn);
    else if (b) for (int c = 0; c < C; c++) y[c] = map_value(x[c], r, k, shift, fn) + b[c];
    else for (int c = 0; c < C; c++) y[c] = map_value(x[c], r, k, shift, fn);
}

// Holds r fixed: dx += k * r * a with a = dL/dz. Returns sum(a * x * r), which is both dL/dk of the
// row and what the path through r needs. The dx term is added in the same pass as the reduction so
// that f' (a tanh or an exp) is evaluated once per element without scratch memory.
static inline real map_row_backward(real *dx, const real *g, const real *x, const real *w, real r, real k,
                                    real shift, Squash fn, int C) {
    real an = 0;
    if (w) {
        #pragma omp simd reduction(+:an)
        for (int c = 0; c < C; c++) {
            real n = x[c] * r, a = g[c] * w[c] * squash_slope(k * n + shift, fn);
            an += a * n;
            dx[c] += k * r * a;
        }
    } else {
        #pragma omp simd reduction(+:an)
        for (int c = 0; c < C; c++) {
            real n = x[c] * r, a = g[c] * squash_slope(k * n + shift, fn);
            an += a * n;
            dx[c] += k * r * a;
        }
    }
    return an;
}

// dx += dq * d(statistic)/dx, dq = dL/d(statistic). For a mean square (shift 0, D = C) that is
// 2 * dq * x / C; CRMSNorm's statistic (sum x^2 + S^2) / (C+1), S = sum x, gives 2 * dq * (x + S) / (C+1).
static inline void add_mean_square_grad(real *dx, const real *x, real dq, real shift, int D, int C) {
    real s = 2 * dq / D;
    for (int c = 0; c < C; c++) dx[c] += s * (x[c] + shift);
}

static inline real rms_rstd(const real *x, real eps, int C, real *mean_sq) {
    real ss = 0;
    #pragma omp simd reduction(+:ss)
    for (int c = 0; c < C; c++) ss += x[c] * x[c];
    if (mean_sq) *mean_sq = ss / C;
    return 1 / real_sqrt(ss / C + eps);
}

typedef struct {
    real *dx, *dstat;
    const real *dout, *x, *w;
    const RowMap *m;
    StatPath stat;
    int C;
} MapBackward;

// Rows [n0, n1) of map_backward; returns their dL/dk.
static double map_backward_rows(const void *ctx, size_t n0, size_t n1) {
    const MapBackward *a = ctx;
    const RowMap *m = a->m;
    int C = a->C;
    double sum = 0;
    for (size_t n = n0; n < n1; n++) {
        for (int h = 0; h < m->heads; h++) {
            size_t off = n * m->ld + (size_t)h * C;
            const real *r = m->r + n * m->r_stride + h;
            real an = map_row_backward(a->dx + off, a->dout + off, a->x + off, a->w, *r, m->k, m->shift, m->fn, C);
            real dq = -m->k * *r * *r * an / 2;  // dL/ds = dL/dr * dr/ds = (k * an / r) * (-r^3 / 2)
            switch (a->stat) {
            case STAT_FIXED: break;
            case STAT_OWN: add_mean_square_grad(a->dx + off, a->x + off, dq, 0, C, C); break;
            case STAT_CRMS: add_mean_square_grad(a->dx + off, a->x + off, dq, r[1], C + 1, C); break;
            case STAT_EXTERNAL: a->dstat[n] = dq; break;
            }
            sum += an;
        }
    }
    return sum;
}

// dx += dL/dx of the rows of y = w * f(k * (x * r)), including the path through r that `stat` names;
// writes dstat for STAT_EXTERNAL. Returns dL/dk summed over all rows (the scalar-parameter gradient).
static double map_backward(real *dx, real *dstat, const real *dout, const real *x, const real *w, const RowMap *m,
                           StatPath stat, int N, int C) {
    MapBackward args = {dx, dstat, dout, x, w, m, stat, C};
    return chunked_sum((size_t)N, ROW_CHUNKS, map_backward_rows, &args);
}

typedef struct { const real *dout, *x, *w; const RowMap *m; int C; } ShiftBackward;

// Rows [n0, n1) of map_shift_backward (plain rows, heads = 1).
static double shift_backward_rows(const void *ctx, size_t n0, size_t n1) {
    const ShiftBackward *a = ctx;
    const RowMap *m = a->m;
    double sum = 0;
    for (size_t n = n0; n < n1; n++) {
        const real *x = a->x + n * m->ld, *g = a->dout + n * m->ld, r = m->r[n * m->r_stride];
        real row = 0;
        if (a->w) {
            #pragma omp simd reduction(+:row)
            for (int c = 0; c < a->C; c++) row += g[c] * a->w[c] * squash_slope(m->k * (x[c] * r) + m->shift, m->fn);
        } else {
            #pragma omp simd reduction(+:row)
            for (int c = 0; c < a->C; c++) row += g[c] * squash_slope(m->k * (x[c] * r) + m->shift, m->fn);
        }
        sum += row;
    }
    return sum;
}

// dL/dshift = sum over all rows and features of dL/dz, in a fixed order (chunked_sum). A pass of its
// own: chunked_sum returns one sum, and map_backward's is dL/dk.
static double map_shift_backward(const real *dout, const real *x, const real *w, const RowMap *m, int N, int C) {
    ShiftBackward args = {dout, x, w, m, C};
    return chunked_sum((size_t)N, ROW_CHUNKS, shift_backward_rows, &args);
}

// dweight[c] += sum over rows of dout * (the map without its gain), dbias[c] += sum of dout; either may
// be NULL. Parallel over channel blocks, each summing its rows in order: deterministic for any thread
// count without scratch memory.
static void map_param_backward(real *dweight, real *dbias, const real *dout, const real *x, const RowMap *map,
                               int N, int C) {
    if (!dweight && !dbias) return;
    const RowMap m = *map;  // a local copy: stores into dweight cannot alias it, so the channel loops vectorize
    int cb = channel_block(C);
    #pragma omp parallel for
    for (int c0 = 0; c0 < C; c0 += cb) {
        int w = C - c0 < cb ? C - c0 : cb;
        real sw[CHANNEL_BLOCK_MAX] = {0}, sb[CHANNEL_BLOCK_MAX] = {0};
        for (int n = 0; n < N; n++) {
            for (int h = 0; h < m.heads; h++) {
                size_t off = (size_t)n * m.ld + (size_t)h * C + c0, s = (size_t)n * m.r_stride + h;
                const real *xr = x + off, *g = dout + off;
                real r = m.r[s], mean = m.mean ? m.mean[s] : 0;
                if (dweight) {
                    #pragma omp simd
                    for (int c = 0; c < w; c++) sw[c] += g[c] * map_value(xr[c] - mean, r, m.k, m.shift, m.fn);
                }
                if (dbias) {
                    #pragma omp simd
                    for (int c = 0; c < w; c++) sb[c] += g[c];
                }
            }
        }
        for (int c = 0; c < w; c++) {
            if (dweight) dweight[c0 + c] += sw[c];
            if (dbias) dbias[c0 + c] += sb[c];
        }
    }
}

// Rows of a plain (N, C) tensor whose scale is the first of two stats per row.
static RowMap plain_rows(const real *stats, int C, real k, Squash fn) {
    return (RowMap){.heads = 1, .ld = C, .r = stats, .r_stride = 2, .mean = NULL, .k = k, .fn = fn};
}

void layernorm_forward(real *out, real *stats, const real *inp, const real *weight, const real *bias,
                       real eps, int N, int C) {
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const real *x = inp + (size_t)n * C;
        real *y = out + (size_t)n * C;
        real sum = 0;
        #pragma omp simd reduction(+:sum)
        for (int c = 0; c < C; c++) sum += x[c];
        real mean = sum / C;
        real var = 0;
        #pragma omp simd reduction(+:var)
        for (int c = 0; c < C; c++) { real d = x[c] - mean; var += d * d; }
        real rstd = 1 / real_sqrt(var / C + eps);
        if (bias) for (int c = 0; c < C; c++) y[c] = (x[c] - mean) * rstd * weight[c] + bias[c];
        else for (int c = 0; c < C; c++) y[c] = (x[c] - mean) * rstd * weight[c];
        stats[2 * n] = mean;
        stats[2 * n + 1] = rstd;
    }
}

void layernorm_backward(real *dinp, real *dweight, real *dbias, const real *dout, const real *inp,
                        const real *stats, const real *weight, int N, int C) {
    // dx = rstd * (e - mean(e) - xhat * mean(e * xhat)), e = dout * weight
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const real *x = inp + (size_t)n * C, *g = dout + (size_t)n * C;
        real *dx = dinp + (size_t)n * C;
        real mean = stats[2 * n], rstd = stats[2 * n + 1];
        real e_mean = 0, exh_mean = 0;
        #pragma omp simd reduction(+:e_mean, exh_mean)
        for (int c = 0; c < C; c++) {
            real e = g[c] * weight[c];
            e_mean += e;
            exh_mean += e * (x[c] - mean) * rstd;
        }
        e_mean /= C;
        exh_mean /= C;
        for (int c = 0; c < C; c++) {
            real xhat = (x[c] - mean) * rstd;
            dx[c] += rstd * (g[c] * weight[c] - e_mean - xhat * exh_mean);
        }
    }
    RowMap rows = plain_rows(stats + 1, C, 1, SQUASH_NONE);
    rows.mean = stats;
    map_param_backward(dweight, dbias, dout, inp, &rows, N, C);
}

// Shared by RMSNorm and the exact BHyT: stats = [rstd, mean(x^2)], y = weight * f(k * x * rstd).
static void rms_map_forward(real *out, real *stats, const real *inp, const real *weight, const real *bias, real k,
                            Squash fn, real eps, int N, int C) {
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const real *x = inp + (size_t)n * C;
        stats[2 * n] = rms_rstd(x, eps, C, &stats[2 * n + 1]);
        // f named by a literal in each call: inside the outlined parallel body a variable f would be
        // tested per element and keep the loop from vectorizing
        if (fn == SQUASH_TANH) map_row_forward(out + (size_t)n * C, x, weight, bias, stats[2 * n], k, 0, SQUASH_TANH, C);
        else map_row_forward(out + (size_t)n * C, x, weight, bias, stats[2 * n], k, 0, SQUASH_NONE, C);
    }
}

void rmsnorm_forward(real *out, real *stats, const real *inp, const real *weight, const real *bias, real eps,
                     int N, int C) {
    rms_map_forward(out, stats, inp, weight, bias, 1, SQUASH_NONE, eps, N, C);
}

void rmsnorm_backward(real *dinp, real *dweight, real *dbias, const real *dout, const real *inp, const real *stats,
                      const real *weight, int N, int C) {
    RowMap rows = plain_rows(stats, C, 1, SQUASH_NONE);
    map_backward(dinp, NULL, dout, inp, weight, &rows, STAT_OWN, N, C);
    map_param_backward(weight ? dweight : NULL, dbias, dout, inp, &rows, N, C);
}

void crmsnorm_forward(real *out, real *stats, const real *inp, const real *weight, real eps, int N, int C) {
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const real *x = inp + (size_t)n * C;
        real s = 0, ss = 0;
        #pragma omp simd reduction(+:s, ss)
        for (int c = 0; c < C; c++) { s += x[c]; ss += x[c] * x[c]; }
        real rstd = 1 / real_sqrt((ss + s * s) / (C + 1) + eps);
        map_row_forward(out + (size_t)n * C, x, weight, NULL, rstd, 1, 0, SQUASH_NONE, C);
        stats[2 * n] = rstd;
        stats[2 * n + 1] = s;
    }
}

void crmsnorm_backward(real *dinp, const real *dout, const real *inp, const real *stats, const real *weight, int N,
                       int C) {
    RowMap rows = plain_rows(stats, C, 1, SQUASH_NONE);
    map_backward(dinp, NULL, dout, inp, weight, &rows, STAT_CRMS, N, C);
}

// The backward of DyT and Derf, y = weight * f(alpha * x + shift) + bias (no statistic). dshift NULL:
// the shift is not learned (DyT's is 0) and its reduction is skipped.
static void squash_backward(real *dinp, real *dalpha, real *dshift, real *dweight, real *dbias, const real *dout,
                            const real *inp, real alpha, real shift, Squash fn, const real *weight, int N, int C) {
    RowMap rows = {.heads = 1, .ld = C, .r = &unit_scale, .r_stride = 0, .mean = NULL, .k = alpha, .shift = shift,
                   .fn = fn};
    double dk = map_backward(dinp, NULL, dout, inp, weight, &rows, STAT_FIXED, N, C);
    if (dalpha) *dalpha += (real)dk;
    if (dshift) *dshift += (real)map_shift_backward(dout, inp, weight, &rows, N, C);
    map_param_backward(weight ? dweight : NULL, dbias, dout, inp, &rows, N, C);
}

// Each forward's loop names its f: a loop choosing f per element would compile (and round) differently.
void dyt_forward(real *out, const real *inp, const real *alpha, const real *weight, const real *bias, int N, int C) {
    #pragma omp parallel for
    for (int n = 0; n < N; n++)
        map_row_forward(out + (size_t)n * C, inp + (size_t)n * C, weight, bias, 1, *alpha, 0, SQUASH_TANH, C);
}

void dyt_backward(real *dinp, real *dalpha, real *dweight, real *dbias, const real *dout, const real *inp,
                  const real *alpha, const real *weight, int N, int C) {
    squash_backward(dinp, dalpha, NULL, dweight, dbias, dout, inp, *alpha, 0, SQUASH_TANH, weight, N, C);
}

void derf_forward(real *out, const real *inp, const real *alpha, const real *shift, const real *weight,
                  const real *bias, int N, int C) {
    #pragma omp parallel for
    for (int n = 0; n < N; n++)
        map_row_forward(out + (size_t)n * C, inp + (size_t)n * C, weight, bias, 1, *alpha, *shift, SQUASH_ERF, C);
}

void derf_backward(real *dinp, real *dalpha, real *dshift, real *dweight, real *dbias, const real *dout,
                   const real *inp, const real *alpha, const real *shift, const real *weight, int N, int C) {
    squash_backward(dinp, dalpha, dshift, dweight, dbias, dout, inp, *alpha, *shift, SQUASH_ERF, weight, N, C);
}

void bhyt_forward(real *out, real *stats, const real *inp, const real *lambda, const real *weight, real kappa,
                  real eps, int N, int C) {
    rms_map_forward(out, stats, inp, weight, NULL, *lambda / kappa, SQUASH_TANH, eps, N, C);
}

void bhyt_backward(real *dinp, real *dlambda, real *dweight, const real *dout, const real *inp, const real *stats,
                   const real *lambda, const real *weight, real kappa, int N, int C) {
    RowMap rows = plain_rows(stats, C, *lambda / kappa, SQUASH_TANH);
    double dk = map_backward(dinp, NULL, dout, inp, weight, &rows, STAT_OWN, N, C);
    if (dlambda) *dlambda += (real)(dk / kappa);
    map_param_backward(weight ? dweight : NULL, NULL, dout, inp, &rows, N, C);
}

void bhyt_shared_forward(real *out, real *rstd2, const real *h, const real *site1_stats, real correction,
                         const real *lambda, const real *weight, real kappa, real eps, int N, int C) {
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        rstd2[n] = 1 / real_sqrt(site1_stats[2 * n + 1] + correction + eps);
        map_row_forward(out + (size_t)n * C, h + (size_t)n * C, weight, NULL, rstd2[n], *lambda / kappa, 0, SQUASH_TANH,
                        C);
    }
}

void bhyt_shared_backward(real *dh, real *dmean_sq, real *dlambda, real *dweight, const real *dout, const real *h,
                          const real *rstd2, const real *lambda, const real *weight, real kappa, int N, int C) {
    RowMap rows = {.heads = 1, .ld = C, .r = rstd2, .r_stride = 1, .mean = NULL, .k = *lambda / kappa,
                   .fn = SQUASH_TANH};
    double dk = map_backward(dh, dmean_sq, dout, h, weight, &rows, STAT_EXTERNAL, N, C);
    if (dlambda) *dlambda += (real)(dk / kappa);
    map_param_backward(weight ? dweight : NULL, NULL, dout, h, &rows, N, C);
}

void mean_square_backward(real *dx, const real *dmean_sq, const real *x, int N, int C) {
    #pragma omp parallel for
    for (int n = 0; n < N; n++) add_mean_square_grad(dx + (size_t)n * C, x + (size_t)n * C, dmean_sq[n], 0, C, C);
}

// A group of rows inside each token's row (ld wide): `rows` rows of `width` features from feature
// `offset`, RMS-normalized each, times one gain (width) shared by the group's rows (NULL: none).
typedef struct { int offset, rows, width; const real *gain; real *dgain; } RowGroup;

// q, k and (n = 3) v of a qkv row [q | k | v] as row groups: one row per head (hs wide) or, with
// `full`, one row per projection. gain[p], dgain[p] go with projection p.
static void qkv_groups(RowGroup *g, int n, int full, int H, int Hkv, int hs, const real *const *gain,
                       real *const *dgain) {
    int heads[3] = {H, Hkv, Hkv}, offset = 0;
    for (int p = 0; p < n; p++) {
        g[p] = (RowGroup){offset, full ? 1 : heads[p], full ? heads[p] * hs : hs, gain[p], dgain ? dgain[p] : NULL};
        offset += heads[p] * hs;
    }
}

static int group_rows(const RowGroup *g, int n) {
    int rows = 0;
    for (int p = 0; p < n; p++) rows += g[p].rows;
    return rows;
}

static int group_end(const RowGroup *g, int n) { return g[n - 1].offset + g[n - 1].rows * g[n - 1].width; }

// RMSNorm of the groups' rows of N tokens; features after the last group are copied. stats: per token
// one rstd per row, in group order.
static void groups_rmsnorm_forward(real *out, real *stats, const real *in, const RowGroup *g, int n_groups, real eps,
                                   int N, int ld) {
    int per_token = group_rows(g, n_groups), end = group_end(g, n_groups);
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        real *st = stats + (size_t)n * per_token;
        for (int p = 0; p < n_groups; p++) {
            for (int h = 0; h < g[p].rows; h++, st++) {
                size_t off = (size_t)n * ld + g[p].offset + (size_t)h * g[p].width;
                *st = rms_rstd(in + off, eps, g[p].width, NULL);
                map_row_forward(out + off, in + off, g[p].gain, NULL, *st, 1, 0, SQUASH_NONE, g[p].width);
            }
        }
        memcpy(out + (size_t)n * ld + end, in + (size_t)n * ld + end, (size_t)(ld - end) * sizeof(real));
    }
}

// din overwritten (the copied features: dout); the groups' gains' gradients +=.
static void groups_rmsnorm_backward(real *din, const real *dout, const real *in, const real *stats, const RowGroup *g,
                                    int n_groups, int N, int ld) {
    int per_token = group_rows(g, n_groups), end = group_end(g, n_groups);
    // The API overwrites din, while the shared row backward accumulates: start from zero.
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        memset(din + (size_t)n * ld, 0, (size_t)end * sizeof(real));
        memcpy(din + (size_t)n * ld + end, dout + (size_t)n * ld + end, (size_t)(ld - end) * sizeof(real));
    }
    for (int p = 0, row0 = 0; p < n_groups; row0 += g[p].rows, p++) {
        RowMap rows = {.heads = g[p].rows, .ld = ld, .r = stats + row0, .r_stride = per_token, .mean = NULL, .k = 1,
                       .fn = SQUASH_NONE};
        size_t off = (size_t)g[p].offset;
        map_backward(din + off, NULL, dout + off, in + off, g[p].gain, &rows, STAT_OWN, N, g[p].width);
        map_param_backward(g[p].gain ? g[p].dgain : NULL, NULL, dout + off, in + off, &rows, N, g[p].width);
    }
}

void qkvnorm_forward(real *out, real *stats, const real *qkv, const real *gq, const real *gk, const real *gv,
                     real eps, int N, int H, int Hkv, int hs) {
    RowGroup g[3];
    qkv_groups(g, 3, 0, H, Hkv, hs, (const real *const[]){gq, gk, gv}, NULL);
    groups_rmsnorm_forward(out, stats, qkv, g, 3, eps, N, (H + 2 * Hkv) * hs);
}

void qkvnorm_backward(real *dqkv, real *dgq, real *dgk, real *dgv, const real *dout, const real *qkv,
                      const real *stats, const real *gq, const real *gk, const real *gv,
                      int N, int H, int Hkv, int hs) {
    RowGroup g[3];
    qkv_groups(g, 3, 0, H, Hkv, hs, (const real *const[]){gq, gk, gv}, (real *const[]){dgq, dgk, dgv});
    groups_rmsnorm_backward(dqkv, dout, qkv, stats, g, 3, N, (H + 2 * Hkv) * hs);
}

void qknorm_forward(real *out, real *stats, const real *qkv, const real *gq, const real *gk, real eps, int full,
                    int N, int H, int Hkv, int hs) {
    RowGroup g[2];
    qkv_groups(g, 2, full, H, Hkv, hs, (const real *const[]){gq, gk}, NULL);
    groups_rmsnorm_forward(out, stats, qkv, g, 2, eps, N, (H + 2 * Hkv) * hs);
}

void qknorm_backward(real *dqkv, real *dgq, real *dgk, const real *dout, const real *qkv, const real *stats,
                     const real *gq, const real *gk, int full, int N, int H, int Hkv, int hs) {
    RowGroup g[2];
    qkv_groups(g, 2, full, H, Hkv, hs, (const real *const[]){gq, gk}, (real *const[]){dgq, dgk});
    groups_rmsnorm_backward(dqkv, dout, qkv, stats, g, 2, N, (H + 2 * Hkv) * hs);
}

// ---------------------------------------------------------------------------------------------
// The operator table: each row's forward/backward adapt the Norm's parameters to the kernel's.

static void layernorm_fwd(const Norm *nm, real *y, real *stats, const real *x, int N, int C) {
    layernorm_forward(y, stats, x, nm->weight, nm->bias, nm->eps, N, C);
}
static void layernorm_bwd(const Norm *nm, real *dx, const real *dy, const real *x, const real *stats, int N, int C) {
    layernorm_backward(dx, nm->dweight, nm->dbias, dy, x, stats, nm->weight, N, C);
}
static void rmsnorm_fwd(const Norm *nm, real *y, real *stats, const real *x, int N, int C) {
    rmsnorm_forward(y, stats, x, nm->weight, nm->bias, nm->eps, N, C);
}
static void rmsnorm_bwd(const Norm *nm, real *dx, const real *dy, const real *x, const real *stats, int N, int C) {
    rmsnorm_backward(dx, nm->dweight, nm->dbias, dy, x, stats, nm->weight, N, C);
}
static void crmsnorm_fwd(const Norm *nm, real *y, real *stats, const real *x, int N, int C) {
    crmsnorm_forward(y, stats, x, nm->weight, nm->eps, N, C);
}
static void crmsnorm_bwd(const Norm *nm, real *dx, const real *dy, const real *x, const real *stats, int N, int C) {
    crmsnorm_backward(dx, dy, x, stats, nm->weight, N, C);
}
static void dyt_fwd(const Norm *nm, real *y, real *stats, const real *x, int N, int C) {
    dyt_forward(y, x, nm->scale, nm->weight, nm->bias, N, C);
}
static void dyt_bwd(const Norm *nm, real *dx, const real *dy, const real *x, const real *stats, int N, int C) {
    dyt_backward(dx, nm->dscale, nm->dweight, nm->dbias, dy, x, nm->scale, nm->weight, N, C);
}
static void derf_fwd(const Norm *nm, real *y, real *stats, const real *x, int N, int C) {
    derf_forward(y, x, nm->scale, nm->shift, nm->weight, nm->bias, N, C);
}
static void derf_bwd(const Norm *nm, real *dx, const real *dy, const real *x, const real *stats, int N, int C) {
    derf_backward(dx, nm->dscale, nm->dshift, nm->dweight, nm->dbias, dy, x, nm->scale, nm->shift, nm->weight, N, C);
}
static void bhyt_fwd(const Norm *nm, real *y, real *stats, const real *x, int N, int C) {
    bhyt_forward(y, stats, x, nm->scale, nm->weight, nm->kappa, nm->eps, N, C);
}
static void bhyt_bwd(const Norm *nm, real *dx, const real *dy, const real *x, const real *stats, int N, int C) {
    bhyt_backward(dx, nm->dscale, nm->dweight, dy, x, stats, nm->scale, nm->weight, nm->kappa, N, C);
}

#define INIT(field) offsetof(Config, field)
const NormOp NORM_OPS[NORM_KINDS] = {
    [NORM_LAYERNORM] = {.name = "layernorm", .forward = layernorm_fwd, .backward = layernorm_bwd, .has_weight = 1,
                        .bias = BIAS_WITH_MODEL_BIAS},
    [NORM_RMSNORM] = {.name = "rmsnorm", .forward = rmsnorm_fwd, .backward = rmsnorm_bwd, .has_weight = 1,
                      .bias = BIAS_ON_CENTERED_STREAM},
    [NORM_CRMSNORM] = {.name = "crmsnorm", .forward = crmsnorm_fwd, .backward = crmsnorm_bwd, .bias = BIAS_NEVER,
                       .compresses_stream = 1},
    [NORM_DYT] = {.name = "dyt", .forward = dyt_fwd, .backward = dyt_bwd, .has_scale = 1,
                  .scale_init = {INIT(dyt_alpha_attn), INIT(dyt_alpha_ffn), INIT(dyt_alpha_ffn)}, .has_weight = 1,
                  .bias = BIAS_WITH_MODEL_BIAS, .squash = SQUASH_TANH},
    // BHyT's epsilon is hard-coded (1e-6) in every BHyT path of the reference code.
    [NORM_BHYT] = {.name = "bhyt", .forward = bhyt_fwd, .backward = bhyt_bwd, .has_scale = 1,
                   .scale_init = {INIT(bhyt_lambda1), INIT(bhyt_lambda2), INIT(bhyt_final_lambda)}, .has_weight = 1,
                   .bias = BIAS_NEVER, .fixed_eps = 1e-6, .squash = SQUASH_TANH, .tanh_rstd = 1},
    // Derf: alpha at the attention site from model.derf_alpha_attn, elsewhere model.derf_alpha_other, each
    // model.derf_alpha when 0 (unset); beta present whatever model.bias says, as in the reference code.
    [NORM_DERF] = {.name = "derf", .forward = derf_fwd, .backward = derf_bwd, .has_scale = 1,
                   .scale_init = {INIT(derf_alpha_attn), INIT(derf_alpha_other), INIT(derf_alpha_other)},
                   .scale_unset = INIT(derf_alpha), .has_shift = 1, .shift_init = INIT(derf_shift), .has_weight = 1,
                   .bias = BIAS_ALWAYS, .squash = SQUASH_ERF},
};
#undef INIT

NormKind norm_by_name(const char *name) {
    for (int k = 0; k < NORM_KINDS; k++)
        if (!strcmp(NORM_OPS[k].name, name)) return (NormKind)k;
    return NORM_NONE;
}

// LayerNorm Scaling: `nm` with gain s * weight (s alone without a gain) and bias s * bias in its
// scratch, and its gain and bias gradients redirected to zeroed scratch (with `grads`), so that the
// operator computes s * nm(x) and its input and scalar gradients; lns_unscale finishes the rest.
static Norm lns_scaled(const Norm *nm, int grads, int C) {
    Norm s = *nm;
    real k = nm->lns_scale, *w = nm->lns_scratch, *b = w + C, *dw = b + C, *db = dw + C;
    for (int c = 0; c < C; c++) w[c] = nm->weight ? k * nm->weight[c] : k;
    s.weight = w;
    if (nm->bias) {
        for (int c = 0; c < C; c++) b[c] = k * nm->bias[c];
        s.bias = b;
    }
    if (grads) {
        memset(dw, 0, 2 * (size_t)C * sizeof(real));
        s.dweight = nm->dweight ? dw : NULL;
        s.dbias = nm->dbias ? db : NULL;
    }
    return s;
}

// d weight += s * d(s weight), d bias += s * d(s bias).
static void lns_unscale(const Norm *nm, int C) {
    const real k = nm->lns_scale, *dw = nm->lns_scratch + 2 * (size_t)C, *db = dw + C;
    for (int c = 0; c < C && nm->dweight; c++) nm->dweight[c] += k * dw[c];
    for (int c = 0; c < C && nm->dbias; c++) nm->dbias[c] += k * db[c];
}

void norm_forward(const Norm *nm, real *out, real *stats, const real *inp, int N, int C) {
    if (!nm->lns_scale) { NORM_OPS[nm->kind].forward(nm, out, stats, inp, N, C); return; }
    Norm scaled = lns_scaled(nm, 0, C);
    NORM_OPS[nm->kind].forward(&scaled, out, stats, inp, N, C);
}

void norm_backward(const Norm *nm, real *dinp, const real *dout, const real *inp, const real *stats, int N, int C) {
    if (!nm->lns_scale) { NORM_OPS[nm->kind].backward(nm, dinp, dout, inp, stats, N, C); return; }
    Norm scaled = lns_scaled(nm, 1, C);
    NORM_OPS[nm->kind].backward(&scaled, dinp, dout, inp, stats, N, C);
    lns_unscale(nm, C);
}
