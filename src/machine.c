#include "machine.h"
#include "dist.h"
#include <omp.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

int use_threads(const Config *cfg) {
    int share = omp_get_max_threads() / dist_local_ranks();  // OMP_NUM_THREADS or every core
    int threads = cfg->threads > 0 ? (int)cfg->threads : share > 1 ? share : 1;
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
    return threads;
}

void print_machine(int threads) {
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    printf("threads: %d, one OpenMP pool shared with %s; sgemm core %s%s%s\n", threads, openblas_get_config(),
           openblas_get_corename(), coretype ? ", forced by OPENBLAS_CORETYPE=" : "", coretype ? coretype : "");
}

// Another program's load can only slow a run down, so the fastest of many short runs, spread over about
// half a second, is the one nearest what the cores can do when they are free.
double measure_sgemm_peak(void) {
    const int n = 512, max_runs = 64;
    const double max_seconds = 0.5;
    float *a = xcalloc((size_t)n * n, sizeof(float)), *b = xcalloc((size_t)n * n, sizeof(float)),
          *c = xcalloc((size_t)n * n, sizeof(float));
    for (size_t i = 0; i < (size_t)n * n; i++) { a[i] = (float)(i % 7) * 0.1f; b[i] = (float)(i % 5) * 0.1f; }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);  // wakes the threads
    double best = 1e30, start = now_seconds();
    for (int run = 0; run < max_runs && now_seconds() - start < max_seconds; run++) {
        double t0 = now_seconds();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        double dt = now_seconds() - t0;
        if (dt < best) best = dt;
    }
    free(a); free(b); free(c);
    return 2.0 * n * n * n / best;
}

double mfu_percent(double flops_per_token, double tok_s, double peak, const char **remark) {
    double mfu = 100 * flops_per_token * tok_s / peak;
    *remark = mfu > 100 ? " (peak measured under load)" : "";
    return mfu;
}

// One number from a file (a /proc or /sys entry); -1 when absent or not a number ("max").
static double read_number(const char *path, const char *after) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[256];
    double x = -1;
    while (fgets(line, sizeof line, f)) {
        if (after && strncmp(line, after, strlen(after)) != 0) continue;
        char *end;
        double v = strtod(line + (after ? strlen(after) : 0), &end);
        if (end != line + (after ? strlen(after) : 0)) x = after ? v * 1024 : v;  // meminfo counts kB
        break;
    }
    fclose(f);
    return x;
}

// Bytes this process can still take: MemAvailable, and what is left under a cgroup's limit (v2 or v1).
static double available_memory(void) {
    double avail = read_number("/proc/meminfo", "MemAvailable:");
    if (avail < 0) avail = (double)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE);
    static const char *cgroups[][2] = {{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"},
                                       {"/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                        "/sys/fs/cgroup/memory/memory.usage_in_bytes"}};
    for (int i = 0; i < 2; i++) {
        double limit = read_number(cgroups[i][0], NULL), used = read_number(cgroups[i][1], NULL);
        if (limit > 0 && limit < 1e18 && limit - (used > 0 ? used : 0) < avail) avail = limit - (used > 0 ? used : 0);
    }
    return avail;
}

// The activations are those saved for the backward, plus its scratch. `m` may be a plan (gpt_plan):
// a run too big for the machine is then refused before anything is allocated or written.
double memory_budget(const GPT *m) {
    double params = (double)m->n_params * sizeof(real), acts = (double)m->n_acts * sizeof(real);
    double copies = (double)m->n_bf16 * sizeof(bf16);  // bf16 runs: the weights' and operands' copies
    double total = 4 * params + acts + copies, avail = available_memory(), ranks = dist_local_ranks();
    char bf16_part[64] = "";
    if (m->bf16) snprintf(bf16_part, sizeof bf16_part, " + bf16 copies %.1f", copies / MiB);
    printf("memory budget: parameters %.1f + gradients %.1f + AdamW moments %.1f + activations %.1f%s%s = %.1f MiB\n",
           params / MiB, params / MiB, 2 * params / MiB, acts / MiB, m->recompute ? " (recomputed)" : "", bf16_part,
           total / MiB);
    if (total * ranks > avail)
        die(1, "memory: the run needs %.2f GiB%s but %.2f GiB are available (MemAvailable, cgroup limit); %s",
            total * ranks / 1024 / MiB, ranks > 1 ? " for its ranks on this machine" : "", avail / 1024 / MiB,
            m->recompute ? "lower train.batch_size (gradient accumulation keeps the step's tokens)"
                           : "set train.recompute=true, or lower train.batch_size");
    return total;
}

double peak_rss_bytes(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return usage.ru_maxrss * 1024.0;  // kilobytes on Linux
}
