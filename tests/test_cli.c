// End-to-end tests of ./train (the fp32 build): errors, exact resume, and learning on Brown.
#include "testing.h"
#include "machine.h"
#include "optim.h"
#include <glob.h>
#include "bf16.h"
#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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
    rc = run_command("./train --config configs/default.json --data.train=build/tmp/normgpt_none_*.bin "
                     "--out.dir=build/tmp/normgpt_cli_err", out, sizeof out);
    CHECK(rc == 1 && strstr(out, "data.train"), "missing shards: rc %d: %s", rc, out);
    rc = run_command("./train --config configs/default.json --data.tokenizer=README.md --out.dir=build/tmp/normgpt_cli_err "
                     "--overwrite", out, sizeof out);
    CHECK(rc == 1 && strstr(out, "README.md"), "bad tokenizer: rc %d: %s", rc, out);
    rc = run_command("./train --resume build/tmp/normgpt_no_such_run", out, sizeof out);
    CHECK(rc == 1 && strstr(out, "build/tmp/normgpt_no_such_run"), "resume of nothing: rc %d: %s", rc, out);
    rc = run_command("./train --config configs/default.json --train.outlier_window=1", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "train.outlier_window"), "outlier window too short: rc %d: %s", rc, out);
    rc = run_command("./train --config configs", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "configs"), "a directory as config: rc %d: %s", rc, out);
    // A run directory whose only checkpoint is not one: the file is named, nothing to resume.
    rc = run_command("mkdir -p build/tmp/normgpt_cli_err && head -c 2000 README.md > build/tmp/normgpt_cli_err/ckpt_00000004.bin "
                     "&& ./train --resume build/tmp/normgpt_cli_err", out, sizeof out);
    CHECK(rc == 1 && strstr(out, "ckpt_00000004.bin: not a normgpt checkpoint") && strstr(out, "no valid checkpoint"),
          "bad checkpoint: rc %d: %s", rc, out);
    run_command("rm -rf build/tmp/normgpt_cli_err", out, sizeof out);
}

// The number `key` (else `alt`, unless NULL) of each log line whose step lies in [first, last], in order.
static int log_numbers(const char *log_path, long first, long last, const char *key, const char *alt, double *values,
                       int max) {
    FILE *f = fopen(log_path, "r");
    if (!f) return -1;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f) && n < max) {
        cJSON *o = cJSON_Parse(line);
        const cJSON *step = cJSON_GetObjectItemCaseSensitive(o, "step");
        const cJSON *value = cJSON_GetObjectItemCaseSensitive(o, key);
        if (!value && alt) value = cJSON_GetObjectItemCaseSensitive(o, alt);
        if (cJSON_IsNumber(step) && step->valuedouble >= first && step->valuedouble <= last && cJSON_IsNumber(value))
            values[n++] = value->valuedouble;
        cJSON_Delete(o);
    }
    fclose(f);
    return n;
}

// The "loss" fields of step lines and "val_loss" of eval lines in a log, from step `from` on.
static int read_losses(const char *log_path, long from, double *losses, int max) {
    return log_numbers(log_path, from, LONG_MAX, "loss", "val_loss", losses, max);
}

// Run A: 12 steps in `precision`; run B: A's step-6 checkpoint and log, resumed to the end. B's
// losses and final checkpoint must be A's, bit for bit.
static void check_resume_equals_uninterrupted(const char *precision, const char *A, const char *B) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, SMALL " --train.steps=12 --eval.every=3 --sample.every=6 --out.checkpoint_every=6 "
                                    "--out.keep=5 --train.precision=%s --out.dir=%s --overwrite", precision, A);
    int rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 0, "uninterrupted run failed: %s", out);
    char line[64];
    snprintf(line, sizeof line, "precision %s: sgemm peak", precision);
    CHECK(strstr(out, line), "no '%s' start-up line: %s", line, out);
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
}

