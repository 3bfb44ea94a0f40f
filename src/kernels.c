#include "kernels.h"
#include <math.h>
#include <omp.h>
#include <string.h>

void encoder_forward(real *out, const int *tokens, const real *wte, const real *wpe, int B, int T, int C) {
    #pragma omp parallel for
    for (int n = 0; n < B * T; n++) {
        const real *e = wte + (size_t)tokens[n] * C;
        const real *p = wpe ? wpe + (size_t)(n % T) * C : NULL;
        real *o = out + (size_t)n * C;
        if (p) for (int c = 0; c < C; c++) o[c] = e[c] + p[c];  // tests outside the loops: norms.c, map_row_forward
        else memcpy(o, e, (size_t)C * sizeof(real));
    }
}

int channel_block(int C) {
    int threads = omp_get_max_threads();
    int width = (C / threads + 15) / 16 * 16;
    return width < 16 ? 16 : width > CHANNEL_BLOCK_MAX ? CHANNEL_BLOCK_MAX : width;
}

// dst[rows[n]] += scale * src[n] for n in order (rows NULL: every n into row 0, i.e. the column sums
// of src, collected in local sums first), in parallel over blocks of channels: tokens that share a row
// add into it in the same order for any thread count.
void scatter_add_rows(real *dst, const real *src, const int *rows, int N, int C, real scale) {
    int cb = channel_block(C);
    #pragma omp parallel for
    for (int c0 = 0; c0 < C; c0 += cb) {
        int w = C - c0 < cb ? C - c0 : cb;
        real sum[CHANNEL_BLOCK_MAX] = {0};
        for (int n = 0; n < N; n++) {
            real *d = rows ? dst + (size_t)rows[n] * C + c0 : sum;
            const real *g = src + (size_t)n * C + c0;
            for (int c = 0; c < w; c++) d[c] += scale * g[c];
        }
        if (!rows)
            for (int c = 0; c < w; c++) dst[c0 + c] += sum[c];
    }
}

void encoder_backward(real *dwte, real *dwpe, const real *dout, const int *tokens, int B, int T, int C) {
    if (dwte) scatter_add_rows(dwte, dout, tokens, B * T, C, 1);
    if (!dwpe) return;
    #pragma omp parallel for
    for (int t = 0; t < T; t++)
        for (int b = 0; b < B; b++)
            for (int c = 0; c < C; c++) dwpe[(size_t)t * C + c] += dout[((size_t)b * T + t) * C + c];
}

void matmul_forward(real *out, const real *residual, const real *inp, const real *weight, const real *bias,
                    int N, int IC, int OC) {
    int preload = residual || bias;
    if (preload) {
        #pragma omp parallel for
        for (int n = 0; n < N; n++) {
            real *o = out + (size_t)n * OC;
            const real *r = residual ? residual + (size_t)n * OC : NULL;
            if (r && bias) for (int j = 0; j < OC; j++) o[j] = r[j] + bias[j];
            else memcpy(o, r ? r : bias, (size_t)OC * sizeof(real));
        }
    }
    if (N == 1)  // one row (a decoding step): gemv streams the weights once, where gemm would first pack them
        cblas_gemv(CblasRowMajor, CblasNoTrans, OC, IC, 1, weight, IC, inp, 1, preload ? 1 : 0, out, 1);
    else
        cblas_gemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, IC, 1, inp, IC, weight, IC, preload ? 1 : 0, out,
                   OC);
}

void matmul_backward(real *dinp, real *dweight, real *dbias, const real *dout, const real *inp,
                     const real *weight, int N, int IC, int OC) {
    if (dinp)
        cblas_gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, IC, OC, 1, dout, OC, weight, IC, 0, dinp, IC);
    cblas_gemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, IC, N, 1, dout, OC, inp, IC, 1, dweight, IC);
    if (dbias) scatter_add_rows(dbias, dout, NULL, N, OC, 1);
}

// Columns, inside one token's qkv row, of query head h and of the kv head it reads.
typedef struct { int width, q, k, v; } HeadCols;
static HeadCols head_cols(int h, int H, int Hkv, int hs) {
    int kvh = h / (H / Hkv);
    return (HeadCols){(H + 2 * Hkv) * hs, h * hs, (H + kvh) * hs, (H + Hkv + kvh) * hs};
}

