// normgpt's program, ./train (usage in cli.c). main picks the command; the training command is
// here: config -> run directory -> data -> model and optimizer (fresh, or resumed from a
// checkpoint) -> the loop of train_step (trainer.h), with the log, evaluation, samples and
// checkpoints around it. The commands that only read a model are in commands.c.
#include "checkpoint.h"
#include "cli.h"
#include "commands.h"
#include "common.h"
#include "config.h"
#include "data.h"
#include "dist.h"
#include "machine.h"
#include "model.h"
#include "optim.h"
#include "profile.h"
#include "rng.h"
#include "rundir.h"
#include "sample.h"
#include "tokenizer.h"
#include "trainer.h"
#include <errno.h>
#include <string.h>

static void format_duration(char *out, size_t size, double seconds) {
    long s = (long)(seconds + 0.5);
    if (s >= 3600) snprintf(out, size, "%ldh%02ldm", s / 3600, s / 60 % 60);
    else if (s >= 60) snprintf(out, size, "%ldm%02lds", s / 60, s % 60);
    else snprintf(out, size, "%lds", s);
}

// Whether a cadence of `every` steps (0: never) falls on `step`.
static int due(long every, long step) { return every > 0 && step % every == 0; }

static void log_val_loss(FILE *log, long step, double loss) {
    printf("step %ld: val loss %.4f\n", step, loss);
    fprintf(log, "{\"step\":%ld,\"val_loss\":%.6f}\n", step, loss);
    run_log_flush(log);
}

// What the run prints and logs before its first step.
static void print_run(const Config *cfg, const GPT *m, const BatchSplit *split, double flops_per_token) {
    int world = dist_world();
    printf("model: %zu parameters (%.2fM), %d layers, %d heads (%d kv), %d channels\n", m->n_params,
           m->n_params / 1e6, m->L, m->H, m->Hkv, m->C);
    gpt_print_blocks(m, stdout);
    char ranks[32] = "";
    if (world > 1) snprintf(ranks, sizeof ranks, " x %d ranks", world);
    printf("step: %ld tokens = %d x %ld x %ld micro-batches%s; %.1f MFLOP/token\n", cfg->total_batch_tokens,
           split->micro_windows, cfg->seq_len, split->accum, ranks, flops_per_token / 1e6);
    if (world > 1)
        printf("data-parallel: %d ranks (%d on this machine), %s; each step all-reduces %.2f MB of gradients\n",
               world, dist_local_ranks(), dist_library(), m->n_params * sizeof(real) / 1e6);
}

// One step's line on stdout and in the log.
static void report_step(FILE *log, const Config *cfg, long step, const StepResult *r, double ms, double ema_ms,
                        double flops_per_token, double peak) {
    if (r->skipped)
        printf("step %ld: loss %.4f, grad norm %.3f more than %g standard deviations above the last %ld steps; "
               "skipped (no update)\n", step, r->loss, r->grad_norm, cfg->skip_outliers, cfg->outlier_window);
    double tok_s = cfg->total_batch_tokens / (ms / 1e3);
    char eta[32];
    format_duration(eta, sizeof eta, ema_ms / 1e3 * (cfg->steps - step));
    printf("step %5ld/%ld %3.0f%% | loss %.4f | lr %.2e | norm %.3f | %6.1f ms | %6.0f tok/s | MFU %4.1f%% | "
           "ETA %s\n", step, cfg->steps, 100.0 * step / cfg->steps, r->loss, r->lr, r->grad_norm, ms, tok_s,
           100 * flops_per_token * tok_s / peak, eta);
    fprintf(log, "{\"step\":%ld,\"loss\":%.6f,\"lr\":%.6e,\"grad_norm\":%.6f,\"ms\":%.3f,\"tokens_per_s\":%.1f%s}\n",
            step, r->loss, r->lr, r->grad_norm, ms, tok_s, r->skipped ? ",\"skipped\":true" : "");
    run_log_flush(log);
}

