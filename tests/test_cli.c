// End-to-end tests of ./train (the fp32 build): errors, exact resume, and learning on Brown.
#include "testing.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

static char out[1 << 16];

// A model small enough that a few dozen steps take seconds on 2 cores.
#define SMALL "./train --config configs/default.json --model.n_layer=2 --model.n_embd=64 --model.n_head=4 " \
              "--model.block_size=64 --train.seq_len=64 --train.batch_size=8 --train.total_batch_tokens=1024 " \
              "--train.warmup_steps=5 --eval.batches=4 --sample.tokens=24 --train.threads=2"

static void test_cli_errors(void) {
    int rc = run_command("./train --config configs/default.json --model.n_embd=100 --model.n_head=3", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "model.n_embd"), "indivisible n_embd: rc %d: %s", rc, out);
    rc = run_command("./train --config configs/default.json --train.lr=-1", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "train.lr"), "negative lr: rc %d: %s", rc, out);
    rc = run_command("./train --config configs/default.json --train.seq_len=512", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "train.seq_len"), "seq_len > block_size: rc %d: %s", rc, out);
    rc = run_command("./train --config /nonexistent/config.json", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "/nonexistent/config.json"), "missing config: rc %d: %s", rc, out);
    rc = run_command("./train --config configs/default.json --bogus", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "--bogus"), "unknown argument: rc %d: %s", rc, out);
    rc = run_command("./train", out, sizeof out);
    CHECK(rc == 2, "no arguments: rc %d", rc);
    rc = run_command("./train --config configs/default.json --data.train=/tmp/normgpt_none_*.bin "
                     "--out.dir=/tmp/normgpt_cli_err", out, sizeof out);
    CHECK(rc == 1 && strstr(out, "data.train"), "missing shards: rc %d: %s", rc, out);
    rc = run_command("./train --config configs/default.json --data.tokenizer=README.md --out.dir=/tmp/normgpt_cli_err "
                     "--overwrite", out, sizeof out);
    CHECK(rc == 1 && strstr(out, "README.md"), "bad tokenizer: rc %d: %s", rc, out);
    rc = run_command("./train --resume /tmp/normgpt_no_such_run", out, sizeof out);
    CHECK(rc == 1 && strstr(out, "/tmp/normgpt_no_such_run"), "resume of nothing: rc %d: %s", rc, out);
    run_command("rm -rf /tmp/normgpt_cli_err", out, sizeof out);
}

// The "loss" fields of step lines and "val_loss" of eval lines in a log, from step `from` on.
static int read_losses(const char *log_path, long from, double *losses, int max) {
    FILE *f = fopen(log_path, "r");
    if (!f) return -1;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f) && n < max) {
        cJSON *o = cJSON_Parse(line);
        const cJSON *step = cJSON_GetObjectItemCaseSensitive(o, "step");
        const cJSON *loss = cJSON_GetObjectItemCaseSensitive(o, "loss");
        if (!loss) loss = cJSON_GetObjectItemCaseSensitive(o, "val_loss");
        if (cJSON_IsNumber(step) && step->valuedouble >= from && cJSON_IsNumber(loss)) losses[n++] = loss->valuedouble;
        cJSON_Delete(o);
    }
    fclose(f);
    return n;
}

static void test_resume_equals_uninterrupted(void) {
    const char *A = "/tmp/normgpt_resume_a", *B = "/tmp/normgpt_resume_b";
    char cmd[4096];
    snprintf(cmd, sizeof cmd, SMALL " --train.steps=12 --eval.every=3 --sample.every=6 --out.checkpoint_every=6 "
                                    "--out.keep=5 --out.dir=%s --overwrite", A);
    int rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 0, "uninterrupted run failed: %s", out);
    // Run B = the first half of A (its step-6 checkpoint and log), then resumed to the end.
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s && cp %s/ckpt_00000006.bin %s/config.json %s/log.jsonl %s/",
             B, B, A, A, A, B);
    run_command(cmd, out, sizeof out);
    snprintf(cmd, sizeof cmd, "./train --resume %s", B);
    rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "resumed from"), "resume failed: %s", out);
    double a[64], b[64];
    char la[256], lb[256];
    snprintf(la, sizeof la, "%s/log.jsonl", A);
    snprintf(lb, sizeof lb, "%s/log.jsonl", B);
    int na = read_losses(la, 0, a, 64), nb = read_losses(lb, 0, b, 64);
    CHECK(na == 12 + 5 && na == nb, "log lengths %d vs %d", na, nb);  // 12 steps + evals at 0,3,6,9,12
    int same = na == nb;
    for (int i = 0; i < na && i < nb; i++) same &= a[i] == b[i];
    CHECK(same, "resumed losses differ from the uninterrupted run");
    snprintf(cmd, sizeof cmd, "cmp %s/ckpt_00000012.bin %s/ckpt_00000012.bin", A, B);
    CHECK(run_command(cmd, out, sizeof out) == 0, "final checkpoints differ: %s", out);
    // A fresh run into a directory holding a run must not clobber it silently.
    snprintf(cmd, sizeof cmd, SMALL " --train.steps=6 --out.dir=%s", A);
    rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 1 && strstr(out, "--resume"), "existing run dir: rc %d: %s", rc, out);
    snprintf(cmd, sizeof cmd, "rm -rf %s %s", A, B);
    run_command(cmd, out, sizeof out);
}

