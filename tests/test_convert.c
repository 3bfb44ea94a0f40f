// Converting a Pre-LN model into Pre-RMSNorm and Pre-CRMSNorm (convert.c), in double precision.
#include "convert.h"
#include "testing.h"
#include <math.h>
#include <string.h>

static void perturb_norm(const Norm *nm, int d, Rng *r) {
    for (int i = 0; i < d; i++) {
        nm->weight[i] = (real)(1 + 0.5 * rng_normal(r));
        if (nm->bias) nm->bias[i] = (real)(0.5 * rng_normal(r));
    }
}

// A Pre-LN model that looks trained: random weights and biases, every LayerNorm gain away from 1 and
// bias away from 0, and embeddings with a common offset, so the stream's mean is far from zero.
static void randomize(GPT *m, uint64_t seed) {
    gpt_init(m, seed);
    Rng r = rng_stream(seed, 400);
    for (size_t i = 0; i < m->n_params; i++) m->params[i] += (real)(0.1 * rng_normal(&r));
    for (int l = 0; l < m->L; l++) {
        perturb_norm(&m->blocks[l].n1, m->C, &r);
        perturb_norm(&m->blocks[l].n2, m->C, &r);
    }
    perturb_norm(&m->lnf, m->C, &r);
    for (size_t i = 0; i < (size_t)m->V * m->C; i++) m->wte[i] += 1;
    if (m->wpe)
        for (size_t i = 0; i < (size_t)m->maxT * m->C; i++) m->wpe[i] -= 0.5;
}

// The largest |mean| of a row of x (N, C), relative to the largest root mean square of a row.
static double mean_to_rms(const real *x, int N, int C) {
    double worst_mean = 0, worst_rms = 0;
    for (int n = 0; n < N; n++) {
        double sum = 0, sq = 0;
        for (int c = 0; c < C; c++) {
            sum += x[(size_t)n * C + c];
            sq += x[(size_t)n * C + c] * x[(size_t)n * C + c];
        }
        worst_mean = fmax(worst_mean, fabs(sum / C));
        worst_rms = fmax(worst_rms, sqrt(sq / C));
    }
    return worst_mean / worst_rms;
}

// The same over everything the last forward wrote into the residual stream.
static double stream_mean_to_rms(const GPT *m, int N) {
    double worst = mean_to_rms(m->fwd.encoded, N, m->S);
    for (int l = 0; l < m->L; l++)
        worst = fmax(worst, fmax(mean_to_rms(m->fwd.blocks[l].res_attn, N, m->S), mean_to_rms(m->fwd.blocks[l].res_ffn, N, m->S)));
    return worst;
}

static void check_conversion(Config c, const char *label) {
    config_validate(&c);
    CHECK(convert_unsupported(&c) == NULL, "%s: a Pre-LN config refused: %s", label, convert_unsupported(&c));
    GPT src;
    gpt_build(&src, &c);
    randomize(&src, 21);
    enum { B = 2, T = 5 };
    int inputs[B * T];
    Rng r = rng_stream(21, 401);
    for (int i = 0; i < B * T; i++) inputs[i] = (int)rng_below(&r, c.vocab_size);
    static const char *kinds[] = {"rmsnorm", "crmsnorm"};
    for (int k = 0; k < 2; k++) {
        Config out;
        GPT dst;
        convert_model(&src, &c, (ConvertKind)k, &dst, &out);
        double diff = max_rel_logit_diff(&src, &dst, inputs, B, T);
        CHECK(diff < 1e-9, "%s -> %s: logits differ by %.3g relative", label, kinds[k], diff);
        CHECK(!strcmp(out.final_norm, kinds[k]) && !strcmp(NORM_OPS[out.blocks[c.n_layer - 1].norm].name, kinds[k]) &&
              !out.tie_embeddings && out.head_bias == (c.bias || c.head_bias) && !out.center_stream,
              "%s -> %s: converted config", label, kinds[k]);
        CHECK(dst.S == (k ? c.n_embd - 1 : c.n_embd), "%s -> %s: stream width %d", label, kinds[k], dst.S);
        if (k == CONVERT_RMSNORM) {
            double before = stream_mean_to_rms(&src, B * T), after = stream_mean_to_rms(&dst, B * T);
            CHECK(before > 0.1, "%s: the Pre-LN stream should have a large mean (mean/rms %.3g)", label, before);
            CHECK(after < 1e-12, "%s -> rmsnorm: stream not zero-mean (mean/rms %.3g)", label, after);
        }
        gpt_free(&dst);
    }
    gpt_free(&src);
}

static void test_convert_bias_tied(void) { check_conversion(tiny_config(1, 1), "bias, tied"); }
static void test_convert_bias_untied(void) { check_conversion(tiny_config(1, 0), "bias, untied"); }
static void test_convert_no_bias(void) { check_conversion(tiny_config(0, 1), "no bias, tied"); }

static void test_convert_options(void) {
    Config c = tiny_config(0, 0);
    snprintf(c.ffn, sizeof c.ffn, "swiglu");
    c.ffn_hidden = 12;
    snprintf(c.pos, sizeof c.pos, "rope");
    c.n_head = 4;
    c.n_kv_head = 2;
    c.embed_scale = 1;
    c.head_bias = 1;
    check_conversion(c, "swiglu, rope, gqa, embed scale, head bias");
    c = tiny_config(1, 1);
    c.n_blocks = 0;  // re-expanded from the preset, with model.qk_norm
    c.qk_norm = 1;
    snprintf(c.qk_norm_mode, sizeof c.qk_norm_mode, "full");
    check_conversion(c, "qk-norm (full)");
}

static void test_convert_refuses_other_models(void) {
    static const char *cases[][3] = {  // placement, norm, final norm -> expected phrase
        {"post", "layernorm", "block 0 is post/layernorm"},
        {"pre", "rmsnorm", "block 0 is pre/rmsnorm"},
        {"pre", "layernorm", "the final norm is rmsnorm"},
    };
    for (int i = 0; i < 3; i++) {
        Config c = tiny_config(1, 1);
        use_preset(&c, cases[i][0], cases[i][1], "rmsnorm");
        config_validate(&c);
        const char *why = convert_unsupported(&c);
        CHECK(why && strstr(why, cases[i][2]), "%s/%s: got '%s'", cases[i][0], cases[i][1], why ? why : "(accepted)");
    }
}

const TestCase convert_tests[] = {
    {"convert pre-ln, bias, tied: same logits", test_convert_bias_tied},
    {"convert pre-ln, bias, untied: same logits", test_convert_bias_untied},
    {"convert pre-ln, no bias: same logits", test_convert_no_bias},
    {"convert pre-ln, architecture options", test_convert_options},
    {"convert refuses models that are not pre-ln", test_convert_refuses_other_models},
    {NULL, NULL},
};
