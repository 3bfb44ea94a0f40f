// Data-parallel training: the MPI trainer (build/mpi/train, `make MPI=1`) under mpiexec against the
// one-process trainer. Every rank runs one thread, so 2 ranks fit the CI machine's 2 cores.
#include "testing.h"
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char out[1 << 16];

// 2 ranks sum each step's gradients in another order than 1 process (each rank's sgemm sums over its
// own windows, then MPI adds the two halves), so fp32 results differ in the last bits, and 8 AdamW
// steps carry that on: measured differences are below 2e-6 in loss; a wrong slice of the data or a
// wrong gradient scale moves the loss by 1e-3 or more from the first step.
#define LOSS_TOL 1e-4

#define MPI2 "mpiexec -n 2 build/mpi/train"
#define BASE "--config configs/default.json --model.n_layer=2 --model.n_embd=64 --model.n_head=4 " \
             "--model.block_size=64 --train.seq_len=64 --train.warmup_steps=3 --eval.batches=4 --eval.every=4 " \
             "--sample.tokens=16 --sample.every=0 --train.threads=1 --out.keep=10 --overwrite"

// The "loss" and "val_loss" values of a run's log, in order.
static int read_losses(const char *dir, double *losses, int max) {
    char path[512], line[4096];
    snprintf(path, sizeof path, "%s/log.jsonl", dir);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int n = 0;
    while (fgets(line, sizeof line, f) && n < max) {
        cJSON *o = cJSON_Parse(line);
        const cJSON *loss = cJSON_GetObjectItemCaseSensitive(o, "loss");
        if (!loss) loss = cJSON_GetObjectItemCaseSensitive(o, "val_loss");
        if (cJSON_IsNumber(loss)) losses[n++] = loss->valuedouble;
        cJSON_Delete(o);
    }
    fclose(f);
    return n;
}

// Compare two runs' logs: the same number of entries, each within tol (0: bitwise). Returns 1 if so.
static int same_losses(const char *a, const char *b, int expect, double tol) {
    double la[64], lb[64], worst = 0;
    int na = read_losses(a, la, 64), nb = read_losses(b, lb, 64);
    CHECK(na == expect && nb == expect, "%s vs %s: %d and %d log entries, expected %d", a, b, na, nb, expect);
    if (na != expect || nb != expect) return 0;
    for (int i = 0; i < na; i++) worst = fmax(worst, fabs(la[i] - lb[i]));
    CHECK(worst <= tol, "%s vs %s: losses differ by up to %.3g (tolerance %.1g)", a, b, worst, tol);
    printf("    %s vs %s: %d losses, largest difference %.2g\n", a, b, na, worst);
    return worst <= tol;
}

// Run the command printf(fmt, ...) and check that it succeeds.
static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 0, "rc %d: %s\n%s", rc, cmd, out);
    return rc == 0;
}

