#include "diagnostics.h"
#include "kernels.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <string.h>

#define TANH_SATURATED 0.95

void diag_init(Diagnostics *d, const GPT *m) {
    memset(d, 0, sizeof *d);
    d->L = m->L;
    d->block_begin = xcalloc(m->L, sizeof(size_t));
    d->block_end = xcalloc(m->L, sizeof(size_t));
    double **fields[] = {&d->grad_norm, &d->ffn_grad_norm, &d->rms, &d->var, &d->angle, &d->scale1, &d->scale2,
                         &d->sat1, &d->sat2, &d->ms_approx, &d->ms_actual};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) *fields[i] = xcalloc(m->L, sizeof(double));
    // Each block's tensors are stored contiguously and named h.<l>.*, in block order.
    for (int i = 0; i < m->n_tensors; i++) {
        const ParamTensor *t = &m->tensors[i];
        int l;
        if (sscanf(t->name, "h.%d.", &l) != 1) continue;
        if (d->block_end[l] == 0) d->block_begin[l] = t->offset;
        d->block_end[l] = t->offset + t->size;
    }
}

void diag_free(Diagnostics *d) {
    double *fields[] = {d->grad_norm, d->ffn_grad_norm, d->rms, d->var, d->angle, d->scale1, d->scale2,
                        d->sat1, d->sat2, d->ms_approx, d->ms_actual};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) free(fields[i]);
    free(d->block_begin);
    free(d->block_end);
    memset(d, 0, sizeof *d);
}

// Fraction of the N x S values of a DyT or BHyT site whose tanh exceeds TANH_SATURATED in magnitude:
// |tanh(k * x * r)| > t  <=>  |k * x * r| > atanh(t), with k = alpha (DyT, r = 1) or lambda / kappa and
// r = the row's saved rstd, r_row[n * r_stride] (BHyT). NaN for the other norms, which have no tanh.
static double saturation(const Norm *nm, const real *inp, const real *r_row, int r_stride, int N, int S) {
    if (nm->kind != NORM_DYT && nm->kind != NORM_BHYT) return NAN;
    double k = nm->kind == NORM_DYT ? nm->scale[0] : nm->scale[0] / nm->kappa, limit = atanh(TANH_SATURATED);
    long count = 0;
    #pragma omp parallel for reduction(+:count)
    for (int n = 0; n < N; n++) {
        double kr = fabs(k * (nm->kind == NORM_DYT ? 1.0 : r_row[(size_t)n * r_stride]));
        const real *x = inp + (size_t)n * S;
        for (int c = 0; c < S; c++) count += fabs((double)x[c]) * kr > limit;
    }
    return (double)count / ((double)N * S);
}

static double norm_scale(const Norm *nm) { return nm->scale ? nm->scale[0] : NAN; }

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
        const BlockActs *a = &m->acts[l];
        const real *x = gpt_block_input(m, l);
        d->grad_norm[l] = l2_norm(m->grads + d->block_begin[l], d->block_end[l] - d->block_begin[l]);
        double fc = l2_norm(b->fc.dw, (size_t)FC * S), proj = l2_norm(b->fc_proj.dw, (size_t)S * m->F);
        d->ffn_grad_norm[l] = sqrt(fc * fc + proj * proj);
        hidden_state_stats(&d->rms[l], &d->var[l], &d->angle[l], x, a->out, N, S);
        // Site 1 normalizes x (before attention) or x + attention (post); site 2 h or h + FFN.
        // Their BHyT rstd is the first of two stats per row; at BHyT's shared site, the only one.
        int site1 = b->attn_in_norm || b->attn_post_norm, site2 = b->ffn_in_norm || b->ffn_post_norm;
        d->scale1[l] = site1 ? norm_scale(&b->n1) : NAN;
        d->scale2[l] = site2 ? norm_scale(&b->n2) : NAN;
        // With train.recompute the blocks share one set of saved tensors (block 0's after the backward):
        // only the block outputs are each block's own, so the site statistics are not available.
        site1 &= !m->recompute;
        site2 &= !m->recompute;
        d->sat1[l] = !site1 ? NAN : b->attn_in_norm ? saturation(&b->n1, x, a->n1_stats, 2, N, S)
                                                    : saturation(&b->n1, a->res_attn, a->h_stats, 2, N, S);
        d->sat2[l] = !site2 ? NAN : b->ffn_post_norm ? saturation(&b->n2, a->res_ffn, a->out_stats, 2, N, S)
                                                     : saturation(&b->n2, a->h, a->n2_stats, b->shared_stat ? 1 : 2, N, S);
        d->ms_approx[l] = d->ms_actual[l] = NAN;
        if (b->shared_stat && !m->recompute)
            bhyt_mean_squares(&d->ms_approx[l], &d->ms_actual[l], a->h, a->n2_stats, b->n2.eps, N, S);
    }
}

static void write_array(FILE *out, const char *name, const double *v, int n, int last) {
    fprintf(out, "\"%s\":[", name);
    for (int i = 0; i < n; i++) {
        if (isfinite(v[i])) fprintf(out, "%s%.6g", i ? "," : "", v[i]);
        else fprintf(out, "%snull", i ? "," : "");
    }
    fprintf(out, "]%s", last ? "" : ",");
}

void diag_write_json(const Diagnostics *d, long step, FILE *out) {
    fprintf(out, "{\"step\":%ld,\"diag\":{", step);
    write_array(out, "grad_norm", d->grad_norm, d->L, 0);
    write_array(out, "ffn_grad_norm", d->ffn_grad_norm, d->L, 0);
    write_array(out, "rms", d->rms, d->L, 0);
    write_array(out, "var", d->var, d->L, 0);
    write_array(out, "angle", d->angle, d->L, 0);
    write_array(out, "scale1", d->scale1, d->L, 0);
    write_array(out, "scale2", d->scale2, d->L, 0);
    write_array(out, "sat1", d->sat1, d->L, 0);
    write_array(out, "sat2", d->sat2, d->L, 0);
    write_array(out, "ms_approx", d->ms_approx, d->L, 0);
    write_array(out, "ms_actual", d->ms_actual, d->L, 1);
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
