// The model's matmuls three ways, in one run: OpenBLAS sgemm (the fp32 trainer's), oneDNN bf16
// (bf16 inputs, fp32 accumulation and output) and oneDNN fp32. `make bench-matmul` runs it with
// OPENBLAS_CORETYPE unset, passive OpenMP waits and 2 threads. Each figure is the median over
// ROUNDS interleaved rounds of the best of REPS runs, so a busy neighbour on a shared machine
// distorts all three alike; read the ratios, not the GFLOP/s.
#include "bf16.h"
#include "common.h"
#include <math.h>
#include <omp.h>
#include <string.h>

enum { ROUNDS = 5, REPS = 3, LIBS = 3 };
static const char *LIB_NAMES[LIBS] = {"sgemm", "dnnl bf16", "dnnl f32"};

// The product of kernels.c's matmul_forward / matmul_backward, through OpenBLAS.
static double sgemm_rate(int product, int N, int IC, int OC, int reps) {
    size_t big = (size_t)(N > OC ? N : OC) * (IC > OC ? IC : OC);
    float *a = xcalloc(big, 4), *b = xcalloc(big, 4), *c = xcalloc(big, 4);
    double best = 1e30;
    for (int r = -1; r < reps; r++) {  // r = -1: warm-up
        double t0 = now_seconds();
        if (product == LINEAR_FORWARD)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, IC, 1, a, IC, b, IC, 0, c, OC);
        else if (product == LINEAR_DINP)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, IC, OC, 1, a, OC, b, IC, 0, c, IC);
        else
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, IC, N, 1, a, OC, b, IC, 1, c, IC);
        double dt = now_seconds() - t0;
        if (r >= 0 && dt < best) best = dt;
    }
    free(a); free(b); free(c);
    return 2.0 * N * IC * OC / best;
}

static double rate(int lib, int product, int N, int IC, int OC) {
    return lib == 0 ? sgemm_rate(product, N, IC, OC, REPS) : onednn_linear_rate(product, lib == 1, N, IC, OC, REPS);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static double median(double *x, int n) {
    qsort(x, n, sizeof *x, cmp_double);
    return n % 2 ? x[n / 2] : (x[n / 2 - 1] + x[n / 2]) / 2;
}

typedef struct { const char *name; int IC, OC, per_layer; } Linear;  // per_layer 0: once per model (LM head)
typedef struct { const char *name; int n_layer, B, T, C, H, V; } Model;

// --- attention: the six products per layer (scores, values; dP, dv, dq, dk), as kernels.c runs
// them (a gemm per (batch, head) in a parallel loop, q, k, v in qkv rows) and batched through oneDNN
// bf16, with q, k, v in qkv rows and in separate planes.

static double attention_sgemm_time(const Model *m, float *qkv, float *att, float *out, float *dqkv, float *dS) {
    int B = m->B, T = m->T, H = m->H, hs = m->C / m->H, W = 3 * m->C, C = m->C;
    double t0 = now_seconds();
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const float *x = qkv + (size_t)b * T * W;
            float *P = att + ((size_t)b * H + h) * T * T, *dx = dqkv + (size_t)b * T * W;
            float *d = dS + (size_t)omp_get_thread_num() * T * T;
            const float *dy = out + (size_t)b * T * C + h * hs;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, 1, x + h * hs, W, x + C + h * hs, W, 0, P, T);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1, P, T, x + 2 * C + h * hs, W, 0,
                        out + (size_t)b * T * C + h * hs, C);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, 1, dy, C, x + 2 * C + h * hs, W, 0, d, T);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, 1, P, T, dy, C, 0, dx + 2 * C + h * hs, W);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1, d, T, x + C + h * hs, W, 0, dx + h * hs, W);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, 1, d, T, x + h * hs, W, 0, dx + C + h * hs, W);
        }
    return now_seconds() - t0;
}

// q, k, v interleaved in qkv rows (kernels.h's layout) or as three dense planes.
static double attention_bf16_time(const Model *m, int planar, const bf16 *qkv, float *att, bf16 *P, bf16 *out,
                                  float *dqkv, const bf16 *dout) {
    int C = m->C, W = 3 * C;
    size_t kv = planar ? (size_t)m->B * m->T * C : (size_t)C;
    Bf16Heads a = {m->B, m->T, m->H, m->H, C / m->H, planar ? C : W, planar ? C : W};
    double t0 = now_seconds();
    bf16_attention_scores(att, qkv, qkv + kv, &a);
    bf16_attention_values(out, 1, P, qkv + 2 * kv, &a);
    bf16_attention_values_backward(att, dqkv + 2 * kv, dout, P, qkv + 2 * kv, &a);
    bf16_attention_scores_backward(dqkv, dqkv + kv, P, qkv, qkv + kv, &a);
    return now_seconds() - t0;
}

