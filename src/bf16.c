#include "bf16.h"
#include "common.h"
#include "kernels.h"
#include <math.h>
#include <omp.h>
#include <immintrin.h>

// --- conversions

static int cpu_has_bf16(void) {
    static int has = -1;
    if (has < 0) {
        __builtin_cpu_init();
        has = __builtin_cpu_supports("avx512bf16") != 0;
    }
    return has;
}

// 32 floats per instruction pair; the tail (n % 32) is left to the scalar rounding, which gives the
// same bits.
__attribute__((target("avx512f,avx512bf16")))
static size_t bf16_from_floats_avx512(bf16 *dst, const float *src, float scale, size_t n) {
    __m512 s = _mm512_set1_ps(scale);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 lo = _mm512_mul_ps(_mm512_loadu_ps(src + i), s), hi = _mm512_mul_ps(_mm512_loadu_ps(src + i + 16), s);
        _mm512_storeu_si512((void *)(dst + i), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
    return i;
}

void bf16_round_row(bf16 *dst, const float *src, float scale, size_t n) {
    size_t i = cpu_has_bf16() ? bf16_from_floats_avx512(dst, src, scale, n) : 0;
    for (; i < n; i++) dst[i] = bf16_round(scale * src[i]);
}

// Chunks of whole 32-float groups, so each thread's part runs vectorized up to the very end.
#define CAST_CHUNK 16384

void bf16_from_floats(bf16 *dst, const float *src, float scale, size_t n) {
    cpu_has_bf16();  // settled before the threads read it
    #pragma omp parallel for schedule(static) if (n > CAST_CHUNK)
    for (size_t c0 = 0; c0 < n; c0 += CAST_CHUNK)
        bf16_round_row(dst + c0, src + c0, scale, n - c0 < CAST_CHUNK ? n - c0 : CAST_CHUNK);
}

// Blocks of channels per thread, each summing its rows in order: the sums do not depend on the
// thread count (the order of scatter_add_rows, so the same bits).
void bf16_from_rows(bf16 *dst, float *col_sums, const float *src, int N, int C) {
    if (!col_sums) {
        bf16_from_floats(dst, src, 1, (size_t)N * C);
        return;
    }
    cpu_has_bf16();  // settled before the threads read it
    int cb = channel_block(C);
    #pragma omp parallel for
    for (int c0 = 0; c0 < C; c0 += cb) {
        int w = C - c0 < cb ? C - c0 : cb;
        float sum[CHANNEL_BLOCK_MAX] = {0};
        for (int n = 0; n < N; n++) {
            const float *row = src + (size_t)n * C + c0;
            for (int c = 0; c < w; c++) sum[c] += row[c];
            bf16_round_row(dst + (size_t)n * C + c0, row, 1, w);
        }
        for (int c = 0; c < w; c++) col_sums[c0 + c] += sum[c];
    }
}

void floats_from_bf16(float *dst, const bf16 *src, size_t n) {
    #pragma omp parallel for schedule(static) if (n > CAST_CHUNK)
    for (size_t i = 0; i < n; i++) dst[i] = bf16_to_float(src[i]);
}

#ifndef NORMGPT_DNNL

const char *bf16_unsupported(void) {
    return "train.precision=bf16 needs oneDNN: this build has none (install libdnnl-dev and rebuild)";
}
__attribute__((noreturn)) static void no_dnnl(void) { die(1, "%s", bf16_unsupported()); }
void bf16_linear_forward(float *out, const float *residual, const bf16 *inp, const bf16 *weight, const float *bias,
                         int N, int IC, int OC) { no_dnnl(); }
void bf16_linear_backward(float *dinp, int accumulate, float *dweight, const bf16 *dout, const bf16 *inp,
                          const bf16 *weight, int N, int IC, int OC) { no_dnnl(); }
void bf16_linear_prepare(int N, int IC, int OC, int has_residual, int has_bias, int has_dinp, int accumulate) {
    no_dnnl();
}
void bf16_attention_scores(float *att, const bf16 *q, const bf16 *k, const Bf16Heads *a) { no_dnnl(); }
void bf16_attention_values(void *out, int out_bf16, const bf16 *P, const bf16 *v, const Bf16Heads *a) { no_dnnl(); }
void bf16_attention_values_backward(float *dP, float *dv, const bf16 *dout, const bf16 *P, const bf16 *v,
                                    const Bf16Heads *a) { no_dnnl(); }
void bf16_attention_scores_backward(float *dq, float *dk, const bf16 *dS, const bf16 *q, const bf16 *k,
                                    const Bf16Heads *a) { no_dnnl(); }
void bf16_attention_prepare(const Bf16Heads *a, int out_bf16) { no_dnnl(); }
int bf16_late_primitives(void) { return 0; }
double bf16_measure_peak(void) { no_dnnl(); }
double onednn_linear_rate(int product, int bf16_inputs, int N, int IC, int OC, int reps) { no_dnnl(); }

#else
#include <oneapi/dnnl/dnnl.h>

const char *bf16_unsupported(void) {
    return cpu_has_bf16() ? NULL
                          : "train.precision=bf16 needs the CPU feature AVX512_BF16, which this CPU lacks (use fp32)";
}

// A matrix operand as oneDNN sees it: batch dims first, then rows, columns; strides in elements.
// Transposes and per-head views are just strides.
typedef struct { int nd; dnnl_dims_t dims, strides; } View;

// Everything that decides a primitive; entries are compared bytewise (built zeroed).
typedef struct {
    View src, wei, dst;
    int f32_inputs;  // src and weights fp32 (oneDNN's fp32 matmul, for comparisons) instead of bf16
    int dst_bf16;
    int sum;         // dst += product (instead of =)
    int bias;        // + bias (last dim of dst), fp32
    int add;         // + an fp32 tensor laid out like dst (the residual)
    float scale;     // product scaled by this before the bias/additions
} MatmulKey;

typedef struct {
    MatmulKey key;
    dnnl_primitive_t prim;
    dnnl_memory_t src, wei, dst, bias, add;
} Matmul;

static dnnl_engine_t engine;
static dnnl_stream_t stream;
static Matmul *cache;
static int n_cached, cap_cached, late_primitives, preparing;

#define DNNL(call) do { dnnl_status_t st_ = (call); \
    if (st_ != dnnl_success) die(1, "oneDNN: %s failed (status %d)", #call, (int)st_); } while (0)

static View view2(int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride) {
    return (View){2, {rows, cols}, {row_stride, col_stride}};
}

static dnnl_memory_desc_t desc(const View *v, dnnl_data_type_t type) {
    dnnl_memory_desc_t md;
    DNNL(dnnl_memory_desc_init_by_strides(&md, v->nd, v->dims, type, v->strides));
    return md;
}

static dnnl_memory_t memory(const dnnl_memory_desc_t *md) {
    dnnl_memory_t mem;
    DNNL(dnnl_memory_create(&mem, md, engine, DNNL_MEMORY_NONE));
    return mem;
}

static Matmul create(const MatmulKey *k) {
    if (!engine) {
        DNNL(dnnl_engine_create(&engine, dnnl_cpu, 0));
        DNNL(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags));
    }
    dnnl_data_type_t in = k->f32_inputs ? dnnl_f32 : dnnl_bf16;
    dnnl_memory_desc_t src = desc(&k->src, in), wei = desc(&k->wei, in),
                       dst = desc(&k->dst, k->dst_bf16 ? dnnl_bf16 : dnnl_f32), bias;
    if (k->bias) {
        View b = {k->dst.nd, {0}, {0}};
        for (int d = 0; d < b.nd; d++) { b.dims[d] = d == b.nd - 1 ? k->dst.dims[d] : 1; b.strides[d] = 1; }
        bias = desc(&b, dnnl_f32);
    }
    dnnl_matmul_desc_t md;
    DNNL(dnnl_matmul_desc_init(&md, &src, &wei, k->bias ? &bias : NULL, &dst));
    dnnl_primitive_attr_t attr;
    dnnl_post_ops_t ops;
    DNNL(dnnl_primitive_attr_create(&attr));
    DNNL(dnnl_post_ops_create(&ops));
    if (k->sum) DNNL(dnnl_post_ops_append_sum(ops, 1.0f));
    dnnl_memory_desc_t add = desc(&k->dst, dnnl_f32);
    if (k->add) DNNL(dnnl_post_ops_append_binary(ops, dnnl_binary_add, &add));
    DNNL(dnnl_primitive_attr_set_post_ops(attr, ops));
    if (k->scale != 1) DNNL(dnnl_primitive_attr_set_output_scales(attr, 1, 0, &k->scale));
    dnnl_primitive_desc_t pd;
    DNNL(dnnl_primitive_desc_create(&pd, &md, attr, engine, NULL));
    Matmul m = {.key = *k};
    DNNL(dnnl_primitive_create(&m.prim, pd));
    m.src = memory(&src);
    m.wei = memory(&wei);
    m.dst = memory(&dst);
    m.bias = k->bias ? memory(&bias) : NULL;
    m.add = k->add ? memory(&add) : NULL;
    DNNL(dnnl_primitive_desc_destroy(pd));
    DNNL(dnnl_post_ops_destroy(ops));
    DNNL(dnnl_primitive_attr_destroy(attr));
    return m;
}

static Matmul *find(const MatmulKey *k) {
    for (int i = 0; i < n_cached; i++)
        if (!memcmp(&cache[i].key, k, sizeof *k)) return &cache[i];
    if (n_cached == cap_cached) {
        cap_cached = cap_cached ? 2 * cap_cached : 32;
        cache = realloc(cache, (size_t)cap_cached * sizeof *cache);
        if (!cache) die(1, "out of memory for the bf16 matmul cache");
    }
    if (!preparing) late_primitives++;
    cache[n_cached] = create(k);
    return &cache[n_cached++];
}

// Run the product of key k on these buffers (bias, add: NULL unless the key has them); with
// `preparing` set, only make sure its primitive exists.
static void matmul(const MatmulKey *k, const void *src, const void *wei, void *dst, const float *bias,
                   const float *add) {
    Matmul *m = find(k);
    if (preparing) return;
    DNNL(dnnl_memory_set_data_handle(m->src, (void *)src));
    DNNL(dnnl_memory_set_data_handle(m->wei, (void *)wei));
    DNNL(dnnl_memory_set_data_handle(m->dst, dst));
    dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, m->src}, {DNNL_ARG_WEIGHTS, m->wei}, {DNNL_ARG_DST, m->dst}};
    int n = 3;
    if (m->bias) {
        DNNL(dnnl_memory_set_data_handle(m->bias, (void *)bias));
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, m->bias};
    }
    if (m->add) {
        DNNL(dnnl_memory_set_data_handle(m->add, (void *)add));
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_ATTR_MULTIPLE_POST_OP(k->sum ? 1 : 0) | DNNL_ARG_SRC_1, m->add};
    }
    DNNL(dnnl_primitive_execute(m->prim, stream, n, args));
    DNNL(dnnl_stream_wait(stream));
}

