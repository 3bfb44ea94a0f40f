#include "diagnostics.h"
#include "kernels.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

#define SATURATED 0.95  // |f(z)| above this counts as saturated (tanh or erf)

// Every per-block series: its JSON name and where Diagnostics holds it, in the order written.
#define SERIES(name) {#name, offsetof(Diagnostics, name)}
static const struct { const char *name; size_t offset; } SERIES_TABLE[] = {
    SERIES(grad_norm), SERIES(ffn_grad_norm), SERIES(rms), SERIES(var), SERIES(angle), SERIES(scale1),
    SERIES(scale2), SERIES(sat1), SERIES(sat2), SERIES(ms_approx), SERIES(ms_actual), SERIES(shift1), SERIES(shift2),
    SERIES(out_rms1), SERIES(out_rms2),
};
#undef SERIES
#define N_SERIES (sizeof SERIES_TABLE / sizeof SERIES_TABLE[0])

static double **series(Diagnostics *d, size_t i) { return (double **)((char *)d + SERIES_TABLE[i].offset); }

void diag_init(Diagnostics *d, const GPT *m) {
    memset(d, 0, sizeof *d);
    d->L = m->L;
    for (size_t i = 0; i < N_SERIES; i++) *series(d, i) = xcalloc(m->L, sizeof(double));
}

void diag_free(Diagnostics *d) {
    for (size_t i = 0; i < N_SERIES; i++) free(*series(d, i));
    memset(d, 0, sizeof *d);
}

// The z beyond which |f(z)| > SATURATED: atanh, or erf's inverse by Newton's method (erf is concave on
// z > 0: after the first step the iterates rise to the root).
static double saturation_limit(Squash fn) {
    if (fn == SQUASH_TANH) return atanh(SATURATED);
    double z = 2;
    for (int i = 0; i < 30; i++) z -= (erf(z) - SATURATED) / (M_2_SQRTPI * exp(-z * z));
    return z;
}

// Fraction of the N x S values of a DyT, Derf or BHyT site whose f exceeds SATURATED in magnitude:
// |f(k * x * r + shift)| > t  <=>  |k * x * r + shift| > f^-1(t), with k = alpha (DyT, Derf; r = 1) or
// lambda / kappa and r = the row's saved rstd, r_row[n * r_stride] (BHyT), and shift Derf's s (else 0).
// NaN for the other norms, which have no squashing function.
static double saturation(const Norm *nm, const real *inp, const real *r_row, int r_stride, int N, int S) {
    const NormOp *op = &NORM_OPS[nm->kind];
    if (op->squash == SQUASH_NONE) return NAN;
    int rstd = op->tanh_rstd;
    double k = rstd ? nm->scale[0] / nm->kappa : nm->scale[0], limit = saturation_limit(op->squash);
    double shift = nm->shift ? nm->shift[0] : 0;
    long count = 0;
    #pragma omp parallel for reduction(+:count)
    for (int n = 0; n < N; n++) {
        double kr = k * (rstd ? r_row[(size_t)n * r_stride] : 1.0);
        const real *x = inp + (size_t)n * S;
        for (int c = 0; c < S; c++) count += fabs(kr * x[c] + shift) > limit;
    }
    return (double)count / ((double)N * S);
}

static double norm_scale(const Norm *nm) { return nm->scale ? nm->scale[0] : NAN; }
static double norm_shift(const Norm *nm) { return nm->shift ? nm->shift[0] : NAN; }

// rms, var and angle of one block from its input x and output y.
static void hidden_state_stats(double *rms, double *var, double *angle, const real *x, const real *y, int N, int S) {
    double sum_sq = 0, sum_var = 0, sum_angle = 0;
    #pragma omp parallel for reduction(+:sum_sq, sum_var, sum_angle)
    for (int n = 0; n < N; n++) {
        const real *xn = x + (size_t)n * S, *yn = y + (size_t)n * S;
        double s = 0, ss = 0, xy = 0, xx = 0;
        for (int c = 0; c < S; c++) {
            s += yn[c];
            ss += (double)yn[c] * yn[c];
            xy += (double)xn[c] * yn[c];
            xx += (double)xn[c] * xn[c];
        }
        double mean = s / S, cosine = xx > 0 && ss > 0 ? xy / sqrt(xx * ss) : 1;
        sum_sq += ss;
        sum_var += ss / S - mean * mean;
        sum_angle += acos(fmax(-1.0, fmin(1.0, cosine))) / M_PI;
    }
    *rms = sqrt(sum_sq / ((double)N * S));
    *var = sum_var / N;
    *angle = sum_angle / N;
}