// Median over ROUNDS of the best of REPS, the three ways interleaved.
static void bench_attention(const Model *m, double speedup[2]) {
    size_t nq = (size_t)m->B * m->T * 3 * m->C, na = (size_t)m->B * m->H * m->T * m->T, no = (size_t)m->B * m->T * m->C;
    float *qkv = xcalloc(nq, 4), *att = xcalloc(na, 4), *out = xcalloc(no, 4), *dqkv = xcalloc(nq, 4),
          *dS = xcalloc((size_t)omp_get_max_threads() * m->T * m->T, 4);
    bf16 *hq = xcalloc(nq, 2), *hP = xcalloc(na, 2), *ho = xcalloc(no, 2), *hd = xcalloc(no, 2);
    for (int planar = 0; planar < 2; planar++) {
        int ld = planar ? m->C : 3 * m->C;
        bf16_attention_prepare(&(Bf16Heads){m->B, m->T, m->H, m->H, m->C / m->H, ld, ld}, 1);
    }
    double ts[3][ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        for (int w = 0; w < 3; w++) ts[w][r] = 1e30;
        for (int k = -1; k < REPS; k++) {
            double t[3] = {attention_sgemm_time(m, qkv, att, out, dqkv, dS),
                           attention_bf16_time(m, 0, hq, att, hP, ho, dqkv, hd),
                           attention_bf16_time(m, 1, hq, att, hP, ho, dqkv, hd)};
            for (int w = 0; w < 3 && k >= 0; w++) ts[w][r] = fmin(ts[w][r], t[w]);
        }
    }
    double flops = 6 * 2.0 * m->B * m->H * (double)m->T * m->T * (m->C / m->H), t[3];
    for (int w = 0; w < 3; w++) t[w] = median(ts[w], ROUNDS);
    printf("| attention, 6 products per layer, qkv rows | %d x %d x %d heads | %.1f | %.1f | - | %.2fx | - |\n",
           m->B, m->T, m->H, flops / t[0] / 1e9, flops / t[1] / 1e9, t[0] / t[1]);
    printf("| attention, 6 products per layer, q, k, v planes | %d x %d x %d heads | %.1f | %.1f | - | %.2fx | - |\n",
           m->B, m->T, m->H, flops / t[0] / 1e9, flops / t[2] / 1e9, t[0] / t[2]);
    free(qkv); free(att); free(out); free(dqkv); free(dS); free(hq); free(hP); free(ho); free(hd);
    speedup[0] = t[0] / t[1];
    speedup[1] = t[0] / t[2];
}

static void bench_model(const Model *m) {
    int C = m->C, N = m->B * m->T;
    Linear lin[] = {{"qkv", C, 3 * C, 1}, {"attn proj", C, C, 1}, {"fc", C, 4 * C, 1}, {"fc proj", 4 * C, C, 1},
                    {"lm head", C, m->V, 0}};
    const char *products[] = {"fwd", "dinp", "dweight"};
    enum { NL = sizeof lin / sizeof *lin };
    printf("\n## %s: %d layers, N = %d x %d = %d tokens, C %d, %d heads, vocab %d\n\n", m->name, m->n_layer, m->B,
           m->T, N, C, m->H, m->V);
    printf("| product | N x IC x OC | sgemm GFLOP/s | dnnl bf16 | dnnl f32 | bf16 / sgemm | dnnl f32 / sgemm |\n");
    printf("| --- | --- | --- | --- | --- | --- | --- |\n");
    double time[LIBS] = {0};  // one step's linear-layer matmul time, summed at the median rates
    for (int l = 0; l < NL; l++) {
        for (int p = 0; p < 3; p++) {
            double rates[LIBS][ROUNDS], med[LIBS];
            for (int r = 0; r < ROUNDS; r++)
                for (int lib = 0; lib < LIBS; lib++) rates[lib][r] = rate(lib, p, N, lin[l].IC, lin[l].OC);
            double flops = 2.0 * N * lin[l].IC * lin[l].OC * (lin[l].per_layer ? m->n_layer : 1);
            for (int lib = 0; lib < LIBS; lib++) {
                med[lib] = median(rates[lib], ROUNDS);
                time[lib] += flops / med[lib];
            }
            printf("| %s %s | %d x %d x %d | %.1f | %.1f | %.1f | %.2fx | %.2fx |\n", lin[l].name, products[p], N,
                   lin[l].IC, lin[l].OC, med[0] / 1e9, med[1] / 1e9, med[2] / 1e9, med[1] / med[0], med[2] / med[0]);
        }
    }
    double att[2];
    bench_attention(m, att);
    printf("\nall linear-layer products of one step (weighted by layer count): bf16 %.2fx sgemm, dnnl f32 %.2fx "
           "sgemm (%s %.1f ms, %s %.1f ms, %s %.1f ms); attention products bf16 %.2fx (qkv rows), %.2fx (planes)\n",
           time[0] / time[1], time[0] / time[2], LIB_NAMES[0], 1e3 * time[0], LIB_NAMES[1], 1e3 * time[1],
           LIB_NAMES[2], 1e3 * time[2], att[0], att[1]);
}

int main(void) {
    const char *why = bf16_unsupported();
    if (why) die(1, "%s", why);
    int threads = omp_get_max_threads();
    openblas_set_num_threads(threads);
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    printf("threads %d, sgemm core %s%s; median of %d interleaved rounds of the best of %d\n", threads,
           openblas_get_corename(), coretype ? " (forced by OPENBLAS_CORETYPE)" : "", ROUNDS, REPS);
    double peak[LIBS][ROUNDS];
    for (int r = 0; r < ROUNDS; r++)
        for (int lib = 0; lib < LIBS; lib++) peak[lib][r] = rate(lib, LINEAR_DINP, 1024, 1024, 1024);
    double p0 = median(peak[0], ROUNDS), p1 = median(peak[1], ROUNDS), p2 = median(peak[2], ROUNDS);
    printf("1024^3: sgemm %.1f GFLOP/s, dnnl bf16 %.1f (%.2fx), dnnl f32 %.1f (%.2fx)\n", p0 / 1e9, p1 / 1e9, p1 / p0,
           p2 / 1e9, p2 / p0);
    Model models[] = {{"configs/default.json", 4, 16, 256, 128, 4, 8192},
                      {"6-layer d256 T128 B16 vocab 8192", 6, 16, 128, 256, 4, 8192}};
    for (size_t i = 0; i < sizeof models / sizeof *models; i++) bench_model(&models[i]);
    return 0;
}
