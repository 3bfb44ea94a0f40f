// Diagnostics and the layer-removal probe: each logged number against the same quantity computed a
// second, independent way; a skipped block against a model built without it; the CLI, the compare
// runner and the plot script end to end on tiny runs.
#include "diagnostics.h"
#include "model.h"
#include "testing.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

#define B_TEST 2
#define T_TEST 5

static void random_tokens(int *x, int n, int V, Rng *r) {
    for (int i = 0; i < n; i++) x[i] = (int)rng_below(r, (uint64_t)V);
}

// Build c, initialize it, run one forward and backward, and compute its diagnostics.
static void diagnose(GPT *m, Diagnostics *d, Config c) {
    config_validate(&c);
    gpt_build(m, &c);
    gpt_init(m, 3);
    Rng r = rng_stream(5, 1);
    int inputs[B_TEST * T_TEST], targets[B_TEST * T_TEST];
    random_tokens(inputs, B_TEST * T_TEST, m->V, &r);
    random_tokens(targets, B_TEST * T_TEST, m->V, &r);
    gpt_zero_grad(m);
    gpt_forward(m, inputs, targets, B_TEST, T_TEST);
    gpt_backward(m, inputs, targets, B_TEST, T_TEST, 1.0 / (B_TEST * T_TEST));
    diag_init(d, m);
    diag_compute(d, m, B_TEST, T_TEST);
}

static int close_to(double a, double b) { return fabs(a - b) <= 1e-9 * fmax(1.0, fmax(fabs(a), fabs(b))); }

// Per-block gradient norms: summed here over the tensors whose names say they belong to the block.
static void test_diag_grad_norms(void) {
    static const char *placements[] = {"pre", "post", "hybrid", "bhyt"};
    for (int p = 0; p < 4; p++) {
        Config c = tiny_config(1, 1);
        c.n_layer = 3;
        use_preset(&c, placements[p], p == 3 ? "bhyt" : "layernorm", "auto");
        GPT m;
        Diagnostics d;
        diagnose(&m, &d, c);
        for (int l = 0; l < m.L; l++) {
            char prefix[32], fc[64], proj[64];
            snprintf(prefix, sizeof prefix, "h.%d.", l);
            snprintf(fc, sizeof fc, "h.%d.mlp.fc.weight", l);
            snprintf(proj, sizeof proj, "h.%d.mlp.proj.weight", l);
            double all = 0, ffn = 0;
            for (int i = 0; i < m.n_tensors; i++) {
                const ParamTensor *t = &m.tensors[i];
                double ss = 0;
                for (size_t j = 0; j < t->size; j++) ss += m.grads[t->offset + j] * m.grads[t->offset + j];
                if (!strncmp(t->name, prefix, strlen(prefix))) all += ss;
                if (!strcmp(t->name, fc) || !strcmp(t->name, proj)) ffn += ss;
            }
            CHECK(all > 0 && close_to(d.grad_norm[l], sqrt(all)), "%s block %d: grad norm %g, from the tensors %g",
                  placements[p], l, d.grad_norm[l], sqrt(all));
            CHECK(ffn > 0 && close_to(d.ffn_grad_norm[l], sqrt(ffn)), "%s block %d: FFN grad norm %g, expected %g",
                  placements[p], l, d.ffn_grad_norm[l], sqrt(ffn));
        }
        diag_free(&d);
        gpt_free(&m);
    }
}

