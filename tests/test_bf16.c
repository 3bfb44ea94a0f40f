// bf16 rounding, and every bf16 matmul against a double-precision reference on the same
// bf16-rounded inputs. Accumulation is fp32, so the products agree to the fp32 sum's own error,
// bounded by K * 2^-23 * sum |a b| for K terms; a wrong stride or transpose is off by O(1).
#include "bf16.h"
#include "checkpoint.h"
#include "model.h"
#include "testing.h"
#include <math.h>
#include <omp.h>
#include <string.h>

static float from_bits(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }
static uint32_t bits(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }

static void test_bf16_rounding(void) {
    struct { uint32_t in; bf16 out; const char *what; } cases[] = {
        {0x3f800000, 0x3f80, "1"},
        {0x3f808000, 0x3f80, "tie 1 + 2^-8 rounds to even (down)"},
        {0x3f818000, 0x3f82, "tie 1 + 3*2^-8 rounds to even (up)"},
        {0x3f808001, 0x3f81, "just above the tie rounds up"},
        {0x3f807fff, 0x3f80, "just below the tie rounds down"},
        {0xbf818000, 0xbf82, "negative tie to even"},
        {0x7f7fffff, 0x7f80, "largest float rounds to +inf"},
        {0x7f800000, 0x7f80, "+inf"},
        {0xff800000, 0xff80, "-inf"},
        {0x7f800001, 0x7fc0, "signalling NaN is quieted, not turned into inf"},
        {0xffc00001, 0xffc0, "negative quiet NaN keeps its sign"},
        {0x80000000, 0x8000, "-0"},
        {0x00400000, 0x0000, "subnormal becomes +0"},
        {0x807fffff, 0x8000, "negative subnormal becomes -0"},
        {0x00800000, 0x0080, "smallest normal"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        bf16 got = bf16_round(from_bits(cases[i].in));
        CHECK(got == cases[i].out, "%s: %08x -> %04x, want %04x", cases[i].what, cases[i].in, got, cases[i].out);
    }
    // Every bf16 value converts to float and back unchanged (NaNs: quiet ones; subnormals flush).
    for (uint32_t h = 0; h < 65536; h++) {
        int exp = (h >> 7) & 0xff, mant = h & 0x7f;
        if ((exp == 0xff && mant && !(h & 0x40)) || (exp == 0 && mant)) continue;
        CHECK(bf16_round(bf16_to_float((bf16)h)) == h, "round trip of %04x", h);
    }
}

// The threaded, vectorized cast (AVX512_BF16 here if the CPU has it) gives the scalar rounding's
// bits on random bit patterns (every class: NaN, inf, subnormal) and on odd lengths and offsets.
static void test_bf16_cast_matches_scalar(void) {
    enum { n = 1 << 20 };
    static float src[n];
    static bf16 got[n];
    static float back[n];
    Rng r = rng_stream(3, 1);
    for (int i = 0; i < n; i++) src[i] = from_bits((uint32_t)rng_u64(&r));
    for (int i = 0; i < 64; i++) src[i * 977] = from_bits(0x3f808000u + (uint32_t)i * 0x10000u);  // ties
    size_t lengths[] = {n, 1, 31, 33, 16385, n - 7};
    float scales[] = {1, 0.5f, 3};
    for (size_t l = 0; l < sizeof lengths / sizeof *lengths; l++) {
        for (size_t s = 0; s < sizeof scales / sizeof *scales; s++) {
            size_t off = l % 3, len = lengths[l] - off, bad = 0, first = 0;
            memset(got, 0xff, sizeof got);
            bf16_from_floats(got + off, src + off, scales[s], len);
            for (size_t i = off; i < off + len; i++)
                if (got[i] != bf16_round(scales[s] * src[i]) && !bad++) first = i;
            CHECK(!bad, "length %zu scale %g: %zu of %zu differ, first [%zu] %08x -> %04x, scalar %04x", len,
                  scales[s], bad, len, first, bits(src[first]), got[first], bf16_round(scales[s] * src[first]));
            if (off) CHECK(got[off - 1] == 0xffff, "length %zu: wrote before the start", len);
            if (off + len < n) CHECK(got[off + len] == 0xffff, "length %zu: wrote past the end", len);
        }
    }
    floats_from_bf16(back, got, n);
    size_t bad = 0;
    for (int i = 0; i < n; i++) {
        float want = bf16_to_float(got[i]);
        bad += memcmp(&back[i], &want, 4) != 0;
    }
    CHECK(!bad, "floats_from_bf16: %zu of %d differ", bad, (int)n);
}

// The backward's cast with the bias gradient summed in the same pass: the cast's bits, and column sums
// that are the in-order row sums, on 1 and 2 threads, for widths around the channel blocks' sizes.
static void test_bf16_cast_with_column_sums(void) {
    enum { N = 37, Cmax = 1000 };
    static float src[N * Cmax], sums[Cmax], want[Cmax];
    static bf16 got[N * Cmax];
    Rng r = rng_stream(5, 1);
    for (int i = 0; i < N * Cmax; i++) src[i] = (float)rng_normal(&r);
    int widths[] = {1, 15, 16, 100, 256, 257, 1000};
    for (size_t wi = 0; wi < sizeof widths / sizeof *widths; wi++) {
        int C = widths[wi];
        for (int c = 0; c < C; c++) {
            want[c] = 0.25f;  // the sums add to what is there
            float s = 0;
            for (int n = 0; n < N; n++) s += src[n * C + c];
            want[c] += s;
        }
        for (int threads = 1; threads <= 2; threads++) {
            omp_set_num_threads(threads);
            for (int c = 0; c < C; c++) sums[c] = 0.25f;
            bf16_from_rows(got, sums, src, N, C);
            size_t bad_cast = 0, bad_sum = 0;
            for (int i = 0; i < N * C; i++) bad_cast += got[i] != bf16_round(src[i]);
            for (int c = 0; c < C; c++) bad_sum += bits(sums[c]) != bits(want[c]);
            CHECK(!bad_cast, "C %d, %d thread(s): %zu of %d casts differ", C, threads, bad_cast, N * C);
            CHECK(!bad_sum, "C %d, %d thread(s): %zu of %d column sums differ from the in-order sums", C, threads,
                  bad_sum, C);
        }
    }
    omp_set_num_threads(2);
}

#ifdef NORMGPT_DNNL

// Random bf16 values (and their float values, for the reference).
static void fill_bf16(bf16 *h, double *x, size_t n, Rng *r) {
    for (size_t i = 0; i < n; i++) {
        h[i] = bf16_round((float)rng_normal(r));
        x[i] = bf16_to_float(h[i]);
    }
}

// got vs want, each entry within K * 2^-23 * (its sum of |terms|) + tiny, reported as `what`.
static void expect_close(const char *what, const float *got, const double *want, const double *mag, size_t n, int K) {
    size_t bad = 0, worst = 0;
    double worst_err = -1;
    for (size_t i = 0; i < n; i++) {
        double err = fabs(got[i] - want[i]) / (K * 0x1p-23 * mag[i] + 1e-30);
        if (err > 1) bad++;
        if (err > worst_err) { worst_err = err; worst = i; }
    }
    CHECK(!bad, "%s: %zu of %zu entries off; worst [%zu] %.9g want %.9g (%.2g of the bound)", what, bad, n, worst,
          got[worst], want[worst], worst_err);
}

// y (M,N) = alpha * sum_k A(m,k) B(k,n) with A, B given by strides; mag = sum |terms|.
static void reference(double *y, double *mag, const double *A, long am, long ak, const double *Bm, long bk, long bn,
                      int M, int N, int K, double alpha) {
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double s = 0, a = 0;
            for (int k = 0; k < K; k++) {
                double t = A[m * am + k * ak] * Bm[k * bk + n * bn];
                s += t;
                a += fabs(t);
            }
            y[m * N + n] = alpha * s;
            mag[m * N + n] = fabs(alpha) * a;
        }
}

