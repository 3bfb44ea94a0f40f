// Checks of the normalization operators of norms.c in double precision: forward values against the
// formulas of norms.h written out directly, backwards against central finite differences of
// L = sum(out * R) with a fixed random R (so dL/dout = R). Gradient buffers start at BASE, which is
// removed before comparing, so a backward that overwrote instead of accumulating fails.
#include "norms.h"
#include "testing.h"
#include <math.h>
#include <omp.h>
#include <string.h>

enum { N = 10, C = 8 };
#define EPS 1e-5
#define BHYT_EPS 1e-6
#define KAPPA 3.0  // smaller than the default 10 so that tanh is well away from linear
#define BASE 0.25

static double dot(const real *a, const real *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

static double mean_square(const real *x, int n) { return dot(x, x, n) / n; }

static int close_to(double got, double want) { return fabs(got - want) <= 1e-12 * fmax(1, fabs(want)); }

// N(0, 1.5^2) plus a nonzero mean, which none of these operators removes.
static void fill_input(real *x, size_t n, Rng *r) {
    fill_normal(x, n, 1.5, r);
    for (size_t i = 0; i < n; i++) x[i] += 0.7;
}

static void fill_gain(real *w, size_t n, Rng *r) {
    for (size_t i = 0; i < n; i++) w[i] = (real)(1 + 0.5 * rng_normal(r));
}

static void fill_const(real *g, size_t n, real v) {
    for (size_t i = 0; i < n; i++) g[i] = v;
}

// A case's operands from test stream `stream`: input x (N,C), gain w and bias b (C), and R (N,C).
static void fill_operands(real *x, real *w, real *b, real *R, uint64_t stream) {
    Rng r = rng_stream(2, stream);
    fill_input(x, N * C, &r);
    fill_gain(w, C, &r);
    fill_normal(b, C, 1, &r);
    fill_normal(R, N * C, 1, &r);
}

static void remove_base(real *g, size_t n) {
    for (size_t i = 0; i < n; i++) g[i] -= BASE;
}

// --- RMSNorm
// With gain, also with a bias (the zero-mean-stream model's RMSNorm).
typedef struct { real x[N * C], w[C], b[C], out[N * C], stats[N * NORM_STATS_PER_ROW], R[N * C]; int gain; } RmsCase;
static double rms_loss(void *p) {
    RmsCase *k = p;
    rmsnorm_forward(k->out, k->stats, k->x, k->gain ? k->w : NULL, k->gain ? k->b : NULL, EPS, N, C);
    return dot(k->out, k->R, N * C);
}
static void check_rmsnorm(int gain) {
    static RmsCase k;
    fill_operands(k.x, k.w, k.b, k.R, 200 + gain);
    k.gain = gain;
    rms_loss(&k);
    int bad = 0;
    for (int n = 0; n < N; n++) {
        double ms = mean_square(k.x + n * C, C), rstd = 1 / sqrt(ms + EPS);
        bad += !close_to(k.stats[2 * n], rstd) || !close_to(k.stats[2 * n + 1], ms);
        for (int c = 0; c < C; c++)
            bad += !close_to(k.out[n * C + c], k.x[n * C + c] * rstd * (gain ? k.w[c] : 1) + (gain ? k.b[c] : 0));
    }
    CHECK(bad == 0, "rmsnorm forward: %d values differ from x * rstd * weight", bad);
    static real dx[N * C], dw[C], db[C];
    fill_const(dx, N * C, BASE);
    fill_const(dw, C, BASE);
    fill_const(db, C, BASE);
    rmsnorm_backward(dx, dw, gain ? db : NULL, k.R, k.x, k.stats, gain ? k.w : NULL, N, C);
    remove_base(dx, N * C);
    remove_base(dw, C);
    remove_base(db, C);
    CHECK(!gradcheck("dx", k.x, N * C, dx, rms_loss, &k), "rmsnorm dx");
    if (gain) CHECK(!gradcheck("dweight", k.w, C, dw, rms_loss, &k), "rmsnorm dweight");
    if (gain) CHECK(!gradcheck("dbias", k.b, C, db, rms_loss, &k), "rmsnorm dbias");
    else for (int c = 0; c < C; c++) CHECK(dw[c] == 0, "gain-free rmsnorm changed dweight[%d]", c);
}
static void test_rmsnorm_gain(void) { check_rmsnorm(1); }
static void test_rmsnorm_no_gain(void) { check_rmsnorm(0); }

// --- CRMSNorm
typedef struct { real x[N * C], out[N * C], stats[N * NORM_STATS_PER_ROW], R[N * C]; } CrmsCase;
static double crms_loss(void *p) {
    CrmsCase *k = p;
    crmsnorm_forward(k->out, k->stats, k->x, NULL, EPS, N, C);
    return dot(k->out, k->R, N * C);
}
static void test_crmsnorm(void) {
    static CrmsCase k;
    Rng r = rng_stream(2, 210);
    fill_input(k.x, N * C, &r);
    fill_normal(k.R, N * C, 1, &r);
    crms_loss(&k);
    // The defining property: y' = the first C entries of RMSNorm (no gain) of [x'; -sum(x')], width C+1.
    static real ext[N * (C + 1)], ext_out[N * (C + 1)], ext_stats[N * NORM_STATS_PER_ROW];
    for (int n = 0; n < N; n++) {
        double s = 0;
        for (int c = 0; c < C; c++) s += ext[n * (C + 1) + c] = k.x[n * C + c];
        ext[n * (C + 1) + C] = (real)-s;
        CHECK(close_to(k.stats[2 * n + 1], s), "crmsnorm stats[%d] sum %g vs %g", 2 * n + 1, k.stats[2 * n + 1], s);
    }
    rmsnorm_forward(ext_out, ext_stats, ext, NULL, NULL, EPS, N, C + 1);
    int bad = 0;
    for (int n = 0; n < N; n++) {
        bad += !close_to(k.stats[2 * n], ext_stats[2 * n]);
        for (int c = 0; c < C; c++) bad += !close_to(k.out[n * C + c], ext_out[n * (C + 1) + c]);
    }
    CHECK(bad == 0, "crmsnorm: %d values differ from rmsnorm of [x'; -sum x']", bad);
    static real dx[N * C];
    fill_const(dx, N * C, BASE);
    crmsnorm_backward(dx, k.R, k.x, k.stats, NULL, N, C);
    remove_base(dx, N * C);
    CHECK(!gradcheck("dx", k.x, N * C, dx, crms_loss, &k), "crmsnorm dx");
}

// --- DyT
typedef struct { real x[N * C], alpha, w[C], b[C], out[N * C], R[N * C]; int bias; } DytCase;
static double dyt_loss(void *p) {
    DytCase *k = p;
    dyt_forward(k->out, k->x, &k->alpha, k->w, k->bias ? k->b : NULL, N, C);
    return dot(k->out, k->R, N * C);
}
static void check_dyt(int bias) {
    static DytCase k;
    Rng r = rng_stream(2, 220 + bias);
    fill_input(k.x, N * C, &r);
    fill_gain(k.w, C, &r);
    fill_normal(k.b, C, 1, &r);
    fill_normal(k.R, N * C, 1, &r);
    k.alpha = 0.6;
    k.bias = bias;
    dyt_loss(&k);
    int bad = 0;
    for (int i = 0; i < N * C; i++)
        bad += !close_to(k.out[i], k.w[i % C] * tanh(k.alpha * k.x[i]) + (bias ? k.b[i % C] : 0));
    CHECK(bad == 0, "dyt forward: %d values differ from weight * tanh(alpha x) + bias", bad);
    static real dx[N * C], dw[C], db[C];
    real dalpha = BASE;
    fill_const(dx, N * C, BASE);
    fill_const(dw, C, BASE);
    fill_const(db, C, BASE);
    dyt_backward(dx, &dalpha, dw, bias ? db : NULL, k.R, k.x, &k.alpha, k.w, N, C);
    remove_base(dx, N * C);
    remove_base(dw, C);
    remove_base(db, C);
    dalpha -= BASE;
    CHECK(!gradcheck("dx", k.x, N * C, dx, dyt_loss, &k), "dyt dx");
    CHECK(!gradcheck("dalpha", &k.alpha, 1, &dalpha, dyt_loss, &k), "dyt dalpha");
    CHECK(!gradcheck("dweight", k.w, C, dw, dyt_loss, &k), "dyt dweight");
    if (bias) CHECK(!gradcheck("dbias", k.b, C, db, dyt_loss, &k), "dyt dbias");
    else for (int c = 0; c < C; c++) CHECK(db[c] == 0, "bias-free dyt changed dbias[%d]", c);
}
static void test_dyt_bias(void) { check_dyt(1); }
static void test_dyt_no_bias(void) { check_dyt(0); }

// --- Derf: y = w * erf(alpha x + s) + b
typedef struct { real x[N * C], alpha, shift, w[C], b[C], out[N * C], R[N * C]; int bias; } DerfCase;
static double derf_loss(void *p) {
    DerfCase *k = p;
    derf_forward(k->out, k->x, &k->alpha, &k->shift, k->w, k->bias ? k->b : NULL, N, C);
    return dot(k->out, k->R, N * C);
}
static void check_derf(int bias) {
    static DerfCase k;
    Rng r = rng_stream(2, 280 + bias);
    fill_input(k.x, N * C, &r);
    fill_gain(k.w, C, &r);
    fill_normal(k.b, C, 1, &r);
    fill_normal(k.R, N * C, 1, &r);
    k.alpha = 0.6;  // with the inputs' spread, some values saturate and some do not
    k.shift = -0.3;
    k.bias = bias;
    derf_loss(&k);
    int bad = 0;
    for (int i = 0; i < N * C; i++)
        bad += !close_to(k.out[i], k.w[i % C] * erf(k.alpha * k.x[i] + k.shift) + (bias ? k.b[i % C] : 0));
    CHECK(bad == 0, "derf forward: %d values differ from weight * erf(alpha x + s) + bias", bad);
    static real dx[N * C], dw[C], db[C];
    real dalpha = BASE, dshift = BASE;
    fill_const(dx, N * C, BASE);
    fill_const(dw, C, BASE);
    fill_const(db, C, BASE);
    derf_backward(dx, &dalpha, &dshift, dw, bias ? db : NULL, k.R, k.x, &k.alpha, &k.shift, k.w, N, C);
    remove_base(dx, N * C);
    remove_base(dw, C);
    remove_base(db, C);
    dalpha -= BASE;
    dshift -= BASE;
    CHECK(!gradcheck("dx", k.x, N * C, dx, derf_loss, &k), "derf dx");
    CHECK(!gradcheck("dalpha", &k.alpha, 1, &dalpha, derf_loss, &k), "derf dalpha");
    CHECK(!gradcheck("dshift", &k.shift, 1, &dshift, derf_loss, &k), "derf dshift");
    CHECK(!gradcheck("dweight", k.w, C, dw, derf_loss, &k), "derf dweight");
    if (bias) CHECK(!gradcheck("dbias", k.b, C, db, derf_loss, &k), "derf dbias");
    else for (int c = 0; c < C; c++) CHECK(db[c] == 0, "bias-free derf changed dbias[%d]", c);
}
static void test_derf_bias(void) { check_derf(1); }
static void test_derf_no_bias(void) { check_derf(0); }

// --- BHyT, exact form
typedef struct { real x[N * C], lambda, w[C], out[N * C], stats[N * NORM_STATS_PER_ROW], R[N * C]; int gain; } BhytCase;
static double bhyt_loss(void *p) {
    BhytCase *k = p;
    bhyt_forward(k->out, k->stats, k->x, &k->lambda, k->gain ? k->w : NULL, KAPPA, BHYT_EPS, N, C);
    return dot(k->out, k->R, N * C);
}
static void check_bhyt(int gain) {
    static BhytCase k;
    Rng r = rng_stream(2, 230 + gain);
    fill_input(k.x, N * C, &r);
    fill_gain(k.w, C, &r);
    fill_normal(k.R, N * C, 1, &r);
    k.lambda = 2.5;
    k.gain = gain;
    bhyt_loss(&k);
    int bad = 0;
    for (int n = 0; n < N; n++) {
        double ms = mean_square(k.x + n * C, C), rstd = 1 / sqrt(ms + BHYT_EPS);
        bad += !close_to(k.stats[2 * n], rstd) || !close_to(k.stats[2 * n + 1], ms);
        for (int c = 0; c < C; c++)
            bad += !close_to(k.out[n * C + c], (gain ? k.w[c] : 1) * tanh(k.lambda / KAPPA * k.x[n * C + c] * rstd));
    }
    CHECK(bad == 0, "bhyt forward: %d values differ from weight * tanh(lambda/kappa x rstd)", bad);
    static real dx[N * C], dw[C];
    real dlambda = BASE;
    fill_const(dx, N * C, BASE);
    fill_const(dw, C, BASE);
    bhyt_backward(dx, &dlambda, dw, k.R, k.x, k.stats, &k.lambda, gain ? k.w : NULL, KAPPA, N, C);
    remove_base(dx, N * C);
    remove_base(dw, C);
    dlambda -= BASE;
    CHECK(!gradcheck("dx", k.x, N * C, dx, bhyt_loss, &k), "bhyt dx");
    CHECK(!gradcheck("dlambda", &k.lambda, 1, &dlambda, bhyt_loss, &k), "bhyt dlambda");
    if (gain) CHECK(!gradcheck("dweight", k.w, C, dw, bhyt_loss, &k), "bhyt dweight");
    else for (int c = 0; c < C; c++) CHECK(dw[c] == 0, "gain-free bhyt changed dweight[%d]", c);
}
static void test_bhyt_gain(void) { check_bhyt(1); }
static void test_bhyt_no_gain(void) { check_bhyt(0); }

// --- QKV-norm: H query heads, Hkv key and value heads of HS features.
enum { QH = 4, QHKV = 2, HS = 4, QHEADS = QH + 2 * QHKV, QW = QHEADS * HS };
typedef struct { real qkv[N * QW], gq[HS], gk[HS], gv[HS], out[N * QW], stats[N * QHEADS], R[N * QW]; } QkvCase;
static double qkv_loss(void *p) {
    QkvCase *k = p;
    qkvnorm_forward(k->out, k->stats, k->qkv, k->gq, k->gk, k->gv, EPS, N, QH, QHKV, HS);
    return dot(k->out, k->R, N * QW);
}
static void test_qkvnorm(void) {
    static QkvCase k;
    Rng r = rng_stream(2, 240);
    fill_input(k.qkv, N * QW, &r);
    fill_gain(k.gq, HS, &r);
    fill_gain(k.gk, HS, &r);
    fill_gain(k.gv, HS, &r);
    fill_normal(k.R, N * QW, 1, &r);
    qkv_loss(&k);
    int bad = 0;
    for (int n = 0; n < N; n++) {
        for (int h = 0; h < QHEADS; h++) {
            const real *x = k.qkv + n * QW + h * HS, *g = h < QH ? k.gq : h < QH + QHKV ? k.gk : k.gv;
            double rstd = 1 / sqrt(mean_square(x, HS) + EPS);
            bad += !close_to(k.stats[n * QHEADS + h], rstd);
            for (int c = 0; c < HS; c++) bad += !close_to(k.out[n * QW + h * HS + c], x[c] * rstd * g[c]);
        }
    }
    CHECK(bad == 0, "qkvnorm forward: %d values differ from per-head rmsnorm with the q/k/v gain", bad);
    // With unit gains every head row has mean square ms / (ms + eps), i.e. 1 up to eps.
    static real ones[HS], unit_out[N * QW], unit_stats[N * QHEADS];
    fill_const(ones, HS, 1);
    qkvnorm_forward(unit_out, unit_stats, k.qkv, ones, ones, ones, EPS, N, QH, QHKV, HS);
    bad = 0;
    for (int i = 0; i < N * QHEADS; i++) {
        double ms_in = mean_square(k.qkv + i * HS, HS), ms_out = mean_square(unit_out + i * HS, HS);
        bad += !close_to(ms_out, ms_in / (ms_in + EPS)) || fabs(ms_out - 1) > EPS / ms_in + 1e-12;
    }
    CHECK(bad == 0, "qkvnorm: %d head rows without unit RMS", bad);
    static real dqkv[N * QW], dgq[HS], dgk[HS], dgv[HS];
    fill_const(dqkv, N * QW, BASE);  // overwritten, not accumulated
    fill_const(dgq, HS, BASE);
    fill_const(dgk, HS, BASE);
    fill_const(dgv, HS, BASE);
    qkvnorm_backward(dqkv, dgq, dgk, dgv, k.R, k.qkv, k.stats, k.gq, k.gk, k.gv, N, QH, QHKV, HS);
    remove_base(dgq, HS);
    remove_base(dgk, HS);
    remove_base(dgv, HS);
    CHECK(!gradcheck("dqkv", k.qkv, N * QW, dqkv, qkv_loss, &k), "qkvnorm dqkv");
    CHECK(!gradcheck("dgq", k.gq, HS, dgq, qkv_loss, &k), "qkvnorm dgq");
    CHECK(!gradcheck("dgk", k.gk, HS, dgk, qkv_loss, &k), "qkvnorm dgk");
    CHECK(!gradcheck("dgv", k.gv, HS, dgv, qkv_loss, &k), "qkvnorm dgv");
}

// --- QK-norm: q (QH heads) and k (QHKV heads) RMS-normalized per head or over the whole projection,
// v copied. Gains: HS each (head mode), QH*HS and QHKV*HS (full mode).
typedef struct {
    real qkv[N * QW], gq[QH * HS], gk[QHKV * HS], out[N * QW], stats[N * (QH + QHKV)], R[N * QW];
    int full, affine;
} QkCase;
static double qk_loss(void *p) {
    QkCase *k = p;
    qknorm_forward(k->out, k->stats, k->qkv, k->affine ? k->gq : NULL, k->affine ? k->gk : NULL, EPS, k->full, N, QH,
                   QHKV, HS);
    return dot(k->out, k->R, N * QW);
}
static void check_qknorm(int full, int affine) {
    static QkCase k;
    Rng r = rng_stream(2, 290 + 2 * full + affine);
    fill_input(k.qkv, N * QW, &r);
    fill_gain(k.gq, QH * HS, &r);
    fill_gain(k.gk, QHKV * HS, &r);
    fill_normal(k.R, N * QW, 1, &r);
    k.full = full;
    k.affine = affine;
    qk_loss(&k);
    // Rows: per head of HS, or one of QH*HS (q) and one of QHKV*HS (k) per token; v untouched.
    int bad = 0, rows = full ? 2 : QH + QHKV;
    for (int n = 0; n < N; n++) {
        for (int row = 0; row < rows; row++) {
            int width = full ? (row == 0 ? QH : QHKV) * HS : HS;
            int offset = full ? row * QH * HS : row * HS;
            const real *x = k.qkv + n * QW + offset, *g = offset < QH * HS ? k.gq : k.gk;
            double rstd = 1 / sqrt(mean_square(x, width) + EPS);
            bad += !close_to(k.stats[n * rows + row], rstd);
            for (int c = 0; c < width; c++)
                bad += !close_to(k.out[n * QW + offset + c], x[c] * rstd * (affine ? g[c] : 1));
        }
        for (int c = (QH + QHKV) * HS; c < QW; c++) bad += k.out[n * QW + c] != k.qkv[n * QW + c];
    }
    CHECK(bad == 0, "qknorm (%s%s) forward: %d values differ from rmsnorm of q and k", full ? "full" : "head",
          affine ? "" : ", no gain", bad);
    static real dqkv[N * QW], dgq[QH * HS], dgk[QHKV * HS];
    fill_const(dqkv, N * QW, BASE);  // overwritten, not accumulated
    fill_const(dgq, QH * HS, BASE);
    fill_const(dgk, QHKV * HS, BASE);
    qknorm_backward(dqkv, affine ? dgq : NULL, affine ? dgk : NULL, k.R, k.qkv, k.stats, affine ? k.gq : NULL,
                    affine ? k.gk : NULL, full, N, QH, QHKV, HS);
    remove_base(dgq, QH * HS);
    remove_base(dgk, QHKV * HS);
    CHECK(!gradcheck("dqkv", k.qkv, N * QW, dqkv, qk_loss, &k), "qknorm dqkv");
    int gq_size = full ? QH * HS : HS, gk_size = full ? QHKV * HS : HS;
    if (affine) {
        CHECK(!gradcheck("dgq", k.gq, gq_size, dgq, qk_loss, &k), "qknorm dgq");
        CHECK(!gradcheck("dgk", k.gk, gk_size, dgk, qk_loss, &k), "qknorm dgk");
    }
    for (int c = affine ? gq_size : 0; c < QH * HS; c++) CHECK(dgq[c] == 0, "dgq[%d] written", c);
    for (int c = affine ? gk_size : 0; c < QHKV * HS; c++) CHECK(dgk[c] == 0, "dgk[%d] written", c);
}
static void test_qknorm_head(void) { check_qknorm(0, 1); check_qknorm(0, 0); }
static void test_qknorm_full(void) { check_qknorm(1, 1); check_qknorm(1, 0); }

// --- A BHyT block: u = bhyt(x); h = x + u @ A; v = bhyt_shared(h, stats of x, CORRECTION); out = h + v @ Bm.
// A and Bm are fixed linear stand-ins for attention and the MLP. CORRECTION is a constant here: in the
// model it is made of a stop-gradient lambda1.
#define CORRECTION 0.3
typedef struct {
    real x[N * C], A[C * C], Bm[C * C], w1[C], w2[C], lambda1, lambda2, R[N * C];
    real u[N * C], h[N * C], v[N * C], out[N * C], stats1[N * NORM_STATS_PER_ROW], rstd2[N];
} BlockCase;

// y (N,C) += x (N,C) @ W (C,C)
static void linear_add(real *y, const real *x, const real *W) {
    for (int n = 0; n < N; n++)
        for (int i = 0; i < C; i++)
            for (int j = 0; j < C; j++) y[n * C + j] += x[n * C + i] * W[i * C + j];
}
// dx (N,C) += dy (N,C) @ W^T
static void linear_add_backward(real *dx, const real *dy, const real *W) {
    for (int n = 0; n < N; n++)
        for (int i = 0; i < C; i++)
            for (int j = 0; j < C; j++) dx[n * C + i] += dy[n * C + j] * W[i * C + j];
}

static double block_loss(void *p) {
    BlockCase *k = p;
    bhyt_forward(k->u, k->stats1, k->x, &k->lambda1, k->w1, KAPPA, BHYT_EPS, N, C);
    memcpy(k->h, k->x, sizeof k->h);
    linear_add(k->h, k->u, k->A);
    bhyt_shared_forward(k->v, k->rstd2, k->h, k->stats1, CORRECTION, &k->lambda2, k->w2, KAPPA, BHYT_EPS, N, C);
    memcpy(k->out, k->h, sizeof k->out);
    linear_add(k->out, k->v, k->Bm);
    return dot(k->out, k->R, N * C);
}

static void test_bhyt_block(void) {
    static BlockCase k;
    Rng r = rng_stream(2, 250);
    fill_input(k.x, N * C, &r);
    fill_normal(k.A, C * C, 1 / sqrt(C), &r);
    fill_normal(k.Bm, C * C, 1 / sqrt(C), &r);
    fill_gain(k.w1, C, &r);
    fill_gain(k.w2, C, &r);
    fill_normal(k.R, N * C, 1, &r);
    k.lambda1 = 2.0;
    k.lambda2 = 1.5;
    block_loss(&k);
    int bad = 0;
    for (int n = 0; n < N; n++) {
        double rstd2 = 1 / sqrt(mean_square(k.x + n * C, C) + CORRECTION + BHYT_EPS);  // x's statistic, not h's
        bad += !close_to(k.rstd2[n], rstd2);
        for (int c = 0; c < C; c++)
            bad += !close_to(k.v[n * C + c], k.w2[c] * tanh(k.lambda2 / KAPPA * k.h[n * C + c] * rstd2));
    }
    CHECK(bad == 0, "bhyt_shared forward: %d values differ from weight * tanh(lambda/kappa h rstd2)", bad);

    static real gv[N * C], gh[N * C], gu[N * C], gx[N * C], dmean_sq[N], dw1[C], dw2[C];
    real dlambda1 = BASE, dlambda2 = BASE;
    fill_const(dw1, C, BASE);
    fill_const(dw2, C, BASE);
    fill_const(dmean_sq, N, BASE);  // overwritten, not accumulated
    memset(gv, 0, sizeof gv);
    linear_add_backward(gv, k.R, k.Bm);
    memcpy(gh, k.R, sizeof gh);  // residual
    bhyt_shared_backward(gh, dmean_sq, &dlambda2, dw2, gv, k.h, k.rstd2, &k.lambda2, k.w2, KAPPA, N, C);
    memset(gu, 0, sizeof gu);
    linear_add_backward(gu, gh, k.A);
    memcpy(gx, gh, sizeof gx);  // residual
    mean_square_backward(gx, dmean_sq, k.x, N, C);
    bhyt_backward(gx, &dlambda1, dw1, gu, k.x, k.stats1, &k.lambda1, k.w1, KAPPA, N, C);
    remove_base(dw1, C);
    remove_base(dw2, C);
    dlambda1 -= BASE;
    dlambda2 -= BASE;
    CHECK(!gradcheck("dx", k.x, N * C, gx, block_loss, &k), "bhyt block dx");
    CHECK(!gradcheck("dlambda1", &k.lambda1, 1, &dlambda1, block_loss, &k), "bhyt block dlambda1");
    CHECK(!gradcheck("dlambda2", &k.lambda2, 1, &dlambda2, block_loss, &k), "bhyt block dlambda2");
    CHECK(!gradcheck("dweight1", k.w1, C, dw1, block_loss, &k), "bhyt block dweight1");
    CHECK(!gradcheck("dweight2", k.w2, C, dw2, block_loss, &k), "bhyt block dweight2");
}

// --- The dispatchers against direct calls: same outputs, statistics and gradients, bit for bit.
typedef struct {
    real x[N * C], w[C], b[C], scale, shift, R[N * C];
    real out[2][N * C], stats[2][N * NORM_STATS_PER_ROW], dx[2][N * C], dw[2][C], db[2][C], ds[2], dsh[2];
} DispatchCase;

static void check_dispatch(NormKind kind, int with_weight, int with_bias) {
    static DispatchCase k;
    memset(&k, 0, sizeof k);
    fill_operands(k.x, k.w, k.b, k.R, 260 + kind);
    k.scale = 1.7;
    k.shift = 0.4;
    const real *w = with_weight ? k.w : NULL, *b = with_bias ? k.b : NULL;
    const NormOp *op = &NORM_OPS[kind];
    Norm nm = {.kind = kind, .eps = kind == NORM_BHYT ? BHYT_EPS : EPS, .kappa = KAPPA, .weight = (real *)w,
               .bias = (real *)b, .scale = op->has_scale ? &k.scale : NULL, .shift = op->has_shift ? &k.shift : NULL,
               .dweight = w ? k.dw[1] : NULL, .dbias = b ? k.db[1] : NULL,
               .dscale = op->has_scale ? &k.ds[1] : NULL, .dshift = op->has_shift ? &k.dsh[1] : NULL};
    norm_forward(&nm, k.out[1], k.stats[1], k.x, N, C);
    norm_backward(&nm, k.dx[1], k.R, k.x, k.stats[1], N, C);
    real *out = k.out[0], *st = k.stats[0], *dx = k.dx[0], *dw = w ? k.dw[0] : NULL, *db = b ? k.db[0] : NULL;
    switch (kind) {
    case NORM_LAYERNORM:
        layernorm_forward(out, st, k.x, w, b, EPS, N, C);
        layernorm_backward(dx, dw, db, k.R, k.x, st, w, N, C);
        break;
    case NORM_RMSNORM:
        rmsnorm_forward(out, st, k.x, w, NULL, EPS, N, C);
        rmsnorm_backward(dx, dw, NULL, k.R, k.x, st, w, N, C);
        break;
    case NORM_CRMSNORM:
        crmsnorm_forward(out, st, k.x, NULL, EPS, N, C);
        crmsnorm_backward(dx, k.R, k.x, st, NULL, N, C);
        break;
    case NORM_DYT:
        dyt_forward(out, k.x, &k.scale, w, b, N, C);
        dyt_backward(dx, &k.ds[0], dw, db, k.R, k.x, &k.scale, w, N, C);
        break;
    case NORM_BHYT:
        bhyt_forward(out, st, k.x, &k.scale, w, KAPPA, BHYT_EPS, N, C);
        bhyt_backward(dx, &k.ds[0], dw, k.R, k.x, st, &k.scale, w, KAPPA, N, C);
        break;
    case NORM_DERF:
        derf_forward(out, k.x, &k.scale, &k.shift, w, b, N, C);
        derf_backward(dx, &k.ds[0], &k.dsh[0], dw, db, k.R, k.x, &k.scale, &k.shift, w, N, C);
        break;
    default: CHECK(0, "no direct call for norm %d", kind); return;
    }
    double sum = 0;
    for (int i = 0; i < N * C; i++) sum += fabs(k.out[0][i]) + fabs(k.dx[0][i]);
    CHECK(sum > 0, "direct call produced nothing");
    CHECK(!memcmp(k.out[0], k.out[1], sizeof k.out[0]), "out differs");
    CHECK(!memcmp(k.stats[0], k.stats[1], sizeof k.stats[0]), "stats differ");
    CHECK(!memcmp(k.dx[0], k.dx[1], sizeof k.dx[0]), "dinp differs");
    CHECK(!memcmp(k.dw[0], k.dw[1], sizeof k.dw[0]), "dweight differs");
    CHECK(!memcmp(k.db[0], k.db[1], sizeof k.db[0]), "dbias differs");
    CHECK(k.ds[0] == k.ds[1], "dscale differs: %g vs %g", k.ds[0], k.ds[1]);
    CHECK(k.dsh[0] == k.dsh[1], "dshift differs: %g vs %g", k.dsh[0], k.dsh[1]);
}
static void test_dispatch_layernorm(void) { check_dispatch(NORM_LAYERNORM, 1, 1); }
static void test_dispatch_rmsnorm(void) { check_dispatch(NORM_RMSNORM, 1, 0); check_dispatch(NORM_RMSNORM, 0, 0); }
static void test_dispatch_crmsnorm(void) { check_dispatch(NORM_CRMSNORM, 0, 0); }
static void test_dispatch_dyt(void) { check_dispatch(NORM_DYT, 1, 1); check_dispatch(NORM_DYT, 1, 0); }
static void test_dispatch_bhyt(void) { check_dispatch(NORM_BHYT, 1, 0); check_dispatch(NORM_BHYT, 0, 0); }
static void test_dispatch_derf(void) { check_dispatch(NORM_DERF, 1, 1); check_dispatch(NORM_DERF, 1, 0); }

// --- LayerNorm Scaling through the dispatchers: out = s * norm(x) exactly as the unscaled operator
// times s, and every gradient (input, gain, bias, scalar) against finite differences.
typedef struct {
    Norm nm;
    real x[N * C], w[C], b[C], scale, out[N * C], stats[N * NORM_STATS_PER_ROW], R[N * C], scratch[4 * C];
} LnsCase;
static double lns_loss(void *p) {
    LnsCase *k = p;
    norm_forward(&k->nm, k->out, k->stats, k->x, N, C);
    return dot(k->out, k->R, N * C);
}
static void check_lns(NormKind kind) {
    static LnsCase k;
    static real plain[N * C], dx[N * C], dw[C], db[C], ds, dsh, shift;
    memset(&k, 0, sizeof k);
    fill_operands(k.x, k.w, k.b, k.R, 280 + kind);
    k.scale = 0.9;
    shift = 0.2;
    int gain = NORM_OPS[kind].has_weight, bias = kind == NORM_LAYERNORM || kind == NORM_DYT || kind == NORM_DERF;
    k.nm = (Norm){.kind = kind, .eps = EPS, .kappa = KAPPA, .weight = gain ? k.w : NULL, .bias = bias ? k.b : NULL,
                  .scale = NORM_OPS[kind].has_scale ? &k.scale : NULL, .shift = NORM_OPS[kind].has_shift ? &shift : NULL,
                  .dweight = gain ? dw : NULL, .dbias = bias ? db : NULL, .dscale = &ds, .dshift = &dsh};
    norm_forward(&k.nm, plain, k.stats, k.x, N, C);
    k.nm.lns_scale = (real)(1 / sqrt(3.0));
    k.nm.lns_scratch = k.scratch;
    lns_loss(&k);
    int bad = 0;
    for (int i = 0; i < N * C; i++) bad += fabs(k.out[i] - k.nm.lns_scale * plain[i]) > 1e-14 * (1 + fabs(plain[i]));
    CHECK(bad == 0, "%s: %d scaled outputs are not lns_scale * norm(x)", NORM_OPS[kind].name, bad);
    fill_const(dx, N * C, BASE);
    fill_const(dw, C, BASE);
    fill_const(db, C, BASE);
    ds = dsh = BASE;
    norm_backward(&k.nm, dx, k.R, k.x, k.stats, N, C);
    remove_base(dx, N * C);
    remove_base(dw, C);
    remove_base(db, C);
    ds -= BASE;
    dsh -= BASE;
    CHECK(!gradcheck("dx", k.x, N * C, dx, lns_loss, &k), "%s + lns: dx", NORM_OPS[kind].name);
    if (gain) CHECK(!gradcheck("dweight", k.w, C, dw, lns_loss, &k), "%s + lns: dweight", NORM_OPS[kind].name);
    if (bias) CHECK(!gradcheck("dbias", k.b, C, db, lns_loss, &k), "%s + lns: dbias", NORM_OPS[kind].name);
    if (k.nm.scale) CHECK(!gradcheck("dscale", &k.scale, 1, &ds, lns_loss, &k), "%s + lns: dscale", NORM_OPS[kind].name);
    if (k.nm.shift) CHECK(!gradcheck("dshift", &shift, 1, &dsh, lns_loss, &k), "%s + lns: dshift", NORM_OPS[kind].name);
}
static void test_lns_scaled_norms(void) {
    for (int kind = 0; kind < NORM_KINDS; kind++)
        if (kind != NORM_BHYT) check_lns((NormKind)kind);  // LNS is undefined for BHyT (config refuses it)
}

// The operator table: every row named once (names resolve back to it, unknown names to nothing),
// with a forward/backward pair, and every row dispatched above.
static void test_norm_table(void) {
    for (int k = 0; k < NORM_KINDS; k++) {
        const NormOp *op = &NORM_OPS[k];
        CHECK(op->name && norm_by_name(op->name) == k, "row %d: name does not resolve back", k);
        CHECK(op->forward && op->backward, "%s: no forward/backward", op->name);
        CHECK(!op->has_scale || (op->scale_init[NORM_SITE_ATTN] && op->scale_init[NORM_SITE_FFN] &&
                                 op->scale_init[NORM_SITE_FINAL]), "%s: a scale without an init key per site", op->name);
        CHECK(!op->compresses_stream || (!op->has_weight && op->bias == BIAS_NEVER),
              "%s: a compressed-stream norm cannot carry an affine map", op->name);
        CHECK(!op->has_shift || op->shift_init, "%s: a shift without an init key", op->name);
    }
    // Derf: beta whatever model.bias says, alpha keys per site (attention, other) falling back to derf_alpha.
    const NormOp *derf = &NORM_OPS[NORM_DERF];
    CHECK(derf->bias == BIAS_ALWAYS && derf->has_shift && derf->squash == SQUASH_ERF && derf->scale_unset &&
          derf->scale_init[NORM_SITE_FFN] == derf->scale_init[NORM_SITE_FINAL] &&
          derf->scale_init[NORM_SITE_ATTN] != derf->scale_init[NORM_SITE_FFN], "derf's row");
    CHECK(NORM_OPS[NORM_BHYT].fixed_eps == BHYT_EPS, "BHyT's epsilon is %g", NORM_OPS[NORM_BHYT].fixed_eps);
    CHECK(norm_by_name("layer_norm") == NORM_NONE && norm_by_name("") == NORM_NONE, "an unknown name resolved");
}

// --- Every backward gives the same bits for 1 and 5 threads (reductions in a fixed order). Large
// enough for several channel blocks and many rows per row chunk.
enum { DN = 300, DC = 40, DH = 4, DHKV = 2, DHS = 8, DQW = (DH + 2 * DHKV) * DHS };
typedef struct {
    real out[DN * DQW], stats[DN * DQW], dx[DN * DQW], dw[DQW], db[DQW], ds, dsh, dmean_sq[DN];
} DetResult;

static void deterministic_run(int which, int threads, const real *x, const real *w, const real *b, const real *R,
                              DetResult *res) {
    memset(res, 0, sizeof *res);
    omp_set_num_threads(threads);
    real scale = 1.3, shift = 0.2;
    if (which < NORM_KINDS) {
        NormKind kind = (NormKind)which;
        Norm nm = {.kind = kind, .eps = EPS, .kappa = KAPPA, .weight = (real *)w,
                   .bias = kind == NORM_LAYERNORM || kind == NORM_DYT || kind == NORM_DERF ? (real *)b : NULL,
                   .scale = &scale, .shift = &shift, .dweight = res->dw, .dbias = res->db, .dscale = &res->ds,
                   .dshift = &res->dsh};
        norm_forward(&nm, res->out, res->stats, x, DN, DC);
        norm_backward(&nm, res->dx, R, x, res->stats, DN, DC);
    } else if (which == NORM_KINDS) {
        static real s1[DN * NORM_STATS_PER_ROW], u[DN * DC];
        bhyt_forward(u, s1, x, &scale, w, KAPPA, BHYT_EPS, DN, DC);
        bhyt_shared_forward(res->out, res->stats, x, s1, CORRECTION, &scale, w, KAPPA, BHYT_EPS, DN, DC);
        bhyt_shared_backward(res->dx, res->dmean_sq, &res->ds, res->dw, R, x, res->stats, &scale, w, KAPPA, DN, DC);
    } else if (which > NORM_KINDS + 1) {
        int full = which == NORM_KINDS + 3;
        qknorm_forward(res->out, res->stats, x, w, w + DQW / 2, EPS, full, DN, DH, DHKV, DHS);
        qknorm_backward(res->dx, res->dw, res->dw + DQW / 2, R, x, res->stats, w, w + DQW / 2, full, DN, DH, DHKV, DHS);
    } else {
        qkvnorm_forward(res->out, res->stats, x, w, w + DHS, w + 2 * DHS, EPS, DN, DH, DHKV, DHS);
        qkvnorm_backward(res->dx, res->dw, res->dw + DHS, res->dw + 2 * DHS, R, x, res->stats, w, w + DHS,
                         w + 2 * DHS, DN, DH, DHKV, DHS);
    }
}

static void test_norms_deterministic(void) {
    static real x[DN * DQW], w[DQW], b[DQW], R[DN * DQW];
    static DetResult one, many;
    Rng r = rng_stream(2, 270);
    fill_input(x, DN * DQW, &r);
    fill_gain(w, DQW, &r);
    fill_normal(b, DQW, 1, &r);
    fill_normal(R, DN * DQW, 1, &r);
    int saved = omp_get_max_threads();
    static const char *names[NORM_KINDS + 4] = {[NORM_KINDS] = "bhyt_shared", "qkvnorm", "qknorm head", "qknorm full"};
    for (int which = 0; which < NORM_KINDS + 4; which++) {
        if (which < NORM_KINDS) names[which] = NORM_OPS[which].name;
        deterministic_run(which, 1, x, w, b, R, &one);
        deterministic_run(which, 5, x, w, b, R, &many);
        CHECK(!memcmp(&one, &many, sizeof one), "%s: results depend on the thread count", names[which]);
    }
    omp_set_num_threads(saved);
}

const TestCase norm_tests[] = {
    {"norms: rmsnorm with gain (fin. diff.)", test_rmsnorm_gain},
    {"norms: rmsnorm without gain (fin. diff.)", test_rmsnorm_no_gain},
    {"norms: crmsnorm (fin. diff., rmsnorm of [x'; -S])", test_crmsnorm},
    {"norms: dyt with bias (fin. diff.)", test_dyt_bias},
    {"norms: dyt without bias (fin. diff.)", test_dyt_no_bias},
    {"norms: bhyt exact with gain (fin. diff.)", test_bhyt_gain},
    {"norms: bhyt exact without gain (fin. diff.)", test_bhyt_no_gain},
    {"norms: qkvnorm H=4 Hkv=2 (fin. diff.)", test_qkvnorm},
    {"norms: derf with bias (fin. diff.)", test_derf_bias},
    {"norms: derf without bias (fin. diff.)", test_derf_no_bias},
    {"norms: qknorm head mode, with and without gain (fin. diff.)", test_qknorm_head},
    {"norms: qknorm full mode, with and without gain (fin. diff.)", test_qknorm_full},
    {"norms: bhyt block, shared site 2 (fin. diff.)", test_bhyt_block},
    {"norms: the operator table", test_norm_table},
    {"norms: lns-scaled operators through the dispatchers (fin. diff.)", test_lns_scaled_norms},
    {"norms: dispatch layernorm", test_dispatch_layernorm},
    {"norms: dispatch rmsnorm", test_dispatch_rmsnorm},
    {"norms: dispatch crmsnorm", test_dispatch_crmsnorm},
    {"norms: dispatch dyt", test_dispatch_dyt},
    {"norms: dispatch bhyt", test_dispatch_bhyt},
    {"norms: dispatch derf", test_dispatch_derf},
    {"norms: deterministic across thread counts", test_norms_deterministic},
    {NULL, NULL},
};