// RMS, variance and angle of one block, recomputed token by token from its input and output.
static void test_diag_hidden_states(void) {
    Config c = tiny_config(1, 1);
    c.n_layer = 2;
    GPT m;
    Diagnostics d;
    diagnose(&m, &d, c);
    int N = B_TEST * T_TEST, S = m.S;
    for (int l = 0; l < m.L; l++) {
        const real *x = gpt_block_input(&m, l), *y = gpt_block_input(&m, l + 1);
        double sq = 0, var = 0, angle = 0;
        for (int n = 0; n < N; n++) {
            double mean = 0, xy = 0, xx = 0, yy = 0;
            for (int i = 0; i < S; i++) mean += y[n * S + i] / S;
            for (int i = 0; i < S; i++) {
                double a = x[n * S + i], b = y[n * S + i];
                var += (b - mean) * (b - mean) / S / N;
                xy += a * b; xx += a * a; yy += b * b;
            }
            sq += yy;
            angle += acos(xy / sqrt(xx * yy)) / M_PI / N;
        }
        CHECK(close_to(d.rms[l], sqrt(sq / (N * S))), "block %d rms %g vs %g", l, d.rms[l], sqrt(sq / (N * S)));
        CHECK(close_to(d.var[l], var), "block %d var %g vs %g", l, d.var[l], var);
        CHECK(close_to(d.angle[l], angle) && angle > 0 && angle < 1, "block %d angle %g vs %g", l, d.angle[l], angle);
        CHECK(isnan(d.scale1[l]) && isnan(d.sat1[l]) && isnan(d.ms_approx[l]), "block %d: LayerNorm has no tanh", l);
    }
    diag_free(&d);
    gpt_free(&m);
}

// Peri-LN's output-norm input RMS: the saved sublayer outputs (h = x + N1o(res_attn) confirms what
// res_attn holds) against a direct sum; NaN for a pre block.
static void test_diag_peri_out_rms(void) {
    Config c = tiny_config(1, 1);
    config_apply_override(&c, "model.blocks=[{\"placement\":\"peri\"},{\"placement\":\"pre\"}]");
    GPT m;
    Diagnostics d;
    diagnose(&m, &d, c);
    int N = B_TEST * T_TEST, S = m.S;
    const BlockActs *a = &m.fwd.blocks[0];
    const real *x = gpt_block_input(&m, 0);
    double attn = 0, ffn = 0, back = 0;
    for (int i = 0; i < N * S; i++) {
        attn += a->res_attn[i] * a->res_attn[i];
        ffn += a->res_ffn[i] * a->res_ffn[i];
        back = fmax(back, fabs(a->h[i] - x[i] - a->attn_out[i]));  // h = x + N1o(res_attn)
    }
    CHECK(back < 1e-12 && attn > 0 && close_to(d.out_rms1[0], sqrt(attn / (N * S))), "out_rms1 %g vs %g (h - x - y %g)",
          d.out_rms1[0], sqrt(attn / (N * S)), back);
    CHECK(close_to(d.out_rms2[0], sqrt(ffn / (N * S))), "out_rms2 %g vs %g", d.out_rms2[0], sqrt(ffn / (N * S)));
    CHECK(isnan(d.out_rms1[1]) && isnan(d.out_rms2[1]), "a pre block has no output norms");
    diag_free(&d);
    gpt_free(&m);
}

// Fraction of |v| > 0.95 in n values.
static double fraction_above(const real *v, size_t n) {
    size_t count = 0;
    for (size_t i = 0; i < n; i++) count += fabs(v[i]) > 0.95;
    return (double)count / n;
}