static void test_resume_equals_uninterrupted(void) {
    const char *A = "build/tmp/normgpt_resume_a", *B = "build/tmp/normgpt_resume_b";
    char cmd[4096];
    check_resume_equals_uninterrupted("fp32", A, B);
    // A fresh run into a directory holding a run must not clobber it silently.
    snprintf(cmd, sizeof cmd, SMALL " --train.steps=6 --out.dir=%s", A);
    int rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 1 && strstr(out, "--resume"), "existing run dir: rc %d: %s", rc, out);
    snprintf(cmd, sizeof cmd, "rm -rf %s %s", A, B);
    run_command(cmd, out, sizeof out);
}

// A bf16 run resumes bit-identically too (oneDNN's products give the same bits on a rerun). Its
// checkpoint is the fp32 format: --generate reads it. --resume keeps the checkpoint's precision.
static void test_resume_bf16(void) {
    const char *why = bf16_unsupported();
    if (why) { fprintf(stderr, "    skipped: %s\n", why); return; }
    const char *A = "build/tmp/normgpt_resume_bf16_a", *B = "build/tmp/normgpt_resume_bf16_b";
    char cmd[4096];
    check_resume_equals_uninterrupted("bf16", A, B);
    snprintf(cmd, sizeof cmd, "./train --generate %s/ckpt_00000012.bin --tokens 4", A);
    CHECK(run_command(cmd, out, sizeof out) == 0, "--generate of a bf16 run's checkpoint failed: %s", out);
    snprintf(cmd, sizeof cmd, "./train --resume %s --train.precision=fp32", B);
    int rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 2 && strstr(out, "checkpoint"), "resume with another precision: rc %d: %s", rc, out);
    snprintf(cmd, sizeof cmd, "rm -rf %s %s", A, B);
    run_command(cmd, out, sizeof out);
}

static void test_learns_brown(void) {
    const char *dir = "build/tmp/normgpt_learn";
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
    const char *dir = "build/tmp/normgpt_convert";
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
                 "./train --resume %s/run_%s --train.steps=9", dir, kinds[k], dir, kinds[k], dir, kinds[k], dir, kinds[k]);
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

// ---------------------------------------------------------------------------------------------
// Crashes and signals. Run A (uninterrupted) and the interrupted runs use the same config, out.dir
// included (checkpoints embed it): A is moved aside when it is done. train.skip_outliers is on so
// that the outlier window is part of what resume must restore.

#define CRASH_RUN SMALL " --train.steps=16 --eval.every=4 --sample.every=8 --out.checkpoint_every=2 --out.keep=3 " \
                        "--train.skip_outliers=0.5 --train.outlier_window=3 --overwrite --out.dir=" CRASH_DIR
#define CRASH_DIR "build/tmp/normgpt_crash"
#define CRASH_A "build/tmp/normgpt_crash_a"

// B's losses (training and validation, every step) equal A's, and so do the final checkpoints.
static void check_same_run(const char *b) {
    double la[64], lb[64];
    char pa[256], pb[256], cmd[512];
    snprintf(pa, sizeof pa, "%s/log.jsonl", CRASH_A);
    snprintf(pb, sizeof pb, "%s/log.jsonl", b);
    int na = read_losses(pa, 0, la, 64), nb = read_losses(pb, 0, lb, 64);
    CHECK(na == 16 + 5 && nb == na, "%s: log lengths %d vs %d", b, na, nb);  // 16 steps, evals at 0,4,8,12,16
    int same = na == nb;
    for (int i = 0; i < na && i < nb; i++) same &= la[i] == lb[i];
    CHECK(same, "%s: losses differ from the uninterrupted run", b);
    snprintf(cmd, sizeof cmd, "cmp %s/ckpt_00000016.bin %s/ckpt_00000016.bin", CRASH_A, b);
    CHECK(run_command(cmd, out, sizeof out) == 0, "%s: final checkpoints differ: %s", b, out);
}

