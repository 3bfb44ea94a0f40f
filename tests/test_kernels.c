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

// --- causal attention, grouped-query. One case type sized for the largest shape used.
enum { AH = 4, AHS = 4, AW = 3 * AH * AHS, AC = AH * AHS };
typedef struct {
    int H, Hkv, hs;
    real qkv[N * AW], out[N * AC], att[B * AH * T * T], R[N * AC];
} AttentionCase;
static int attention_width(const AttentionCase *k) { return (k->H + 2 * k->Hkv) * k->hs; }
static double attention_loss(void *p) {
    AttentionCase *k = p;
    attention_forward(k->out, k->att, k->qkv, B, T, k->H, k->Hkv, k->hs);
    return dot(k->out, k->R, (size_t)N * k->H * k->hs);
}
static void attention_case(AttentionCase *k, int H_, int Hkv, int hs, uint64_t seed) {
    Rng r = rng_stream(1, seed);
    k->H = H_, k->Hkv = Hkv, k->hs = hs;
    fill_normal(k->qkv, (size_t)N * attention_width(k), 1, &r);
    fill_normal(k->R, (size_t)N * H_ * hs, 1, &r);
}
static void attention_grad(real *dqkv, AttentionCase *k) {
    static real scratch[64 * T * T];
    attention_loss(k);
    attention_backward(dqkv, scratch, k->R, k->qkv, k->att, B, T, k->H, k->Hkv, k->hs);
}
static void check_attention_backward(AttentionCase *k) {
    static real dqkv[N * AW];
    attention_grad(dqkv, k);
    CHECK(!gradcheck("dqkv", k->qkv, (size_t)N * attention_width(k), dqkv, attention_loss, k),
          "attention dqkv (H %d, Hkv %d)", k->H, k->Hkv);
    // causality: output at t = 0 depends only on token 0 (its value vector)
    attention_loss(k);
    real before = k->out[0];
    k->qkv[(T - 1) * attention_width(k) + (k->H + k->Hkv) * k->hs] += 1;  // a later token's value
    attention_loss(k);
    CHECK(k->out[0] == before, "position 0 sees the future");
}
static void test_attention_backward(void) {
    static AttentionCase k;
    attention_case(&k, H, H, C / H, 103);
    check_attention_backward(&k);
}
static void test_gqa_attention_backward(void) {
    static AttentionCase k;
    attention_case(&k, 4, 2, 4, 106);
    check_attention_backward(&k);
}

// Plain multi-head attention written directly from the definition, qkv (B_,T_,3C) = [q | k | v].
static void reference_attention(real *out, const real *qkv, int B_, int T_, int H_, int hs) {
    int C_ = H_ * hs;
    for (int b = 0; b < B_; b++)
        for (int h = 0; h < H_; h++)
            for (int t = 0; t < T_; t++) {
                const real *q = qkv + ((size_t)b * T_ + t) * 3 * C_ + h * hs;
                double w[T_], sum = 0;
                for (int s = 0; s <= t; s++) {
                    w[s] = exp(dot(q, qkv + ((size_t)b * T_ + s) * 3 * C_ + C_ + h * hs, hs) / sqrt(hs));
                    sum += w[s];
                }
                for (int i = 0; i < hs; i++) {
                    double o = 0;
                    for (int s = 0; s <= t; s++) o += w[s] / sum * qkv[((size_t)b * T_ + s) * 3 * C_ + 2 * C_ + h * hs + i];
                    out[((size_t)b * T_ + t) * C_ + h * hs + i] = (real)o;
                }
            }
}