typedef struct { int N, IC, OC; } LinearShape;

static void check_linear(LinearShape s, int with_bias, int with_residual, int accumulate) {
    int N = s.N, IC = s.IC, OC = s.OC;
    size_t ni = (size_t)N * IC, no = (size_t)N * OC, nw = (size_t)OC * IC;
    bf16 *inp = xcalloc(ni, 2), *w = xcalloc(nw, 2), *dout = xcalloc(no, 2);
    double *x = xcalloc(ni, 8), *wd = xcalloc(nw, 8), *g = xcalloc(no, 8);
    float *bias = xcalloc(OC, 4), *res = xcalloc(no, 4), *out = xcalloc(no, 4), *dinp = xcalloc(ni, 4),
          *dinp0 = xcalloc(ni, 4), *dw = xcalloc(nw, 4), *dw0 = xcalloc(nw, 4);
    double *want = xcalloc(no > nw ? (no > ni ? no : ni) : (nw > ni ? nw : ni), 8);
    double *mag = xcalloc(no > nw ? (no > ni ? no : ni) : (nw > ni ? nw : ni), 8);
    Rng r = rng_stream(5, (uint64_t)N * 1000003 + IC * 1009 + OC);
    fill_bf16(inp, x, ni, &r);
    fill_bf16(w, wd, nw, &r);
    fill_bf16(dout, g, no, &r);
    for (int j = 0; j < OC; j++) bias[j] = (float)rng_normal(&r);
    for (size_t i = 0; i < no; i++) res[i] = (float)rng_normal(&r);
    for (size_t i = 0; i < ni; i++) dinp[i] = dinp0[i] = (float)rng_normal(&r);
    for (size_t i = 0; i < nw; i++) dw[i] = dw0[i] = (float)rng_normal(&r);
    char what[160];
    snprintf(what, sizeof what, "N %d IC %d OC %d%s%s%s", N, IC, OC, with_bias ? " bias" : "",
             with_residual ? " residual" : "", accumulate ? " accumulate" : "");

    bf16_linear_forward(out, with_residual ? res : NULL, inp, w, with_bias ? bias : NULL, N, IC, OC);
    reference(want, mag, x, IC, 1, wd, 1, IC, N, OC, IC, 1);  // inp @ w^T
    for (int n = 0; n < N; n++)
        for (int j = 0; j < OC; j++) {
            double extra = (with_bias ? bias[j] : 0) + (with_residual ? res[(size_t)n * OC + j] : 0);
            want[(size_t)n * OC + j] += extra;
            mag[(size_t)n * OC + j] += fabs(extra);
        }
    char w2[200];
    snprintf(w2, sizeof w2, "forward %s", what);
    expect_close(w2, out, want, mag, no, IC + 2);

    bf16_linear_backward(dinp, accumulate, dw, dout, inp, w, N, IC, OC);
    reference(want, mag, g, OC, 1, wd, IC, 1, N, IC, OC, 1);  // dout @ w
    if (accumulate)
        for (size_t i = 0; i < ni; i++) { want[i] += dinp0[i]; mag[i] += fabs(dinp0[i]); }
    snprintf(w2, sizeof w2, "dinp %s", what);
    expect_close(w2, dinp, want, mag, ni, OC + 1);
    reference(want, mag, g, 1, OC, x, IC, 1, OC, IC, N, 1);  // dout^T @ inp
    for (size_t i = 0; i < nw; i++) { want[i] += dw0[i]; mag[i] += fabs(dw0[i]); }
    snprintf(w2, sizeof w2, "dweight %s", what);
    expect_close(w2, dw, want, mag, nw, N + 1);

    free(inp); free(w); free(dout); free(x); free(wd); free(g); free(bias); free(res); free(out); free(dinp);
    free(dinp0); free(dw); free(dw0); free(want); free(mag);
}

