// The edges of a run (README, Robustness): special files as inputs, the checkpoint's run state, the
// lock on the run directory, disk space, the log's writes, memory, and signals in the middle of a step.
#include "checkpoint.h"
#include "rundir.h"
#include "testing.h"
#include <cjson/cJSON.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char out[1 << 16];

#define DIR_ "build/tmp/normgpt_robust"
// A model small enough that a few steps take a second on 2 cores.
#define SMALL "./train --config configs/default.json --model.n_layer=2 --model.n_embd=64 --model.n_head=4 " \
              "--model.block_size=64 --train.seq_len=64 --train.batch_size=8 --train.total_batch_tokens=1024 " \
              "--train.warmup_steps=2 --eval.batches=2 --sample.tokens=0 --train.threads=2"

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

// A FIFO as config, shard, tokenizer or checkpoint: one line naming it, never a hang (timeout
// turns a hang into a failed check).
static void test_special_files_refused(void) {
    run_command("rm -rf " DIR_ " && mkdir -p " DIR_ "/run && mkfifo " DIR_ "/fifo " DIR_ "/run/ckpt_00000001.bin",
                out, sizeof out);
    static const struct { const char *cmd; int code; } cases[] = {
        {"timeout 20 ./train --config " DIR_ "/fifo", 2},
        {"timeout 20 " SMALL " --data.train=" DIR_ "/fifo --out.dir=" DIR_ "/out", 1},
        {"timeout 20 " SMALL " --data.tokenizer=" DIR_ "/fifo --out.dir=" DIR_ "/out --overwrite", 1},
        {"timeout 20 ./train --resume " DIR_ "/run", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = run_command(cases[i].cmd, out, sizeof out);
        CHECK(rc == cases[i].code && strstr(out, "not a regular file"),
              "%s: rc %d: %s", cases[i].cmd, rc, out);
    }
    run_command("rm -rf " DIR_, out, sizeof out);
}

// Rewrite the checkpoint at `path` with its metadata's `key` set to the JSON `value`, and a checksum
// that matches again: what a checkpoint written by a buggy or hostile program looks like.
static void rewrite_metadata(const char *path, const char *key, const char *value) {
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    size_t size = (size_t)ftell(f);
    unsigned char *file = xcalloc(size, 1);
    fseek(f, 0, SEEK_SET);
    CHECK(fread(file, 1, size, f) == size, "read %s", path);
    fclose(f);
    size_t meta_len = le32(file + 8), offset = le32(file + 16), data_bytes = size - offset;
    char *meta_text = xcalloc(meta_len + 1, 1);
    memcpy(meta_text, file + 1024, meta_len);
    cJSON *meta = cJSON_Parse(meta_text);
    cJSON_ReplaceItemInObjectCaseSensitive(meta, key, cJSON_Parse(value));
    char *text = cJSON_PrintUnformatted(meta);
    size_t len = strlen(text), new_offset = (1024 + len + 63) / 64 * 64;
    unsigned char *rebuilt = xcalloc(new_offset + data_bytes, 1);
    memcpy(rebuilt, file, 1024);
    memcpy(rebuilt + 1024, text, len);
    memcpy(rebuilt + new_offset, file + offset, data_bytes);
    uint64_t hash = fnv1a(FNV_OFFSET, rebuilt + 1024, new_offset - 1024 + data_bytes);
    uint32_t fields[] = {(uint32_t)len, 0, (uint32_t)new_offset, 0, 0, (uint32_t)hash, (uint32_t)(hash >> 32)};
    for (int i = 0; i < 7; i++)
        if (i != 1 && i != 3 && i != 4) for (int b = 0; b < 4; b++) rebuilt[8 + 4 * i + b] = (unsigned char)(fields[i] >> 8 * b);
    f = fopen(path, "wb");
    fwrite(rebuilt, 1, new_offset + data_bytes, f);
    fclose(f);
    cJSON_Delete(meta);
    free(text); free(meta_text); free(file); free(rebuilt);
}

typedef struct { const char *path; GPT *m; AdamW *opt; } LoadCtx;

static void load_checkpoint(void *ctx) {
    LoadCtx *c = ctx;
    static RunState st;
    checkpoint_load(c->path, c->m, c->opt, &st);
}

// Every field of the run state out of range or of the wrong type is refused naming the field.
static void test_checkpoint_run_state_validated(void) {
    char dir[] = "build/tmp/normgpt_runstate_XXXXXX", path[128];
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    snprintf(path, sizeof path, "%s/ckpt_00000007.bin", dir);
    Config c = tiny_config(1, 1);
    GPT m;
    gpt_build(&m, &c);
    gpt_init(&m, 5);
    AdamW opt;
    adamw_init(&opt, m.n_params);
    opt.t = 6;
    static RunState st = {7, 99, 0x0123456789ABCDEFull, 1, {{2.5, 0.25}}, 1};
    static const struct { const char *key, *value; } bad[] = {
        {"step", "1e300"}, {"step", "-100"}, {"step", "2.5"}, {"step", "\"7\""},
        {"data_position", "-1"}, {"data_position", "1e30"}, {"data_position", "0.5"},
        {"adam_t", "1e30"}, {"adam_t", "8"}, {"adam_t", "-1"},
        {"outlier_history", "[[\"nan\",\"1\"]]"}, {"outlier_history", "[[\"1\",\"inf\"]]"},
        {"outlier_history", "[[\"1\",\"2\",\"3\"]]"}, {"outlier_history", "[[\"-1\",\"2\"]]"},
        {"outlier_history", "{}"},
        {"sample_rng", "\"xyz\""}, {"sample_rng", "\"0123456789abcdefff\""}, {"sample_rng", "5"},
        {"world_size", "0"}, {"world_size", "1.5"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        checkpoint_write(path, &c, &m, &opt, &st);
        rewrite_metadata(path, bad[i].key, bad[i].value);
        LoadCtx ctx = {path, &m, &opt};
        CHECK(expect_exit(load_checkpoint, &ctx, 1, bad[i].key), "%s = %s accepted", bad[i].key, bad[i].value);
    }
    // The rewriting itself keeps a valid checkpoint valid.
    checkpoint_write(path, &c, &m, &opt, &st);
    rewrite_metadata(path, "adam_t", "7");
    static RunState got;
    checkpoint_load(path, &m, &opt, &got);
    CHECK(opt.t == 7 && got.step == 7 && got.n_history == 1, "a valid rewritten checkpoint loads wrong");
    // A file whose name says another step: loaded, with a warning naming it.
    char renamed[160];
    snprintf(renamed, sizeof renamed, "%s/ckpt_00000005.bin", dir);
    checkpoint_write(renamed, &c, &m, &opt, &st);
    LoadCtx ctx = {renamed, &m, &opt};
    CHECK(expect_exit(load_checkpoint, &ctx, 0, "ckpt_00000005.bin: its name says step 5, but it holds step 7"),
          "a checkpoint named for another step loads without a warning");
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    run_command(cmd, out, sizeof out);
    adamw_free(&opt);
    gpt_free(&m);
}

// A key given twice, a repeated --config, a NUL escaped into a string: refused, naming what.
static void test_config_repeats_and_nul(void) {
    static const struct { const char *json, *expect; } cases[] = {
        {"{\"train\":{\"lr\":1e-3,\"lr\":2e-3}}", "train.lr is given twice"},
        {"{\"train\":{\"lr\":1e-3},\"model\":{},\"train\":{\"steps\":5}}", "train is given twice"},
        {"{\"model\":{\"blocks\":[{\"placement\":\"pre\",\"placement\":\"post\"}]}}", "model.blocks[0].placement is given twice"},
        {"{\"data\":{\"train\":\"data/brown/\\u0000train_*.bin\"}}", "\\u0000"},
    };
    run_command("mkdir -p " DIR_, out, sizeof out);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        FILE *f = fopen(DIR_ "/config.json", "w");
        fputs(cases[i].json, f);
        fclose(f);
        int rc = run_command("./train --config " DIR_ "/config.json", out, sizeof out);
        CHECK(rc == 2 && strstr(out, cases[i].expect) && strstr(out, DIR_ "/config.json"), "%s: rc %d: %s",
              cases[i].json, rc, out);
    }
    // An escaped backslash before "u0000" is text, not a NUL.
    FILE *f = fopen(DIR_ "/config.json", "w");
    fputs("{\"data\":{\"train\":\"no\\\\u0000such*.bin\"}}", f);
    fclose(f);
    int rc = run_command("./train --config " DIR_ "/config.json --out.dir=" DIR_ "/out", out, sizeof out);
    CHECK(rc == 1 && strstr(out, "no\\u0000such"), "escaped backslash: rc %d: %s", rc, out);
    rc = run_command("./train --config configs/default.json --config configs/default.json", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "--config is given twice"), "repeated --config: rc %d: %s", rc, out);
    run_command("rm -rf " DIR_, out, sizeof out);
}