// The reference run; returns 0 when it failed. Also checks the outlier policy: skipped steps are
// marked in the log and take no AdamW step (adam_t in the final checkpoint counts the updates).
static int crash_reference_run(void) {
    int rc = run_command("rm -rf " CRASH_DIR " " CRASH_A " && " CRASH_RUN " && mv " CRASH_DIR " " CRASH_A, out,
                         sizeof out);
    CHECK(rc == 0, "uninterrupted run failed: %s", out);
    if (rc != 0) return 0;
    int skipped_stdout = 0;
    for (const char *p = out; (p = strstr(p, "skipped (no update)")); p++) skipped_stdout++;
    FILE *f = fopen(CRASH_A "/log.jsonl", "r");
    char line[4096];
    int skipped = 0;
    while (f && fgets(line, sizeof line, f)) skipped += strstr(line, "\"skipped\":true") != NULL;
    if (f) fclose(f);
    CHECK(skipped > 0 && skipped < 13 && skipped == skipped_stdout, "skipped steps: %d in the log, %d on stdout",
          skipped, skipped_stdout);
    f = fopen(CRASH_A "/ckpt_00000016.bin", "rb");
    unsigned char header[1024];
    char meta[1 << 16] = {0};
    if (f && fread(header, 1, sizeof header, f) == sizeof header) {
        uint32_t len = header[8] | header[9] << 8 | header[10] << 16;
        if (len < sizeof meta && fread(meta, 1, len, f) != len) meta[0] = '\0';
    }
    if (f) fclose(f);
    cJSON *m = cJSON_Parse(meta);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(m, "adam_t");
    CHECK(cJSON_IsNumber(t) && t->valuedouble == 16 - skipped, "adam_t %g after %d skipped steps of 16",
          cJSON_IsNumber(t) ? t->valuedouble : -1, skipped);
    cJSON_Delete(m);
    return 1;
}

static void test_kill9_resume(void) {
    const char *B = CRASH_DIR;
    if (!crash_reference_run()) return;
    char cmd[4096];
    // SIGKILL at a random moment after the first checkpoint; the delay is printed to reproduce a failure.
    // The 14 steps left take 0.8-0.9 s on the 2-core development machine: a delay under 200 ms lands
    // mid-run (one or two checkpoint writes in) with room for a machine several times faster.
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    int delay_ms = rand() % 200;
    pid_t pid = spawn(CRASH_RUN, CRASH_DIR ".out");
    CHECK(wait_for_file(CRASH_DIR "/ckpt_00000002.bin", pid), "no first checkpoint");
    usleep(delay_ms * 1000);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    printf("    killed %d ms after the first checkpoint (%s)\n", delay_ms,
           WIFSIGNALED(status) ? "mid-run" : "the run had already finished");
    // What a kill during a checkpoint write leaves behind: a partial temporary file, to be ignored and removed.
    snprintf(cmd, sizeof cmd, "head -c 3000 %s/ckpt_00000016.bin > %s/ckpt_00000099.bin.tmp", CRASH_A, B);
    run_command(cmd, out, sizeof out);
    snprintf(cmd, sizeof cmd, "./train --resume %s", B);
    int rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "resumed from"), "resume after kill -9 (delay %d ms) failed: %s", delay_ms, out);
    check_same_run(B);
    snprintf(cmd, sizeof cmd, "test -e %s/ckpt_00000099.bin.tmp", B);
    CHECK(run_command(cmd, out, sizeof out) != 0, "resume left the partial checkpoint file behind");
    // A hand-edited config.json disagrees with the checkpoint the run resumes with: refused, nothing touched.
    snprintf(cmd, sizeof cmd, "sed -i 's/\"steps\":[[:space:]]*16/\"steps\": 20/' %s/config.json && "
             "./train --resume %s", B, B);
    rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 2 && strstr(out, "config.json") && strstr(out, "train.steps") && !strstr(out, "resumed from"),
          "edited config.json: rc %d: %s", rc, out);
    snprintf(cmd, sizeof cmd, "rm -rf %s %s.out", B, B);
    run_command(cmd, out, sizeof out);
}

