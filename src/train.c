// normgpt command line: ./train --config FILE [--section.key=value ...] | --resume RUN_DIR |
// --convert CKPT --to rmsnorm|crmsnorm --out FILE | --generate CKPT_OR_CONFIG [--tokens N] [--batch B] |
// --probe RUN_DIR
// One obvious path: config -> model -> data -> loop (forward, backward, clip, AdamW, log, eval,
// sample, checkpoint).
#include "checkpoint.h"
#include "common.h"
#include "config.h"
#include "convert.h"
#include "data.h"
#include "diagnostics.h"
#include "dist.h"
#include "kernels.h"
#include "model.h"
#include "optim.h"
#include "profile.h"
#include "rng.h"
#include "sample.h"
#include "tokenizer.h"
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

static volatile sig_atomic_t stop_signal = 0;
static void on_signal(int sig) { stop_signal = sig; }

static void usage(FILE *out) {
    fputs("usage: ./train --config FILE [--section.key=value ...] [--overwrite]\n"
          "       ./train --resume RUN_DIR\n"
          "       ./train --convert CKPT --to rmsnorm|crmsnorm --out FILE\n"
          "       ./train --generate CKPT|CONFIG.json [--tokens N] [--batch B] [--section.key=value ...]\n"
          "       ./train --probe RUN_DIR\n"
          "Trains a GPT on token shards as the config says; see README.md for every key.\n"
          "  --overwrite   start afresh in an out.dir that already holds a run\n"
          "  --profile     time every kernel and print where a step's time goes at the end\n"
          "  --convert     write the Pre-RMSNorm or Pre-CRMSNorm model equivalent to a Pre-LN checkpoint\n"
          "  --generate    sample N tokens (default block_size) for B sequences with the KV cache and print\n"
          "                the speed; a .json config gives a model initialized from train.seed\n"
          "  --probe       validation loss of the run's latest checkpoint with each block skipped in turn\n", out);
}

typedef struct {
    const char *config_path, *resume_dir, *convert_path, *convert_to, *convert_out, *probe_dir;
    const char *generate_path, *generate_tokens, *generate_batch;
    int generate_from_config;  // generate_path names a .json config, not a checkpoint
    ConvertKind convert_kind;
    int overwrite, profile;
} Args;

// Where the value of an option that takes one goes; NULL for other arguments.
static const char **value_slot(Args *args, const char *arg) {
    if (!strcmp(arg, "--config")) return &args->config_path;
    if (!strcmp(arg, "--resume")) return &args->resume_dir;
    if (!strcmp(arg, "--convert")) return &args->convert_path;
    if (!strcmp(arg, "--to")) return &args->convert_to;
    if (!strcmp(arg, "--out")) return &args->convert_out;
    if (!strcmp(arg, "--generate")) return &args->generate_path;
    if (!strcmp(arg, "--tokens")) return &args->generate_tokens;
    if (!strcmp(arg, "--batch")) return &args->generate_batch;
    if (!strcmp(arg, "--probe")) return &args->probe_dir;
    return NULL;
}

static void parse_args(int argc, char **argv, Config *cfg, Args *args) {
    memset(args, 0, sizeof *args);
    config_defaults(cfg);
    for (int i = 1; i < argc; i++) {  // the config file first, so overrides apply on top of it
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage(stdout); exit(0); }
        const char **slot = value_slot(args, argv[i]);
        if (!slot) continue;
        if (i + 1 >= argc) die(EXIT_CONFIG, "command line: %s needs an argument", argv[i]);
        *slot = argv[++i];
    }
    if ((args->config_path != NULL) + (args->resume_dir != NULL) + (args->convert_path != NULL) +
        (args->generate_path != NULL) + (args->probe_dir != NULL) != 1) {
        usage(stderr);
        die(EXIT_CONFIG, "command line: give exactly one of --config FILE, --resume RUN_DIR, --convert CKPT, "
            "--generate CKPT or --probe RUN_DIR");
    }
    if ((args->generate_tokens || args->generate_batch) && !args->generate_path)
        die(EXIT_CONFIG, "command line: --tokens and --batch go with --generate");
    int convert_options = (args->convert_to != NULL) + (args->convert_out != NULL);
    if (convert_options != (args->convert_path ? 2 : 0))
        die(EXIT_CONFIG, "command line: --convert CKPT goes with --to rmsnorm|crmsnorm and --out FILE");
    if (args->convert_to) {
        if (strcmp(args->convert_to, "rmsnorm") && strcmp(args->convert_to, "crmsnorm"))
            die(EXIT_CONFIG, "command line: --to must be rmsnorm or crmsnorm, got '%s'", args->convert_to);
        args->convert_kind = strcmp(args->convert_to, "rmsnorm") ? CONVERT_CRMSNORM : CONVERT_RMSNORM;
    }
    if (args->config_path) config_load_file(cfg, args->config_path);
    if (args->generate_path) {
        size_t n = strlen(args->generate_path);
        args->generate_from_config = n >= 5 && !strcmp(args->generate_path + n - 5, ".json");
        if (args->generate_from_config) config_load_file(cfg, args->generate_path);
        else checkpoint_read_config(args->generate_path, cfg);
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (value_slot(args, a)) { i++; continue; }
        if (!strcmp(a, "--overwrite")) { args->overwrite = 1; continue; }
        if (!strcmp(a, "--profile")) { args->profile = 1; continue; }
        if (strncmp(a, "--", 2) != 0 || !strchr(a, '.')) die(EXIT_CONFIG, "command line: unknown argument '%s'", a);
        if (args->generate_path && !args->generate_from_config && !strncmp(a, "--model.", 8))
            die(EXIT_CONFIG, "command line: '%s': the checkpoint's weights fix its model", a);
        if (!args->config_path && !args->generate_path)
            die(EXIT_CONFIG, "command line: '%s': %s keeps the config saved in its checkpoint", a,
                args->resume_dir ? "a resumed run" : args->probe_dir ? "the probe" : "a conversion");
        config_apply_override(cfg, a + 2);
    }
    config_validate(cfg);
}