// A live run holds its directory: a second start, --overwrite or --resume there is refused naming
// its PID; once it is killed (kill -9 leaves the lock file), --resume works.
static void test_run_dir_lock(void) {
    run_command("rm -rf " DIR_, out, sizeof out);
    pid_t pid = spawn(SMALL " --train.steps=40 --eval.every=0 --out.checkpoint_every=1 --out.keep=2 --out.dir=" DIR_,
                      DIR_ ".out");
    CHECK(wait_for_file(DIR_ "/ckpt_00000001.bin", pid), "no first checkpoint");
    char holder[64];
    snprintf(holder, sizeof holder, "process %d ", (int)pid);
    static const char *second[] = {SMALL " --train.steps=5 --out.dir=" DIR_,
                                   SMALL " --train.steps=5 --overwrite --out.dir=" DIR_, "./train --resume " DIR_};
    for (int i = 0; i < 3; i++) {
        int rc = run_command(second[i], out, sizeof out);
        CHECK(rc == 1 && strstr(out, holder) && strstr(out, "in use"), "%s: rc %d: %s", second[i], rc, out);
    }
    CHECK(waitpid(pid, NULL, WNOHANG) == 0, "the first run ended early (or was disturbed)");
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    int rc = run_command("./train --resume " DIR_ " | tail -n 3", out, sizeof out);
    CHECK(rc == 0 && strstr(out, "checkpoint: " DIR_ "/ckpt_00000040.bin"), "resume after kill -9: rc %d: %s", rc, out);
    run_command("rm -rf " DIR_ " " DIR_ ".out", out, sizeof out);
}

