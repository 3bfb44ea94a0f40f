#include "kernels.h"
#include <math.h>
#include <omp.h>
#include <string.h>

// Parameter-gradient reductions over tokens run in parallel over blocks of channels, each block
// summing tokens in order, so results are bit-identical for any thread count and run.
#define CHANNEL_BLOCK 64

void encoder_forward(real *out, const int *tokens, const real *wte, const real *wpe, int B, int T, int C) {
    #pragma omp parallel for
    for (int n = 0; n < B * T; n++) {
        const real *e = wte + (size_t)tokens[n] * C;
        const real *p = wpe ? wpe + (size_t)(n % T) * C : NULL;
        real *o = out + (size_t)n * C;
        for (int c = 0; c < C; c++) o[c] = e[c] + (p ? p[c] : 0);
    }
}

void encoder_backward(real *dwte, real *dwpe, const real *dout, const int *tokens, int B, int T, int C) {
    #pragma omp parallel for
    for (int c0 = 0; c0 < C; c0 += CHANNEL_BLOCK) {
        int c1 = c0 + CHANNEL_BLOCK < C ? c0 + CHANNEL_BLOCK : C;
        for (int n = 0; n < B * T; n++) {
            const real *g = dout + (size_t)n * C;
            real *e = dwte + (size_t)tokens[n] * C;
            for (int c = c0; c < c1; c++) e[c] += g[c];
            if (dwpe) {
                real *p = dwpe + (size_t)(n % T) * C;
                for (int c = c0; c < c1; c++) p[c] += g[c];
            }
        }
    }
}

void matmul_forward(real *out, const real *residual, const real *inp, const real *weight, const real *bias,
                    int N, int IC, int OC) {
    int preload = residual || bias;
    if (preload) {
        #pragma omp parallel for
        for (int n = 0; n < N; n++) {
            real *o = out + (size_t)n * OC;
            const real *r = residual ? residual + (size_t)n * OC : NULL;
            for (int j = 0; j < OC; j++) o[j] = (r ? r[j] : 0) + (bias ? bias[j] : 0);
        }
    }
    cblas_gemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, IC, 1, inp, IC, weight, IC,
               preload ? 1 : 0, out, OC);
}

void matmul_backward(real *dinp, real *dweight, real *dbias, const real *dout, const real *inp,
                     const real *weight, int N, int IC, int OC) {
    if (dinp)
        cblas_gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, IC, OC, 1, dout, OC, weight, IC, 0, dinp, IC);
    cblas_gemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, IC, N, 1, dout, OC, inp, IC, 1, dweight, IC);
    if (!dbias) return;
    #pragma omp parallel for
    for (int o0 = 0; o0 < OC; o0 += CHANNEL_BLOCK) {
        int o1 = o0 + CHANNEL_BLOCK < OC ? o0 + CHANNEL_BLOCK : OC;
        for (int n = 0; n < N; n++) {
            const real *g = dout + (size_t)n * OC;
            for (int o = o0; o < o1; o++) dbias[o] += g[o];
        }
    }
}

// Both attention passes work per (batch, head) on strided views of qkv: sgemm takes the stride
// 3C directly, so no head is ever copied out. Inside the parallel loop OpenBLAS (OpenMP build)
// runs single-threaded, which is what we want for these small products.
void attention_forward(real *out, real *att, const real *qkv, int B, int T, int C, int H) {
    int hs = C / H, C3 = 3 * C;
    real scale = (real)(1.0 / sqrt((double)hs));
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            const real *q = qkv + (size_t)b * T * C3 + h * hs, *k = q + C, *v = q + 2 * C;
            real *P = att + ((size_t)b * H + h) * T * T;
            cblas_gemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, scale, q, C3, k, C3, 0, P, T);
            for (int t = 0; t < T; t++) {  // causal softmax of row t over s <= t
                real *row = P + (size_t)t * T;
                real maxv = row[0];
                for (int s = 1; s <= t; s++) maxv = row[s] > maxv ? row[s] : maxv;
                double sum = 0;
                for (int s = 0; s <= t; s++) { row[s] = real_exp(row[s] - maxv); sum += row[s]; }
                real inv = (real)(1.0 / sum);
                for (int s = 0; s <= t; s++) row[s] *= inv;
                for (int s = t + 1; s < T; s++) row[s] = 0;
            }
            cblas_gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1, P, T, v, C3, 0,
                       out + (size_t)b * T * C + h * hs, C);
        }
    }
}