// ---------------------------------------------------------------------------------------------
// Run directory and log

static void check_writable_dir(const char *dir) {
    if (make_dirs(dir) != 0) die(1, "out.dir %s: cannot create: %s", dir, strerror(errno));
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/.write_test", dir);
    static const char bytes[4096];
    if (write_file_atomic(probe, bytes, sizeof bytes) != 0)
        die(1, "out.dir %s: not writable: %s", dir, strerror(errno));
    unlink(probe);
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

// Remove what an earlier run left in dir before a fresh start (its log and checkpoints), or, with
// partial_only, the temporary files of checkpoints a killed run was writing.
static void clear_run(const char *dir, int partial_only) {
    DIR *d = opendir(dir);
    if (!d) return;
    char path[4200];
    for (struct dirent *e; (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        int partial = n > 4 && !strcmp(e->d_name + n - 4, ".tmp");
        int ours = !strncmp(e->d_name, "ckpt_", 5) || (!partial_only && !strcmp(e->d_name, "log.jsonl"));
        if (!ours || (partial_only && !partial)) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
}

// Refuse to start when out.dir cannot hold `keep` checkpoints plus the one being written.
static void check_free_space(const char *dir, const Config *cfg, const GPT *m) {
    struct statvfs fs;
    if (statvfs(dir, &fs) != 0) die(1, "out.dir %s: cannot query free space: %s", dir, strerror(errno));
    double need = (double)checkpoint_bytes(cfg, m) * (double)(cfg->keep + 1);
    double have = (double)fs.f_bavail * (double)fs.f_frsize;
    if (need > have)
        die(1, "out.dir %s: %.1f MB free, but out.keep + 1 = %ld checkpoints need %.1f MB", dir, have / 1e6,
            cfg->keep + 1, need / 1e6);
}

// A resumed run trains with the config embedded in its checkpoint; a config.json that says otherwise
// (edited by hand) would misdescribe the run, so it is refused rather than silently ignored.
static void check_config_file_agrees(const char *config_path, const Config *cfg, const char *ckpt) {
    if (!file_exists(config_path)) return;  // e.g. a converted checkpoint placed in a new directory
    Config saved;
    config_defaults(&saved);
    config_load_file(&saved, config_path);
    config_validate(&saved);
    const char *key = config_first_difference(&saved, cfg);
    if (key)
        die(EXIT_CONFIG, "%s: %s differs from the config in %s, which a resumed run uses; restore the file or "
            "start a new run", config_path, key, ckpt);
}

// train.skip_outliers: whether this step's loss or gradient norm lies more than z standard deviations
// above the mean of the last `window` steps that were not skipped (and the window is full).
static int is_outlier(const RunState *st, long window, double z, double loss, double norm) {
    if (z <= 0 || st->n_history < window) return 0;
    double value[2] = {loss, norm};
    for (int k = 0; k < 2; k++) {
        double mean = 0, var = 0;
        for (long i = 0; i < window; i++) mean += st->history[i][k] / window;
        for (long i = 0; i < window; i++) var += (st->history[i][k] - mean) * (st->history[i][k] - mean);
        if (value[k] > mean + z * sqrt(var / (window - 1))) return 1;
    }
    return 0;
}

static void remember_step(RunState *st, long window, double loss, double norm) {
    if (st->n_history == window) memmove(st->history, st->history + 1, (window - 1) * sizeof st->history[0]);
    else st->n_history++;
    st->history[st->n_history - 1][0] = loss;
    st->history[st->n_history - 1][1] = norm;
}

// Keep only the log lines of steps <= last_step, so a resumed run's log reads as one run.
static void truncate_log(const char *path, long last_step) {
    FILE *f = fopen(path, "rb");
    if (!f) return;
    size_t cap = 1 << 16, len = 0;
    char *kept = xcalloc(cap, 1), line[1 << 16];
    while (fgets(line, sizeof line, f)) {
        cJSON *o = cJSON_Parse(line);
        const cJSON *s = o ? cJSON_GetObjectItemCaseSensitive(o, "step") : NULL;
        int keep = cJSON_IsNumber(s) && s->valuedouble <= last_step;
        cJSON_Delete(o);
        if (!keep) continue;
        size_t n = strlen(line);
        while (len + n + 1 > cap) { cap *= 2; kept = realloc(kept, cap); if (!kept) die(1, "out of memory"); }
        memcpy(kept + len, line, n);
        len += n;
    }
    fclose(f);
    if (write_file_atomic(path, kept, len) != 0) die(1, "%s: cannot rewrite: %s", path, strerror(errno));
    free(kept);
}

// ---------------------------------------------------------------------------------------------
// Machine facts

// train.threads = 0: this machine's cores, split evenly among the ranks running on it.
static int use_threads(const Config *cfg) {
    // OMP_NUM_THREADS or every core, split evenly among the MPI ranks on this machine
    int share = omp_get_max_threads() / dist_local_ranks();
    int threads = cfg->threads > 0 ? (int)cfg->threads : share > 1 ? share : 1;
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
    return threads;
}

static double measure_sgemm_peak(void) {
    const int n = 1024;
    float *a = xcalloc((size_t)n * n, sizeof(float)), *b = xcalloc((size_t)n * n, sizeof(float)),
          *c = xcalloc((size_t)n * n, sizeof(float));
    for (size_t i = 0; i < (size_t)n * n; i++) { a[i] = (float)(i % 7) * 0.1f; b[i] = (float)(i % 5) * 0.1f; }
    double best = 1e30;
    for (int rep = 0; rep < 4; rep++) {
        double t0 = now_seconds();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        double dt = now_seconds() - t0;
        if (dt < best) best = dt;
    }
    free(a); free(b); free(c);
    return 2.0 * n * n * n / best;
}

static void print_machine(int threads) {
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    printf("threads: %d, one OpenMP pool shared with %s; sgemm core %s%s%s\n", threads, openblas_get_config(),
           openblas_get_corename(), coretype ? ", forced by OPENBLAS_CORETYPE=" : "", coretype ? coretype : "");
}

#define MiB 1048576.0

// What the run must hold: parameters, gradients, AdamW's two moments and the activations (saved
// for the backward, plus its scratch). Refuses a budget beyond the machine's memory.
static double memory_budget(const GPT *m, const Config *cfg) {
    double params = (double)m->n_params * sizeof(real), acts = (double)m->n_acts * sizeof(real);
    double total = 4 * params + acts, ram = (double)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE);
    printf("memory budget: parameters %.1f + gradients %.1f + AdamW moments %.1f + activations %.1f%s = %.1f MiB\n",
           params / MiB, params / MiB, 2 * params / MiB, acts / MiB, m->recompute ? " (recomputed)" : "",
           total / MiB);
    if (total > ram)
        die(1, "memory: the run needs %.1f GiB but this machine has %.1f GiB; %s", total / 1024 / MiB,
            ram / 1024 / MiB, m->recompute ? "lower train.batch_size (gradient accumulation keeps the step's tokens)"
                                           : "set train.recompute=true, or lower train.batch_size");
    return total;
}

static double peak_rss_bytes(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return usage.ru_maxrss * 1024.0;  // kilobytes on Linux
}

static void format_duration(char *out, size_t size, double seconds) {
    long s = (long)(seconds + 0.5);
    if (s >= 3600) snprintf(out, size, "%ldh%02ldm", s / 3600, s / 60 % 60);
    else if (s >= 60) snprintf(out, size, "%ldm%02lds", s / 60, s % 60);
    else snprintf(out, size, "%lds", s);
}

// ---------------------------------------------------------------------------------------------
// --convert

#define CONVERT_MAX_REL_DIFF 1e-4  // what fp32 rounding of the converted parameters may cost

// The windows both models are run on: one micro-batch of validation windows spread evenly over the
// data, or, without validation data, tokens drawn from the seed. Returns which.
static const char *verification_inputs(const Config *cfg, int *inputs, int *targets) {
    int B = (int)cfg->batch_size;
    if (cfg->val_data[0]) {
        Dataset val;
        dataset_open(&val, cfg->val_data, "data.val", cfg->seq_len, cfg->vocab_size, (uint64_t)cfg->seed);
        dataset_fixed_batch(&val, 0, (size_t)B, B, inputs, targets);
        dataset_close(&val);
        return "validation";
    }
    Rng r = rng_stream((uint64_t)cfg->seed, 3);
    for (long i = 0; i < B * cfg->seq_len; i++) inputs[i] = (int)rng_below(&r, (uint64_t)cfg->vocab_size);
    return "random";
}

// Convert, compare the logits of both models, and write the result only if they agree. The new
// checkpoint keeps the step and data position; its AdamW state starts afresh (zeros, adam_t 0).
static int convert_command(const Args *args) {
    const char *path = args->convert_path, *out_path = args->convert_out;
    Config cfg, out_cfg;
    checkpoint_read_config(path, &cfg);
    config_validate(&cfg);
    const char *why = convert_unsupported(&cfg);
    if (why)
        die(1, "%s: not a Pre-LN checkpoint (%s); --convert needs every block pre with layernorm and a layernorm "
               "final norm", path, why);
    use_threads(&cfg);
    int B = (int)cfg.batch_size, T = (int)cfg.seq_len;
    int *inputs = xcalloc((size_t)B * T, sizeof(int)), *targets = xcalloc((size_t)B * T, sizeof(int));
    const char *windows = verification_inputs(&cfg, inputs, targets);
    GPT src, dst;
    AdamW opt, fresh;
    RunState st;
    gpt_build(&src, &cfg);
    adamw_init(&opt, src.n_params);
    checkpoint_load(path, &src, &opt, &st);
    convert_model(&src, &cfg, args->convert_kind, &dst, &out_cfg);
    double diff = max_rel_logit_diff(&src, &dst, inputs, B, T);
    printf("%s (pre-ln, %zu parameters) -> %s (%s, %zu parameters, stream width %d)\n", path, src.n_params,
           out_path, args->convert_to, dst.n_params, dst.S);
    printf("max relative logit difference on %d %s windows of %d tokens: %.3e (limit %.0e)\n", B, windows, T, diff,
           CONVERT_MAX_REL_DIFF);
    if (!(diff <= CONVERT_MAX_REL_DIFF))
        die(1, "%s: the converted logits differ by %.3e relative, more than %.0e; nothing written", out_path, diff,
            CONVERT_MAX_REL_DIFF);
    adamw_init(&fresh, dst.n_params);
    checkpoint_write(out_path, &out_cfg, &dst, &fresh, &st);
    printf("wrote %s (step %ld)\n", out_path, st.step);
    free(inputs); free(targets);
    adamw_free(&opt); adamw_free(&fresh);
    gpt_free(&src); gpt_free(&dst);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// --generate

static int count_arg(const char *option, const char *value, int fallback, long max) {
    if (!value) return fallback;
    char *end;
    long n = strtol(value, &end, 10);
    if (*value == '\0' || *end != '\0' || n < 1 || n > max)
        die(EXIT_CONFIG, "command line: %s must be an integer in [1, %ld], got '%s'", option, max, value);
    return (int)n;
}

static int generate_command(const Args *args, Config *cfg) {
    int tokens = count_arg("--tokens", args->generate_tokens, (int)cfg->block_size, 100000000);
    int batch = count_arg("--batch", args->generate_batch, 1, 4096);
    int threads = use_threads(cfg);
    cfg->batch_size = 1;  // the training activations gpt_build allocates go unused: keep them small
    GPT m;
    gpt_build(&m, cfg);
    if (args->generate_from_config) {
        gpt_init(&m, (uint64_t)cfg->seed);
    } else {
        AdamW opt;
        static RunState st;
        adamw_init(&opt, m.n_params);
        checkpoint_load(args->generate_path, &m, &opt, &st);
        adamw_free(&opt);
    }
    Tokenizer tok;
    tokenizer_load(&tok, cfg->tokenizer, cfg->vocab_size);
    printf("normgpt --generate: %s (%s), %zu parameters; %d x %d tokens, temperature %g, top_k %ld\n",
           args->generate_path, args->generate_from_config ? "initialized from train.seed" : "checkpoint", m.n_params,
           batch, tokens, cfg->temperature, cfg->top_k);
    print_machine(threads);
    gpt_print_blocks(&m, stdout);
    generate_benchmark(&m, &tok, tokens, batch, cfg->temperature, (int)cfg->top_k, (uint64_t)cfg->seed, threads,
                       stdout);
    tokenizer_free(&tok);
    gpt_free(&m);
    return 0;
}

// ---------------------------------------------------------------------------------------------

// The ranks take turns over the validation batches; each batch's loss has exactly one contributor
// to the sum over ranks, and the mean is summed in batch order: the same number for any world size.
static double evaluate(GPT *m, const Dataset *val, const Config *cfg, int *inputs, int *targets,
                       double *batch_losses) {
    int B = (int)cfg->batch_size, T = (int)cfg->seq_len;
    size_t count = (size_t)cfg->eval_batches * B;
    for (long i = 0; i < cfg->eval_batches; i++) {
        batch_losses[i] = 0;
        if (i % dist_world() != dist_rank()) continue;
        dataset_fixed_batch(val, (size_t)i * B, count, B, inputs, targets);
        batch_losses[i] = gpt_forward(m, inputs, targets, B, T);
    }
    dist_sum_double(batch_losses, (size_t)cfg->eval_batches);
    double sum = 0;
    for (long i = 0; i < cfg->eval_batches; i++) sum += batch_losses[i];
    return sum / cfg->eval_batches;
}

static void open_val(Dataset *val, const Config *cfg) {
    dataset_open(val, cfg->val_data, "data.val", cfg->seq_len, cfg->vocab_size, (uint64_t)cfg->seed);
    if ((size_t)(cfg->eval_batches * cfg->batch_size) > val->n_windows)
        die(EXIT_CONFIG, "config: eval.batches * train.batch_size = %ld windows, but data.val holds only %zu "
                         "windows of %ld tokens", cfg->eval_batches * cfg->batch_size, val->n_windows, cfg->seq_len + 1);
}

// --probe: the validation loss of the latest checkpoint with each block in turn replaced by the
// identity (Mix-LN's layer-removal test), printed and written to RUN_DIR/layer_removal.json.
// It changes nothing else, so a signal simply ends it.
static int probe_command(const char *run_dir) {
    char *path = checkpoint_find_latest(run_dir);
    Config cfg;
    checkpoint_read_config(path, &cfg);
    config_validate(&cfg);
    if (!cfg.val_data[0]) die(1, "%s: the probe needs validation data, and its config has no data.val", path);
    use_threads(&cfg);
    GPT m;
    AdamW opt;
    RunState st;
    gpt_build(&m, &cfg);
    adamw_init(&opt, m.n_params);
    checkpoint_load(path, &m, &opt, &st);
    Dataset val;
    open_val(&val, &cfg);
    int *inputs = xcalloc((size_t)cfg.batch_size * cfg.seq_len, sizeof(int));
    int *targets = xcalloc((size_t)cfg.batch_size * cfg.seq_len, sizeof(int));
    double *skipped = xcalloc(m.L, sizeof(double)), *batch_losses = xcalloc(cfg.eval_batches, sizeof(double));
    double full = evaluate(&m, &val, &cfg, inputs, targets, batch_losses);
    printf("%s (step %ld): val loss %.4f on %ld batches\nblock  val loss without it  delta\n", path, st.step, full,
           cfg.eval_batches);
    for (int l = 0; l < m.L; l++) {
        m.skip_block = l;
        skipped[l] = evaluate(&m, &val, &cfg, inputs, targets, batch_losses);
        printf("%5d  %18.4f  %+.4f\n", l, skipped[l], skipped[l] - full);
    }
    char out_path[4200];
    snprintf(out_path, sizeof out_path, "%s/layer_removal.json", run_dir);
    diag_write_removal_json(out_path, st.step, full, skipped, m.L);
    printf("wrote %s\n", out_path);
    free(inputs); free(targets); free(skipped); free(batch_losses); free(path);
    dataset_close(&val);
    adamw_free(&opt);
    gpt_free(&m);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Data parallelism (dist.h): every rank holds the whole model and takes one slice of each step's batch.

// A step's global batch is the next total_batch_tokens / seq_len windows of the shuffled stream,
// whatever the number of ranks: rank r reads the r-th of `world` equal consecutive slices, in micro-
// batches of the largest size up to train.batch_size that divides its slice.
static long rank_slice(const Config *cfg, int world, int *micro_windows, long *accum) {
    long windows = cfg->total_batch_tokens / cfg->seq_len;
    if (windows % world != 0)
        die(EXIT_CONFIG, "config: train.total_batch_tokens / train.seq_len = %ld windows per step do not split "
                         "evenly over %d ranks", windows, world);
    long slice = windows / world, micro = cfg->batch_size < slice ? cfg->batch_size : slice;
    while (slice % micro != 0) micro--;
    *micro_windows = (int)micro;
    *accum = slice / micro;
    return slice;
}

// Sum the gradients over the ranks, and agree on the step's loss (each rank's mean over its slice,
// summed in rank order, so every rank gets the very same number) and on whether a rank was signalled
// to stop (returns the first such signal, else 0). scalars holds 2 * world doubles.
static int all_reduce_step(GPT *m, double *loss, double *scalars) {
    int world = dist_world(), rank = dist_rank();
    dist_sum_real(m->grads, m->n_params);
    for (int r = 0; r < 2 * world; r++) scalars[r] = 0;
    scalars[rank] = *loss / world;
    scalars[world + rank] = stop_signal;
    dist_sum_double(scalars, 2 * (size_t)world);
    int sig = 0;
    *loss = 0;
    for (int r = 0; r < world; r++) {
        *loss += scalars[r];
        if (!sig) sig = (int)scalars[world + r];
    }
    return sig;
}

// Rank 0 initializes or loads the model and run; every other rank starts from its copy.
static void share_run(GPT *m, AdamW *opt, RunState *st) {
    dist_broadcast(m->params, m->n_params * sizeof(real));
    dist_broadcast(opt->m, m->n_params * sizeof(real));
    dist_broadcast(opt->v, m->n_params * sizeof(real));
    dist_broadcast(&opt->t, sizeof opt->t);
    dist_broadcast(st, sizeof *st);
}

int main(int argc, char **argv) {
    Config cfg;
    Args args;
    char *resume_path = NULL;
    dist_init(&argc, &argv);
    int rank = dist_rank(), world = dist_world(), root = rank == 0;
    parse_args(argc, argv, &cfg, &args);
    // Rank 0 alone prints, logs and touches the run directory; the others' output goes nowhere.
    if (!root && !freopen("/dev/null", "w", stdout)) die(1, "/dev/null: cannot open: %s", strerror(errno));
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (args.convert_path) {
        if (world > 1) die(EXIT_CONFIG, "command line: --convert runs as one process, not under mpirun");
        return convert_command(&args);
    }
    if (args.generate_path) {
        if (world > 1) die(EXIT_CONFIG, "command line: --generate runs as one process, not under mpirun");
        return generate_command(&args, &cfg);
    }
    if (args.probe_dir) {
        if (world > 1) die(EXIT_CONFIG, "command line: --probe runs as one process, not under mpirun");
        return probe_command(args.probe_dir);
    }
    if (args.resume_dir && root) {
        resume_path = checkpoint_find_latest(args.resume_dir);
        checkpoint_read_config(resume_path, &cfg);
        config_validate(&cfg);
    }
    dist_broadcast(&cfg, sizeof cfg);
    const char *run_dir = args.resume_dir ? args.resume_dir : cfg.out_dir;

    int threads = use_threads(&cfg);

    char *config_text = config_to_json(&cfg);
    printf("normgpt: %s\nconfig (resolved):\n%s\n", resume_path ? resume_path : args.config_path, config_text);
    print_machine(threads);
    free(config_text);

    // Run directory: a fresh run refuses to mix with an earlier one unless told to replace it.
    char log_path[4200], config_path[4200];
    snprintf(log_path, sizeof log_path, "%s/log.jsonl", run_dir);
    snprintf(config_path, sizeof config_path, "%s/config.json", run_dir);
    if (root) check_writable_dir(run_dir);
    if (resume_path) check_config_file_agrees(config_path, &cfg, resume_path);
    else if (root && file_exists(log_path) && !args.overwrite)
        die(1, "out.dir %s already holds a run; resume it with --resume %s, or pass --overwrite, "
               "or choose another --out.dir=...", run_dir, run_dir);

    // Data
    int B = (int)cfg.batch_size, T = (int)cfg.seq_len, micro_windows;
    long accum, slice = rank_slice(&cfg, world, &micro_windows, &accum);
    long step_windows = slice * world;
    Dataset train, val;
    dataset_open(&train, cfg.train_data, "data.train", T, cfg.vocab_size, (uint64_t)cfg.seed);
    int have_val = cfg.val_data[0] != '\0';
    if (have_val) open_val(&val, &cfg);
    Tokenizer tok;
    tokenizer_load(&tok, cfg.tokenizer, cfg.vocab_size);
    printf("data: %zu train windows in %d shard(s); %zu val windows\n", train.n_windows, train.n_shards,
           have_val ? val.n_windows : 0);

    // Model and optimizer
    GPT model;
    gpt_build(&model, &cfg);
    if (root) check_free_space(run_dir, &cfg, &model);
    // Only now, with every input checked, does the run directory change.
    if (root) clear_run(run_dir, args.resume_dir != NULL);
    if (root && !resume_path) {
        config_text = config_to_json(&cfg);
        if (write_file_atomic(config_path, config_text, strlen(config_text)) != 0)
            die(1, "%s: cannot write: %s", config_path, strerror(errno));
        free(config_text);
    }
    AdamW opt;
    adamw_init(&opt, model.n_params);
    static RunState st;  // static: the outlier window is too big for the stack
    st.sample_rng = rng_stream((uint64_t)cfg.seed, 2).state;
    if (resume_path) {
        checkpoint_load(resume_path, &model, &opt, &st);
        if (st.n_history > cfg.outlier_window)
            die(1, "%s: its outlier window holds %d steps, more than train.outlier_window = %ld", resume_path,
                st.n_history, cfg.outlier_window);
        truncate_log(log_path, st.step);
        printf("resumed from %s at step %ld\n", resume_path, st.step);
        if (st.world_size != world)  // the global batch is the same windows; only summation order changes
            printf("it was trained on %d rank(s), now %d: the same global batches, summed in another order\n",
                   st.world_size, world);
    } else if (root) {
        gpt_init(&model, (uint64_t)cfg.seed);
    }
    share_run(&model, &opt, &st);
    train.position = st.data_position;
    st.world_size = world;
    Rng sample_rng = {st.sample_rng};
    double flops_per_token = gpt_flops_per_token(&model, T);
    double peak = measure_sgemm_peak();
    printf("model: %zu parameters (%.2fM), %d layers, %d heads (%d kv), %d channels\n", model.n_params,
           model.n_params / 1e6, model.L, model.H, model.Hkv, model.C);
    gpt_print_blocks(&model, stdout);
    // BHyT's c follows the weights about 50 times per run (every max(1, min(1000, steps/50)) steps).
    long bhyt_refresh = cfg.bhyt_refresh;
    if (bhyt_refresh == 0) bhyt_refresh = cfg.steps / 50 < 1 ? 1 : cfg.steps / 50 > 1000 ? 1000 : cfg.steps / 50;
    char ranks[32] = "";
    if (world > 1) snprintf(ranks, sizeof ranks, " x %d ranks", world);
    printf("step: %ld tokens = %d x %d x %ld micro-batches%s; %.1f MFLOP/token\n", cfg.total_batch_tokens,
           micro_windows, T, accum, ranks, flops_per_token / 1e6);
    if (world > 1)
        printf("data-parallel: %d ranks (%d on this machine), %s; each step all-reduces %.2f MB of gradients\n",
               world, dist_local_ranks(), dist_library(), model.n_params * sizeof(real) / 1e6);
    double budget = memory_budget(&model, &cfg);
    printf("sgemm peak measured now: %.1f GFLOP/s\n", peak / 1e9);
    peak *= world;  // MFU against every rank's cores (alike machines assumed)

    FILE *log = fopen(root ? log_path : "/dev/null", "a");
    if (!log) die(1, "%s: cannot open: %s", log_path, strerror(errno));
    int *inputs = xcalloc((size_t)B * T, sizeof(int)), *targets = xcalloc((size_t)B * T, sizeof(int));
    double *eval_losses = xcalloc((size_t)cfg.eval_batches, sizeof(double));
    double *rank_scalars = xcalloc(2 * (size_t)world, sizeof(double));
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    if (have_val && cfg.eval_every > 0 && st.step == 0) {
        double vl = evaluate(&model, &val, &cfg, inputs, targets, eval_losses);
        printf("step %ld: val loss %.4f\n", st.step, vl);
        fprintf(log, "{\"step\":%ld,\"val_loss\":%.6f}\n", st.step, vl);
        fflush(log);
    }

    Diagnostics diag;
    diag_init(&diag, &model);
    double ema_ms = 0, timed_seconds = 0;  // steps after the first, which pays for page faults and warm-up
    long first_step = st.step + 1, timed_steps = 0;
    for (long step = first_step; step <= cfg.steps; step++) {
        double t0 = now_seconds();
        profile_enabled = args.profile && step > first_step;
        gpt_zero_grad(&model);
        double loss = 0;
        for (long micro = 0; micro < accum; micro++) {
            uint64_t at = train.position + (uint64_t)(rank * slice + micro * micro_windows);
            TIMED("data", 0, dataset_batch_at(&train, at, micro_windows, inputs, targets));
            loss += gpt_forward(&model, inputs, targets, micro_windows, T) / accum;
            if (!isfinite(loss)) break;  // keep this micro-batch's activations for the diagnosis
            gpt_backward(&model, inputs, targets, micro_windows, T, (real)(1.0 / ((double)cfg.total_batch_tokens)));
        }
        train.position += (uint64_t)step_windows;
        int stop;
        TIMED("all-reduce", 0, stop = all_reduce_step(&model, &loss, rank_scalars));
        double grad_norm;
        TIMED("gradient norm", 0, grad_norm = l2_norm(model.grads, model.n_params));
        dist_broadcast(&grad_norm, sizeof grad_norm);  // one clip scale everywhere, whatever each rank's threads
        if (!isfinite(loss) || !isfinite(grad_norm)) {
            char where[256];
            gpt_locate_nonfinite(&model, micro_windows, T, where, sizeof where);
            die(1, "step %ld: loss %g, grad norm %g is not finite, first in %s; stopping (last checkpoint kept in "
                "%s)", step, loss, grad_norm, where, run_dir);
        }
        if (cfg.diag_every > 0 && (step == 1 || step % cfg.diag_every == 0)) {  // before the update changes the weights
            diag_compute(&diag, &model, micro_windows, T);
            diag_write_json(&diag, step, log);
        }
        double lr = lr_schedule(&cfg, step - 1);
        int skipped = is_outlier(&st, cfg.outlier_window, cfg.skip_outliers, loss, grad_norm);
        if (skipped) {
            printf("step %ld: loss %.4f, grad norm %.3f more than %g standard deviations above the last %ld steps; "
                   "skipped (no update)\n", step, loss, grad_norm, cfg.skip_outliers, cfg.outlier_window);
        } else {
            TIMED("adamw", 0, adamw_step(&opt, &model, lr, clip_scale(grad_norm, cfg.grad_clip), cfg.beta1, cfg.beta2,
                                         cfg.eps, cfg.weight_decay));
            remember_step(&st, cfg.outlier_window, loss, grad_norm);
        }
        if (gpt_has_bhyt(&model) && step % bhyt_refresh == 0) TIMED("bhyt refresh", 0, gpt_refresh_bhyt(&model));
        double ms = 1e3 * (now_seconds() - t0);
        if (step > first_step) { timed_steps++; timed_seconds += ms / 1e3; }
        profile_enabled = 0;  // evaluation and sampling are not part of a step
        ema_ms = step == first_step ? ms : 0.9 * ema_ms + 0.1 * ms;
        double tok_s = cfg.total_batch_tokens / (ms / 1e3);
        char eta[32];
        format_duration(eta, sizeof eta, ema_ms / 1e3 * (cfg.steps - step));
        printf("step %5ld/%ld %3.0f%% | loss %.4f | lr %.2e | norm %.3f | %6.1f ms | %6.0f tok/s | MFU %4.1f%% | "
               "ETA %s\n", step, cfg.steps, 100.0 * step / cfg.steps, loss, lr, grad_norm, ms, tok_s,
               100 * flops_per_token * tok_s / peak, eta);
        fprintf(log, "{\"step\":%ld,\"loss\":%.6f,\"lr\":%.6e,\"grad_norm\":%.6f,\"ms\":%.3f,"
                "\"tokens_per_s\":%.1f%s}\n", step, loss, lr, grad_norm, ms, tok_s, skipped ? ",\"skipped\":true" : "");
        fflush(log);

        int last = step == cfg.steps;
        if (have_val && ((cfg.eval_every > 0 && step % cfg.eval_every == 0) || last)) {
            double vl = evaluate(&model, &val, &cfg, inputs, targets, eval_losses);
            printf("step %ld: val loss %.4f\n", step, vl);
            fprintf(log, "{\"step\":%ld,\"val_loss\":%.6f}\n", step, vl);
            fflush(log);
        }
        if (root && cfg.sample_tokens > 0 && ((cfg.sample_every > 0 && step % cfg.sample_every == 0) || last)) {
            printf("---- sample at step %ld ----\n", step);
            generate(&model, &tok, (int)cfg.sample_tokens, cfg.temperature, (int)cfg.top_k, &sample_rng, stdout);
            printf("----\n");
        }
        int interrupted = stop != 0;
        if (last || interrupted || (cfg.checkpoint_every > 0 && step % cfg.checkpoint_every == 0)) {
            st.step = step;
            st.data_position = train.position;
            st.sample_rng = sample_rng.state;
            dist_check_identical(model.params, model.n_params * sizeof(real), "parameters");
            if (root) checkpoint_save(run_dir, &cfg, &model, &opt, &st, cfg.keep);
            printf("checkpoint: %s/ckpt_%08ld.bin\n", run_dir, step);
        }
        if (interrupted) {
            printf("stopped by signal %d after step %ld; continue with ./train --resume %s\n", stop, step, run_dir);
            break;
        }
    }

    if (timed_steps > 0) {
        double step_s = timed_seconds / timed_steps, tok_s = cfg.total_batch_tokens / step_s;
        printf("speed: %.1f ms/step, %.0f tok/s, MFU %.1f%% (mean of %ld steps after the first; %d rank(s) x %d "
               "threads, sgemm peak %.1f GFLOP/s per rank)\n", 1e3 * step_s, tok_s, 100 * flops_per_token * tok_s / peak,
               timed_steps, world, threads, peak / world / 1e9);
        if (args.profile) profile_print(stdout, timed_steps, step_s);
    }
    printf("peak memory: %.1f MiB resident, %.2fx the budget\n", peak_rss_bytes() / MiB, peak_rss_bytes() / budget);
    fclose(log);
    diag_free(&diag);
    free(inputs); free(targets); free(resume_path);
    free(eval_losses); free(rank_scalars);
    tokenizer_free(&tok);
    adamw_free(&opt);
    gpt_free(&model);
    dataset_close(&train);
    if (have_val) dataset_close(&val);
    dist_finalize();
    return 0;
}