static void test_bf16_linear(void) {
    LinearShape shapes[] = {{37, 19, 23}, {1, 5, 3}, {64, 48, 80}, {130, 33, 257}};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        check_linear(shapes[i], 0, 0, 0);
        check_linear(shapes[i], 1, 0, 1);
        check_linear(shapes[i], 1, 1, 0);
        check_linear(shapes[i], 0, 1, 1);
    }
}

typedef struct { int B, T, H, Hkv, hs; } AttnShape;

// The four attention products per (b, h) against a double reference, q, k, v either interleaved in
// qkv rows (kernels.h) or separate dense planes. The gradient buffer is filled with NaN first:
// every q, k, v column must be written (k and v summed over each group's query heads).
static void check_attention(AttnShape s, int planar) {
    int B = s.B, T = s.T, H = s.H, Hkv = s.Hkv, hs = s.hs, G = H / Hkv, C = H * hs, W = (H + 2 * Hkv) * hs;
    size_t nq = (size_t)B * T * W, na = (size_t)B * H * T * T, no = (size_t)B * T * C;
    // q, k, v offsets in the buffer and row strides
    Bf16Heads a = {B, T, H, Hkv, hs, planar ? C : W, planar ? Hkv * hs : W};
    size_t qo = 0, ko = planar ? (size_t)B * T * C : (size_t)C, vo = ko + (planar ? (size_t)B * T * Hkv * hs : (size_t)Hkv * hs);
    bf16 *qkv = xcalloc(nq, 2), *P = xcalloc(na, 2), *dS = xcalloc(na, 2), *dout = xcalloc(no, 2),
         *outh = xcalloc(no, 2);
    double *x = xcalloc(nq, 8), *p = xcalloc(na, 8), *ds = xcalloc(na, 8), *dy = xcalloc(no, 8);
    float *att = xcalloc(na, 4), *dP = xcalloc(na, 4), *dqkv = xcalloc(nq, 4), *outf = xcalloc(no, 4),
          *out = xcalloc(no, 4);
    double *want = xcalloc(na, 8), *mag = xcalloc(na, 8), *wq = xcalloc(nq, 8), *mq = xcalloc(nq, 8);
    Rng r = rng_stream(7, (uint64_t)B * 100000 + T * 1000 + H * 100 + Hkv * 10 + hs);
    fill_bf16(qkv, x, nq, &r);
    fill_bf16(P, p, na, &r);
    fill_bf16(dS, ds, na, &r);
    fill_bf16(dout, dy, no, &r);
    for (size_t i = 0; i < nq; i++) dqkv[i] = NAN;
    double scale = 1 / sqrt((double)hs);

    bf16_attention_scores(att, qkv + qo, qkv + ko, &a);
    bf16_attention_values(outf, 0, P, qkv + vo, &a);
    bf16_attention_values(outh, 1, P, qkv + vo, &a);
    floats_from_bf16(out, outh, no);
    bf16_attention_values_backward(dP, dqkv + vo, dout, P, qkv + vo, &a);
    bf16_attention_scores_backward(dqkv + qo, dqkv + ko, dS, qkv + qo, qkv + ko, &a);

    char what[200], w2[240];
    snprintf(what, sizeof what, "B %d T %d H %d Hkv %d hs %d %s", B, T, H, Hkv, hs, planar ? "planar" : "interleaved");
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int kvh = h / G;
            size_t q_at = qo + (size_t)b * T * a.ldq + h * hs, k_at = ko + (size_t)b * T * a.ldkv + kvh * hs,
                   v_at = vo + (size_t)b * T * a.ldkv + kvh * hs, sq = ((size_t)b * H + h) * T * T;
            const double *dyh = dy + (size_t)b * T * C + h * hs;
            double o[64 * 64], om[64 * 64], ok[64 * 64], okm[64 * 64];
            reference(want + sq, mag + sq, x + q_at, a.ldq, 1, x + k_at, 1, a.ldkv, T, T, hs, scale);  // scale Q K^T
            reference(o, om, p + sq, T, 1, x + v_at, a.ldkv, 1, T, hs, T, 1);                         // P V
            for (int t = 0; t < T; t++)
                for (int i = 0; i < hs; i++) {
                    size_t at = (size_t)b * T * C + (size_t)t * C + h * hs + i;
                    CHECK(fabs(outf[at] - o[t * hs + i]) <= (T + 1) * 0x1p-23 * om[t * hs + i] + 1e-30,
                          "values fp32 %s [b %d h %d t %d i %d] %.9g want %.9g", what, b, h, t, i, outf[at],
                          o[t * hs + i]);
                    // bf16 output: the fp32 result rounded once more
                    CHECK(fabs(out[at] - o[t * hs + i]) <= 0x1p-8 * fabs(o[t * hs + i]) + T * 0x1p-22 * om[t * hs + i],
                          "values bf16 %s [b %d h %d t %d i %d] %.9g want %.9g", what, b, h, t, i, out[at],
                          o[t * hs + i]);
                }
            reference(o, om, ds + sq, T, 1, x + k_at, a.ldkv, 1, T, hs, T, 1);  // dq = dS K
            for (int t = 0; t < T; t++)
                for (int i = 0; i < hs; i++) {
                    wq[q_at + (size_t)t * a.ldq + i] = o[t * hs + i];
                    mq[q_at + (size_t)t * a.ldq + i] = om[t * hs + i];
                }
            reference(ok, okm, ds + sq, 1, T, x + q_at, a.ldq, 1, T, hs, T, 1);  // dk += dS^T Q
            reference(o, om, p + sq, 1, T, dyh, C, 1, T, hs, T, 1);              // dv += P^T dout
            for (int t = 0; t < T; t++)
                for (int i = 0; i < hs; i++) {
                    size_t atk = k_at + (size_t)t * a.ldkv + i, atv = v_at + (size_t)t * a.ldkv + i;
                    if (h % G == 0) wq[atk] = mq[atk] = wq[atv] = mq[atv] = 0;
                    wq[atk] += ok[t * hs + i];
                    mq[atk] += okm[t * hs + i];
                    wq[atv] += o[t * hs + i];
                    mq[atv] += om[t * hs + i];
                }
        }
    snprintf(w2, sizeof w2, "scores %s", what);
    expect_close(w2, att, want, mag, na, hs + 1);
    for (int b = 0; b < B; b++)  // dP = dout V^T
        for (int h = 0; h < H; h++) {
            size_t sq = ((size_t)b * H + h) * T * T;
            reference(want + sq, mag + sq, dy + (size_t)b * T * C + h * hs, C, 1,
                      x + vo + (size_t)b * T * a.ldkv + (h / G) * hs, 1, a.ldkv, T, T, hs, 1);
        }
    snprintf(w2, sizeof w2, "dP %s", what);
    expect_close(w2, dP, want, mag, na, hs + 1);
    snprintf(w2, sizeof w2, "dq, dk, dv %s", what);
    expect_close(w2, dqkv, wq, mq, nq, G * T + 1);

    free(qkv); free(P); free(dS); free(dout); free(outh); free(x); free(p); free(ds); free(dy); free(att); free(dP);
    free(dqkv); free(outf); free(out); free(want); free(mag); free(wq); free(mq);
}