// At initialization the DyT/BHyT/Derf gains are 1 and biases 0, so a site's saved output IS its tanh
// or erf: the saturation the diagnostics derive from the site's input must equal the one read off the
// output (for Derf with a shift, which makes the count asymmetric in x). BHyT's assumed mean square is
// rebuilt from the site-1 statistic and the correction c lambda1^2 / kappa^2.
static void test_diag_tanh_sites(void) {
    static const char *names[] = {"dyt", "bhyt", "derf"};
    for (int kind = 0; kind < 3; kind++) {
        int bhyt = kind == 1;
        Config c = tiny_config(0, 1);
        c.n_layer = 2;
        use_preset(&c, bhyt ? "bhyt" : "pre", names[kind], "auto");
        c.dyt_alpha_attn = c.derf_alpha_attn = 60;  // large enough that some values saturate (inputs near 0.03)
        c.dyt_alpha_ffn = c.derf_alpha_other = 40;
        c.derf_shift = 0.5;
        c.bhyt_lambda1 = 25;
        c.bhyt_lambda2 = 20;
        GPT m;
        Diagnostics d;
        diagnose(&m, &d, c);
        size_t NS = (size_t)B_TEST * T_TEST * m.S;
        for (int l = 0; l < m.L; l++) {
            const BlockActs *a = &m.fwd.blocks[l];
            double s1 = fraction_above(a->n1, NS), s2 = fraction_above(a->n2, NS);
            CHECK(s1 > 0 && s1 < 1 && close_to(d.sat1[l], s1), "%s block %d: sat1 %g, from the output %g",
                  names[kind], l, d.sat1[l], s1);
            CHECK(s2 > 0 && s2 < 1 && close_to(d.sat2[l], s2), "%s block %d: sat2 %g, from the output %g",
                  names[kind], l, d.sat2[l], s2);
            CHECK(d.scale1[l] == (bhyt ? 25 : 60) && d.scale2[l] == (bhyt ? 20 : 40), "block %d scales %g %g", l,
                  d.scale1[l], d.scale2[l]);
            double shift = kind == 2 ? 0.5 : NAN;  // Derf's s; NaN at the others
            CHECK(kind == 2 ? d.shift1[l] == shift && d.shift2[l] == shift : isnan(d.shift1[l]) && isnan(d.shift2[l]),
                  "%s block %d: shifts %g %g", names[kind], l, d.shift1[l], d.shift2[l]);
            if (!bhyt) continue;
            int N = B_TEST * T_TEST, S = m.S;
            double lambda1 = m.blocks[l].n1.scale[0], kappa = m.bhyt_kappa;
            double correction = *m.blocks[l].bhyt_c * lambda1 * lambda1 / (kappa * kappa), approx = 0, actual = 0;
            for (int n = 0; n < N; n++) {
                approx += (a->n1_stats[2 * n + 1] + correction) / N;
                for (int i = 0; i < S; i++) actual += a->h[n * S + i] * a->h[n * S + i] / S / N;
            }
            CHECK(correction > 0 && fabs(d.ms_approx[l] - approx) < 1e-9 * approx,
                  "block %d: approximated mean square %g, expected %g", l, d.ms_approx[l], approx);
            CHECK(close_to(d.ms_actual[l], actual), "block %d: actual mean square %g, expected %g", l, d.ms_actual[l],
                  actual);
        }
        diag_free(&d);
        gpt_free(&m);
    }
}

