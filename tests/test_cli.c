// End-to-end tests of ./train (the fp32 build): errors, exact resume, and learning on Brown.
#include "testing.h"
#include <cjson/cJSON.h>
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
    const char *A = "build/tmp/normgpt_resume_a", *B = "build/tmp/normgpt_resume_b";
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
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    int delay_ms = rand() % 1000;
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

const TestCase cli_tests[] = {
    {"cli: bad input gives one line and exit code", test_cli_errors},
    {"cli: resume equals the uninterrupted run", test_resume_equals_uninterrupted},
    {"cli: a short run on Brown learns", test_learns_brown},
    {"cli: --convert pre-ln to rmsnorm and crmsnorm", test_convert_checkpoint},
    {"cli: kill -9 then resume equals uninterrupted", test_kill9_resume},
    {"cli: SIGTERM checkpoints, exits 0, resumes", test_sigterm_checkpoints},
    {"cli: non-finite loss names step and block", test_nonfinite_stops},
    {"cli: unwritable or too small out.dir", test_out_dir_errors},
    {NULL, NULL},
};