// The weights, AdamW state and run state of a resumed run (rank 0), whose log then ends at its step.
static void resume_run(const char *path, const RunDir *run, const Config *cfg, GPT *m, AdamW *opt, RunState *st) {
    checkpoint_load(path, m, opt, st);
    if (st->n_history > cfg->outlier_window)
        die(1, "%s: its outlier window holds %d steps, more than train.outlier_window = %ld", path, st->n_history,
            cfg->outlier_window);
    run_dir_truncate_log(run, st->step);
    printf("resumed from %s at step %ld\n", path, st->step);
    if (st->world_size != dist_world())  // the global batch is the same windows; only summation order changes
        printf("it was trained on %d rank(s), now %d: the same global batches, summed in another order\n",
               st->world_size, dist_world());
}

// Rank 0 writes the checkpoint of st->step (checkpoint.h); every rank checks it holds the same
// parameters. Returns the step.
static long save_checkpoint(const RunDir *run, const Config *cfg, const GPT *m, const AdamW *opt, const RunState *st) {
    dist_check_identical(m->params, m->n_params * sizeof(real), "parameters");
    if (dist_rank() == 0) checkpoint_save(run->dir, cfg, m, opt, st, cfg->keep);
    printf("checkpoint: %s/ckpt_%08ld.bin\n", run->dir, st->step);
    return st->step;
}

// A signal discarded the step in progress: the last completed one is checkpointed (unless it is
// already: `saved`), and the run ends with how to continue it.
static void stop_after_signal(const RunDir *run, const Config *cfg, const GPT *m, const AdamW *opt,
                              const RunState *st, int sig, long saved) {
    printf("signal %d: step %ld was stopped unfinished and discarded\n", sig, st->step + 1);
    if (st->step == 0) {
        printf("stopped by signal %d before the first step; no checkpoint: start again with --overwrite\n", sig);
        return;
    }
    if (st->step > saved) save_checkpoint(run, cfg, m, opt, st);
    printf("stopped by signal %d after step %ld; continue with ./train --resume %s\n", sig, st->step, run->dir);
}