static MatmulKey new_key(void) {
    MatmulKey k;
    memset(&k, 0, sizeof k);  // padding too: keys are compared bytewise
    k.scale = 1;
    return k;
}

// --- linear layers: weight (OC,IC) row-major is the (IC,OC) operand with strides (1, IC).

static MatmulKey linear_key(int product, int N, int IC, int OC) {
    MatmulKey k = new_key();
    switch (product) {
    case LINEAR_FORWARD:  // out (N,OC) = inp (N,IC) @ weight^T
        k.src = view2(N, IC, IC, 1), k.wei = view2(IC, OC, 1, IC), k.dst = view2(N, OC, OC, 1);
        break;
    case LINEAR_DINP:  // dinp (N,IC) = dout (N,OC) @ weight (OC,IC)
        k.src = view2(N, OC, OC, 1), k.wei = view2(OC, IC, IC, 1), k.dst = view2(N, IC, IC, 1);
        break;
    default:  // dweight (OC,IC) += dout^T (OC,N) @ inp (N,IC)
        k.src = view2(OC, N, 1, OC), k.wei = view2(N, IC, IC, 1), k.dst = view2(OC, IC, IC, 1);
        k.sum = 1;
    }
    return k;
}

void bf16_linear_forward(float *out, const float *residual, const bf16 *inp, const bf16 *weight, const float *bias,
                         int N, int IC, int OC) {
    MatmulKey k = linear_key(LINEAR_FORWARD, N, IC, OC);
    k.bias = bias != NULL;
    k.add = residual != NULL;
    matmul(&k, inp, weight, out, bias, residual);
}