static void test_sigterm_checkpoints(void) {
    const char *C = CRASH_DIR;
    char cmd[4096];
    struct stat st;
    if (stat(CRASH_A "/ckpt_00000016.bin", &st) != 0 && !crash_reference_run()) return;
    pid_t pid = spawn(CRASH_RUN, CRASH_DIR ".out");
    CHECK(wait_for_file(CRASH_DIR "/ckpt_00000002.bin", pid), "no first checkpoint");
    kill(pid, SIGTERM);
    int status;
    waitpid(pid, &status, 0);
    FILE *f = fopen(CRASH_DIR ".out", "r");
    size_t n = f ? fread(out, 1, sizeof out - 1, f) : 0;
    out[n] = '\0';
    if (f) fclose(f);
    long stopped = -1;
    const char *line = strstr(out, "stopped by signal 15 after step ");
    if (line) sscanf(line, "stopped by signal 15 after step %ld", &stopped);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0 && stopped >= 2 && stopped < 16,
          "SIGTERM: status %d, stopped at %ld: %s", status, stopped, out);
    snprintf(cmd, sizeof cmd, "test -e %s/ckpt_%08ld.bin", C, stopped);
    CHECK(run_command(cmd, out, sizeof out) == 0, "no checkpoint at step %ld", stopped);
    snprintf(cmd, sizeof cmd, "./train --resume %s", C);
    int rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "resumed from"), "resume after SIGTERM failed: %s", out);
    check_same_run(C);
    snprintf(cmd, sizeof cmd, "rm -rf %s %s.out %s", C, C, CRASH_A);
    run_command(cmd, out, sizeof out);
}

// lr * weight_decay > 2 makes every decayed weight grow 99-fold per step: a genuine blow-up to inf.
static void test_nonfinite_stops(void) {
    const char *dir = "build/tmp/normgpt_nan";
    char cmd[4096];
    snprintf(cmd, sizeof cmd, SMALL " --train.steps=30 --train.lr=10 --train.min_lr=0 --train.weight_decay=10 "
             "--train.schedule=constant --train.warmup_steps=0 --eval.every=0 --sample.tokens=0 "
             "--out.checkpoint_every=1 --out.keep=2 --out.dir=%s --overwrite", dir);
    int rc = run_command(cmd, out, sizeof out);
    long step = -1;
    const char *line = strstr(out, "error: step ");
    if (line) sscanf(line, "error: step %ld", &step);
    CHECK(rc == 1 && step > 1 && strstr(line, "not finite, first in ") && strstr(line, "block"),
          "blow-up: rc %d: %s", rc, out);
    // No checkpoint of the bad step; the one before it loads (and the resumed run stops at the same step).
    snprintf(cmd, sizeof cmd, "test -e %s/ckpt_%08ld.bin", dir, step);
    CHECK(run_command(cmd, out, sizeof out) != 0, "a checkpoint was written for the non-finite step %ld", step);
    snprintf(cmd, sizeof cmd, "./train --resume %s", dir);
    rc = run_command(cmd, out, sizeof out);
    char resumed[128], again[64];
    snprintf(resumed, sizeof resumed, "ckpt_%08ld.bin at step %ld", step - 1, step - 1);
    snprintf(again, sizeof again, "error: step %ld: ", step);
    CHECK(rc == 1 && strstr(out, resumed) && strstr(out, again), "resume of the last good checkpoint: rc %d: %s",
          rc, out);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    run_command(cmd, out, sizeof out);
}

