#include "testing.h"
#include <math.h>
#include <omp.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

int test_failures;

#define FD_STEP 1e-5
// Central differences in double have an error near FD_STEP^2 * f''' plus rounding near
// 1e-16 / FD_STEP; a wrong formula is off by O(1) relative.
#define FD_TOL 1e-6

int gradcheck(const char *what, real *x, size_t n, const real *analytic, double (*loss)(void *), void *ctx) {
    int bad = 0;
    double worst = 0;
    size_t worst_i = 0;
    double worst_a = 0, worst_n = 0;
    for (size_t i = 0; i < n; i++) {
        real saved = x[i];
        x[i] = saved + FD_STEP;
        double up = loss(ctx);
        x[i] = saved - FD_STEP;
        double down = loss(ctx);
        x[i] = saved;
        double numeric = (up - down) / (2 * FD_STEP);
        double scale = fmax(1.0, fmax(fabs(numeric), fabs(analytic[i])));
        double err = fabs(numeric - analytic[i]) / scale;
        if (err > FD_TOL) bad++;
        if (err >= worst) { worst = err; worst_i = i; worst_a = analytic[i]; worst_n = numeric; }
    }
    if (bad)
        fprintf(stderr, "    %s: %d of %zu gradients off; worst [%zu] analytic %.10g numeric %.10g\n", what, bad, n,
                worst_i, worst_a, worst_n);
    return bad;
}

void fill_normal(real *x, size_t n, double std, Rng *r) {
    for (size_t i = 0; i < n; i++) x[i] = (real)(std * rng_normal(r));
}

int expect_exit(void (*fn)(void *), void *ctx, int code, const char *expect) {
    int pipefd[2];
    if (pipe(pipefd) != 0) return 0;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pipefd[1], 2);
        close(pipefd[0]);
        // The parent's OpenMP thread pool does not survive fork(): run the child single-threaded.
        omp_set_num_threads(1);
        openblas_set_num_threads(1);
        fn(ctx);
        _exit(0);
    }
    close(pipefd[1]);
    char buf[4096] = {0};
    size_t len = 0;
    for (ssize_t r; len < sizeof buf - 1 && (r = read(pipefd[0], buf + len, sizeof buf - 1 - len)) > 0;) len += r;
    close(pipefd[0]);
    int status;
    waitpid(pid, &status, 0);
    int ok = WIFEXITED(status) && WEXITSTATUS(status) == code && strstr(buf, expect) != NULL;
    int lines = 0;
    for (char *p = buf; *p; p++) lines += *p == '\n';
    ok = ok && lines == 1;  // one clear line
    if (!ok)
        fprintf(stderr, "    expected exit %d with one line naming '%s'; got %s %d: %s", code, expect,
                WIFEXITED(status) ? "exit" : "signal", WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), buf);
    return ok;
}

void trainer_command(const char *cmd, char *full, size_t size) {
    const char *trainer = getenv("NORMGPT_TRAIN");
    size_t len = 0;
    full[0] = '\0';
    for (const char *p = cmd; *p && len + 1 < size;) {
        int at_trainer = !strncmp(p, "./train", 7) && (p[7] == ' ' || p[7] == '\0');
        if (at_trainer && trainer) {
            len += snprintf(full + len, size - len, "%s", trainer);
            p += 7;
        } else {
            full[len++] = *p++;
            full[len] = '\0';
        }
    }
    if (len + 1 >= size) die(1, "command too long: %s", cmd);
}

int run_command(const char *cmd, char *out, size_t size) {
    char trainer_cmd[8192], full[8300];
    trainer_command(cmd, trainer_cmd, sizeof trainer_cmd);
    snprintf(full, sizeof full, "%s 2>&1", trainer_cmd);
    FILE *p = popen(full, "r");
    if (!p) return -1;
    size_t len = 0;
    out[0] = '\0';
    for (size_t r; (r = fread(out + len, 1, size - 1 - len, p)) > 0 && len + r < size - 1;) len += r;
    out[len] = '\0';
    char sink[4096];
    while (fread(sink, 1, sizeof sink, p) > 0) {}
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

pid_t spawn(const char *cmd, const char *out_path) {
    char full[8192], exec_cmd[8300];
    trainer_command(cmd, full, sizeof full);
    snprintf(exec_cmd, sizeof exec_cmd, "exec %s > %s 2>&1", full, out_path);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", exec_cmd, (char *)NULL);
        _exit(127);
    }
    return pid;
}

int wait_for_file(const char *path, pid_t pid) {
    struct stat st;
    for (int i = 0; i < 6000; i++) {
        if (stat(path, &st) == 0) return 1;
        if (waitpid(pid, NULL, WNOHANG) == pid) return stat(path, &st) == 0;
        usleep(10000);
    }
    return 0;
}

int main(int argc, char **argv) {
    const TestCase *suites[] = {kernel_tests, norm_tests, model_tests, checkpoint_tests, convert_tests, generate_tests,
                                data_config_tests, cli_tests, dist_tests, method_tests, torch_tests, diag_tests,
                                tokenizer_tests, export_tests, plot_tests, bf16_tests, robust_tests};
    const char *only = argc > 1 ? argv[1] : NULL;  // optional substring filter
    int passed = 0, failed = 0;
    // Every file a test writes lives under build/tmp/ of this checkout (relative paths), so the suites
    // of two checkouts running at once cannot delete each other's run directories.
    if (make_dirs("build/tmp") != 0) die(1, "build/tmp: cannot create the tests' directory");
    omp_set_num_threads(2);
    openblas_set_num_threads(2);
    for (size_t s = 0; s < sizeof suites / sizeof suites[0]; s++) {
        for (const TestCase *t = suites[s]; t->name; t++) {
            if (only && !strstr(t->name, only)) continue;
            test_failures = 0;
            double t0 = now_seconds();
            t->fn();
            printf("%s %-44s %6.2fs\n", test_failures ? "FAIL" : "ok  ", t->name, now_seconds() - t0);
            fflush(stdout);
            if (test_failures) failed++; else passed++;
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