// --- attention over several blocks of rows (the last one partial): T = 2 * ATT_ROWS + 5.
enum { LT = 2 * ATT_ROWS + 5, LH = 2, LHS = 3, LW = 3 * LH * LHS };
typedef struct { real qkv[LT * LW], out[LT * LH * LHS], att[LH * LT * LT], R[LT * LH * LHS]; } LongAttention;
static double long_attention_loss(void *p) {
    LongAttention *k = p;
    attention_forward(k->out, k->att, k->qkv, 1, LT, LH, LH, LHS);
    return dot(k->out, k->R, LT * LH * LHS);
}
static void test_attention_row_blocks(void) {
    static LongAttention k;
    static real expect[LT * LH * LHS], dqkv[LT * LW], scratch[64 * LT * LT];
    Rng r = rng_stream(1, 108);
    fill_normal(k.qkv, LT * LW, 1, &r);
    fill_normal(k.R, LT * LH * LHS, 1, &r);
    long_attention_loss(&k);
    reference_attention(expect, k.qkv, 1, LT, LH, LHS);
    double worst = 0;
    for (int i = 0; i < LT * LH * LHS; i++) worst = fmax(worst, fabs(k.out[i] - expect[i]));
    CHECK(worst < 1e-12, "attention over %d rows differs from the definition by %g", LT, worst);
    attention_backward(dqkv, scratch, k.R, k.qkv, k.att, 1, LT, LH, LH, LHS);
    CHECK(!gradcheck("dqkv", k.qkv, LT * LW, dqkv, long_attention_loss, &k), "attention dqkv over %d rows", LT);
}

static void test_gqa_without_sharing_is_plain_attention(void) {
    static AttentionCase k;
    static real expect[N * AC];
    attention_case(&k, 4, 4, 4, 107);
    attention_loss(&k);
    reference_attention(expect, k.qkv, B, T, 4, 4);
    double worst = 0;
    for (int i = 0; i < N * AC; i++) worst = fmax(worst, fabs(k.out[i] - expect[i]));
    CHECK(worst < 1e-12, "Hkv == H differs from plain attention by %g", worst);
}

// Hkv = 2 of H = 4 must equal Hkv = 4 with each kv head written out twice; in the backward, the
// shared head's dk and dv must be the sums over the copies it stands for.
static void test_gqa_equals_duplicated_heads(void) {
    enum { GH = 4, GKV = 2, GHS = 4, GROUP = GH / GKV };
    static AttentionCase shared, wide;
    static real dshared[N * AW], dwide[N * AW];
    attention_case(&shared, GH, GKV, GHS, 108);
    wide.H = wide.Hkv = GH, wide.hs = GHS;
    memcpy(wide.R, shared.R, sizeof wide.R);
    int sw = attention_width(&shared), ww = attention_width(&wide);
    for (int n = 0; n < N; n++) {
        const real *src = shared.qkv + (size_t)n * sw;
        real *dst = wide.qkv + (size_t)n * ww;
        memcpy(dst, src, GH * GHS * sizeof(real));  // q
        for (int h = 0; h < GH; h++)
            for (int part = 1; part <= 2; part++)  // k, v
                memcpy(dst + ((part == 1 ? GH : 2 * GH) + h) * GHS,
                       src + (GH + (part - 1) * GKV + h / GROUP) * GHS, GHS * sizeof(real));
    }
    attention_grad(dshared, &shared);
    attention_grad(dwide, &wide);
    double worst = 0;
    for (int i = 0; i < N * GH * GHS; i++) worst = fmax(worst, fabs(shared.out[i] - wide.out[i]));
    CHECK(worst < 1e-12, "outputs differ by %g", worst);
    worst = 0;
    for (int n = 0; n < N; n++) {
        const real *ds = dshared + (size_t)n * sw, *dw = dwide + (size_t)n * ww;
        for (int i = 0; i < GH * GHS; i++) worst = fmax(worst, fabs(ds[i] - dw[i]));  // dq
        for (int part = 1; part <= 2; part++)
            for (int kvh = 0; kvh < GKV; kvh++)
                for (int i = 0; i < GHS; i++) {
                    double sum = 0;
                    for (int j = 0; j < GROUP; j++) sum += dw[((part == 1 ? GH : 2 * GH) + kvh * GROUP + j) * GHS + i];
                    worst = fmax(worst, fabs(ds[(GH + (part - 1) * GKV + kvh) * GHS + i] - sum));
                }
    }
    CHECK(worst < 1e-12, "gradients differ by %g", worst);
}

