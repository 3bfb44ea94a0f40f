// The KV-cached decoder against the full forward, sampling, and ./train --generate.
#include "generate.h"
#include "sample.h"
#include "testing.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

static const char *METHODS[] = {"pre_ln", "post_ln", "mix_ln", "hybridnorm", "hybridnorm_star", "pre_rmsnorm",
                                "pre_rmsnorm_centered", "pre_crmsnorm", "dyt", "bhyt", "bhyt_star", "peri_ln",
                                "deepnorm", "lns", "derf", "pre_ln_qknorm"};

#define GEN_B 2
#define GEN_T 12

// A config at a test size: its block table, norms and options kept; with `llama`, also RoPE,
// grouped-query attention, SwiGLU, an untied head with a bias, no biases elsewhere, and (BHyT) an
// exact BHyT final norm.
static Config test_size(Config c, int llama) {
    c.vocab_size = 96;
    c.block_size = GEN_T;
    c.seq_len = GEN_T;
    c.batch_size = GEN_B;
    c.total_batch_tokens = GEN_B * GEN_T;
    c.n_embd = 32;
    c.n_head = 4;
    if (llama) {
        snprintf(c.pos, sizeof c.pos, "rope");
        snprintf(c.ffn, sizeof c.ffn, "swiglu");
        c.n_kv_head = 2;
        c.tie_embeddings = 0;
        c.head_bias = 1;
        c.bias = 0;
        if (!strcmp(c.norm, "bhyt")) { snprintf(c.final_norm, sizeof c.final_norm, "bhyt"); c.bhyt_final_lambda = 1.5; }
    }
    config_validate(&c);
    return c;
}

// A method's small config (configs/NAME.json) at a test size.
static Config method_config(const char *name, int llama) {
    char path[256];
    Config c;
    config_defaults(&c);
    snprintf(path, sizeof path, "configs/%s.json", name);
    config_load_file(&c, path);
    return test_size(c, llama);
}

// A model away from its init, as after some training: every parameter perturbed (gains != 1,
// biases != 0, scalars moved), BHyT's c refreshed from the perturbed weights.
static void build_perturbed(GPT *m, const Config *c, uint64_t seed) {
    gpt_build(m, c);
    gpt_init(m, seed);
    Rng r = rng_stream(seed, 300);
    for (size_t i = 0; i < m->n_params; i++) m->params[i] += (real)(0.1 * rng_normal(&r));
    gpt_refresh_bhyt(m);
}

// Largest |decoded - full forward| logit over every position of GEN_B sequences, relative to the
// largest |logit|: decoded in lockstep (batch GEN_B, the matmuls on several rows) and one at a time
// (batch 1, the matrix-vector path).
static double decoder_vs_forward(GPT *m, uint64_t seed) {
    Rng r = rng_stream(seed, 301);
    int inputs[GEN_B * GEN_T], step_tokens[GEN_B];
    for (int i = 0; i < GEN_B * GEN_T; i++) inputs[i] = (int)rng_below(&r, (uint64_t)m->V);
    gpt_forward(m, inputs, NULL, GEN_B, GEN_T);
    double worst = 0, largest = 0;
    static const int batches[] = {GEN_B, 1};
    for (int k = 0; k < 2; k++) {
        int batch = batches[k];
        Decoder d;
        decoder_init(&d, m, batch);
        for (int first = 0; first < GEN_B; first += batch) {
            decoder_reset(&d);
            for (int t = 0; t < GEN_T; t++) {
                for (int b = 0; b < batch; b++) step_tokens[b] = inputs[(first + b) * GEN_T + t];
                const real *logits = decoder_step(&d, step_tokens);
                for (int b = 0; b < batch; b++) {
                    const real *full = m->fwd.logits + ((size_t)(first + b) * GEN_T + t) * m->V;
                    for (int v = 0; v < m->V; v++) {
                        worst = fmax(worst, fabs(logits[(size_t)b * m->V + v] - full[v]));
                        largest = fmax(largest, fabs(full[v]));
                    }
                }
            }
        }
        decoder_free(&d);
    }
    return worst / largest;
}

