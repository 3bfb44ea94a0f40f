// Finite-difference checks of every kernel's backward, in double precision. Each kernel's output
// is reduced to a scalar L = sum(out * R) with a fixed random R, so dL/dout = R.
#include "kernels.h"
#include "norms.h"
#include "testing.h"
#include <math.h>
#include <string.h>

enum { B = 2, T = 5, C = 8, H = 2, V = 7, N = B * T };

static double dot(const real *a, const real *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

// The harness itself must be able to fail: a wrong gradient has to be caught.
static double square_sum(void *ctx) { real *x = ctx; return dot(x, x, 4); }
static void test_gradcheck_catches_wrong_gradient(void) {
    real x[4] = {0.3, -1.2, 2.0, 0.5}, right[4], wrong[4];
    for (int i = 0; i < 4; i++) { right[i] = 2 * x[i]; wrong[i] = 2 * x[i]; }
    wrong[2] *= 1.01;
    fprintf(stderr, "    (a reported mismatch below is expected)\n");
    CHECK(gradcheck("right", x, 4, right, square_sum, x) == 0, "correct gradient rejected");
    CHECK(gradcheck("wrong", x, 4, wrong, square_sum, x) == 1, "1%% error in one entry not caught");
}

// --- encoder
typedef struct { real wte[V * C], wpe[T * C], out[N * C], R[N * C]; int tokens[N]; } EncoderCase;
static double encoder_loss(void *p) {
    EncoderCase *k = p;
    encoder_forward(k->out, k->tokens, k->wte, k->wpe, B, T, C);
    return dot(k->out, k->R, N * C);
}
static void test_encoder_backward(void) {
    static EncoderCase k;
    Rng r = rng_stream(1, 100);
    fill_normal(k.wte, V * C, 1, &r);
    fill_normal(k.wpe, T * C, 1, &r);
    fill_normal(k.R, N * C, 1, &r);
    for (int i = 0; i < N; i++) k.tokens[i] = (int)rng_below(&r, 3);  // repeats exercise accumulation
    static real dwte[V * C], dwpe[T * C];
    memset(dwte, 0, sizeof dwte);
    memset(dwpe, 0, sizeof dwpe);
    encoder_backward(dwte, dwpe, k.R, k.tokens, B, T, C);
    CHECK(!gradcheck("dwte", k.wte, V * C, dwte, encoder_loss, &k), "encoder dwte");
    CHECK(!gradcheck("dwpe", k.wpe, T * C, dwpe, encoder_loss, &k), "encoder dwpe");
}

// --- layernorm
typedef struct { real x[N * C], w[C], b[C], out[N * C], stats[N * NORM_STATS_PER_ROW], R[N * C]; } NormCase;
static double layernorm_loss(void *p) {
    NormCase *k = p;
    layernorm_forward(k->out, k->stats, k->x, k->w, k->b, 1e-5, N, C);
    return dot(k->out, k->R, N * C);
}
static void test_layernorm_backward(void) {
    static NormCase k;
    Rng r = rng_stream(1, 101);
    fill_normal(k.x, N * C, 2, &r);
    for (int i = 0; i < N * C; i++) k.x[i] += 0.5;  // a nonzero mean must be removed
    fill_normal(k.w, C, 1, &r);
    fill_normal(k.b, C, 1, &r);
    fill_normal(k.R, N * C, 1, &r);
    static real dx[N * C], dw[C], db[C];
    memset(dx, 0, sizeof dx); memset(dw, 0, sizeof dw); memset(db, 0, sizeof db);
    layernorm_loss(&k);
    layernorm_backward(dx, dw, db, k.R, k.x, k.stats, k.w, N, C);
    CHECK(!gradcheck("dx", k.x, N * C, dx, layernorm_loss, &k), "layernorm dx");
    CHECK(!gradcheck("dweight", k.w, C, dw, layernorm_loss, &k), "layernorm dweight");
    CHECK(!gradcheck("dbias", k.b, C, db, layernorm_loss, &k), "layernorm dbias");
}

// --- matmul with bias and residual
enum { IC = 6, OC = 9 };
typedef struct { real x[N * IC], w[OC * IC], b[OC], res[N * OC], out[N * OC], R[N * OC]; } MatmulCase;
static double matmul_loss(void *p) {
    MatmulCase *k = p;
    matmul_forward(k->out, k->res, k->x, k->w, k->b, N, IC, OC);
    return dot(k->out, k->R, N * OC);
}
static void test_matmul_backward(void) {
    static MatmulCase k;
    Rng r = rng_stream(1, 102);
    fill_normal(k.x, N * IC, 1, &r);
    fill_normal(k.w, OC * IC, 1, &r);
    fill_normal(k.b, OC, 1, &r);
    fill_normal(k.res, N * OC, 1, &r);
    fill_normal(k.R, N * OC, 1, &r);
    static real dx[N * IC], dw[OC * IC], db[OC];
    memset(dw, 0, sizeof dw); memset(db, 0, sizeof db);
    matmul_backward(dx, dw, db, k.R, k.x, k.w, N, IC, OC);
    CHECK(!gradcheck("dx", k.x, N * IC, dx, matmul_loss, &k), "matmul dx");
    CHECK(!gradcheck("dweight", k.w, OC * IC, dw, matmul_loss, &k), "matmul dweight");
    CHECK(!gradcheck("dbias", k.b, OC, db, matmul_loss, &k), "matmul dbias");
    CHECK(!gradcheck("dresidual", k.res, N * OC, k.R, matmul_loss, &k), "matmul residual passes dout through");
}

// --- causal attention
typedef struct { real qkv[N * 3 * C], out[N * C], att[B * H * T * T], R[N * C]; } AttentionCase;
static double attention_loss(void *p) {
    AttentionCase *k = p;
    attention_forward(k->out, k->att, k->qkv, B, T, C, H);
    return dot(k->out, k->R, N * C);
}
static void test_attention_backward(void) {
    static AttentionCase k;
    Rng r = rng_stream(1, 103);
    fill_normal(k.qkv, N * 3 * C, 1, &r);
    fill_normal(k.R, N * C, 1, &r);
    static real dqkv[N * 3 * C], scratch[64 * T * T];
    attention_loss(&k);
    attention_backward(dqkv, scratch, k.R, k.qkv, k.att, B, T, C, H);
    CHECK(!gradcheck("dqkv", k.qkv, N * 3 * C, dqkv, attention_loss, &k), "attention dqkv");
    // causality: output at t = 0 depends only on token 0 (its value vector)
    attention_loss(&k);
    real before = k.out[0];
    k.qkv[(T - 1) * 3 * C + 2 * C] += 1;  // a later token's value
    attention_loss(&k);
    CHECK(k.out[0] == before, "position 0 sees the future");
}

// --- GELU
typedef struct { real x[N * C], out[N * C], R[N * C]; } GeluCase;
static double gelu_loss(void *p) {
    GeluCase *k = p;
    gelu_forward(k->out, k->x, N * C);
    return dot(k->out, k->R, N * C);
}
static void test_gelu_backward(void) {
    static GeluCase k;
    Rng r = rng_stream(1, 104);
    fill_normal(k.x, N * C, 2, &r);
    fill_normal(k.R, N * C, 1, &r);
    static real dx[N * C];
    gelu_backward(dx, k.x, k.R, N * C);
    CHECK(!gradcheck("dx", k.x, N * C, dx, gelu_loss, &k), "gelu dx");
    real zero = 0, one = 1, g0, g1;
    gelu_forward(&g0, &zero, 1);
    gelu_forward(&g1, &one, 1);
    CHECK(g0 == 0 && fabs(g1 - 0.8411919906082768) < 1e-12, "gelu(1) = %.16g", (double)g1);
}

// --- softmax + cross-entropy
typedef struct { real logits[N * V], probs[N * V], losses[N]; int targets[N]; } CrossEntropyCase;
#define CE_SCALE 0.7
static double crossentropy_loss(void *p) {
    CrossEntropyCase *k = p;
    memcpy(k->probs, k->logits, sizeof k->probs);
    crossentropy_forward(k->losses, k->probs, k->targets, N, V);
    double s = 0;
    for (int i = 0; i < N; i++) s += k->losses[i];
    return CE_SCALE * s;
}
static void test_crossentropy_backward(void) {
    static CrossEntropyCase k;
    Rng r = rng_stream(1, 105);
    fill_normal(k.logits, N * V, 3, &r);
    for (int i = 0; i < N; i++) k.targets[i] = (int)rng_below(&r, V);
    crossentropy_loss(&k);
    double z = 0;
    for (int i = 0; i < V; i++) z += exp(k.logits[i]);
    double direct = -log(exp(k.logits[k.targets[0]]) / z);
    CHECK(fabs(k.losses[0] - direct) < 1e-12, "loss %g vs %g", (double)k.losses[0], direct);
    crossentropy_backward(k.probs, k.targets, CE_SCALE, N, V);
    static real dlogits[N * V];
    memcpy(dlogits, k.probs, sizeof dlogits);
    CHECK(!gradcheck("dlogits", k.logits, N * V, dlogits, crossentropy_loss, &k), "cross-entropy dlogits");
}

const TestCase kernel_tests[] = {
    {"gradcheck catches a wrong gradient", test_gradcheck_catches_wrong_gradient},
    {"encoder backward (finite differences)", test_encoder_backward},
    {"layernorm backward (finite differences)", test_layernorm_backward},
    {"matmul backward (finite differences)", test_matmul_backward},
    {"attention backward (finite differences)", test_attention_backward},
    {"gelu backward (finite differences)", test_gelu_backward},
    {"cross-entropy backward (finite differences)", test_crossentropy_backward},
    {NULL, NULL},
};