// The same global batch trained by 1 process and by 2 ranks: one micro-batch of 16 windows split into
// 8 per rank, and 4 micro-batches of 8 (gradient accumulation) split into 2 per rank. Then resuming:
// with 2 ranks the continuation is bitwise the uninterrupted run; with 1 process it is allowed (the
// global batch does not depend on the ranks) and matches to the same tolerance.
static void test_two_ranks_equal_one(void) {
    static const char *shapes[] = {"--train.batch_size=16 --train.total_batch_tokens=1024",
                                   "--train.batch_size=8 --train.total_batch_tokens=2048"};
    for (int k = 0; k < 2; k++) {
        char opts[1024];
        // warmup longer than the run: a config note, which only rank 0 may print
        snprintf(opts, sizeof opts, BASE " %s --train.steps=8 --train.warmup_steps=20 --out.checkpoint_every=4", shapes[k]);
        if (!run("./train %s --out.dir=build/tmp/normgpt_dp1", opts)) return;
        if (!run(MPI2 " %s --out.dir=build/tmp/normgpt_dp2", opts)) return;
        CHECK(strstr(out, "data-parallel: 2 ranks") && strstr(out, "x 2 ranks;"), "no data-parallel line: %s", out);
        const char *first = strstr(out, "config (resolved)");
        CHECK(first && !strstr(first + 1, "config (resolved)"), "not exactly one rank printed: %s", out);
        const char *note = strstr(out, "note: train.warmup_steps");
        CHECK(note && !strstr(note + 1, "note: train.warmup_steps"), "the config note is not printed once: %s", out);
        same_losses("build/tmp/normgpt_dp1", "build/tmp/normgpt_dp2", 8 + 3, LOSS_TOL);  // 8 steps, evals at 0, 4, 8
    }
    // Resume the step-4 checkpoint of the 2-rank run (accumulation shape) with 2 ranks, then with 1.
#define SETUP "rm -rf build/tmp/normgpt_dp_r && mkdir -p build/tmp/normgpt_dp_r && cp build/tmp/normgpt_dp2/ckpt_00000004.bin " \
              "build/tmp/normgpt_dp2/config.json build/tmp/normgpt_dp2/log.jsonl build/tmp/normgpt_dp_r/"
    if (!run(SETUP " && " MPI2 " --resume build/tmp/normgpt_dp_r")) return;
    same_losses("build/tmp/normgpt_dp2", "build/tmp/normgpt_dp_r", 8 + 3, 0);
    CHECK(run_command("cmp build/tmp/normgpt_dp2/ckpt_00000008.bin build/tmp/normgpt_dp_r/ckpt_00000008.bin", out, sizeof out)
              == 0, "final checkpoints of the 2-rank run and its 2-rank resumption differ: %s", out);
    if (!run(SETUP " && ./train --resume build/tmp/normgpt_dp_r")) return;
    CHECK(strstr(out, "trained on 2 rank(s), now 1"), "resume on another world size not reported: %s", out);
    same_losses("build/tmp/normgpt_dp2", "build/tmp/normgpt_dp_r", 8 + 3, LOSS_TOL);
    // A global batch that cannot be split evenly is refused by name.
    int rc = run_command("mpiexec -n 3 build/mpi/train " BASE " --train.batch_size=16 --train.total_batch_tokens=1024 "
                         "--out.dir=build/tmp/normgpt_dp3", out, sizeof out);
    CHECK(rc != 0 && strstr(out, "train.total_batch_tokens") && strstr(out, "3 ranks"), "16 windows on 3 ranks: %s",
          out);
    run_command("rm -rf build/tmp/normgpt_dp1 build/tmp/normgpt_dp2 build/tmp/normgpt_dp_r build/tmp/normgpt_dp3", out, sizeof out);
}

#define STOP_RUN MPI2 " " BASE " --train.batch_size=8 --train.total_batch_tokens=1024 --train.steps=16 " \
                 "--out.checkpoint_every=2 --out.dir="
#define STOP_REF "build/tmp/normgpt_dp_ref"
#define STOP_DIR "build/tmp/normgpt_dp_stop"

// Start `cmd` in the background with NORMGPT_TEST_TAG=tag in its environment (mpiexec passes it on
// to the ranks), its output to out_path.
static pid_t spawn_tagged(const char *cmd, const char *tag, const char *out_path) {
    char full[8192];
    snprintf(full, sizeof full, "NORMGPT_TEST_TAG=%s exec %s > %s 2>&1", tag, cmd, out_path);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", full, (char *)NULL);
        _exit(127);
    }
    return pid;
}

// The pid of the trainer process that is MPI rank `rank` of the job tagged `tag`, or 0.
static pid_t find_rank(const char *tag, int rank) {
    char want_tag[128], want_rank[32], path[300], env[1 << 15];
    snprintf(want_tag, sizeof want_tag, "NORMGPT_TEST_TAG=%s", tag);
    snprintf(want_rank, sizeof want_rank, "PMI_RANK=%d", rank);
    DIR *d = opendir("/proc");
    pid_t found = 0;
    for (struct dirent *e; d && !found && (e = readdir(d));) {
        snprintf(path, sizeof path, "/proc/%s/environ", e->d_name);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        size_t n = fread(env, 1, sizeof env - 1, f);
        fclose(f);
        int tagged = 0, ranked = 0;
        for (size_t i = 0; i < n; i += strlen(env + i) + 1) {
            env[n] = '\0';
            tagged |= !strcmp(env + i, want_tag);
            ranked |= !strcmp(env + i, want_rank);
        }
        char exe[300], link[300];
        snprintf(exe, sizeof exe, "/proc/%s/exe", e->d_name);
        ssize_t len = readlink(exe, link, sizeof link - 1);
        link[len > 0 ? len : 0] = '\0';
        if (tagged && ranked && strstr(link, "build/mpi/train")) found = (pid_t)atoi(e->d_name);
    }
    if (d) closedir(d);
    return found;
}