// The one block forward in its two attention modes: the cached decoder's logits equal the full
// forward's, for every method's config and every placement x norm of the tables, each also with
// the LLaMA options.
static void test_decoder_equals_forward(void) {
    for (size_t i = 0; i < sizeof METHODS / sizeof *METHODS; i++) {
        for (int llama = 0; llama < 2; llama++) {
            Config c = method_config(METHODS[i], llama);
            if (llama && c.center_stream) continue;  // checked below: center_stream with untied, rope, gqa
            GPT m;
            build_perturbed(&m, &c, 11 + i);
            double diff = decoder_vs_forward(&m, 11 + i);
            CHECK(diff < 1e-10, "%s%s: cached logits differ from the full forward by %.3e (relative)", METHODS[i],
                  llama ? " (rope, gqa, swiglu, untied, head bias)" : "", diff);
            gpt_free(&m);
        }
    }
    BlockSpec specs[PLACEMENTS_COUNT * NORM_KINDS];
    int n = block_matrix(specs, PLACEMENTS_COUNT * NORM_KINDS);
    for (int i = 0; i < n; i++) {
        for (int llama = 0; llama < 2; llama++) {
            Config c;
            config_defaults(&c);
            c.n_layer = 3;
            use_block(&c, specs[i]);
            c = test_size(c, llama);
            GPT m;
            build_perturbed(&m, &c, 31 + i);
            double diff = decoder_vs_forward(&m, 31 + i);
            CHECK(diff < 1e-10, "%s/%s%s: cached logits differ from the full forward by %.3e (relative)",
                  PLACEMENTS[specs[i].placement].name, NORM_OPS[specs[i].norm].name,
                  llama ? " (rope, gqa, swiglu, untied, head bias)" : "", diff);
            gpt_free(&m);
        }
    }
    // The zero-mean stream with the LLaMA options it can take (its biases make RMSNorm a LayerNorm).
    Config c = method_config("pre_rmsnorm_centered", 0);
    snprintf(c.pos, sizeof c.pos, "rope");
    snprintf(c.ffn, sizeof c.ffn, "swiglu");
    c.n_kv_head = 1;
    c.tie_embeddings = 0;
    c.head_bias = 1;
    config_validate(&c);
    GPT m;
    build_perturbed(&m, &c, 5);
    double diff = decoder_vs_forward(&m, 5);
    CHECK(diff < 1e-10, "centered stream with rope, gqa: relative difference %.3e", diff);
    gpt_free(&m);
    // LNS and the embedding norm on the new placements (the block matrix above has them without).
    static const char *lns_embed[][2] = {{"peri", "dyt"}, {"deepnorm", "rmsnorm"}, {"post", "layernorm"}};
    for (int i = 0; i < 3; i++) {
        for (int llama = 0; llama < 2; llama++) {
            c = method_config("pre_ln", 0);
            c.n_blocks = 0;
            snprintf(c.placement, sizeof c.placement, "%s", lns_embed[i][0]);
            snprintf(c.norm, sizeof c.norm, "%s", lns_embed[i][1]);
            c.lns = c.embed_norm = 1;
            c = test_size(c, llama);
            build_perturbed(&m, &c, 61 + i);
            diff = decoder_vs_forward(&m, 61 + i);
            CHECK(diff < 1e-10, "%s/%s + lns + embed_norm%s: relative difference %.3e", lns_embed[i][0],
                  lns_embed[i][1], llama ? " (rope, gqa, swiglu, untied)" : "", diff);
            gpt_free(&m);
        }
    }
}