// out.dir problems are found before anything is written.
static void test_out_dir_errors(void) {
    int rc = run_command(SMALL " --out.dir=README.md/run", out, sizeof out);
    CHECK(rc == 1 && strstr(out, "out.dir README.md/run"), "out.dir under a file: rc %d: %s", rc, out);
    rc = run_command(SMALL " --out.keep=1000000 --out.checkpoint_every=1 --train.steps=10000000 "
                     "--out.dir=build/tmp/normgpt_full --overwrite", out, sizeof out);
    int lines = 0;
    for (const char *p = out; (p = strstr(p, "error")); p++) lines++;
    CHECK(rc == 1 && lines == 1 && strstr(out, "out.dir build/tmp/normgpt_full") && strstr(out, "free"),
          "checkpoints that cannot fit: rc %d: %s", rc, out);
    CHECK(run_command("test -e build/tmp/normgpt_full", out, sizeof out) != 0, "a refused run left its directory");
    run_command("rm -rf build/tmp/normgpt_full", out, sizeof out);
}

// How many times `needle` occurs in `text`.
static int count_of(const char *text, const char *needle) {
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

// Every shipped config passes --check on the embedded data: it gives the figures of the configured run
// and allocates and writes nothing (its out.dir, redirected here, is not even created).
static void test_configs_check(void) {
    glob_t g;
    CHECK(glob("configs/*.json", 0, NULL, &g) == 0 && g.gl_pathc >= 10, "configs/*.json: %zu files", g.gl_pathc);
    int paper_scale = 0;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "./train --config %s --check --out.dir=build/tmp/normgpt_check_out", g.gl_pathv[i]);
        int rc = run_command(cmd, out, sizeof out);
        CHECK(rc == 0 && strstr(out, "parameters") && strstr(out, "step: ") && strstr(out, "run: ") &&
              strstr(out, "memory budget") && strstr(out, "run time: ") && strstr(out, "check: "),
              "%s --check: rc %d: %s", g.gl_pathv[i], rc, out);
        if (strstr(out, " days for ")) paper_scale += strstr(out, "would bring it to a day") != NULL;
    }
    globfree(&g);
    CHECK(paper_scale >= 3, "only %d paper-scale configs say how many ranks bring them to a day", paper_scale);
    CHECK(run_command("test -e build/tmp/normgpt_check_out", out, sizeof out) != 0, "--check created out.dir");
    // Too big for any machine: refused by the memory budget, before anything is allocated.
    int rc = run_command("./train --config configs/default.json --check --model.n_embd=8192 --model.n_layer=64",
                         out, sizeof out);
    CHECK(rc == 1 && strstr(out, "memory: the run needs") && count_of(out, "error") == 1, "huge model: rc %d: %s", rc, out);
}

// Quick tries: too few steps for the warmup, a validation set smaller than eval.batches: one note each
// and the run goes on; after the first steps the whole run's time is measured.
static void test_quick_try_clamps(void) {
    int rc = run_command(SMALL " --train.steps=5 --train.warmup_steps=30 --eval.batches=100000 --eval.every=0 "
                               "--sample.every=0 --out.dir=build/tmp/normgpt_quick --overwrite", out, sizeof out);
    CHECK(rc == 0, "quick try refused: rc %d: %s", rc, out);
    CHECK(count_of(out, "note: train.warmup_steps = 30 exceeds train.steps = 5") == 1, "warmup note: %s", out);
    CHECK(count_of(out, "note: eval.batches") == 1 && strstr(out, "evaluating on"), "eval note: %s", out);
    CHECK(count_of(out, "run time: ") == 1 && strstr(out, "measured over steps 2-4"), "measured run time: %s", out);
    CHECK(run_command("grep -q '\"warmup_steps\":\t5' build/tmp/normgpt_quick/config.json", out, sizeof out) == 0,
          "config.json does not hold the clamped warmup");
    run_command("rm -rf build/tmp/normgpt_quick", out, sizeof out);
    const char *remark;
    CHECK(mfu_percent(1e6, 1e3, 2e9, &remark) == 50 && !remark[0], "MFU 50%%: '%s'", remark);
    CHECK(mfu_percent(1e6, 3e3, 2e9, &remark) == 150 && strstr(remark, "peak measured under load"), "MFU 150%%");
}