static void test_bf16_attention(void) {
    AttnShape shapes[] = {{2, 7, 3, 3, 5}, {2, 9, 4, 2, 6}, {1, 33, 6, 1, 16}, {3, 20, 4, 4, 32}, {2, 64, 2, 2, 64}};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        for (int planar = 0; planar < 2; planar++) check_attention(shapes[i], planar);
}

// After the prepare calls, running those shapes creates no primitive; an unprepared one is counted.
static void test_bf16_prepare(void) {
    bf16_linear_prepare(11, 13, 17, 1, 1, 1, 0);
    bf16_attention_prepare(&(Bf16Heads){2, 5, 4, 2, 8, 4 * 8, 2 * 8}, 1);
    int before = bf16_late_primitives();
    LinearShape s = {11, 13, 17};
    check_linear(s, 1, 1, 0);
    check_attention((AttnShape){2, 5, 4, 2, 8}, 1);  // its fp32 P V has the layout of dq = dS K: prepared
    CHECK(bf16_late_primitives() == before, "prepared shapes created %d primitives", bf16_late_primitives() - before);
    check_linear(s, 1, 0, 0);  // the forward without a residual was not prepared
    CHECK(bf16_late_primitives() == before + 1, "created %d primitives; want 1, the forward without a residual",
          bf16_late_primitives() - before);
}