// A start refused before its run begins leaves no directory and no file behind; one too big for the
// memory there is is refused with the budget and the hint before anything is allocated.
static void test_refused_start_leaves_nothing(void) {
    run_command("rm -rf " DIR_, out, sizeof out);
    int rc = run_command(SMALL " --data.train=build/tmp/normgpt_none_*.bin --out.dir=" DIR_ "/a/b", out, sizeof out);
    CHECK(rc == 1 && strstr(out, "data.train"), "missing shards: rc %d: %s", rc, out);
    CHECK(run_command("test -e " DIR_, out, sizeof out) != 0, "a refused start left " DIR_ " behind");
    // 64 layers of width 8192: about 600 GiB of parameters, gradients and moments.
    rc = run_command("./train --config configs/default.json --model.n_layer=64 --model.n_embd=8192 --model.n_head=64 "
                     "--out.dir=" DIR_, out, sizeof out);
    CHECK(rc == 1 && strstr(out, "memory budget: ") && strstr(out, "GiB are available") &&
          strstr(out, "train.recompute=true") && strstr(out, "train.batch_size"), "too big: rc %d: %s", rc, out);
    CHECK(run_command("test -e " DIR_, out, sizeof out) != 0, "a refused start left " DIR_ " behind");
    // An existing directory keeps what it had, and gets nothing new.
    rc = run_command("mkdir -p " DIR_ " && touch " DIR_ "/mine && " SMALL " --model.n_layer=64 --model.n_embd=8192 "
                     "--model.n_head=64 --out.dir=" DIR_, out, sizeof out);
    run_command("ls -A " DIR_, out, sizeof out);
    CHECK(strstr(out, "mine\n") && !strstr(out, "lock") && !strstr(out, "config.json"), "left behind: %s", out);
    run_command("rm -rf " DIR_, out, sizeof out);
}