// Wait (up to a minute) for `path` to exist while the job runs. Returns 1 if it appeared.
static int wait_for(const char *path, pid_t pid) {
    struct stat st;
    for (int i = 0; i < 6000; i++) {
        if (stat(path, &st) == 0) return 1;
        if (waitpid(pid, NULL, WNOHANG) == pid) return 0;
        usleep(10000);
    }
    return 0;
}

static void read_file(const char *path) {
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(out, 1, sizeof out - 1, f) : 0;
    out[n] = '\0';
    if (f) fclose(f);
}

// Resume STOP_DIR with 2 ranks: it must finish as the uninterrupted reference did, bitwise; then clear it.
static void check_resumes_as_reference(void) {
    if (!run(MPI2 " --resume " STOP_DIR)) return;
    same_losses(STOP_REF, STOP_DIR, 16 + 5, 0);  // 16 steps, evals at 0, 4, 8, 12, 16
    CHECK(run_command("cmp " STOP_REF "/ckpt_00000016.bin " STOP_DIR "/ckpt_00000016.bin", out, sizeof out) == 0,
          "the resumed run's final checkpoint differs from the uninterrupted one: %s", out);
    run_command("rm -rf " STOP_DIR, out, sizeof out);
}

// A signal to one rank only: both ranks stop after the same step, rank 0 checkpoints it, exit 0.
// A rank killed with SIGKILL: mpiexec ends the job with a non-zero status and says which process
// died; the checkpoints already written are whole and the run resumes.
static void test_stop_and_kill(void) {
    // The reference is trained in STOP_DIR too: the out.dir in its checkpoints' config must match.
    if (!run("rm -rf " STOP_REF " " STOP_DIR " && " STOP_RUN STOP_DIR " && mv " STOP_DIR " " STOP_REF)) return;
    for (int kill9 = 0; kill9 < 2; kill9++) {
        pid_t job = spawn_tagged(STOP_RUN STOP_DIR, kill9 ? "kill" : "term", STOP_DIR ".out");
        CHECK(wait_for(STOP_DIR "/ckpt_00000002.bin", job), "no first checkpoint");
        pid_t rank1 = find_rank(kill9 ? "kill" : "term", 1);
        CHECK(rank1 > 0, "rank 1 of the job not found");
        if (rank1 > 0) kill(rank1, kill9 ? SIGKILL : SIGTERM);
        int status;
        waitpid(job, &status, 0);
        read_file(STOP_DIR ".out");
        if (kill9) {
            CHECK(WIFEXITED(status) && WEXITSTATUS(status) != 0 && strstr(out, "BAD TERMINATION") &&
                  strstr(out, "signal 9"), "SIGKILL to rank 1: status %d: %s", status, out);
        } else {
            long stopped = -1;
            const char *line = strstr(out, "stopped by signal 15 after step ");
            if (line) sscanf(line, "stopped by signal 15 after step %ld", &stopped);
            char ckpt[256];
            snprintf(ckpt, sizeof ckpt, STOP_DIR "/ckpt_%08ld.bin", stopped);
            struct stat st;
            CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0 && stopped >= 2 && stopped < 16 &&
                  stat(ckpt, &st) == 0, "SIGTERM to rank 1: status %d, stopped at %ld: %s", status, stopped, out);
        }
        check_resumes_as_reference();
    }
    run_command("rm -rf " STOP_REF " " STOP_DIR " " STOP_DIR ".out", out, sizeof out);
}

const TestCase dist_tests[] = {
    {"dist: 2 ranks train as 1 process; resume", test_two_ranks_equal_one},
    {"dist: SIGTERM to a rank stops all; kill -9", test_stop_and_kill},
    {NULL, NULL},
};