// The same bits for 1 and 2 threads and on a rerun (what --resume's bit-identity needs), on the
// default config's qkv shapes: dweight reduces over all 4096 tokens.
static void test_bf16_thread_count_independent(void) {
    enum { N = 4096, IC = 128, OC = 384, B = 16, T = 256, H = 4, hs = 32, W = 3 * H * hs };
    bf16 *x = xcalloc((size_t)N * IC, 2), *w = xcalloc((size_t)OC * IC, 2), *g = xcalloc((size_t)N * OC, 2);
    double *scratch = xcalloc((size_t)N * OC, 8);
    Rng r = rng_stream(9, 1);
    fill_bf16(x, scratch, (size_t)N * IC, &r);
    fill_bf16(w, scratch, (size_t)OC * IC, &r);
    fill_bf16(g, scratch, (size_t)N * OC, &r);
    Bf16Heads a = {B, T, H, H, hs, W, W};
    size_t sizes[4] = {(size_t)N * OC, (size_t)N * IC, (size_t)OC * IC, (size_t)B * H * T * T};
    float *out[3][4];
    int threads[3] = {1, 2, 2};
    for (int run = 0; run < 3; run++) {
        omp_set_num_threads(threads[run]);
        for (int i = 0; i < 4; i++) out[run][i] = xcalloc(sizes[i], 4);
        bf16_linear_forward(out[run][0], NULL, x, w, NULL, N, IC, OC);
        bf16_linear_backward(out[run][1], 0, out[run][2], g, x, w, N, IC, OC);
        bf16_attention_scores(out[run][3], g, g + H * hs, &a);
    }
    omp_set_num_threads(2);
    const char *names[4] = {"forward", "dinp", "dweight", "attention scores"};
    for (int run = 1; run < 3; run++)
        for (int i = 0; i < 4; i++)
            CHECK(!memcmp(out[0][i], out[run][i], sizes[i] * 4), "%s: %d threads differ from 1 thread", names[i],
                  threads[run]);
    for (int run = 0; run < 3; run++)
        for (int i = 0; i < 4; i++) free(out[run][i]);
    free(x); free(w); free(g); free(scratch);
}