// Softmax in place over the n entries of row (scaled logits -> probabilities).
// row (n) = softmax(row) in place; returns the sum of exp(row - max), and the max in *max_out (if not NULL).
static real softmax_row(real *row, int n, real *max_out) {
    real maxv = row[0], sum = 0;
    #pragma omp simd reduction(max:maxv)
    for (int s = 0; s < n; s++) maxv = row[s] > maxv ? row[s] : maxv;
    #pragma omp simd reduction(+:sum)
    for (int s = 0; s < n; s++) { row[s] = real_exp(row[s] - maxv); sum += row[s]; }
    real inv = 1 / sum;
    #pragma omp simd
    for (int s = 0; s < n; s++) row[s] *= inv;
    if (max_out) *max_out = maxv;
    return sum;
}

void causal_softmax(real *P, int T) {
    for (int t = 0; t < T; t++) {
        real *row = P + (size_t)t * T;
        softmax_row(row, t + 1, NULL);
        memset(row + t + 1, 0, (size_t)(T - t - 1) * sizeof(real));
    }
}

void causal_softmax_backward(real *dS, const real *P, int T, real scale) {
    for (int t = 0; t < T; t++) {
        const real *p = P + (size_t)t * T;
        real *d = dS + (size_t)t * T, dot = 0;
        #pragma omp simd reduction(+:dot)
        for (int s = 0; s <= t; s++) dot += p[s] * d[s];
        #pragma omp simd
        for (int s = 0; s <= t; s++) d[s] = p[s] * (d[s] - dot) * scale;
        memset(d + t + 1, 0, (size_t)(T - t - 1) * sizeof(real));
    }
}

// Both attention passes work per head on strided views of qkv: gemm takes the row width as its
// leading dimension, so no head is ever copied out. Inside the parallel loop OpenBLAS (OpenMP
// build) runs single-threaded, which is what we want for these small products. The masked scores
// are never computed (ATT_ROWS blocks); causal_softmax writes their zeros.
static int block_rows(int T, int t0) { return T - t0 < ATT_ROWS ? T - t0 : ATT_ROWS; }

void attention_forward(real *out, real *att, const real *qkv, int B, int T, int H, int Hkv, int hs) {
    int C = H * hs;
    real scale = (real)(1.0 / sqrt((double)hs));
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            HeadCols c = head_cols(h, H, Hkv, hs);
            const real *x = qkv + (size_t)b * T * c.width;
            real *P = att + ((size_t)b * H + h) * T * T;
            // S (T,T) = scale * q k^T, rows t0.. against keys 0..t0+rows
            for (int t0 = 0; t0 < T; t0 += ATT_ROWS) {
                int rows = block_rows(T, t0);
                cblas_gemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, t0 + rows, hs, scale,
                           x + (size_t)t0 * c.width + c.q, c.width, x + c.k, c.width, 0, P + (size_t)t0 * T, T);
            }
            causal_softmax(P, T);
            // out (T,hs) = P v
            for (int t0 = 0; t0 < T; t0 += ATT_ROWS) {
                int rows = block_rows(T, t0);
                cblas_gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hs, t0 + rows, 1, P + (size_t)t0 * T, T,
                           x + c.v, c.width, 0, out + ((size_t)b * T + t0) * C + h * hs, C);
            }
        }
    }
}

// The last row of attention_forward for each sequence, reading keys and values from the cache:
// per (sequence, head) two matrix-vector products over the T cached positions.
void attention_decode_forward(real *out, real *scores, const real *qkv, const real *k_cache, const real *v_cache,
                              int B, int T, int capacity, int H, int Hkv, int hs) {
    real scale = (real)(1.0 / sqrt((double)hs));
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            HeadCols c = head_cols(h, H, Hkv, hs);
            size_t kv = ((size_t)b * Hkv + (c.k - H * hs) / hs) * capacity * hs;
            real *s = scores + ((size_t)b * H + h) * capacity;
            cblas_gemv(CblasRowMajor, CblasNoTrans, T, hs, scale, k_cache + kv, hs, qkv + (size_t)b * c.width + c.q, 1,
                       0, s, 1);
            softmax_row(s, T, NULL);
            cblas_gemv(CblasRowMajor, CblasTrans, T, hs, 1, v_cache + kv, hs, s, 1, 0, out + ((size_t)b * H + h) * hs, 1);
        }
    }
}