// Habits from other programs: --config=FILE, --key value, booleans in any case, a suggestion for a typo.
static void test_command_line_habits(void) {
    int rc = run_command("./train --config=configs/default.json --check --train.steps 7 --train.recompute=True "
                         "--model.bias FALSE --out.dir build/tmp/normgpt_habits", out, sizeof out);
    CHECK(rc == 0 && strstr(out, "\"steps\":\t7") && strstr(out, "\"recompute\":\ttrue") &&
          strstr(out, "\"bias\":\tfalse") && strstr(out, "normgpt_habits"), "habits: rc %d: %s", rc, out);
    rc = run_command("./train --config configs/default.json --train.step=5", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "unknown key train.step (did you mean train.steps?)"), "typo: rc %d: %s", rc, out);
    rc = run_command("./train --config configs/default.json --model.n_embed=64", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "did you mean model.n_embd?"), "typo: rc %d: %s", rc, out);
    rc = run_command("./train --config configs/default.json --zzz.qqqqqqqq=1", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "unknown key zzz.qqqqqqqq") && !strstr(out, "did you mean"), "far: rc %d: %s", rc, out);
    rc = run_command("./train --config configs/default.json --train.recompute=maybe", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "train.recompute must be true or false"), "bad bool: rc %d: %s", rc, out);
    rc = run_command("./train --config configs/default.json --train.steps", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "--train.steps"), "no value: rc %d: %s", rc, out);
}

// Writes `json` as DIR/dataset.json.
static void write_manifest(const char *dir, const char *json) {
    char path[256];
    snprintf(path, sizeof path, "%s/dataset.json", dir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL, "%s: cannot write", path);
    if (f) { fputs(json, f); fclose(f); }
}

// --data.dir=DIR takes the vocabulary, tokenizer and shard globs from DIR/dataset.json, over the config
// file; keys on the command line win over the manifest; a bad manifest is one line naming it.
static void test_data_dir(void) {
    const char *dir = "build/tmp/normgpt_ds";
    run_command("rm -rf build/tmp/normgpt_ds && mkdir -p build/tmp/normgpt_ds && cd build/tmp/normgpt_ds && "
                "ln -s ../../../data/brown/brown_train_000000.bin mine_train_000000.bin && "
                "ln -s ../../../data/brown/brown_val_000000.bin mine_val_000000.bin && "
                "ln -s ../../../data/brown/tokenizer.bin mine.tok", out, sizeof out);
    write_manifest(dir, "{\"format\": \"normgpt-dataset\", \"version\": 1, \"name\": \"mine\", \"vocab_size\": 8192,"
                        " \"tokenizer\": \"mine.tok\", \"train\": {\"shards\": \"mine_train_*.bin\"},"
                        " \"val\": {\"shards\": \"mine_val_*.bin\"}}");
    int rc = run_command("./train --config configs/default.json --check --data.dir=build/tmp/normgpt_ds", out, sizeof out);
    CHECK(rc == 0 && strstr(out, "\"vocab_size\":\t8192") && strstr(out, "normgpt_ds/mine.tok") &&
          strstr(out, "normgpt_ds/mine_train_*.bin") && strstr(out, "normgpt_ds/mine_val_*.bin"),
          "manifest: rc %d: %s", rc, out);
    rc = run_command("./train --config configs/default.json --check --data.dir build/tmp/normgpt_ds "
                     "--model.vocab_size=9000 --data.tokenizer= --data.val=", out, sizeof out);
    CHECK(rc == 0 && strstr(out, "\"vocab_size\":\t9000") && strstr(out, "\"tokenizer\":\t\"\"") && strstr(out, "\"val\":\t\"\"") &&
          strstr(out, "normgpt_ds/mine_train_*.bin"), "command line over manifest: rc %d: %s", rc, out);
    write_manifest(dir, "{\"format\": \"normgpt-dataset\", \"version\": 1, \"vocab_size\": 8192, \"tokenizer\": "
                        "\"mine.tok\", \"train\": {\"shards\": \"mine_train_*.bin\"}}");
    rc = run_command("./train --config configs/default.json --check --data.dir=build/tmp/normgpt_ds", out, sizeof out);
    CHECK(rc == 0 && strstr(out, "\"val\":\t\"\""), "manifest without val: rc %d: %s", rc, out);
    rc = run_command("./train --config configs/default.json --check --data.dir=data/brown", out, sizeof out);
    CHECK(rc == 0 && strstr(out, "data/brown/brown_train_*.bin"), "data/brown: rc %d: %s", rc, out);
    static const char *bad[][2] = {
        {"{\"format\": \"normgpt-dataset\", \"version\": 1, \"tokenizer\": \"t\"}", "'vocab_size'"},
        {"{\"format\": \"other\", \"version\": 1}", "'format'"},
        {"{\"format\": \"normgpt-dataset\", \"version\": 1, \"vocab_size\": 8192, \"tokenizer\": \"t\","
         " \"train\": {\"shards\": 3}, \"val\": {\"shards\": \"v\"}}", "'train.shards'"},
        {"{\"format\": \"normgpt-dataset\", \"version\": 1, \"vocab_size\": 8192, \"train\": {}}", "'tokenizer'"},
        {"[1, 2", "not a JSON object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_manifest(dir, bad[i][0]);
        rc = run_command("./train --config configs/default.json --check --data.dir=build/tmp/normgpt_ds", out, sizeof out);
        CHECK(rc == 2 && strstr(out, "normgpt_ds/dataset.json") && strstr(out, bad[i][1]) && count_of(out, "error") == 1,
              "bad manifest %zu: rc %d: %s", i, rc, out);
    }
    rc = run_command("./train --config configs/default.json --check --data.dir=build/tmp/normgpt_nothing", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "normgpt_nothing/dataset.json"), "missing manifest: rc %d: %s", rc, out);
    run_command("rm -rf build/tmp/normgpt_ds", out, sizeof out);
}