#else

static void skipped(void) { fprintf(stderr, "    skipped: built without oneDNN (install libdnnl-dev)\n"); }
static void test_bf16_linear(void) { skipped(); }
static void test_bf16_attention(void) { skipped(); }
static void test_bf16_prepare(void) { skipped(); }
static void test_bf16_thread_count_independent(void) { skipped(); }

#endif

// The whole model in bf16 against fp32: build/grad_dump runs one batch of a trained small model in
// both precisions; each tensor's bf16 gradient must agree with the fp32 one to about 1e-2 relative
// (bf16 keeps 8 significant bits: a rounding is 2^-9 relative, and the errors of a product's terms
// average out). Tensors whose fp32 gradient is roundoff (a key bias: softmax ignores a constant
// shift of a row's scores) are measured against the largest tensor gradient instead.
typedef struct { double loss; float *grads; size_t n; } Dump;

static int read_dump(const char *path, Dump *d) {
    FILE *f = fopen(path, "rb");
    int32_t h[8];
    if (!f || fread(h, sizeof h, 1, f) != 1) { if (f) fclose(f); return 0; }
    int64_t n;
    memcpy(&n, &h[6], sizeof n);
    long skip = 2L * h[2] * h[3] * 4;
    d->n = (size_t)n;
    d->grads = xcalloc(d->n, sizeof(float));
    int ok = fseek(f, skip, SEEK_CUR) == 0 && fread(&d->loss, 8, 1, f) == 1 &&
             fseek(f, (long)h[2] * h[3] * h[4] * 4, SEEK_CUR) == 0 && fread(d->grads, 4, d->n, f) == d->n;
    fclose(f);
    return ok;
}

static double norm_of(const float *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return sqrt(s);
}

#define GRAD_DIR "build/tmp/normgpt_bf16_grads"

