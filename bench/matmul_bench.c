// The model's matmuls three ways, in one run: OpenBLAS sgemm (the fp32 trainer's), oneDNN bf16
// (bf16 inputs, fp32 accumulation and output) and oneDNN fp32. `make bench-matmul` runs it with
// OPENBLAS_CORETYPE unset, passive OpenMP waits and 2 threads. Each figure is the median over
// ROUNDS rounds of the best of REPS runs, every round measuring everything, so a busy neighbour on
// a shared machine distorts all three alike; read the ratios, not the GFLOP/s. With the argument
// `attention` it measures only the attention products.
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

// q, k, v interleaved in qkv rows (kernels.h's layout) or as three dense planes; all sequences in
// each product, or one sequence at a time (its (H,T,T) squares stay in cache between products, as
// they would with the softmax between them).
enum { ROWS, PLANES, PLANES_PER_SEQUENCE, WAYS };
static double attention_bf16_time(const Model *m, int way, const bf16 *qkv, float *att, bf16 *P, bf16 *out,
                                  float *dqkv, const bf16 *dout) {
    int C = m->C, W = 3 * C, per_seq = way == PLANES_PER_SEQUENCE, B = per_seq ? 1 : m->B, TC = m->T * C;
    size_t kv = way == ROWS ? (size_t)C : (size_t)m->B * TC, sq = (size_t)m->H * m->T * m->T;
    Bf16Heads a = {B, m->T, m->H, m->H, C / m->H, way == ROWS ? W : C, way == ROWS ? W : C};
    double t0 = now_seconds();
    for (int b = 0; b < m->B / B; b++) {
        size_t o = (size_t)b * TC * (way == ROWS ? 3 : 1);  // sequence b of each plane
        bf16_attention_scores(att + b * sq, qkv + o, qkv + kv + o, &a);
        bf16_attention_values(out + b * TC, 1, P + b * sq, qkv + 2 * kv + o, &a);
        bf16_attention_values_backward(att + b * sq, dqkv + 2 * kv + o, dout + b * TC, P + b * sq, qkv + 2 * kv + o, &a);
        bf16_attention_scores_backward(dqkv + o, dqkv + kv + o, P + b * sq, qkv + o, qkv + kv + o, &a);
    }
    return now_seconds() - t0;
}

typedef struct {
    float *qkv, *att, *out, *dqkv, *dS;
    bf16 *hq, *hP, *ho, *hd;
} AttentionBuffers;

static AttentionBuffers attention_buffers(const Model *m) {
    size_t nq = (size_t)m->B * m->T * 3 * m->C, na = (size_t)m->B * m->H * m->T * m->T, no = (size_t)m->B * m->T * m->C;
    bf16_attention_prepare(&(Bf16Heads){m->B, m->T, m->H, m->H, m->C / m->H, 3 * m->C, 3 * m->C}, 1);
    bf16_attention_prepare(&(Bf16Heads){m->B, m->T, m->H, m->H, m->C / m->H, m->C, m->C}, 1);
    bf16_attention_prepare(&(Bf16Heads){1, m->T, m->H, m->H, m->C / m->H, m->C, m->C}, 1);
    return (AttentionBuffers){xcalloc(nq, 4), xcalloc(na, 4), xcalloc(no, 4), xcalloc(nq, 4),
                              xcalloc((size_t)omp_get_max_threads() * m->T * m->T, 4),
                              xcalloc(nq, 2), xcalloc(na, 2), xcalloc(no, 2), xcalloc(no, 2)};
}

// One round: the best of REPS of sgemm (t[0]) and of each bf16 way (t[1 + way]), interleaved.
static void attention_round(const Model *m, const AttentionBuffers *b, double t[1 + WAYS]) {
    for (int w = 0; w <= WAYS; w++) t[w] = 1e30;
    for (int k = -1; k < REPS; k++) {
        double dt[1 + WAYS];
        dt[0] = attention_sgemm_time(m, b->qkv, b->att, b->out, b->dqkv, b->dS);
        for (int w = 0; w < WAYS; w++) dt[1 + w] = attention_bf16_time(m, w, b->hq, b->att, b->hP, b->ho, b->dqkv, b->hd);
        for (int w = 0; w <= WAYS && k >= 0; w++) t[w] = fmin(t[w], dt[w]);
    }
}

enum { NL = 5 };  // linear layers: qkv, attn proj, fc, fc proj, lm head
static int only_attention;  // `matmul_bench attention`: skip the linear layers