// --- RoPE
enum { RH = 2, RKV = 1, RHS = 8, RW = (RH + 2 * RKV) * RHS, RMAXT = 16 };
#define ROPE_THETA 10000.0
typedef struct { real x[N * RW], qkv[N * RW], R[N * RW], cos_t[RMAXT * RHS / 2], sin_t[RMAXT * RHS / 2]; } RopeCase;
static double rope_loss(void *p) {
    RopeCase *k = p;
    memcpy(k->qkv, k->x, sizeof k->qkv);
    rope_forward(k->qkv, k->cos_t, k->sin_t, B, T, RH, RKV, RHS);
    return dot(k->qkv, k->R, N * RW);
}
static void test_rope_backward(void) {
    static RopeCase k;
    Rng r = rng_stream(1, 109);
    rope_tables(k.cos_t, k.sin_t, RMAXT, RHS, ROPE_THETA);
    fill_normal(k.x, N * RW, 1, &r);
    fill_normal(k.R, N * RW, 1, &r);
    static real dx[N * RW];
    memcpy(dx, k.R, sizeof dx);
    rope_backward(dx, k.cos_t, k.sin_t, B, T, RH, RKV, RHS);
    CHECK(!gradcheck("dqkv", k.x, N * RW, dx, rope_loss, &k), "rope dqkv");
    rope_loss(&k);
    for (int n = 0; n < N; n++)
        CHECK(!memcmp(k.qkv + n * RW + (RH + RKV) * RHS, k.x + n * RW + (RH + RKV) * RHS, RKV * RHS * sizeof(real)),
              "v of token %d changed", n);
    // The convention: pair (0, hs/2) has frequency 1, so a unit q at position t reads (cos t, sin t);
    // pair 1 has frequency theta^(-2/hs).
    memset(k.x, 0, sizeof k.x);
    k.x[3 * RW] = 1;
    rope_loss(&k);
    CHECK(fabs(k.qkv[3 * RW] - cos(3)) < 1e-15 && fabs(k.qkv[3 * RW + RHS / 2] - sin(3)) < 1e-15,
          "unit q at t=3 -> (%g, %g)", (double)k.qkv[3 * RW], (double)k.qkv[3 * RW + RHS / 2]);
    CHECK(fabs(k.cos_t[3 * RHS / 2 + 1] - cos(3 * pow(ROPE_THETA, -2.0 / RHS))) < 1e-15, "rope table frequency");
}

// The point of RoPE: after rotation q_t . k_u depends only on t - u. One batch row carrying the
// same q and k at every position makes every (t, u) pair comparable.
static void test_rope_relative_positions(void) {
    enum { PT = RMAXT };
    static real qkv[PT * RW], cos_t[RMAXT * RHS / 2], sin_t[RMAXT * RHS / 2];
    real q[RHS], kv[RHS];
    Rng r = rng_stream(1, 110);
    fill_normal(q, RHS, 1, &r);
    fill_normal(kv, RHS, 1, &r);
    for (int t = 0; t < PT; t++) {
        memcpy(qkv + t * RW, q, sizeof q);  // query head 0
        memcpy(qkv + t * RW + RH * RHS, kv, sizeof kv);  // kv head 0
    }
    rope_tables(cos_t, sin_t, RMAXT, RHS, ROPE_THETA);
    rope_forward(qkv, cos_t, sin_t, 1, PT, RH, RKV, RHS);
    double worst = 0;
    for (int t = 0; t < PT; t++)
        for (int u = 0; u < PT; u++)
            for (int s = 1; t + s < PT && u + s < PT; s++) {
                double a = dot(qkv + t * RW, qkv + u * RW + RH * RHS, RHS);
                double b = dot(qkv + (t + s) * RW, qkv + (u + s) * RW + RH * RHS, RHS);
                worst = fmax(worst, fabs(a - b));
            }
    CHECK(worst < 1e-12, "q.k depends on absolute position: off by %g", worst);
    double d0 = dot(qkv, qkv + RH * RHS, RHS), d1 = dot(qkv + RW, qkv + RH * RHS, RHS);
    CHECK(fabs(d0 - d1) > 1e-3, "rotation had no effect (%g vs %g)", d0, d1);
}