static void test_bf16_model_gradients(void) {
    const char *why = bf16_unsupported();
    if (why) { fprintf(stderr, "    skipped: %s\n", why); return; }
    static char out[1 << 16];
    static const struct { const char *name, *overrides; } variants[] = {
        {"pre_ln", "--config configs/default.json"},
        {"llama_gqa", "--config configs/pre_rmsnorm.json --model.pos=rope --model.ffn=swiglu --model.n_kv_head=2"},
        {"recompute", "--config configs/post_ln.json --train.recompute=true"},
    };
    for (int v = 0; v < (int)(sizeof variants / sizeof *variants); v++) {
        char cmd[2048], ckpt[256], dump[2][256];
        snprintf(ckpt, sizeof ckpt, GRAD_DIR "/%s/ckpt_00000010.bin", variants[v].name);
        for (int p = 0; p < 2; p++) snprintf(dump[p], sizeof dump[p], GRAD_DIR "/%s/%s.bin", variants[v].name,
                                             p ? "bf16" : "fp32");
        snprintf(cmd, sizeof cmd, "./train %s --model.n_layer=2 --model.n_embd=64 --model.n_head=4 "
                 "--train.batch_size=4 --train.seq_len=64 --train.total_batch_tokens=256 --train.steps=10 "
                 "--train.warmup_steps=2 --eval.every=0 --sample.tokens=0 --train.threads=2 --out.dir=" GRAD_DIR "/%s --overwrite && "
                 "build/grad_dump %s %s 4 64 fp32 && build/grad_dump %s %s 4 64 bf16", variants[v].overrides,
                 variants[v].name, ckpt, dump[0], ckpt, dump[1]);
        int rc = run_command(cmd, out, sizeof out);
        CHECK(rc == 0, "%s: training or build/grad_dump failed (rc %d): %s", variants[v].name, rc, out);
        Dump d[2] = {0};
        if (rc != 0 || !read_dump(dump[0], &d[0]) || !read_dump(dump[1], &d[1]) || d[0].n != d[1].n) {
            CHECK(0, "%s: unreadable dumps", variants[v].name);
            free(d[0].grads); free(d[1].grads);
            continue;
        }
        CHECK(fabs(d[1].loss - d[0].loss) < 1e-2 * d[0].loss, "%s: loss bf16 %.6f vs fp32 %.6f", variants[v].name,
              d[1].loss, d[0].loss);
        Config cfg;
        checkpoint_read_config(ckpt, &cfg);
        config_validate(&cfg);
        GPT m;
        gpt_build_inference(&m, &cfg, 0, 0);
        double largest = 0, worst = 0;
        for (int i = 0; i < m.n_tensors; i++)
            largest = fmax(largest, norm_of(d[0].grads + m.tensors[i].offset, m.tensors[i].size));
        const char *worst_name = "";
        for (int i = 0; i < m.n_tensors; i++) {
            const ParamTensor *t = &m.tensors[i];
            const float *a = d[0].grads + t->offset, *b = d[1].grads + t->offset;
            double diff = 0;
            for (size_t j = 0; j < t->size; j++) diff += ((double)b[j] - a[j]) * ((double)b[j] - a[j]);
            double rel = sqrt(diff) / fmax(norm_of(a, t->size), 1e-3 * largest);
            if (rel > worst) { worst = rel; worst_name = t->name; }
        }
        printf("    %s: loss fp32 %.6f bf16 %.6f; worst gradient %s, %.2e relative\n", variants[v].name, d[0].loss,
               d[1].loss, worst_name, worst);
        CHECK(worst < 2e-2, "%s: bf16 gradient of %s is %.3g relative off the fp32 one", variants[v].name, worst_name,
              worst);
        gpt_free(&m);
        free(d[0].grads); free(d[1].grads);
    }
    run_command("rm -rf " GRAD_DIR, out, sizeof out);
}

const TestCase bf16_tests[] = {
    {"bf16_rounding", test_bf16_rounding},
    {"bf16_cast_matches_scalar", test_bf16_cast_matches_scalar},
    {"bf16_cast_with_column_sums", test_bf16_cast_with_column_sums},
    {"bf16_linear", test_bf16_linear},
    {"bf16_attention", test_bf16_attention},
    {"bf16_prepare", test_bf16_prepare},
    {"bf16_thread_count_independent", test_bf16_thread_count_independent},
    {"bf16_model_gradients_match_fp32", test_bf16_model_gradients},
    {NULL, NULL},
};
