#include "norms.h"
#include <math.h>

#define CHANNEL_BLOCK 64

void norm_forward(const Norm *nm, real *out, real *stats, const real *inp, int N, int C) {
    switch (nm->kind) {
    case NORM_LAYERNORM: layernorm_forward(out, stats, inp, nm->weight, nm->bias, nm->eps, N, C); return;
    }
}

void norm_backward(const Norm *nm, real *dinp, const real *dout, const real *inp, const real *stats, int N, int C) {
    switch (nm->kind) {
    case NORM_LAYERNORM: layernorm_backward(dinp, nm->dweight, nm->dbias, dout, inp, stats, nm->weight, N, C); return;
    }
}

// Parameter gradients of an elementwise affine y = w * xhat + b, summed over rows in a fixed
// order per channel block (deterministic for any thread count). xhat is recomputed from stats.
static void affine_param_backward(real *dweight, real *dbias, const real *dout, const real *inp,
                                  const real *stats, int N, int C) {
    #pragma omp parallel for
    for (int c0 = 0; c0 < C; c0 += CHANNEL_BLOCK) {
        int c1 = c0 + CHANNEL_BLOCK < C ? c0 + CHANNEL_BLOCK : C;
        for (int n = 0; n < N; n++) {
            const real *x = inp + (size_t)n * C, *g = dout + (size_t)n * C;
            real mean = stats[2 * n], rstd = stats[2 * n + 1];
            for (int c = c0; c < c1; c++) {
                dweight[c] += g[c] * (x[c] - mean) * rstd;
                if (dbias) dbias[c] += g[c];
            }
        }
    }
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
        for (int c = 0; c < C; c++) y[c] = (x[c] - mean) * rstd * weight[c] + (bias ? bias[c] : 0);
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
    affine_param_backward(dweight, dbias, dout, inp, stats, N, C);
}