// A run stopped before its first checkpoint: both ways back say --overwrite, neither says the other.
static void test_no_checkpoint_advice(void) {
    run_command("rm -rf " DIR_ " && mkdir -p " DIR_ " && echo '{\"step\":0,\"val_loss\":9}' > " DIR_ "/log.jsonl",
                out, sizeof out);
    int rc = run_command(SMALL " --out.dir=" DIR_, out, sizeof out);
    CHECK(rc == 1 && strstr(out, "--overwrite") && !strstr(out, "--resume"), "fresh start: rc %d: %s", rc, out);
    rc = run_command("./train --resume " DIR_, out, sizeof out);
    CHECK(rc == 1 && strstr(out, "--overwrite") && strstr(out, "no valid checkpoint"), "resume: rc %d: %s", rc, out);
    run_command("rm -rf " DIR_, out, sizeof out);
}

// Wait (up to a minute) until the file at `path` holds `text`, or the process has ended; the file's
// text is left in `out`.
static int wait_for_text(const char *path, const char *text, pid_t pid) {
    for (int i = 0; i < 6000; i++) {
        FILE *f = fopen(path, "r");
        size_t n = f ? fread(out, 1, sizeof out - 1, f) : 0;
        out[n] = '\0';
        if (f) fclose(f);
        if (strstr(out, text)) return 1;
        if (waitpid(pid, NULL, WNOHANG) == pid) return 0;
        usleep(10000);
    }
    return 0;
}

// One step of 256 micro-batches: a few seconds.
#define LONG_STEPS SMALL " --train.batch_size=1 --train.total_batch_tokens=16384 --train.steps=4 --eval.every=0 " \
                   "--out.checkpoint_every=1 --overwrite --out.dir=" DIR_

// A signal stops the step in progress between two micro-batches: the step is discarded, the last
// completed one is kept; a signal during start-up stops the run, not the process; a second signal
// ends the process at once.
static void test_signal_mid_step(void) {
    run_command("rm -rf " DIR_, out, sizeof out);
    pid_t pid = spawn(LONG_STEPS, DIR_ ".out");
    CHECK(wait_for_file(DIR_ "/ckpt_00000001.bin", pid), "no first checkpoint");
    kill(pid, SIGTERM);
    int status;
    waitpid(pid, &status, 0);
    wait_for_text(DIR_ ".out", "", pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0 && strstr(out, "step 2 was stopped unfinished and discarded") &&
          strstr(out, "stopped by signal 15 after step 1;"), "SIGTERM mid-step: status %d: %s", status, out);
    CHECK(run_command("test -e " DIR_ "/ckpt_00000002.bin", out, sizeof out) != 0, "the discarded step was saved");
    CHECK(run_command("grep -c '\"step\":2' " DIR_ "/log.jsonl", out, sizeof out) != 0, "the discarded step was logged");

    // During start-up (before any step): stopped, told --overwrite, exit 0.
    unlink(DIR_ ".out");
    pid = spawn(LONG_STEPS, DIR_ ".out");
    CHECK(wait_for_text(DIR_ ".out", "normgpt: ", pid), "no start-up line");
    kill(pid, SIGTERM);
    waitpid(pid, &status, 0);
    wait_for_text(DIR_ ".out", "", pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0 && strstr(out, "--overwrite"),
          "SIGTERM at start-up: status %d: %s", status, out);

    // Two signals: the second ends the process at once. The run starts with a long evaluation (all of
    // data.val), so that it is still running when the second signal comes.
    unlink(DIR_ ".out");
    pid = spawn(SMALL " --train.steps=4 --eval.every=1 --eval.batches=1000 --overwrite --out.dir=" DIR_, DIR_ ".out");
    CHECK(wait_for_text(DIR_ ".out", "normgpt: ", pid), "no start-up line");
    kill(pid, SIGINT);
    usleep(200000);
    kill(pid, SIGINT);
    waitpid(pid, &status, 0);
    wait_for_text(DIR_ ".out", "", pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 128 + SIGINT && strstr(out, "second signal"),
          "two SIGINTs: status %d: %s", status, out);
    run_command("rm -rf " DIR_ " " DIR_ ".out", out, sizeof out);
}