void bf16_linear_backward(float *dinp, int accumulate, float *dweight, const bf16 *dout, const bf16 *inp,
                          const bf16 *weight, int N, int IC, int OC) {
    if (dinp) {
        MatmulKey k = linear_key(LINEAR_DINP, N, IC, OC);
        k.sum = accumulate;
        matmul(&k, dout, weight, dinp, NULL, NULL);
    }
    MatmulKey k = linear_key(LINEAR_DWEIGHT, N, IC, OC);
    matmul(&k, dout, inp, dweight, NULL, NULL);
}

// Prepare = run with `preparing` set: the same calls build the same keys, the buffers unused.
static const void *const NO_DATA = (const void *)1;

void bf16_linear_prepare(int N, int IC, int OC, int has_residual, int has_bias, int has_dinp, int accumulate) {
    preparing = 1;
    bf16_linear_forward((float *)NO_DATA, has_residual ? NO_DATA : NULL, NO_DATA, NO_DATA, has_bias ? NO_DATA : NULL,
                        N, IC, OC);
    bf16_linear_backward(has_dinp ? (float *)NO_DATA : NULL, accumulate, (float *)NO_DATA, NO_DATA, NO_DATA, NO_DATA,
                         N, IC, OC);
    preparing = 0;
}

// --- attention. Query head h = kvh * G + g (G = H / Hkv query heads per kv head), so the batched
// products run over dims (B, Hkv, G): the kv operand has G = 1 and oneDNN broadcasts it. The sums
// over g (dk, dv) are G runs over (B, Hkv), the later ones accumulating. Without groups (G = 1) the
// views are 4-d (B, H, rows, cols): with dense q, k, v that is a layout oneDNN's brgemm takes.