// BHyT's second site: the mean square it assumes, recovered from the rstd2 it saved (rstd2 = (ms + eps)^-1/2),
// and the actual mean(h^2), each averaged over tokens.
static void bhyt_mean_squares(double *approx, double *actual, const real *h, const real *rstd2, real eps, int N, int S) {
    double sum_approx = 0, sum_actual = 0;
    #pragma omp parallel for reduction(+:sum_approx, sum_actual)
    for (int n = 0; n < N; n++) {
        const real *hn = h + (size_t)n * S;
        double ss = 0;
        for (int c = 0; c < S; c++) ss += (double)hn[c] * hn[c];
        sum_actual += ss / S;
        sum_approx += 1.0 / ((double)rstd2[n] * rstd2[n]) - eps;
    }
    *approx = sum_approx / N;
    *actual = sum_actual / N;
}

void diag_compute(Diagnostics *d, const GPT *m, int B, int T) {
    int N = B * T, S = m->S, FC = m->swiglu ? 2 * m->F : m->F;
    for (int l = 0; l < m->L; l++) {
        const Block *b = &m->blocks[l];
        const PlacementSpec *p = b->place;
        const BlockActs *a = &m->fwd.blocks[l];
        const real *x = gpt_block_input(m, l);
        d->grad_norm[l] = l2_norm(m->grads + b->param_begin, b->param_end - b->param_begin);
        double fc = l2_norm(b->fc.dw, (size_t)FC * S), proj = l2_norm(b->fc_proj.dw, (size_t)S * m->F);
        d->ffn_grad_norm[l] = sqrt(fc * fc + proj * proj);
        hidden_state_stats(&d->rms[l], &d->var[l], &d->angle[l], x, a->out, N, S);
        // Site 1 normalizes x (before attention) or x + attention (post); site 2 h or h + FFN.
        // Their BHyT rstd is the first of two stats per row; at BHyT's shared site, the only one.
        int site1 = p->attn_in_norm || p->attn_post_norm, site2 = p->ffn_in_norm || p->ffn_post_norm;
        d->scale1[l] = site1 ? norm_scale(&b->n1) : NAN;
        d->scale2[l] = site2 ? norm_scale(&b->n2) : NAN;
        d->shift1[l] = site1 ? norm_shift(&b->n1) : NAN;
        d->shift2[l] = site2 ? norm_shift(&b->n2) : NAN;
        // With train.recompute the blocks share one set of saved tensors (block 0's after the backward):
        // only the block outputs are each block's own, so the site statistics are not available.
        site1 &= !m->recompute;
        site2 &= !m->recompute;
        d->sat1[l] = !site1 ? NAN : p->attn_in_norm ? saturation(&b->n1, x, a->n1_stats, 2, N, S)
                                                    : saturation(&b->n1, a->res_attn, a->h_stats, 2, N, S);
        int stride2 = p->shared_stat ? 1 : 2;
        d->sat2[l] = !site2 ? NAN : p->ffn_post_norm ? saturation(&b->n2, a->res_ffn, a->out_stats, 2, N, S)
                                                     : saturation(&b->n2, a->h, a->n2_stats, stride2, N, S);
        // Peri-LN: the sublayer outputs before their output norms (res_attn, res_ffn hold them alone).
        double NS = (double)N * S;
        d->out_rms1[l] = p->attn_out_norm && !m->recompute ? l2_norm(a->res_attn, (size_t)N * S) / sqrt(NS) : NAN;
        d->out_rms2[l] = p->ffn_out_norm && !m->recompute ? l2_norm(a->res_ffn, (size_t)N * S) / sqrt(NS) : NAN;
        d->ms_approx[l] = d->ms_actual[l] = NAN;
        if (p->shared_stat && !m->recompute)
            bhyt_mean_squares(&d->ms_approx[l], &d->ms_actual[l], a->h, a->n2_stats, b->n2.eps, N, S);
    }
}

void diag_write_json(const Diagnostics *d, long step, FILE *out) {
    fprintf(out, "{\"step\":%ld,\"diag\":{", step);
    for (size_t i = 0; i < N_SERIES; i++) {
        const double *v = *series((Diagnostics *)d, i);
        fprintf(out, "%s\"%s\":[", i ? "," : "", SERIES_TABLE[i].name);
        for (int l = 0; l < d->L; l++) {
            if (isfinite(v[l])) fprintf(out, "%s%.6g", l ? "," : "", v[l]);
            else fprintf(out, "%snull", l ? "," : "");
        }
        fprintf(out, "]");
    }
    fprintf(out, "}}\n");
}

void diag_write_removal_json(const char *path, long step, double full, const double *skipped, int L) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddNumberToObject(root, "step", (double)step);
    cJSON_AddNumberToObject(root, "val_loss", full);
    cJSON *losses = cJSON_AddArrayToObject(root, "skip_val_loss"), *deltas = cJSON_AddArrayToObject(root, "delta");
    for (int l = 0; l < L; l++) {
        cJSON_AddItemToArray(losses, cJSON_CreateNumber(skipped[l]));
        cJSON_AddItemToArray(deltas, cJSON_CreateNumber(skipped[l] - full));
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (write_file_atomic(path, text, strlen(text)) != 0) die(1, "%s: cannot write: %s", path, strerror(errno));
    free(text);
}