// A run of 40 steps with a checkpoint every 2 and out.keep = `keep`, stopped by SIGTERM after its
// step-6 checkpoint, in `dir`. Returns 0 when it did not stop as asked.
static int stopped_run(const char *dir, int keep) {
    char cmd[4096], log[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    run_command(cmd, out, sizeof out);
    snprintf(cmd, sizeof cmd, SMALL " --train.steps=40 --eval.every=0 --out.checkpoint_every=2 --out.keep=%d "
             "--out.dir=%s", keep, dir);
    snprintf(log, sizeof log, "%s/ckpt_00000006.bin", dir);
    pid_t pid = spawn(cmd, DIR_ ".out");
    int started = wait_for_file(log, pid);
    kill(pid, SIGTERM);
    int status;
    waitpid(pid, &status, 0);
    CHECK(started && WIFEXITED(status) && WEXITSTATUS(status) == 0, "the run to stop: status %d", status);
    return started && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// out.keep = 1 and an unreadable checkpoint of a later step: the resumed run keeps its valid ones.
static void test_retention_counts_verified(void) {
    if (!stopped_run(DIR_, 1)) return;
    int rc = run_command("head -c 5000 README.md > " DIR_ "/ckpt_00000999.bin && ./train --resume " DIR_, out,
                         sizeof out);
    CHECK(rc == 0 && strstr(out, "ckpt_00000999.bin: not a normgpt checkpoint"), "resume: rc %d: %s", rc, out);
    rc = run_command("ls " DIR_, out, sizeof out);
    CHECK(strstr(out, "ckpt_00000040.bin") && strstr(out, "ckpt_00000999.bin") && strstr(out, "lock") &&
          count_lines(out) == 5, "what retention left: %s", out);  // config.json, log.jsonl, lock, 40, 999
    run_command("rm -rf " DIR_ " " DIR_ ".out", out, sizeof out);
}

// A stopped run resumes on a disk that holds its checkpoints and half as much again: it needs room
// for one more at a time (out.keep = 3 are there already), not out.keep + 1.
static void test_resume_on_tight_disk(void) {
    const char *src = DIR_ "_src";
    if (!stopped_run(src, 3)) return;
    long used = 0, one = 0;
    run_command("du -sb --apparent-size " DIR_ "_src | cut -f1; stat -c %s " DIR_ "_src/ckpt_00000006.bin", out,
                sizeof out);
    sscanf(out, "%ld %ld", &used, &one);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "rm -rf " DIR_ " && mkdir -p " DIR_ " && mount -t tmpfs -o size=%ld tmpfs " DIR_,
             used + one * 3 / 2 + (1 << 20));
    if (run_command(cmd, out, sizeof out) != 0) {
        printf("    skipped: cannot mount a tmpfs (%s)\n", out);
        run_command("rm -rf " DIR_ " " DIR_ "_src " DIR_ ".out", out, sizeof out);
        return;
    }
    run_command("cp " DIR_ "_src/* " DIR_ "/", out, sizeof out);
    int rc = run_command("./train --resume " DIR_, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "checkpoint: " DIR_ "/ckpt_00000040.bin"), "resume on a tight disk: rc %d: %s", rc,
          out);
    run_command("umount " DIR_ "; rm -rf " DIR_ " " DIR_ "_src " DIR_ ".out", out, sizeof out);
}