static int train_command(const Args *args, Config *cfg) {
    int world = dist_world(), root = dist_rank() == 0;
    RunDir run = run_dir_at(args->resume_dir ? args->resume_dir : cfg->out_dir);
    if (root) run_dir_lock(&run, !args->resume_dir);
    char *resume_path = NULL;
    if (args->resume_dir && root) {
        resume_path = checkpoint_find_latest(args->resume_dir);
        checkpoint_read_config(resume_path, cfg);
        config_validate(cfg);
    }
    dist_broadcast(cfg, sizeof *cfg);
    int threads = use_threads(cfg);
    char *config_text = config_to_json(cfg);
    printf("normgpt: %s\nconfig (resolved):\n%s\n", resume_path ? resume_path : args->config_path, config_text);
    print_machine(threads);
    free(config_text);
    double budget = memory_budget(cfg);  // before anything is allocated or written

    if (root) run_dir_check(&run, cfg, resume_path, args->overwrite);
    BatchSplit split = batch_split(cfg, world);
    Dataset train;
    Validation val;
    dataset_open(&train, cfg->train_data, "data.train", cfg->seq_len, cfg->vocab_size, (uint64_t)cfg->seed);
    int have_val = cfg->val_data[0] != '\0';
    if (have_val) validation_open(&val, cfg);
    Tokenizer tok;
    tokenizer_load(&tok, cfg->tokenizer, cfg->vocab_size);
    printf("data: %zu train windows in %d shard(s); %zu val windows\n", train.n_windows, train.n_shards,
           have_val ? val.data.n_windows : 0);

    GPT model;
    gpt_build(&model, cfg);
    if (root) run_dir_prepare(&run, cfg, &model, resume_path != NULL);  // only now does the directory change
    AdamW opt;
    adamw_init(&opt, model.n_params);
    static RunState st;  // static: the outlier window is too big for the stack
    st.sample_rng = rng_stream((uint64_t)cfg->seed, 2).state;
    if (resume_path) resume_run(resume_path, &run, cfg, &model, &opt, &st);
    else if (root) gpt_init(&model, (uint64_t)cfg->seed);
    share_run(&model, &opt, &st);
    st.world_size = world;
    double flops_per_token = gpt_flops_per_token(&model, (int)cfg->seq_len);
    double peak = measure_sgemm_peak();
    print_run(cfg, &model, &split, flops_per_token);
    printf("sgemm peak measured now: %.1f GFLOP/s\n", peak / 1e9);
    peak *= world;  // MFU against every rank's cores (alike machines assumed)

    FILE *log = run_dir_open_log(&run, root);
    Trainer trainer = {.cfg = cfg, .model = &model, .opt = &opt, .st = &st, .train = &train, .split = split,
                       .log = log, .run_dir = run.dir};
    trainer_init(&trainer);
    if (have_val && cfg->eval_every > 0 && st.step == 0) log_val_loss(log, 0, validation_loss(&val, &model, cfg));

    double ema_ms = 0, timed_seconds = 0;  // steps after the first, which pays for page faults and warm-up
    long first_step = st.step + 1, timed_steps = 0, saved = st.step;  // saved: the newest checkpoint's step
    while (st.step < cfg->steps) {
        long step = st.step + 1;
        double t0 = now_seconds();
        profile_enabled = args->profile && step > first_step;
        StepResult r = train_step(&trainer);
        if (r.stop_signal) {
            stop_after_signal(&run, cfg, &model, &opt, &st, r.stop_signal, saved);
            break;
        }
        double ms = 1e3 * (now_seconds() - t0);
        profile_enabled = 0;  // evaluation and sampling are not part of a step
        if (step > first_step) { timed_steps++; timed_seconds += ms / 1e3; }
        ema_ms = step == first_step ? ms : 0.9 * ema_ms + 0.1 * ms;
        report_step(log, cfg, step, &r, ms, ema_ms, flops_per_token, peak);

        int last = step == cfg->steps;
        if (have_val && (due(cfg->eval_every, step) || last))
            log_val_loss(log, step, validation_loss(&val, &model, cfg));
        if (root && cfg->sample_tokens > 0 && (due(cfg->sample_every, step) || last)) {
            printf("---- sample at step %ld ----\n", step);
            Rng rng = {st.sample_rng};
            generate(&model, &tok, (int)cfg->sample_tokens, cfg->temperature, (int)cfg->top_k, &rng, stdout);
            st.sample_rng = rng.state;
            printf("----\n");
        }
        if (last || due(cfg->checkpoint_every, step)) saved = save_checkpoint(&run, cfg, &model, &opt, &st);
    }

    if (timed_steps > 0) {
        double step_s = timed_seconds / timed_steps, tok_s = cfg->total_batch_tokens / step_s;
        printf("speed: %.1f ms/step, %.0f tok/s, MFU %.1f%% (mean of %ld steps after the first; %d rank(s) x %d "
               "threads, sgemm peak %.1f GFLOP/s per rank)\n", 1e3 * step_s, tok_s,
               100 * flops_per_token * tok_s / peak, timed_steps, world, threads, peak / world / 1e9);
        if (args->profile) profile_print(stdout, timed_steps, step_s);
    }
    printf("peak memory: %.1f MiB resident, %.2fx the budget\n", peak_rss_bytes() / MiB, peak_rss_bytes() / budget);
    fclose(log);
    trainer_free(&trainer);
    free(resume_path);
    tokenizer_free(&tok);
    adamw_free(&opt);
    gpt_free(&model);
    dataset_close(&train);
    if (have_val) validation_close(&val);
    return 0;
}

int main(int argc, char **argv) {
    install_stop_handlers();  // first: a signal during start-up stops the run, not the process
    Config cfg;
    Args args;
    dist_init(&argc, &argv);
    parse_args(argc, argv, &cfg, &args);
    // Rank 0 alone prints, logs and touches the run directory; the others' output goes nowhere.
    if (dist_rank() != 0 && !freopen("/dev/null", "w", stdout)) die(1, "/dev/null: cannot open: %s", strerror(errno));
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *one_process = args.convert_path ? "--convert" : args.generate_path ? "--generate"
                            : args.probe_dir ? "--probe" : NULL;
    if (one_process && dist_world() > 1)
        die(EXIT_CONFIG, "command line: %s runs as one process, not under mpirun", one_process);
    if (one_process) release_stop_handlers();
    if (args.convert_path) return convert_command(&args);
    if (args.generate_path) return generate_command(&args, &cfg);
    if (args.probe_dir) return probe_command(args.probe_dir);
    int status = train_command(&args, &cfg);
    dist_finalize();
    return status;
}