typedef struct { int64_t B, T, H, Hkv, G, hs, ldq, ldkv, C; } Heads;  // C: attention output width

static Heads heads(const Bf16Heads *a) {
    return (Heads){a->B, a->T, a->H, a->Hkv, a->H / a->Hkv, a->hs, a->ldq, a->ldkv, (int64_t)a->H * a->hs};
}

// (B, Hkv, G, rows, cols), rows and columns at strides rs, cs, of a tensor whose sequence b starts
// every `seq` elements and whose head every `head` elements: the query heads (G = the group size),
// or the kv heads (G = 1, broadcast over each group).
static View head_view(const Heads *a, int64_t G, int64_t rows, int64_t cols, int64_t seq, int64_t head, int64_t rs,
                      int64_t cs) {
    if (a->G == 1) return (View){4, {a->B, a->H, rows, cols}, {seq, head, rs, cs}};
    return (View){5, {a->B, a->Hkv, G, rows, cols}, {seq, head * G, head, rs, cs}};
}
static View queries(const Heads *a, int transposed) {  // Q (T,hs) per head, or Q^T
    int64_t rs = transposed ? 1 : a->ldq, cs = transposed ? a->ldq : 1;
    return head_view(a, a->G, transposed ? a->hs : a->T, transposed ? a->T : a->hs, a->T * a->ldq, a->hs, rs, cs);
}
static View kv(const Heads *a, int transposed) {  // K or V (T,hs) per kv head, or transposed
    int64_t rs = transposed ? 1 : a->ldkv, cs = transposed ? a->ldkv : 1;
    return head_view(a, 1, transposed ? a->hs : a->T, transposed ? a->T : a->hs, a->T * a->ldkv, a->hs, rs, cs);
}
static View outputs(const Heads *a) {  // (B,T,H*hs) dense, head h in columns h*hs..
    return head_view(a, a->G, a->T, a->hs, a->T * a->C, a->hs, a->C, 1);
}
static View squares(const Heads *a) {  // (B,H,T,T) dense
    return head_view(a, a->G, a->T, a->T, a->H * a->T * a->T, a->T * a->T, a->T, 1);
}

void bf16_attention_scores(float *att, const bf16 *q, const bf16 *k, const Bf16Heads *heads_) {
    Heads a = heads(heads_);
    MatmulKey key = new_key();
    key.src = queries(&a, 0), key.wei = kv(&a, 1), key.dst = squares(&a);
    key.scale = (float)(1.0 / sqrt((double)a.hs));
    matmul(&key, q, k, att, NULL, NULL);
}