// One task per (batch, kv head) owns that kv head's dk and dv: its query heads add into them in
// order, so the sums are race-free and bit-identical for any thread count.
void attention_backward(real *dqkv, real *scratch, const real *dout, const real *qkv, const real *att,
                        int B, int T, int H, int Hkv, int hs) {
    int C = H * hs, group = H / Hkv;
    real scale = (real)(1.0 / sqrt((double)hs));
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int kvh = 0; kvh < Hkv; kvh++) {
            real *dS = scratch + (size_t)omp_get_thread_num() * T * T;
            for (int j = 0; j < group; j++) {
                int h = kvh * group + j;
                HeadCols c = head_cols(h, H, Hkv, hs);
                const real *x = qkv + (size_t)b * T * c.width;
                real *dx = dqkv + (size_t)b * T * c.width;
                const real *P = att + ((size_t)b * H + h) * T * T;
                const real *dy = dout + (size_t)b * T * C + h * hs;
                real beta = j ? 1 : 0;  // the first query head of the group overwrites dk, dv
                // dP = dy v^T (query rows t0.. against keys 0..t0+rows); dv (+)= P^T dy (key rows s0.. from
                // the queries s0..T that see them)
                for (int t0 = 0; t0 < T; t0 += ATT_ROWS) {
                    int rows = block_rows(T, t0);
                    cblas_gemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, t0 + rows, hs, 1, dy + (size_t)t0 * C, C,
                               x + c.v, c.width, 0, dS + (size_t)t0 * T, T);
                    cblas_gemm(CblasRowMajor, CblasTrans, CblasNoTrans, rows, hs, T - t0, 1, P + (size_t)t0 * T + t0, T,
                               dy + (size_t)t0 * C, C, beta, dx + (size_t)t0 * c.width + c.v, c.width);
                }
                causal_softmax_backward(dS, P, T, scale);
                // dq = dS k, dk (+)= dS^T q, over the same blocks
                for (int t0 = 0; t0 < T; t0 += ATT_ROWS) {
                    int rows = block_rows(T, t0);
                    cblas_gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hs, t0 + rows, 1, dS + (size_t)t0 * T, T,
                               x + c.k, c.width, 0, dx + (size_t)t0 * c.width + c.q, c.width);
                    cblas_gemm(CblasRowMajor, CblasTrans, CblasNoTrans, rows, hs, T - t0, 1, dS + (size_t)t0 * T + t0, T,
                               x + (size_t)t0 * c.width + c.q, c.width, beta, dx + (size_t)t0 * c.width + c.k, c.width);
                }
            }
        }
    }
}

void rope_tables(real *cos_t, real *sin_t, int maxT, int hs, double theta) {
    int half = hs / 2;
    for (int t = 0; t < maxT; t++) {
        for (int i = 0; i < half; i++) {
            double angle = t * pow(theta, -2.0 * i / hs);  // in double: float would drift at large t
            cos_t[(size_t)t * half + i] = (real)cos(angle);
            sin_t[(size_t)t * half + i] = (real)sin(angle);
        }
    }
}

// Turns every q and k head of each row by sign * angle. The q heads and then the k heads are the
// first H + Hkv heads of a row, so both are one contiguous run.
static void rope_rotate(real *qkv, const real *cos_t, const real *sin_t, int B, int T, int H, int Hkv, int hs,
                        real sign) {
    int half = hs / 2, width = (H + 2 * Hkv) * hs;
    #pragma omp parallel for
    for (int n = 0; n < B * T; n++) {
        const real *cs = cos_t + (size_t)(n % T) * half, *sn = sin_t + (size_t)(n % T) * half;
        for (int h = 0; h < H + Hkv; h++) {
            real *x = qkv + (size_t)n * width + h * hs;
            for (int i = 0; i < half; i++) {
                real x1 = x[i], x2 = x[i + half], s = sign * sn[i];
                x[i] = x1 * cs[i] - x2 * s;
                x[i + half] = x2 * cs[i] + x1 * s;
            }
        }
    }
}