// A finished run says so; --train.steps extends it with the schedule recomputed for the new total;
// train.init_from starts a new run from its weights (shapes must match).
static void test_extend_and_init_from(void) {
    const char *A = "build/tmp/normgpt_extend", *B = "build/tmp/normgpt_init_from";
    char cmd[4096];
    snprintf(cmd, sizeof cmd, SMALL " --train.steps=4 --train.warmup_steps=1 --train.schedule=wsd --train.decay_frac=0.5 "
             "--eval.every=4 --sample.tokens=0 --out.dir=%s --overwrite", A);
    CHECK(run_command(cmd, out, sizeof out) == 0, "first run: %s", out);
    snprintf(cmd, sizeof cmd, "./train --resume %s", A);
    int rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "the run is finished") && strstr(out, "--train.steps=N for N > 4") &&
          !strstr(out, "peak memory"), "finished run: rc %d: %s", rc, out);
    snprintf(cmd, sizeof cmd, "./train --resume %s --train.steps 3", A);
    rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 2 && strstr(out, "must exceed the 4 steps"), "shorter: rc %d: %s", rc, out);
    snprintf(cmd, sizeof cmd, "./train --resume %s --train.lr=1", A);
    rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 2 && strstr(out, "only --train.steps=N"), "other override on resume: rc %d: %s", rc, out);
    snprintf(cmd, sizeof cmd, "./train --resume %s --train.steps=8", A);
    rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "train.steps 4 -> 8") && strstr(out, "ckpt_00000008.bin"), "extension: rc %d: %s", rc, out);
    // The rule: steps 5..8 follow the schedule of the new total (config.json now says 8 steps).
    char path[256];
    snprintf(path, sizeof path, "%s/config.json", A);
    Config c;
    config_defaults(&c);
    config_load_file(&c, path);
    config_validate(&c);
    CHECK(c.steps == 8, "config.json says %ld steps", c.steps);
    double lrs[16], source_val;
    snprintf(path, sizeof path, "%s/log.jsonl", A);
    int n = log_numbers(path, 5, LONG_MAX, "lr", NULL, lrs, 16);
    CHECK(log_numbers(path, 8, 8, "val_loss", NULL, &source_val, 1) == 1, "no val loss at step 8");
    CHECK(n == 4, "%d step lines after the extension", n);
    for (int i = 0; i < n; i++)
        CHECK(fabs(lrs[i] - lr_schedule(&c, 4 + i)) <= 1e-6 * lr_schedule(&c, 4 + i), "step %d: lr %g, the rule says %g",
              5 + i, lrs[i], lr_schedule(&c, 4 + i));
    // A new run from its weights: its step-0 validation loss is the source's at step 8, exactly.
    snprintf(cmd, sizeof cmd, SMALL " --train.steps=2 --eval.every=4 --sample.tokens=0 --train.init_from=%s "
             "--out.dir=%s --overwrite", A, B);
    rc = run_command(cmd, out, sizeof out);
    double val_b;
    snprintf(path, sizeof path, "%s/log.jsonl", B);
    val_b = NAN;
    log_numbers(path, 0, 0, "val_loss", NULL, &val_b, 1);
    CHECK(rc == 0 && strstr(out, "the weights of build/tmp/normgpt_extend/ckpt_00000008.bin (step 8") &&
          val_b == source_val, "init_from: rc %d, val %g vs %g: %s", rc, val_b, source_val, out);
    snprintf(cmd, sizeof cmd, SMALL " --model.n_embd=128 --train.init_from=%s/ckpt_00000008.bin --out.dir=%s --overwrite",
             A, B);
    rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 1 && strstr(out, "tensor wte has shape (8192, 64), the model's has (8192, 128)") &&
          count_of(out, "error") == 1, "mismatched width: rc %d: %s", rc, out);
    snprintf(cmd, sizeof cmd, SMALL " --model.n_layer=3 --train.init_from=%s --out.dir=%s --overwrite", A, B);
    rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 1 && strstr(out, "tensor 26 is lnf.weight, the model's is h.2.norm1.weight") && count_of(out, "error") == 1, "extra layer: rc %d: %s", rc, out);
    // An extension stopped before its first checkpoint: config.json says 8 steps, the checkpoint 4.
    snprintf(cmd, sizeof cmd, "rm %s/ckpt_00000008.bin && ./train --resume %s", A, A);
    rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 2 && strstr(out, "train.steps differs"), "config.json of an extension, plain resume: rc %d: %s", rc, out);
    snprintf(cmd, sizeof cmd, "./train --resume %s --train.steps=8", A);
    rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "train.steps 4 -> 8"), "extension resumed again: rc %d: %s", rc, out);
    snprintf(cmd, sizeof cmd, "rm -rf %s %s", A, B);
    run_command(cmd, out, sizeof out);
}

const TestCase cli_tests[] = {
    {"cli: finished runs, --train.steps extension, train.init_from", test_extend_and_init_from},
    {"cli: --data.dir reads the dataset manifest", test_data_dir},
    {"cli: every shipped config passes --check", test_configs_check},
    {"cli: quick tries clamp warmup and eval batches", test_quick_try_clamps},
    {"cli: --config=FILE, --key value, True, typo suggestions", test_command_line_habits},
    {"cli: bad input gives one line and exit code", test_cli_errors},
    {"cli: resume equals the uninterrupted run", test_resume_equals_uninterrupted},
    {"cli: bf16 resume equals the uninterrupted bf16 run", test_resume_bf16},
    {"cli: a short run on Brown learns", test_learns_brown},
    {"cli: --convert pre-ln to rmsnorm and crmsnorm", test_convert_checkpoint},
    {"cli: kill -9 then resume equals uninterrupted", test_kill9_resume},
    {"cli: SIGTERM checkpoints, exits 0, resumes", test_sigterm_checkpoints},
    {"cli: non-finite loss names step and block", test_nonfinite_stops},
    {"cli: unwritable or too small out.dir", test_out_dir_errors},
    {NULL, NULL},
};