// Skipping block k of an L-block model gives the logits of the (L-1)-block model built without it
// (same parameters by name, later blocks renumbered), for placements that differ per block.
static void check_skip_equals_removed(const char *placement, const char *norm, int k) {
    Config full = tiny_config(1, 1);
    full.n_layer = 4;
    use_preset(&full, placement, norm, "auto");
    full.mix_ratio = 0.5;
    config_validate(&full);
    Config cut = full;
    cut.n_layer = 3;
    cut.n_blocks = 3;
    for (int l = k; l < 3; l++) cut.blocks[l] = full.blocks[l + 1];
    config_validate(&cut);
    GPT a, b;
    gpt_build(&a, &full);
    gpt_build(&b, &cut);
    gpt_init(&a, 11);
    for (int i = 0; i < b.n_tensors; i++) {
        const ParamTensor *t = &b.tensors[i];
        char name[64];
        int l;
        const char *rest = t->name;
        if (sscanf(t->name, "h.%d.", &l) == 1) {
            rest = strchr(t->name + 2, '.') + 1;
            snprintf(name, sizeof name, "h.%d.%s", l < k ? l : l + 1, rest);
        } else {
            snprintf(name, sizeof name, "%s", t->name);
        }
        int found = 0;
        for (int j = 0; j < a.n_tensors && !found; j++) {
            if (strcmp(a.tensors[j].name, name) || a.tensors[j].size != t->size) continue;
            memcpy(b.params + t->offset, a.params + a.tensors[j].offset, t->size * sizeof(real));
            found = 1;
        }
        CHECK(found, "%s/%s: tensor %s has no counterpart %s", placement, norm, t->name, name);
    }
    Rng r = rng_stream(9, 1);
    int inputs[B_TEST * T_TEST];
    random_tokens(inputs, B_TEST * T_TEST, a.V, &r);
    // As the probe runs it: the whole model, then the deeper blocks skipped first (they overwrite the
    // stored outputs of the blocks after them, never before), then block k.
    gpt_forward(&a, inputs, NULL, B_TEST, T_TEST);
    for (int l = a.L - 1; l >= k; l--) gpt_forward_skipping(&a, l, NULL, B_TEST, T_TEST);
    gpt_forward(&b, inputs, NULL, B_TEST, T_TEST);
    double worst = 0;
    for (size_t i = 0; i < (size_t)B_TEST * T_TEST * a.V; i++) worst = fmax(worst, fabs(a.fwd.logits[i] - b.fwd.logits[i]));
    CHECK(worst < 1e-12, "%s/%s skipping block %d: logits differ from the model without it by %g", placement, norm, k,
          worst);
    gpt_forward(&a, inputs, NULL, B_TEST, T_TEST);  // and the whole model differs (the block does something)
    worst = 0;
    for (size_t i = 0; i < (size_t)B_TEST * T_TEST * a.V; i++) worst = fmax(worst, fabs(a.fwd.logits[i] - b.fwd.logits[i]));
    CHECK(worst > 1e-6, "%s/%s: block %d changes nothing (%g)", placement, norm, k, worst);
    gpt_free(&a);
    gpt_free(&b);
}

static void test_probe_skip_equals_removed(void) {
    check_skip_equals_removed("pre", "layernorm", 0);
    check_skip_equals_removed("pre", "layernorm", 3);
    check_skip_equals_removed("mix", "layernorm", 1);  // blocks post, post, pre, pre: removes a post block
    check_skip_equals_removed("hybrid_star", "rmsnorm", 0);
    check_skip_equals_removed("bhyt", "bhyt", 2);
    check_skip_equals_removed("pre", "dyt", 1);
}

// ---------------------------------------------------------------------------------------------
// End to end: a tiny run with diagnostics, the probe on it, the plot script and the compare runner.

static char out[1 << 16];

#define TINY_RUN "./train --config configs/default.json --model.n_layer=3 --model.n_embd=32 --model.n_head=2 " \
                 "--model.block_size=32 --train.seq_len=32 --train.batch_size=4 --train.total_batch_tokens=128 " \
                 "--train.steps=12 --train.warmup_steps=2 --eval.every=6 --eval.batches=2 --sample.every=0 " \
                 "--sample.tokens=0 --train.threads=1 --out.checkpoint_every=0"

static cJSON *read_json(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    static char text[1 << 16];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    return cJSON_Parse(text);
}

