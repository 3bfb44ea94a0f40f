// Every method's small config trains: a short run on Brown must lower the loss, with the method's
// own block table (shrunk to a tiny width so that all of them take seconds), in fp32 and in bf16.
#include "testing.h"
#include "bf16.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

static const char *METHODS[] = {"pre_ln", "post_ln", "mix_ln", "hybridnorm", "hybridnorm_star", "pre_rmsnorm",
                                "pre_rmsnorm_centered", "pre_crmsnorm", "dyt", "bhyt", "bhyt_star", "peri_ln",
                                "deepnorm", "lns", "derf", "pre_ln_qknorm"};

static void every_method_learns(const char *precision) {
    static char out[1 << 16];
    for (size_t i = 0; i < sizeof METHODS / sizeof *METHODS; i++) {
        char cmd[2048], log_path[256];
        snprintf(cmd, sizeof cmd,
                 "./train --config configs/%s.json --model.n_layer=4 --model.n_embd=64 --model.n_head=4 "
                 "--model.block_size=64 --train.seq_len=64 --train.batch_size=4 --train.total_batch_tokens=256 "
                 "--train.steps=30 --train.warmup_steps=5 --train.lr=3e-3 --eval.every=30 --eval.batches=2 "
                 "--sample.tokens=0 --out.checkpoint_every=0 --train.threads=2 --out.dir=build/tmp/normgpt_method "
                 "--train.precision=%s --overwrite", METHODS[i], precision);
        int rc = run_command(cmd, out, sizeof out);
        CHECK(rc == 0, "%s (%s): run failed: %s", METHODS[i], precision, out);
        CHECK(strstr(out, "blocks (stream width") != NULL, "%s: no block table printed", METHODS[i]);
        snprintf(log_path, sizeof log_path, "build/tmp/normgpt_method/log.jsonl");
        FILE *f = fopen(log_path, "r");
        double first = 0, last = 0, val0 = NAN, val_end = NAN;
        int steps = 0;
        char line[4096];
        while (f && fgets(line, sizeof line, f)) {
            cJSON *o = cJSON_Parse(line);
            const cJSON *loss = cJSON_GetObjectItemCaseSensitive(o, "loss");
            const cJSON *val = cJSON_GetObjectItemCaseSensitive(o, "val_loss");
            if (cJSON_IsNumber(loss)) {
                if (steps < 3) first += loss->valuedouble / 3;
                if (steps >= 27) last += loss->valuedouble / 3;
                steps++;
            }
            if (cJSON_IsNumber(val)) { if (isnan(val0)) val0 = val->valuedouble; val_end = val->valuedouble; }
            cJSON_Delete(o);
        }
        if (f) fclose(f);
        CHECK(steps == 30, "%s (%s): %d step lines", METHODS[i], precision, steps);
        CHECK(last < first - 0.5, "%s (%s): train loss %.3f -> %.3f did not fall", METHODS[i], precision, first, last);
        CHECK(val_end < val0 - 0.5, "%s (%s): val loss %.3f -> %.3f did not fall", METHODS[i], precision, val0,
              val_end);
    }
    run_command("rm -rf build/tmp/normgpt_method", out, sizeof out);
}

static void test_every_method_learns(void) { every_method_learns("fp32"); }

static void test_every_method_learns_bf16(void) {
    const char *why = bf16_unsupported();
    if (why) { fprintf(stderr, "    skipped: %s\n", why); return; }
    every_method_learns("bf16");
}

const TestCase method_tests[] = {
    {"methods: every small config lowers the loss", test_every_method_learns},
    {"methods: every small config lowers the loss in bf16", test_every_method_learns_bf16},
    {NULL, NULL},
};