// Inference builds hold the same parameters without gradients: weights only runs the decoder,
// with (B,T) activations the full forward, each giving the training build's logits exactly.
static void test_inference_builds(void) {
    static const char *methods[] = {"bhyt", "mix_ln", "hybridnorm_star", "pre_crmsnorm"};
    for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) {
        Config c = method_config(methods[i], 1);
        GPT trained, weights, probe;
        build_perturbed(&trained, &c, 41);
        gpt_build_inference(&weights, &c, 0, 0);
        gpt_build_inference(&probe, &c, GEN_B, GEN_T);
        CHECK(weights.n_params == trained.n_params && !weights.grads && !probe.grads && !weights.fwd.logits &&
              weights.n_acts < probe.n_acts && probe.n_acts < trained.n_acts,
              "%s: inference builds: %zu params, acts %zu / %zu / %zu", methods[i], weights.n_params, weights.n_acts,
              probe.n_acts, trained.n_acts);
        memcpy(weights.params, trained.params, trained.n_params * sizeof(real));
        memcpy(probe.params, trained.params, trained.n_params * sizeof(real));
        CHECK(decoder_vs_forward(&trained, 41) < 1e-10, "%s: training build's decoder", methods[i]);
        // decoder_vs_forward compares a model's decoder with its own forward: the weights-only
        // build's decoder against the training build's forward instead.
        Rng r = rng_stream(41, 301);
        int inputs[GEN_B * GEN_T];
        for (int k = 0; k < GEN_B * GEN_T; k++) inputs[k] = (int)rng_below(&r, (uint64_t)trained.V);
        gpt_forward(&trained, inputs, NULL, GEN_B, GEN_T);
        gpt_forward(&probe, inputs, NULL, GEN_B, GEN_T);
        size_t NV = (size_t)GEN_B * GEN_T * trained.V;
        CHECK(!memcmp(probe.fwd.logits, trained.fwd.logits, NV * sizeof(real)), "%s: forward-only build's logits",
              methods[i]);
        Decoder d;
        decoder_init(&d, &weights, GEN_B);
        double worst = 0;
        for (int t = 0; t < GEN_T; t++) {
            int step[GEN_B];
            for (int b = 0; b < GEN_B; b++) step[b] = inputs[b * GEN_T + t];
            const real *logits = decoder_step(&d, step);
            for (int b = 0; b < GEN_B; b++)
                for (int v = 0; v < trained.V; v++)
                    worst = fmax(worst, fabs(logits[(size_t)b * trained.V + v] -
                                             trained.fwd.logits[((size_t)b * GEN_T + t) * trained.V + v]));
        }
        CHECK(worst < 1e-10, "%s: weights-only build's decoder differs by %.3e", methods[i], worst);
        decoder_free(&d);
        gpt_free(&trained);
        gpt_free(&weights);
        gpt_free(&probe);
    }
}

// A Mix-LN-like table with every placement and the DyT embedding scale in one model.
static void test_decoder_mixed_table(void) {
    static const char *places[] = {"post", "hybrid_star", "hybrid", "pre", "bhyt", "bhyt_star", "post"};
    static const char *norms[] = {"layernorm", "rmsnorm", "dyt", "bhyt", "bhyt", "bhyt", "dyt"};
    Config c = method_config("pre_ln", 0);
    c.n_layer = 7;
    c.n_blocks = 7;
    for (int l = 0; l < 7; l++)
        c.blocks[l] = (BlockSpec){(Placement)placement_by_name(places[l]), norm_by_name(norms[l]), 0};
    c.embed_scale = 1;
    snprintf(c.final_norm, sizeof c.final_norm, "none");
    config_validate(&c);
    GPT m;
    build_perturbed(&m, &c, 9);
    double diff = decoder_vs_forward(&m, 9);
    CHECK(diff < 1e-10, "mixed block table: relative difference %.3e", diff);
    gpt_free(&m);
}

static int argmax(const real *row, int n) {
    int best = 0;
    for (int v = 1; v < n; v++) if (row[v] > row[best]) best = v;
    return best;
}