static void test_diag_log_and_probe_cli(void) {
    const char *dir = "build/tmp/normgpt_diag_cli";
    char cmd[4096], path[256];
    snprintf(cmd, sizeof cmd, TINY_RUN " --model.placement=bhyt --model.norm=bhyt --diag.every=4 --out.dir=%s "
                              "--overwrite", dir);
    int rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 0 && strstr(out, " 100% |"), "run with diagnostics: rc %d: %s", rc, out);
    snprintf(path, sizeof path, "%s/log.jsonl", dir);
    FILE *f = fopen(path, "r");
    char line[1 << 14];
    long steps[8];
    int n = 0, complete = 1;
    while (f && fgets(line, sizeof line, f)) {
        cJSON *o = cJSON_Parse(line);
        const cJSON *diag = cJSON_GetObjectItemCaseSensitive(o, "diag");
        if (diag && n < 8) {
            steps[n++] = (long)cJSON_GetObjectItemCaseSensitive(o, "step")->valuedouble;
            static const char *keys[] = {"grad_norm", "ffn_grad_norm", "rms", "var", "angle", "scale1", "scale2",
                                         "sat1", "sat2", "ms_approx", "ms_actual", "out_rms1", "out_rms2"};
            for (int k = 0; k < 13; k++) {
                const cJSON *v = cJSON_GetObjectItemCaseSensitive(diag, keys[k]);
                // out_rms is null for these BHyT blocks (no output norms)
                complete &= cJSON_GetArraySize(v) == 3 && (k >= 11 || cJSON_IsNumber(cJSON_GetArrayItem(v, 2)));
            }
        }
        cJSON_Delete(o);
    }
    if (f) fclose(f);
    CHECK(n == 4 && steps[0] == 1 && steps[1] == 4 && steps[3] == 12, "diag lines at steps 1, 4, 8, 12: got %d", n);
    CHECK(complete, "a diag line lacks a per-block array of 3 numbers");

    snprintf(cmd, sizeof cmd, "./train --probe %s", dir);
    rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "layer_removal.json"), "probe: rc %d: %s", rc, out);
    snprintf(path, sizeof path, "%s/layer_removal.json", dir);
    cJSON *probe = read_json(path);
    const cJSON *full = cJSON_GetObjectItemCaseSensitive(probe, "val_loss");
    const cJSON *skip = cJSON_GetObjectItemCaseSensitive(probe, "skip_val_loss");
    const cJSON *delta = cJSON_GetObjectItemCaseSensitive(probe, "delta");
    int ok = cJSON_IsNumber(full) && cJSON_GetArraySize(skip) == 3 && cJSON_GetArraySize(delta) == 3;
    for (int l = 0; ok && l < 3; l++)
        ok = fabs(cJSON_GetArrayItem(skip, l)->valuedouble - full->valuedouble -
                  cJSON_GetArrayItem(delta, l)->valuedouble) < 1e-9 && cJSON_GetArrayItem(delta, l)->valuedouble != 0;
    CHECK(ok, "layer_removal.json: %s", probe ? cJSON_PrintUnformatted(probe) : "missing");
    // The full-model loss the probe reports is the final val loss the run logged.
    snprintf(cmd, sizeof cmd, "tail -n 1 %s/log.jsonl", dir);
    run_command(cmd, out, sizeof out);
    cJSON *last = cJSON_Parse(out);
    const cJSON *vl = cJSON_GetObjectItemCaseSensitive(last, "val_loss");
    CHECK(cJSON_IsNumber(vl) && full && fabs(vl->valuedouble - full->valuedouble) < 1e-5,
          "probe's full loss differs from the logged final val loss: %s", out);
    cJSON_Delete(last);
    cJSON_Delete(probe);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    run_command(cmd, out, sizeof out);

    rc = run_command("./train --probe build/tmp/normgpt_no_such_run", out, sizeof out);
    CHECK(rc == 1 && strstr(out, "build/tmp/normgpt_no_such_run"), "probe of nothing: rc %d: %s", rc, out);
    snprintf(cmd, sizeof cmd, "./train --probe %s --eval.batches=1", dir);
    rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 2 && strstr(out, "--eval.batches=1"), "probe with an override: rc %d: %s", rc, out);
}