// Every figure is the median over ROUNDS rounds; each round measures every product every way, so
// the rounds of one product spread over the whole run.
static void bench_model(const Model *m) {
    int C = m->C, N = m->B * m->T;
    Linear lin[NL] = {{"qkv", C, 3 * C, 1}, {"attn proj", C, C, 1}, {"fc", C, 4 * C, 1}, {"fc proj", 4 * C, C, 1},
                      {"lm head", C, m->V, 0}};
    const char *products[] = {"fwd", "dinp", "dweight"};
    static double rates[NL][3][LIBS][ROUNDS], att[1 + WAYS][ROUNDS];
    AttentionBuffers ab = attention_buffers(m);
    for (int r = 0; r < ROUNDS; r++) {
        for (int l = 0; l < NL && !only_attention; l++)
            for (int p = 0; p < 3; p++)
                for (int lib = 0; lib < LIBS; lib++) rates[l][p][lib][r] = rate(lib, p, N, lin[l].IC, lin[l].OC);
        double t[1 + WAYS];
        attention_round(m, &ab, t);
        for (int w = 0; w <= WAYS; w++) att[w][r] = t[w];
    }
    printf("\n## %s: %d layers, N = %d x %d = %d tokens, C %d, %d heads, vocab %d\n\n", m->name, m->n_layer, m->B,
           m->T, N, C, m->H, m->V);
    printf("| product | N x IC x OC | sgemm GFLOP/s | dnnl bf16 | dnnl f32 | bf16 / sgemm | dnnl f32 / sgemm |\n");
    printf("| --- | --- | --- | --- | --- | --- | --- |\n");
    double time[LIBS] = {0};  // one step's linear-layer matmul time, summed at the median rates
    for (int l = 0; l < NL && !only_attention; l++)
        for (int p = 0; p < 3; p++) {
            double med[LIBS], flops = 2.0 * N * lin[l].IC * lin[l].OC * (lin[l].per_layer ? m->n_layer : 1);
            for (int lib = 0; lib < LIBS; lib++) {
                med[lib] = median(rates[l][p][lib], ROUNDS);
                time[lib] += flops / med[lib];
            }
            printf("| %s %s | %d x %d x %d | %.1f | %.1f | %.1f | %.2fx | %.2fx |\n", lin[l].name, products[p], N,
                   lin[l].IC, lin[l].OC, med[0] / 1e9, med[1] / 1e9, med[2] / 1e9, med[1] / med[0], med[2] / med[0]);
        }
    double flops = 6 * 2.0 * m->B * m->H * (double)m->T * m->T * (m->C / m->H), t[1 + WAYS];
    for (int w = 0; w <= WAYS; w++) t[w] = median(att[w], ROUNDS);
    const char *layouts[WAYS] = {"qkv rows", "q, k, v planes", "planes, a sequence at a time"};
    for (int w = 1; w <= WAYS; w++)
        printf("| attention, 6 products per layer, %s | %d x %d x %d heads | %.1f | %.1f | - | %.2fx | - |\n",
               layouts[w - 1], m->B, m->T, m->H, flops / t[0] / 1e9, flops / t[w] / 1e9, t[0] / t[w]);
    if (only_attention)
        printf("\nattention products: bf16 %.2fx sgemm (qkv rows), %.2fx (planes), %.2fx (a sequence at a time)\n",
               t[0] / t[1], t[0] / t[2], t[0] / t[3]);
    else
        printf("\nall linear-layer products of one step (weighted by layer count): bf16 %.2fx sgemm, dnnl f32 %.2fx "
               "sgemm (%s %.1f ms, %s %.1f ms, %s %.1f ms); attention products bf16 %.2fx (qkv rows), %.2fx "
               "(planes), %.2fx (a sequence at a time)\n",
               time[0] / time[1], time[0] / time[2], LIB_NAMES[0], 1e3 * time[0], LIB_NAMES[1], 1e3 * time[1],
               LIB_NAMES[2], 1e3 * time[2], t[0] / t[1], t[0] / t[2], t[0] / t[3]);
    free(ab.qkv); free(ab.att); free(ab.out); free(ab.dqkv); free(ab.dS); free(ab.hq); free(ab.hP); free(ab.ho);
    free(ab.hd);
}

int main(int argc, char **argv) {
    only_attention = argc > 1 && !strcmp(argv[1], "attention");
    const char *why = bf16_unsupported();
    if (why) die(1, "%s", why);
    int threads = omp_get_max_threads();
    openblas_set_num_threads(threads);
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    printf("threads %d, sgemm core %s%s; median of %d interleaved rounds of the best of %d\n", threads,
           openblas_get_corename(), coretype ? " (forced by OPENBLAS_CORETYPE)" : "", ROUNDS, REPS);
    double peak[LIBS][ROUNDS];
    for (int r = 0; r < ROUNDS && !only_attention; r++)
        for (int lib = 0; lib < LIBS; lib++) peak[lib][r] = rate(lib, LINEAR_DINP, 1024, 1024, 1024);
    if (!only_attention) {
        double p0 = median(peak[0], ROUNDS), p1 = median(peak[1], ROUNDS), p2 = median(peak[2], ROUNDS);
        printf("1024^3: sgemm %.1f GFLOP/s, dnnl bf16 %.1f (%.2fx), dnnl f32 %.1f (%.2fx)\n", p0 / 1e9, p1 / 1e9,
               p1 / p0, p2 / 1e9, p2 / p0);
    }
    Model models[] = {{"configs/default.json", 4, 16, 256, 128, 4, 8192},
                      {"6-layer d256 T128 B16 vocab 8192", 6, 16, 128, 256, 4, 8192}};
    for (size_t i = 0; i < sizeof models / sizeof *models; i++) bench_model(&models[i]);
    return 0;
}