// The decoder of `c` (validated) against its full forward, its parameters perturbed from `seed`.
static void check_decoder(const Config *c, uint64_t seed, const char *label) {
    GPT m;
    build_perturbed(&m, c, seed);
    double diff = decoder_vs_forward(&m, seed);
    CHECK(diff < 1e-10, "%s: cached logits differ from the full forward by %.3e (relative)", label, diff);
    gpt_free(&m);
}

// QK-norm (keys cached after it and RoPE) in both modes, with and without gains, on the placements it
// stacks with (HybridNorm's QKV-norm, BHyT's shared statistic, the zero-mean and compressed streams),
// per block, each with the LLaMA options.
static void test_decoder_qk_norm(void) {
    static const struct { const char *method, *mode; int affine; } cases[] = {
        {"pre_ln", "head", 1}, {"hybridnorm_star", "full", 1}, {"bhyt", "head", 0}, {"derf", "full", 0},
        {"pre_rmsnorm_centered", "head", 1}, {"pre_crmsnorm", "full", 1}, {"post_ln", "head", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        for (int llama = 0; llama < 2; llama++) {
            Config c;
            config_defaults(&c);
            snprintf(c.qk_norm_mode, sizeof c.qk_norm_mode, "%s", cases[i].mode);
            c.qk_norm_affine = cases[i].affine;
            char path[256];
            snprintf(path, sizeof path, "configs/%s.json", cases[i].method);
            config_load_file(&c, path);
            c.qk_norm = 1;
            // The zero-mean stream takes RoPE and GQA but not the rest of the LLaMA options (its biases).
            if (llama && c.center_stream) {
                c.n_kv_head = 2;
                snprintf(c.pos, sizeof c.pos, "rope");
            }
            c = test_size(c, llama && !c.center_stream);
            char label[128];
            snprintf(label, sizeof label, "%s + qk-norm %s%s%s", cases[i].method, cases[i].mode,
                     cases[i].affine ? "" : " (no gain)", llama ? " (llama options)" : "");
            check_decoder(&c, 51 + i, label);
        }
    }
    Config c = method_config("pre_ln", 1);
    c.n_layer = 3;
    config_apply_override(&c, "model.blocks=[{\"placement\":\"post\",\"norm\":\"derf\",\"qk_norm\":true},"
                              "{\"placement\":\"hybrid_star\",\"norm\":\"rmsnorm\"},"
                              "{\"placement\":\"bhyt\",\"norm\":\"bhyt\",\"qk_norm\":true}]");
    config_validate(&c);
    check_decoder(&c, 61, "per-block qk-norm table");
}

// Greedy generation past the cache: each token must be the argmax of the full forward over what
// the cache holds — the window since the last restart, which keeps the last block_size / 2 tokens.
static void test_greedy_restart_matches_forward(void) {
    Config c = method_config("bhyt", 1);
    GPT m;
    build_perturbed(&m, &c, 21);
    Decoder d;
    decoder_init(&d, &m, GEN_B);
    enum { N = 3 * GEN_T + 5 };
    int seqs[GEN_B][N + 1];
    for (int b = 0; b < GEN_B; b++) seqs[b][0] = 3 + b;
    Rng r = rng_stream(1, 1);
    sample_tokens(&d, &seqs[0][0], 1, N, 0, 0, &r);
    int keep = GEN_T / 2, mismatches = 0, restarts = 0;
    for (int b = 0; b < GEN_B; b++) {
        int w0 = 0;  // first column in the cache
        for (int i = 0; i < N; i++) {  // step i feeds column i
            if (i - w0 == GEN_T) { w0 = i - keep + 1; restarts += b == 0; }
            int T = i - w0 + 1;
            gpt_forward(&m, &seqs[b][w0], NULL, 1, T);
            mismatches += argmax(m.fwd.logits + (size_t)(T - 1) * m.V, m.V) != seqs[b][i + 1];
        }
    }
    CHECK(restarts == 5, "expected 5 restarts in %d tokens with a cache of %d, counted %d", N, GEN_T, restarts);
    CHECK(mismatches == 0, "%d greedy tokens differ from the full forward's argmax", mismatches);
    decoder_free(&d);
    gpt_free(&m);
}

// A prompt is fed through the decoder and kept: greedy tokens after it are the full forward's argmax
// over the prompt and what followed it.
static void test_prompt_then_greedy(void) {
    Config c = method_config("pre_ln", 0);
    GPT m;
    build_perturbed(&m, &c, 8);
    Decoder d;
    decoder_init(&d, &m, GEN_B);
    enum { P = 5, N = 6 };
    int seqs[GEN_B][P + N];
    for (int b = 0; b < GEN_B; b++)
        for (int i = 0; i < P; i++) seqs[b][i] = (7 * i + 3 * b + 1) % m.V;
    int given[GEN_B][P];
    for (int b = 0; b < GEN_B; b++) memcpy(given[b], seqs[b], sizeof given[b]);
    Rng r = rng_stream(1, 1);
    sample_tokens(&d, &seqs[0][0], P, N, 0, 0, &r);
    int mismatches = 0;
    for (int b = 0; b < GEN_B; b++) {
        CHECK(!memcmp(given[b], seqs[b], sizeof given[b]), "sequence %d: the prompt was overwritten", b);
        for (int i = P - 1; i + 1 < P + N; i++) {
            gpt_forward(&m, seqs[b], NULL, 1, i + 1);
            mismatches += argmax(m.fwd.logits + (size_t)i * m.V, m.V) != seqs[b][i + 1];
        }
    }
    CHECK(mismatches == 0, "%d greedy tokens after the prompt differ from the full forward's argmax", mismatches);
    decoder_free(&d);
    gpt_free(&m);
}

static void test_sampling_deterministic(void) {
    Config c = method_config("dyt", 0);
    GPT m;
    build_perturbed(&m, &c, 4);
    Decoder d;
    decoder_init(&d, &m, GEN_B);
    enum { N = 40 };
    int a[GEN_B][N + 1], b2[GEN_B][N + 1], other[GEN_B][N + 1];
    a[0][0] = b2[0][0] = other[0][0] = 1;
    a[1][0] = b2[1][0] = other[1][0] = 2;
    Rng r1 = rng_stream(99, 2), r2 = rng_stream(99, 2), r3 = rng_stream(100, 2);
    sample_tokens(&d, &a[0][0], 1, N, 1.0, 20, &r1);
    sample_tokens(&d, &b2[0][0], 1, N, 1.0, 20, &r2);
    sample_tokens(&d, &other[0][0], 1, N, 1.0, 20, &r3);
    CHECK(!memcmp(a, b2, sizeof a), "two generations with the same seed differ");
    CHECK(memcmp(a, other, sizeof a) != 0, "generations with different seeds are identical");
    CHECK(r1.state == r2.state, "the sampling RNG advanced differently");
    decoder_free(&d);
    gpt_free(&m);
}

static int compare_desc(const void *x, const void *y) {
    real a = *(const real *)x, b = *(const real *)y;
    return (a < b) - (a > b);
}

// top_k draws only among the k largest logits and reaches each of them; temperature 0 is argmax.
// Random logits with a tie, and an ascending ramp (every value enters the top-k heap).
static void test_sample_logits_top_k(void) {
    enum { V = 500, K = 7, DRAWS = 4000 };
    real logits[V], sorted[V], scratch[V];
    Rng r = rng_stream(3, 3);
    for (int layout = 0; layout < 2; layout++) {
        if (layout == 0) {
            fill_normal(logits, V, 0.5, &r);
            logits[17] = logits[18];
        } else {
            for (int i = 0; i < V; i++) logits[i] = (real)(0.01 * i);
        }
        memcpy(sorted, logits, sizeof logits);
        qsort(sorted, V, sizeof(real), compare_desc);
        int counts[V] = {0}, outside = 0, reached = 0, best = 0;
        for (int i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
        for (int n = 0; n < DRAWS; n++) counts[sample_logits(logits, V, 1.0, K, &r, scratch)]++;
        for (int i = 0; i < V; i++) {
            int in_top = logits[i] >= sorted[K - 1];
            outside += !in_top && counts[i];
            reached += in_top && counts[i];
        }
        CHECK(outside == 0, "layout %d: %d ids outside the top %d were drawn", layout, outside, K);
        CHECK(reached == K, "layout %d: %d of the top %d ids were drawn in %d draws", layout, reached, K, DRAWS);
        CHECK(sample_logits(logits, V, 0, K, &r, scratch) == best, "layout %d: temperature 0 is not the argmax",
              layout);
    }
}

static char out[1 << 16];

// The speed line of ./train --generate, parsed; 0 when missing.
static double gen_tokens_per_s(const char *text, double *tokens) {
    const char *line = strstr(text, "{\"gen_tokens\"");
    cJSON *o = line ? cJSON_Parse(line) : NULL;
    const cJSON *rate = cJSON_GetObjectItemCaseSensitive(o, "gen_tokens_per_s");
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, "gen_tokens");
    double value = cJSON_IsNumber(rate) ? rate->valuedouble : 0;
    *tokens = cJSON_IsNumber(n) ? n->valuedouble : 0;
    cJSON_Delete(o);
    return value;
}

#define GEN_SMALL "--model.n_layer=2 --model.n_embd=64 --model.block_size=32 --train.seq_len=32 --train.threads=2"

static void test_generate_command(void) {
    static char first[1 << 16];
    double tokens;
    // From a config: a model initialized from train.seed; 70 tokens run past the 32-token cache.
    int rc = run_command("./train --generate configs/bhyt.json --tokens 70 --batch 2 " GEN_SMALL, first, sizeof first);
    CHECK(rc == 0 && gen_tokens_per_s(first, &tokens) > 0 && tokens == 140, "--generate from a config: rc %d: %s", rc,
          first);
    rc = run_command("./train --generate configs/bhyt.json --tokens 70 --batch 2 " GEN_SMALL, out, sizeof out);
    const char *a = strstr(first, "---- sequence 0"), *b = strstr(out, "---- sequence 0");
    const char *a_end = a ? strstr(a, "{\"gen_tokens\"") : NULL, *b_end = b ? strstr(b, "{\"gen_tokens\"") : NULL;
    CHECK(rc == 0 && a_end && b_end && a_end - a == b_end - b && !memcmp(a, b, a_end - a),
          "two runs with one seed printed different text:\n%s\n%s", first, out);
    // From a checkpoint of a short run.
    const char *dir = "build/tmp/normgpt_gen";
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "./train --config configs/pre_rmsnorm.json " GEN_SMALL " --train.batch_size=4 "
             "--train.total_batch_tokens=128 --train.steps=3 --train.warmup_steps=1 --eval.every=0 --sample.tokens=8 --out.dir=%s --overwrite "
             "&& ./train --generate %s/ckpt_00000003.bin --tokens 20 --sample.temperature=0", dir, dir);
    rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 0 && gen_tokens_per_s(out, &tokens) > 0 && tokens == 20 && strstr(out, "(checkpoint)"),
          "--generate from a checkpoint: rc %d: %s", rc, out);
    snprintf(cmd, sizeof cmd, "./train --generate %s/ckpt_00000003.bin --model.n_layer=3", dir);
    rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 2 && strstr(out, "--model.n_layer=3"), "model override of a checkpoint: rc %d: %s", rc, out);
    rc = run_command("./train --generate configs/bhyt.json --tokens 0", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "--tokens"), "--tokens 0: rc %d: %s", rc, out);
    rc = run_command("./train --config configs/bhyt.json --batch 2", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "--batch"), "--batch without --generate: rc %d: %s", rc, out);
    // A run directory means its newest valid checkpoint; a prompt from the command line or a file.
    snprintf(cmd, sizeof cmd, "./train --generate %s --prompt 'The jury said' --tokens 6 --batch 3 "
             "--sample.temperature=0", dir);
    rc = run_command(cmd, out, sizeof out);
    int seq_lines = 0;
    for (const char *p = out; (p = strstr(p, "---- sequence ")); p++) seq_lines += !strncmp(strchr(p, '\n') + 1, "The jury said", 13);
    CHECK(rc == 0 && strstr(out, "ckpt_00000003.bin (checkpoint)") && strstr(out, "after a prompt of ") &&
          strstr(out, "\"prompt_tokens\":") && !strstr(out, "\"prompt_tokens\":0,") && seq_lines == 3,
          "--generate RUN_DIR --prompt: rc %d: %s", rc, out);
    static char from_text[1 << 16];
    memcpy(from_text, out, sizeof from_text);
    snprintf(cmd, sizeof cmd, "printf 'The jury said\\n' > %s/prompt.txt && ./train --generate=%s --prompt-file %s/prompt.txt "
             "--tokens=6 --batch 3 --sample.temperature=0", dir, dir, dir);
    rc = run_command(cmd, out, sizeof out);
    a = strstr(from_text, "---- sequence 0"), b = strstr(out, "---- sequence 0");
    a_end = a ? strstr(a, "{\"gen_tokens\"") : NULL, b_end = b ? strstr(b, "{\"gen_tokens\"") : NULL;
    CHECK(rc == 0 && a_end && b_end && a_end - a == b_end - b && !memcmp(a, b, a_end - a),
          "--prompt-file differs from --prompt: rc %d: %s", rc, out);
    snprintf(cmd, sizeof cmd, "./train --generate %s --prompt 'a b c d e f g h i j k l m n o p q r s t u v w x y z a b c d e f g h i j k l m n o p q r s t u v w x y z'", dir);
    rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 2 && strstr(out, "--prompt: the prompt is") && strstr(out, "model.block_size = 32"),
          "prompt longer than block_size: rc %d: %s", rc, out);
    snprintf(cmd, sizeof cmd, "./train --generate %s --prompt a --prompt-file %s/prompt.txt", dir, dir);
    CHECK(run_command(cmd, out, sizeof out) == 2 && strstr(out, "not both"), "both prompts: %s", out);
    rc = run_command("./train --generate configs/bhyt.json --prompt-file build/tmp/normgpt_no_prompt.txt", out, sizeof out);
    CHECK(rc == 1 && strstr(out, "build/tmp/normgpt_no_prompt.txt"), "missing prompt file: rc %d: %s", rc, out);
    rc = run_command("./train --config configs/bhyt.json --prompt hello", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "--prompt"), "--prompt without --generate: rc %d: %s", rc, out);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    run_command(cmd, out, sizeof out);
}

const TestCase generate_tests[] = {
    {"generate: block forward cached = full, every method and placement x norm", test_decoder_equals_forward},
    {"generate: cached logits = forward, mixed table", test_decoder_mixed_table},
    {"generate: cached logits = forward, qk-norm", test_decoder_qk_norm},
    {"generate: inference builds (weights only, forward only)", test_inference_builds},
    {"generate: greedy past the cache = forward", test_greedy_restart_matches_forward},
    {"generate: sampling is deterministic per seed", test_sampling_deterministic},
    {"generate: a prompt is fed, then greedy = forward", test_prompt_then_greedy},
    {"generate: top-k and greedy sampling", test_sample_logits_top_k},
    {"generate: ./train --generate", test_generate_command},
    {NULL, NULL},
};