// scripts/compare on a spec of 2 variants x 2 depths x 2 seeds, then scripts/plot on one of its runs.
static void test_compare_and_plot_scripts(void) {
    const char *spec = "build/tmp/normgpt_compare_spec.json", *runs = "build/tmp/normgpt_compare", *figs = "build/tmp/normgpt_plot";
    char cmd[4096];
    FILE *f = fopen(spec, "w");
    if (!f) { CHECK(0, "cannot write %s", spec); return; }
    fprintf(f, "{\"out\": \"%s\", \"jobs\": 2, \"threads\": 1, \"seeds\": [1, 2],\n"
               " \"overrides\": {\"model.n_embd\": 32, \"model.n_head\": 2, \"model.block_size\": 32,\n"
               "   \"train.seq_len\": 32, \"train.batch_size\": 4, \"train.total_batch_tokens\": 128,\n"
               "   \"train.steps\": 8, \"train.warmup_steps\": 2, \"eval.every\": 4, \"eval.batches\": 2,\n"
               "   \"sample.tokens\": 0, \"diag.every\": 4, \"out.checkpoint_every\": 0},\n"
               " \"grid\": {\"model.n_layer\": [2, 3]},\n"
               " \"variants\": {\"pre_ln\": \"configs/pre_ln.json\", \"dyt\": \"configs/dyt.json\"}}\n", runs);
    fclose(f);
    snprintf(cmd, sizeof cmd, "rm -rf %s && /usr/bin/python3 scripts/compare %s", runs, spec);
    int rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "8/8 runs"), "scripts/compare: rc %d: %s", rc, out);
    snprintf(cmd, sizeof cmd, "cat %s/figures/summary.md", runs);
    rc = run_command(cmd, out, sizeof out);
    // One row per variant and depth, with a mean and a spread over the 2 seeds.
    int rows = 0;
    for (char *p = out; (p = strstr(p, "| n_layer=")); p++) rows++;
    CHECK(rc == 0 && rows == 4 && strstr(out, "| dyt | n_layer=3 |") && strstr(out, " ± ") && strstr(out, "| 2 |"),
          "compare summary (%d rows): %s", rows, out);
    static const char *figures[] = {"loss.png", "val_loss_vs_n_layer.png", "grad_norm_n_layer=3.png",
                                    "rms_n_layer=3.png", "angle_n_layer=2.png", "layer_removal_n_layer=2.png"};
    for (int i = 0; i < 6; i++) {
        snprintf(cmd, sizeof cmd, "test -s %s/figures/%s", runs, figures[i]);
        CHECK(run_command(cmd, out, sizeof out) == 0, "scripts/compare made no %s", figures[i]);
    }
    // A second call finds every run finished and only plots again.
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 scripts/compare %s", spec);
    rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "8 already finished"), "compare again: rc %d: %s", rc, out);

    snprintf(cmd, sizeof cmd, "rm -rf %s && /usr/bin/python3 scripts/plot %s/dyt/n_layer=3/seed1 --out %s", figs, runs,
             figs);
    rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 0, "scripts/plot: rc %d: %s", rc, out);
    static const char *pngs[] = {"loss.png", "grad_norm.png", "rms.png", "angle.png", "layer_removal.png"};
    for (int i = 0; i < 5; i++) {
        snprintf(cmd, sizeof cmd, "test -s %s/%s", figs, pngs[i]);
        CHECK(run_command(cmd, out, sizeof out) == 0, "scripts/plot made no %s", pngs[i]);
    }
    snprintf(cmd, sizeof cmd, "cat %s/summary.md", figs);
    rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "| seed1 |") && strstr(out, "val loss"), "plot summary: %s", out);
    snprintf(cmd, sizeof cmd, "rm -rf %s %s %s", runs, spec, figs);
    run_command(cmd, out, sizeof out);
}

const TestCase diag_tests[] = {
    {"diag_grad_norms", test_diag_grad_norms},
    {"diag_hidden_states", test_diag_hidden_states},
    {"diag_tanh_sites", test_diag_tanh_sites},
    {"diag_peri_out_rms", test_diag_peri_out_rms},
    {"probe_skip_equals_removed", test_probe_skip_equals_removed},
    {"diag_log_and_probe_cli", test_diag_log_and_probe_cli},
    {"compare_and_plot_scripts", test_compare_and_plot_scripts},
    {NULL, NULL},
};