void rope_forward(real *qkv, const real *cos_t, const real *sin_t, int B, int T, int H, int Hkv, int hs) {
    rope_rotate(qkv, cos_t, sin_t, B, T, H, Hkv, hs, 1);
}

void rope_backward(real *dqkv, const real *cos_t, const real *sin_t, int B, int T, int H, int Hkv, int hs) {
    rope_rotate(dqkv, cos_t, sin_t, B, T, H, Hkv, hs, -1);
}

static real sigmoid(real z) { return 1 / (1 + real_exp(-z)); }  // exp overflow gives 0, not NaN

void swiglu_forward(real *out, const real *inp, int N, int F) {
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const real *gate = inp + (size_t)n * 2 * F, *up = gate + F;
        real *o = out + (size_t)n * F;
        for (int f = 0; f < F; f++) o[f] = gate[f] * sigmoid(gate[f]) * up[f];
    }
}

void swiglu_backward(real *dinp, const real *dout, const real *inp, int N, int F) {
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const real *gate = inp + (size_t)n * 2 * F, *up = gate + F, *g = dout + (size_t)n * F;
        real *dgate = dinp + (size_t)n * 2 * F, *dup = dgate + F;
        for (int f = 0; f < F; f++) {
            real z = gate[f], sig = sigmoid(z);
            // silu'(z) = sig + z sig (1 - sig)
            dgate[f] = g[f] * up[f] * sig * (1 + z * (1 - sig));
            dup[f] = g[f] * z * sig;
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
        real *p = probs + (size_t)n * V, target = p[targets[n]], maxv;
        real sum = softmax_row(p, V, &maxv);
        losses[n] = real_log(sum) - (target - maxv);
    }
}

// dlogits = dloss (probs - onehot): the probabilities go through the two gemms with alpha = dloss,
// the one-hot part is a gather and a scatter of single rows. No pass over the (N,V) tensor is
// needed to form dlogits.
void classifier_backward(real *dinp, real *dweight, real *dbias, const real *probs, const real *inp,
                         const real *weight, const int *targets, real dloss, int N, int C, int V) {
    cblas_gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, V, dloss, probs, V, weight, C, 0, dinp, C);
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const real *w = weight + (size_t)targets[n] * C;
        real *d = dinp + (size_t)n * C;
        for (int c = 0; c < C; c++) d[c] -= dloss * w[c];
    }
    cblas_gemm(CblasRowMajor, CblasTrans, CblasNoTrans, V, C, N, dloss, probs, V, inp, C, 1, dweight, C);
    scatter_add_rows(dweight, inp, targets, N, C, -dloss);
    if (!dbias) return;
    scatter_add_rows(dbias, probs, NULL, N, V, dloss);
    for (int n = 0; n < N; n++) dbias[targets[n]] -= dloss;
}

void center_rows(real *x, int N, int C) {
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        real *row = x + (size_t)n * C, sum = 0;
        #pragma omp simd reduction(+:sum)
        for (int c = 0; c < C; c++) sum += row[c];
        real mean = sum / C;
        for (int c = 0; c < C; c++) row[c] -= mean;
    }
}

double chunked_sum(size_t n, int chunks, double (*part)(const void *ctx, size_t lo, size_t hi), const void *ctx) {
    double partial[chunks];
    #pragma omp parallel for
    for (int c = 0; c < chunks; c++) partial[c] = part(ctx, n * c / chunks, n * (c + 1) / chunks);
    double total = 0;
    for (int c = 0; c < chunks; c++) total += partial[c];
    return total;
}

#define DOT_CHUNKS 256

typedef struct { const real *a, *b; } DotArgs;

static double dot_part(const void *ctx, size_t lo, size_t hi) {
    const DotArgs *d = ctx;
    double s = 0;
    for (size_t i = lo; i < hi; i++) s += (double)d->a[i] * d->b[i];
    return s;
}

double dot_product(const real *a, const real *b, size_t n) {
    DotArgs args = {a, b};
    return chunked_sum(n, DOT_CHUNKS, dot_part, &args);
}

double l2_norm(const real *x, size_t n) { return sqrt(dot_product(x, x, n)); }

void set_threads(int n) {
    if (omp_get_max_threads() != n) openblas_set_num_threads(n);
}