void attention_backward(real *dqkv, real *scratch, const real *dout, const real *qkv, const real *att,
                        int B, int T, int C, int H) {
    int hs = C / H, C3 = 3 * C;
    real scale = (real)(1.0 / sqrt((double)hs));
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            const real *q = qkv + (size_t)b * T * C3 + h * hs, *k = q + C, *v = q + 2 * C;
            real *dq = dqkv + (size_t)b * T * C3 + h * hs, *dk = dq + C, *dv = dq + 2 * C;
            const real *P = att + ((size_t)b * H + h) * T * T;
            const real *dy = dout + (size_t)b * T * C + h * hs;
            real *dS = scratch + (size_t)omp_get_thread_num() * T * T;
            // dP = dy v^T, dv = P^T dy
            cblas_gemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, 1, dy, C, v, C3, 0, dS, T);
            cblas_gemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, 1, P, T, dy, C, 0, dv, C3);
            for (int t = 0; t < T; t++) {  // softmax backward, then the logit scale
                const real *p = P + (size_t)t * T;
                real *d = dS + (size_t)t * T;
                double dot = 0;
                for (int s = 0; s <= t; s++) dot += p[s] * d[s];
                for (int s = 0; s <= t; s++) d[s] = p[s] * (d[s] - (real)dot) * scale;
                for (int s = t + 1; s < T; s++) d[s] = 0;
            }
            // dq = dS k, dk = dS^T q
            cblas_gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1, dS, T, k, C3, 0, dq, C3);
            cblas_gemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, 1, dS, T, q, C3, 0, dk, C3);
        }
    }
}

#define GELU_SCALE 0.7978845608028654  // sqrt(2/pi)

void gelu_forward(real *out, const real *inp, size_t n) {
    #pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        real x = inp[i];
        out[i] = (real)0.5 * x * (1 + real_tanh((real)GELU_SCALE * (x + (real)0.044715 * x * x * x)));
    }
}

void gelu_backward(real *dinp, const real *inp, const real *dout, size_t n) {
    #pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        real x = inp[i];
        real u = (real)GELU_SCALE * (x + (real)0.044715 * x * x * x);
        real th = real_tanh(u);
        real sech2 = 1 - th * th;
        real grad = (real)0.5 * (1 + th) + (real)0.5 * x * sech2 * (real)GELU_SCALE * (1 + (real)(3 * 0.044715) * x * x);
        dinp[i] = grad * dout[i];
    }
}

void crossentropy_forward(real *losses, real *probs, const int *targets, int N, int V) {
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        real *p = probs + (size_t)n * V;
        real maxv = p[0];
        for (int i = 1; i < V; i++) maxv = p[i] > maxv ? p[i] : maxv;
        real target_logit = p[targets[n]] - maxv;
        double sum = 0;
        for (int i = 0; i < V; i++) { p[i] = real_exp(p[i] - maxv); sum += p[i]; }
        real inv = (real)(1.0 / sum);
        for (int i = 0; i < V; i++) p[i] *= inv;
        losses[n] = (real)(log(sum) - target_logit);
    }
}

void crossentropy_backward(real *probs, const int *targets, real dloss, int N, int V) {
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        real *p = probs + (size_t)n * V;
        for (int i = 0; i < V; i++) p[i] *= dloss;
        p[targets[n]] -= dloss;
    }
}