// Resume keeps whole lines of any length (a block-diagnostics line of deep models exceeds 64 KiB)
// and drops a torn last line, which the next line appended would otherwise merge with.
static void test_log_truncation(void) {
    run_command("rm -rf " DIR_ " && mkdir -p " DIR_, out, sizeof out);
    static char long_line[100000];
    int n = snprintf(long_line, sizeof long_line, "{\"step\":2,\"diag\":{\"rms\":[");
    while (n < 90000) n += snprintf(long_line + n, sizeof long_line - n, "1.234567,");
    snprintf(long_line + n, sizeof long_line - n, "1]}}\n");
    FILE *f = fopen(DIR_ "/log.jsonl", "w");
    fprintf(f, "{\"step\":1,\"loss\":9}\n%s{\"step\":2,\"loss\":8}\n{\"step\":3,\"loss\":7}\n{\"step\":2,\"lo",
            long_line);
    fclose(f);
    RunDir r = run_dir_at(DIR_);
    run_dir_truncate_log(&r, 2);
    static char got[200000], want[200000];
    f = fopen(DIR_ "/log.jsonl", "r");
    size_t len = fread(got, 1, sizeof got - 1, f);
    got[len] = '\0';
    fclose(f);
    snprintf(want, sizeof want, "{\"step\":1,\"loss\":9}\n%s{\"step\":2,\"loss\":8}\n", long_line);
    CHECK(!strcmp(got, want), "truncated log: %zu bytes, want %zu", strlen(got), strlen(want));
    run_command("rm -rf " DIR_, out, sizeof out);
}

// The disk fills in the middle of a run: the failed log write stops it (exit 1, naming the log)
// rather than losing lines.
static void test_log_write_failure_stops(void) {
    run_command("rm -rf " DIR_ " && mkdir -p " DIR_, out, sizeof out);
    if (run_command("mount -t tmpfs -o size=40m tmpfs " DIR_, out, sizeof out) != 0) {
        printf("    skipped: cannot mount a tmpfs (%s)\n", out);
        return;
    }
    pid_t pid = spawn(SMALL " --train.steps=400 --eval.every=0 --out.checkpoint_every=0 --out.keep=1 --overwrite "
                      "--out.dir=" DIR_, DIR_ ".out");
    CHECK(wait_for_text(DIR_ "/log.jsonl", "{\"step\":3,", pid), "no step 3 in the log");
    run_command("dd if=/dev/zero of=" DIR_ "/filler bs=1M 2>/dev/null", out, sizeof out);  // until the disk is full
    int status;
    waitpid(pid, &status, 0);
    wait_for_text(DIR_ ".out", "", pid);  // its output, into out
    size_t n = strlen(out);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 1 && strstr(out, "log.jsonl: write failed"),
          "disk full: status %d: %s", status, out + (n > 600 ? n - 600 : 0));
    run_command("umount " DIR_ "; rm -rf " DIR_ " " DIR_ ".out", out, sizeof out);
}

const TestCase robust_tests[] = {
    {"robust: FIFOs as inputs are refused, no hang", test_special_files_refused},
    {"robust: checkpoint run state validated on load", test_checkpoint_run_state_validated},
    {"robust: repeated keys, repeated --config, \\u0000 refused", test_config_repeats_and_nul},
    {"robust: a live run locks its directory", test_run_dir_lock},
    {"robust: a refused start leaves nothing behind", test_refused_start_leaves_nothing},
    {"robust: stopped before the first checkpoint: --overwrite", test_no_checkpoint_advice},
    {"robust: signals stop a long step between micro-batches", test_signal_mid_step},
    {"robust: retention counts only verified checkpoints", test_retention_counts_verified},
    {"robust: resume on a tight disk", test_resume_on_tight_disk},
    {"robust: resume keeps long log lines, drops a torn one", test_log_truncation},
    {"robust: a failed log write stops the run", test_log_write_failure_stops},
    {NULL, NULL},
};