// --- SwiGLU
enum { SF = 6 };
typedef struct { real x[N * 2 * SF], out[N * SF], R[N * SF]; } SwigluCase;
static double swiglu_loss(void *p) {
    SwigluCase *k = p;
    swiglu_forward(k->out, k->x, N, SF);
    return dot(k->out, k->R, N * SF);
}
static void test_swiglu_backward(void) {
    static SwigluCase k;
    Rng r = rng_stream(1, 111);
    fill_normal(k.x, N * 2 * SF, 2, &r);
    fill_normal(k.R, N * SF, 1, &r);
    static real dx[N * 2 * SF];
    swiglu_backward(dx, k.R, k.x, N, SF);
    CHECK(!gradcheck("dinp", k.x, N * 2 * SF, dx, swiglu_loss, &k), "swiglu dinp");
    real row[2] = {1, 2}, y;  // gate 1, up 2: 2 * 1 / (1 + e^-1)
    swiglu_forward(&y, row, 1, 1);
    CHECK(fabs(y - 1.4621171572600098) < 1e-12, "swiglu(1, 2) = %.16g", (double)y);
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

// --- LM head + softmax + cross-entropy: L = CE_SCALE * sum of token losses
typedef struct { real x[N * C], w[V * C], b[V], probs[N * V], losses[N]; int targets[N]; } ClassifierCase;
#define CE_SCALE 0.7
static double classifier_loss(void *p) {
    ClassifierCase *k = p;
    matmul_forward(k->probs, NULL, k->x, k->w, k->b, N, C, V);
    crossentropy_forward(k->losses, k->probs, k->targets, N, V);
    double s = 0;
    for (int i = 0; i < N; i++) s += k->losses[i];
    return CE_SCALE * s;
}
static void test_classifier_backward(void) {
    static ClassifierCase k;
    Rng r = rng_stream(1, 105);
    fill_normal(k.x, N * C, 1, &r);
    fill_normal(k.w, V * C, 1, &r);
    fill_normal(k.b, V, 1, &r);
    for (int i = 0; i < N; i++) k.targets[i] = (int)rng_below(&r, 3);  // repeats exercise the scatter
    classifier_loss(&k);
    double z = 0, target_logit = k.b[k.targets[0]];
    for (int c = 0; c < C; c++) target_logit += k.x[c] * k.w[(size_t)k.targets[0] * C + c];
    for (int i = 0; i < V; i++) {
        double logit = k.b[i];
        for (int c = 0; c < C; c++) logit += k.x[c] * k.w[(size_t)i * C + c];
        z += exp(logit);
    }
    CHECK(fabs(k.losses[0] - (log(z) - target_logit)) < 1e-12, "loss %g vs %g", (double)k.losses[0],
          log(z) - target_logit);
    static real dx[N * C], dw[V * C], db[V];
    memset(dw, 0, sizeof dw); memset(db, 0, sizeof db);
    classifier_backward(dx, dw, db, k.probs, k.x, k.w, k.targets, CE_SCALE, N, C, V);
    CHECK(!gradcheck("dx", k.x, N * C, dx, classifier_loss, &k), "classifier dx");
    CHECK(!gradcheck("dweight", k.w, V * C, dw, classifier_loss, &k), "classifier dweight");
    CHECK(!gradcheck("dbias", k.b, V, db, classifier_loss, &k), "classifier dbias");
}

// --- the fp32 build's exp and tanh (src/fastmath.h) against libm, over all of float's range
static void test_fast_exp_tanh(void) {
    double worst_exp = 0, worst_tanh = 0;
    for (double x = -87; x <= 88; x += 1e-3) {
        float xf = (float)x;
        double e = exp((double)xf), t = tanh((double)xf);
        worst_exp = fmax(worst_exp, fabs(fast_expf(xf) - e) / e);
        if (xf != 0) worst_tanh = fmax(worst_tanh, fabs(fast_tanhf(xf) - t) / fabs(t));
    }
    for (float x = 1e-30f; x < 1; x *= 1.01f)  // small arguments keep their relative precision
        worst_tanh = fmax(worst_tanh, fabs(fast_tanhf(x) - tanh((double)x)) / tanh((double)x));
    CHECK(worst_exp < 3e-7, "fast_expf relative error %.3g", worst_exp);
    CHECK(worst_tanh < 3e-7, "fast_tanhf relative error %.3g", worst_tanh);
    CHECK(fast_expf(-1000) > 0 && fast_expf(-1000) < 1e-37 && isfinite(fast_expf(1000)), "exp clamps");
    CHECK(fast_tanhf(1000) == 1 && fast_tanhf(-1000) == -1, "tanh saturates");
    CHECK(isnan(fast_expf(NAN)) && isnan(fast_tanhf(NAN)), "NaN stays NaN");
}

// --- the fp32 build's erf (src/fastmath.h) against libm: relative error over the range where erf < 1 in
// float, small arguments included, and exactly +-1 beyond.
static void test_fast_erf(void) {
    double worst_rel = 0, worst_abs = 0;
    for (double x = -6; x <= 6; x += 1e-4) {
        float xf = (float)x;
        double e = erf((double)xf);
        worst_abs = fmax(worst_abs, fabs(fast_erff(xf) - e));
        if (xf != 0) worst_rel = fmax(worst_rel, fabs(fast_erff(xf) - e) / fabs(e));
    }
    for (float x = 1e-30f; x < 1; x *= 1.01f) {
        worst_rel = fmax(worst_rel, fabs(fast_erff(x) - erf((double)x)) / erf((double)x));
        worst_rel = fmax(worst_rel, fabs(fast_erff(-x) + erf((double)x)) / erf((double)x));
    }
    CHECK(worst_rel < 3e-7, "fast_erff relative error %.3g", worst_rel);
    CHECK(worst_abs < 2e-7, "fast_erff absolute error %.3g", worst_abs);
    CHECK(fast_erff(4.5f) == 1 && fast_erff(-1000) == -1 && fast_erff(INFINITY) == 1, "erf saturates");
    CHECK(fast_erff(0) == 0 && isnan(fast_erff(NAN)), "erf(0) = 0, NaN stays NaN");
}

const TestCase kernel_tests[] = {
    {"gradcheck catches a wrong gradient", test_gradcheck_catches_wrong_gradient},
    {"encoder backward (finite differences)", test_encoder_backward},
    {"layernorm backward (finite differences)", test_layernorm_backward},
    {"matmul backward (finite differences)", test_matmul_backward},
    {"attention backward (finite differences)", test_attention_backward},
    {"gqa attention backward (finite differences)", test_gqa_attention_backward},
    {"gqa attention: Hkv == H is plain attention", test_gqa_without_sharing_is_plain_attention},
    {"attention over several row blocks (definition, finite differences)", test_attention_row_blocks},
    {"gqa attention equals duplicated kv heads", test_gqa_equals_duplicated_heads},
    {"rope backward (finite differences)", test_rope_backward},
    {"rope: q.k depends on relative position", test_rope_relative_positions},
    {"swiglu backward (finite differences)", test_swiglu_backward},
    {"gelu backward (finite differences)", test_gelu_backward},
    {"lm head + cross-entropy backward (finite differences)", test_classifier_backward},
    {"fp32 exp and tanh within 3e-7 of libm", test_fast_exp_tanh},
    {"fp32 erf within 3e-7 (relative) of libm", test_fast_erf},
    {NULL, NULL},
};
