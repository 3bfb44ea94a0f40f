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
#include <math.h>
#include <string.h>
#include <sys/stat.h>

static void format_duration(char *out, size_t size, double seconds) {
    long s = (long)(seconds + 0.5);
    if (s >= 86400) snprintf(out, size, "%.1f days", seconds / 86400);
    else if (s >= 3600) snprintf(out, size, "%ldh%02ldm", s / 3600, s / 60 % 60);
    else if (s >= 60) snprintf(out, size, "%ldm%02lds", s / 60, s % 60);
    else snprintf(out, size, "%lds", s);
}

#define TIMED_STEPS_FOR_ETA 3  // steps after the first whose speed gives the whole run's time

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
    printf("run: %ld steps x %ld tokens = %.4g tokens (%.3g PFLOP)\n", cfg->steps, cfg->total_batch_tokens,
           (double)cfg->steps * cfg->total_batch_tokens,
           (double)cfg->steps * cfg->total_batch_tokens * flops_per_token / 1e15);
    if (world > 1)
        printf("data-parallel: %d ranks (%d on this machine), %s; each step all-reduces %.2f MB of gradients\n",
               world, dist_local_ranks(), dist_library(), m->n_params * sizeof(real) / 1e6);
}

// How long the whole run takes at tok_s (`how` says where that speed comes from) and, past a day, how many
// ranks like these would bring it to one (data parallelism assumed to scale perfectly).
static void print_run_time(const Config *cfg, double tok_s, const char *how) {
    double seconds = (double)cfg->steps * cfg->total_batch_tokens / tok_s;
    char span[32];
    format_duration(span, sizeof span, seconds);
    printf("run time: %s for %ld steps at %.0f tok/s (%s)", span, cfg->steps, tok_s, how);
    if (seconds > 86400) printf("; %.0f rank(s) like %s would bring it to a day", ceil(dist_world() * seconds / 86400),
                                dist_world() > 1 ? "these" : "this one");
    printf("\n");
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
    const char *remark;
    double mfu = mfu_percent(flops_per_token, tok_s, peak, &remark);
    printf("step %5ld/%ld %3.0f%% | loss %.4f | lr %.2e | norm %.3f | %6.1f ms | %6.0f tok/s | MFU %4.1f%%%s | "
           "ETA %s\n", step, cfg->steps, 100.0 * step / cfg->steps, r->loss, r->lr, r->grad_norm, ms, tok_s, mfu,
           remark, eta);
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

// The training and validation windows (eval.batches lowered to what data.val holds) and the tokenizer.
static int open_data(Config *cfg, Dataset *train, Validation *val, Tokenizer *tok) {
    dataset_open(train, cfg->train_data, "data.train", cfg->seq_len, cfg->vocab_size, (uint64_t)cfg->seed);
    int have_val = cfg->val_data[0] != '\0';
    if (have_val) validation_open(val, cfg);
    tokenizer_load(tok, cfg->tokenizer, cfg->vocab_size);
    printf("data: %zu train windows in %d shard(s); %zu val windows\n", train->n_windows, train->n_shards,
           have_val ? val->data.n_windows : 0);
    return have_val;
}

// --check: everything a run checks before it allocates the model or touches out.dir, and the figures of
// the configured run; the time is a lower bound, at the sgemm peak (100% MFU).
static int check_command(Config *cfg) {
    Dataset train;
    Validation val;
    Tokenizer tok;
    int have_val = open_data(cfg, &train, &val, &tok);
    GPT plan;
    gpt_plan(&plan, cfg);
    double flops_per_token = gpt_flops_per_token(&plan, (int)cfg->seq_len);
    BatchSplit split = batch_split(cfg, dist_world());
    print_run(cfg, &plan, &split, flops_per_token);
    memory_budget(&plan);
    double peak = measure_sgemm_peak() * dist_world();
    print_run_time(cfg, peak / flops_per_token, "the sgemm peak, 100% MFU: a lower bound");
    printf("check: the config, data and memory budget are fine; the model was not allocated and nothing was written\n");
    gpt_free(&plan);
    tokenizer_free(&tok);
    dataset_close(&train);
    if (have_val) validation_close(&val);
    return 0;
}

// --resume RUN --train.steps=N: the run goes on to N steps (more than it has taken), with the schedule
// recomputed for N (README, "Extending a run"); says what that does to the learning rate.
static void extend_run(Config *cfg, const char *assignment, long taken, const char *path) {
    Config before = *cfg;
    config_apply_override(cfg, assignment);
    if (cfg->steps <= taken)
        die(EXIT_CONFIG, "command line: --train.steps=%ld must exceed the %ld steps %s has taken", cfg->steps, taken,
            path);
    config_validate(cfg);
    printf("extending %s: train.steps %ld -> %ld; the %s schedule is recomputed for %ld steps: the learning rate "
           "of step %ld is %.3e (step %ld had %.3e)\n", path, before.steps, cfg->steps, cfg->schedule, cfg->steps,
           taken + 1, lr_schedule(cfg, taken), taken, lr_schedule(&before, taken > 0 ? taken - 1 : 0));
}

// train.init_from: the weights of a checkpoint, or of a run directory's newest valid one, for a fresh run.
static void init_from(GPT *m, const char *source) {
    struct stat st;
    char *path = stat(source, &st) == 0 && S_ISDIR(st.st_mode) ? checkpoint_find_latest(source) : strdup(source);
    RunState theirs;
    checkpoint_load_weights(path, m, &theirs);
    printf("train.init_from: the weights of %s (step %ld of its run); AdamW state, step and data order start "
           "afresh\n", path, theirs.step);
    free(path);
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
    if (root && !args->check) run_dir_lock(&run, !args->resume_dir);  // --check writes nothing, locks nothing
    char *resume_path = NULL;
    long taken = 0;  // steps the resumed run has taken
    static Config before_extension;
    if (args->resume_dir && root) {
        resume_path = checkpoint_find_latest(args->resume_dir);
        checkpoint_read_config(resume_path, cfg);
        config_validate(cfg);
        taken = checkpoint_step(resume_path);
        before_extension = *cfg;
        if (args->resume_steps) {
            extend_run(cfg, args->resume_steps, taken, resume_path);
            run.before_extension = &before_extension;
        }
    }
    dist_broadcast(cfg, sizeof *cfg);
    dist_broadcast(&taken, sizeof taken);
    int threads = use_threads(cfg);
    char *config_text = config_to_json(cfg);
    printf("normgpt: %s\nconfig (resolved):\n%s\n", resume_path ? resume_path : args->config_path, config_text);
    print_machine(threads);
    free(config_text);
    if (args->check) return check_command(cfg);
    GPT plan;  // the budget before anything is allocated or written
    gpt_plan(&plan, cfg);
    double budget = memory_budget(&plan);
    gpt_free(&plan);

    if (root) run_dir_check(&run, cfg, resume_path, args->overwrite);
    if (args->resume_dir && taken >= cfg->steps) {
        printf("%s: the run is finished (its newest checkpoint is at step %ld of train.steps = %ld); extend it with "
               "./train --resume %s --train.steps=N for N > %ld (README: Extending a run)\n", args->resume_dir, taken,
               cfg->steps, args->resume_dir, taken);
        free(resume_path);
        return 0;
    }
    BatchSplit split = batch_split(cfg, world);
    Dataset train;
    Validation val;
    Tokenizer tok;
    int have_val = open_data(cfg, &train, &val, &tok);

    GPT model;
    gpt_build(&model, cfg);
    int initialized = root && !resume_path && cfg->init_from[0];
    if (initialized) init_from(&model, cfg->init_from);
    if (root) run_dir_prepare(&run, cfg, &model, resume_path != NULL);  // only now does the directory change
    AdamW opt;
    adamw_init(&opt, model.n_params);
    static RunState st;  // static: the outlier window is too big for the stack
    st.sample_rng = rng_stream((uint64_t)cfg->seed, 2).state;
    if (resume_path) resume_run(resume_path, &run, cfg, &model, &opt, &st);
    else if (root && !initialized) gpt_init(&model, (uint64_t)cfg->seed);
    share_run(&model, &opt, &st);
    st.world_size = world;
    double flops_per_token = gpt_flops_per_token(&model, (int)cfg->seq_len);
    double sgemm_peak = measure_sgemm_peak(), bf16_peak = model.bf16 ? bf16_measure_peak() : 0;
    print_run(cfg, &model, &split, flops_per_token);
    printf("precision %s: sgemm peak measured now: %.1f GFLOP/s", cfg->precision, sgemm_peak / 1e9);
    if (model.bf16) printf(", bf16 matmul peak %.1f GFLOP/s (MFU against it)", bf16_peak / 1e9);
    printf("\n");
    double peak = (model.bf16 ? bf16_peak : sgemm_peak) * world;  // MFU against every rank's cores (alike machines)

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
        if (timed_steps == TIMED_STEPS_FOR_ETA && step > first_step) {
            char how[64];
            snprintf(how, sizeof how, "measured over steps %ld-%ld", first_step + 1, step);
            print_run_time(cfg, cfg->total_batch_tokens * timed_steps / timed_seconds, how);
        }
        ema_ms = step == first_step ? ms : 0.9 * ema_ms + 0.1 * ms;
        report_step(log, cfg, step, &r, ms, ema_ms, flops_per_token, peak);
        if (model.bf16 && step == first_step && bf16_late_primitives() > 0)
            printf("bf16: %d matmul primitives were created during the first step (micro-batches of %d windows, "
                   "prepared for train.batch_size); later steps reuse them\n", bf16_late_primitives(),
                   split.micro_windows);

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
        const char *remark;
        double mfu = mfu_percent(flops_per_token, tok_s, peak, &remark);
        printf("speed: %.1f ms/step, %.0f tok/s, MFU %.1f%%%s (mean of %ld steps after the first; %d rank(s) x %d "
               "threads, sgemm peak %.1f GFLOP/s per rank%s)\n", 1e3 * step_s, tok_s, mfu, remark, timed_steps, world,
               threads, sgemm_peak / 1e9, model.bf16 ? "; MFU against the bf16 matmul peak" : "");
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
    // Rank 0 alone prints, logs and touches the run directory; the others' output goes nowhere (from
    // here on: the config's notes would otherwise print once per rank).
    if (dist_rank() != 0 && !freopen("/dev/null", "w", stdout)) die(1, "/dev/null: cannot open: %s", strerror(errno));
    parse_args(argc, argv, &cfg, &args);
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