static void test_learns_brown(void) {
    const char *dir = "/tmp/normgpt_learn";
    char cmd[4096];
    snprintf(cmd, sizeof cmd, SMALL " --train.steps=100 --train.lr=3e-3 --eval.every=50 --sample.every=0 "
                                    "--out.checkpoint_every=0 --out.dir=%s --overwrite", dir);
    int rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 0, "training run failed: %s", out);
    char log_path[256];
    snprintf(log_path, sizeof log_path, "%s/log.jsonl", dir);
    FILE *f = fopen(log_path, "r");
    double first_val = NAN, last_val = NAN;
    char line[4096];
    while (f && fgets(line, sizeof line, f)) {
        cJSON *o = cJSON_Parse(line);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "val_loss");
        if (cJSON_IsNumber(v)) { if (isnan(first_val)) first_val = v->valuedouble; last_val = v->valuedouble; }
        cJSON_Delete(o);
    }
    if (f) fclose(f);
    double uniform = log(8192.0);
    CHECK(fabs(first_val - uniform) < 0.5, "initial val loss %.3f should be near ln(8192) = %.3f", first_val, uniform);
    CHECK(last_val < uniform - 1.7, "val loss %.3f is not well below ln(8192) = %.3f", last_val, uniform);
    CHECK(strstr(out, "---- sample at step 100"), "no sample printed at the end");
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    run_command(cmd, out, sizeof out);
}

// --convert of a checkpoint trained a few steps: both kinds reproduce the logits in fp32 and resume
// as runs; a checkpoint that is not Pre-LN is refused with one line and nothing written.
static void test_convert_checkpoint(void) {
    const char *dir = "/tmp/normgpt_convert";
    char cmd[4096];
    snprintf(cmd, sizeof cmd, SMALL " --train.steps=8 --eval.every=0 --sample.tokens=0 --out.dir=%s --overwrite", dir);
    int rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 0, "training run failed: %s", out);
    static const char *kinds[] = {"rmsnorm", "crmsnorm"};
    for (int k = 0; k < 2; k++) {
        snprintf(cmd, sizeof cmd, "./train --convert %s/ckpt_00000008.bin --to %s --out %s/%s.bin", dir, kinds[k], dir,
                 kinds[k]);
        rc = run_command(cmd, out, sizeof out);
        const char *line = strstr(out, "max relative logit difference");
        double diff = line ? strtod(strchr(line, ':') + 1, NULL) : NAN;
        CHECK(rc == 0 && diff < 1e-4, "%s: rc %d, max relative logit difference %g: %s", kinds[k], rc, diff, out);
        snprintf(cmd, sizeof cmd, "mkdir -p %s/run_%s && cp %s/%s.bin %s/run_%s/ckpt_00000008.bin && "
                 "./train --resume %s/run_%s", dir, kinds[k], dir, kinds[k], dir, kinds[k], dir, kinds[k]);
        rc = run_command(cmd, out, sizeof out);
        char final_norm[64];
        snprintf(final_norm, sizeof final_norm, "final norm: %s\n", kinds[k]);
        CHECK(rc == 0 && strstr(out, "resumed from") && strstr(out, final_norm), "%s: resume failed: %s", kinds[k],
              out);
    }
    snprintf(cmd, sizeof cmd, "./train --convert %s/rmsnorm.bin --to crmsnorm --out %s/again.bin", dir, dir);
    rc = run_command(cmd, out, sizeof out);
    int lines = 0;
    for (const char *p = out; *p; p++) lines += *p == '\n';
    CHECK(rc == 1 && lines == 1 && strstr(out, "rmsnorm.bin") && strstr(out, "Pre-LN"), "not Pre-LN: rc %d: %s", rc,
          out);
    snprintf(cmd, sizeof cmd, "test -e %s/again.bin", dir);
    CHECK(run_command(cmd, out, sizeof out) != 0, "a refused conversion wrote its output");
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    run_command(cmd, out, sizeof out);
}

const TestCase cli_tests[] = {
    {"cli: bad input gives one line and exit code", test_cli_errors},
    {"cli: resume equals the uninterrupted run", test_resume_equals_uninterrupted},
    {"cli: a short run on Brown learns", test_learns_brown},
    {"cli: --convert pre-ln to rmsnorm and crmsnorm", test_convert_checkpoint},
    {NULL, NULL},
};