void bf16_attention_values(void *out, int out_bf16, const bf16 *P, const bf16 *v, const Bf16Heads *heads_) {
    Heads a = heads(heads_);
    MatmulKey key = new_key();
    key.src = squares(&a), key.wei = kv(&a, 0), key.dst = outputs(&a);
    key.dst_bf16 = out_bf16;
    matmul(&key, P, v, out, NULL, NULL);
}

// dst (T,hs) per kv head, rows ldkv apart, = sum over g of sq_g^T (T,T) @ x_g (T,hs): sq the
// (B,H,T,T) squares, x_g the g-th query head of each group in a tensor of row stride ldx. The dk and
// dv products.
static void sum_over_group(float *dst, const bf16 *sq, const bf16 *x, int64_t ldx, const Heads *a) {
    for (int64_t g = 0; g < a->G; g++) {
        MatmulKey key = new_key();
        int64_t TT = a->T * a->T;
        key.src = (View){4, {a->B, a->Hkv, a->T, a->T}, {a->H * TT, a->G * TT, 1, a->T}};  // sq_g^T
        key.wei = (View){4, {a->B, a->Hkv, a->T, a->hs}, {a->T * ldx, a->G * a->hs, ldx, 1}};
        key.dst = (View){4, {a->B, a->Hkv, a->T, a->hs}, {a->T * a->ldkv, a->hs, a->ldkv, 1}};
        key.sum = g > 0;
        matmul(&key, sq + g * TT, x + g * a->hs, dst, NULL, NULL);
    }
}

void bf16_attention_values_backward(float *dP, float *dv, const bf16 *dout, const bf16 *P, const bf16 *v,
                                    const Bf16Heads *heads_) {
    Heads a = heads(heads_);
    MatmulKey key = new_key();
    key.src = outputs(&a), key.wei = kv(&a, 1), key.dst = squares(&a);
    matmul(&key, dout, v, dP, NULL, NULL);
    sum_over_group(dv, P, dout, a.C, &a);
}

void bf16_attention_scores_backward(float *dq, float *dk, const bf16 *dS, const bf16 *q, const bf16 *k,
                                    const Bf16Heads *heads_) {
    Heads a = heads(heads_);
    MatmulKey key = new_key();
    key.src = squares(&a), key.wei = kv(&a, 0), key.dst = queries(&a, 0);
    matmul(&key, dS, k, dq, NULL, NULL);
    sum_over_group(dk, dS, q, a.ldq, &a);
}

void bf16_attention_prepare(const Bf16Heads *a, int out_bf16) {
    preparing = 1;
    float *f = (float *)NO_DATA;
    const bf16 *h = NO_DATA;
    bf16_attention_scores(f, h, h, a);
    bf16_attention_values(f, out_bf16, h, h, a);
    bf16_attention_values_backward(f, f, h, h, h, a);
    bf16_attention_scores_backward(f, f, h, h, h, a);
    preparing = 0;
}

int bf16_late_primitives(void) { return late_primitives; }

// --- speed

double onednn_linear_rate(int product, int bf16_inputs, int N, int IC, int OC, int reps) {
    MatmulKey k = linear_key(product, N, IC, OC);
    k.f32_inputs = !bf16_inputs;
    size_t in = bf16_inputs ? sizeof(bf16) : sizeof(float), big = (size_t)(N > OC ? N : OC) * (IC > OC ? IC : OC);
    void *a = xcalloc(big, in), *b = xcalloc(big, in);
    float *c = xcalloc(big, sizeof(float));
    preparing = 1;
    matmul(&k, a, b, c, NULL, NULL);
    preparing = 0;
    matmul(&k, a, b, c, NULL, NULL);  // warm caches and threads
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now_seconds();
        matmul(&k, a, b, c, NULL, NULL);
        double dt = now_seconds() - t0;
        if (dt < best) best = dt;
    }
    free(a); free(b); free(c);
    return 2.0 * N * IC * OC / best;
}

double bf16_measure_peak(void) { return onednn_linear_rate(LINEAR_FORWARD, 1, 1024, 1024, 1024, 4); }

#endif
