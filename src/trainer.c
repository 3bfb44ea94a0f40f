#include "trainer.h"
#include "dist.h"
#include "kernels.h"
#include "profile.h"
#include "rundir.h"
#include <math.h>
#include <signal.h>
#include <unistd.h>
#include <string.h>

static volatile sig_atomic_t stop_signal = 0;

// The first SIGINT or SIGTERM asks the run to stop (train_step sees it between micro-batches); a
// second one ends the process at once.
static void on_signal(int sig) {
    if (stop_signal) {
        static const char line[] = "\nsecond signal: exiting at once (the checkpoints on disk are kept)\n";
        if (write(STDERR_FILENO, line, sizeof line - 1) < 0) {}
        _exit(128 + sig);
    }
    stop_signal = sig;
}

void install_stop_handlers(void) {
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
}

void release_stop_handlers(void) {
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (stop_signal) raise(stop_signal);
}

BatchSplit batch_split(const Config *cfg, int world) {
    long windows = cfg->total_batch_tokens / cfg->seq_len;
    if (windows % world != 0)
        die(EXIT_CONFIG, "config: train.total_batch_tokens / train.seq_len = %ld windows per step do not split "
                         "evenly over %d ranks", windows, world);
    BatchSplit s = {.slice = windows / world};
    long micro = cfg->batch_size < s.slice ? cfg->batch_size : s.slice;
    while (s.slice % micro != 0) micro--;
    s.micro_windows = (int)micro;
    s.accum = s.slice / micro;
    return s;
}

void trainer_init(Trainer *t) {
    const Config *cfg = t->cfg;
    // BHyT's c follows the weights about 50 times per run (every max(1, min(1000, steps/50)) steps).
    long every = cfg->steps / 50 < 1 ? 1 : cfg->steps / 50 > 1000 ? 1000 : cfg->steps / 50;
    t->bhyt_refresh = cfg->bhyt_refresh ? cfg->bhyt_refresh : every;
    diag_init(&t->diag, t->model);
    size_t tokens = (size_t)t->split.micro_windows * cfg->seq_len;
    t->inputs = xcalloc(tokens, sizeof(int));
    t->targets = xcalloc(tokens, sizeof(int));
    t->rank_scalars = xcalloc(2 * (size_t)dist_world(), sizeof(double));
}

void trainer_free(Trainer *t) {
    diag_free(&t->diag);
    free(t->inputs);
    free(t->targets);
    free(t->rank_scalars);
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

static void stop_nonfinite(const Trainer *t, long step, const StepResult *r) {
    char where[256];
    gpt_locate_nonfinite(t->model, t->split.micro_windows, (int)t->cfg->seq_len, where, sizeof where);
    die(1, "step %ld: loss %g, grad norm %g is not finite, first in %s; stopping (last checkpoint kept in %s)", step,
        r->loss, r->grad_norm, where, t->run_dir);
}

StepResult train_step(Trainer *t) {
    const Config *cfg = t->cfg;
    const BatchSplit *s = &t->split;
    GPT *m = t->model;
    RunState *st = t->st;
    long step = st->step + 1;
    int T = (int)cfg->seq_len;
    StepResult r = {0};
    gpt_zero_grad(m);
    for (long micro = 0; micro < s->accum; micro++) {
        if (stop_signal) break;  // the step is discarded below: every rank still joins the all-reduce
        uint64_t at = st->data_position + (uint64_t)(dist_rank() * s->slice + micro * s->micro_windows);
        TIMED("data", 0, dataset_batch_at(t->train, at, s->micro_windows, t->inputs, t->targets));
        r.loss += gpt_forward(m, t->inputs, t->targets, s->micro_windows, T) / s->accum;
        if (!isfinite(r.loss)) break;  // keep this micro-batch's activations for the diagnosis
        gpt_backward(m, t->inputs, t->targets, s->micro_windows, T, (real)(1.0 / ((double)cfg->total_batch_tokens)));
    }
    TIMED("all-reduce", 0, r.stop_signal = all_reduce_step(m, &r.loss, t->rank_scalars));
    if (r.stop_signal) return r;  // a signal on any rank discards the step: no update, run state unchanged
    st->data_position += (uint64_t)(s->slice * dist_world());
    TIMED("gradient norm", 0, r.grad_norm = l2_norm(m->grads, m->n_params));
    dist_broadcast(&r.grad_norm, sizeof r.grad_norm);  // one clip scale everywhere, whatever each rank's threads
    if (!isfinite(r.loss) || !isfinite(r.grad_norm)) stop_nonfinite(t, step, &r);
    if (cfg->diag_every > 0 && (step == 1 || step % cfg->diag_every == 0)) {  // before the update changes the weights
        diag_compute(&t->diag, m, s->micro_windows, T);
        diag_write_json(&t->diag, step, t->log);
        run_log_flush(t->log);
    }
    r.lr = lr_schedule(cfg, step - 1);
    r.skipped = is_outlier(st, cfg->outlier_window, cfg->skip_outliers, r.loss, r.grad_norm);
    if (!r.skipped) {
        TIMED("adamw", 0, adamw_step(t->opt, m, r.lr, clip_scale(r.grad_norm, cfg->grad_clip), cfg->beta1,
                                     cfg->beta2, cfg->eps, cfg->weight_decay));
        gpt_weights_changed(m);
        remember_step(st, cfg->outlier_window, r.loss, r.grad_norm);
    }
    if (gpt_has_bhyt(m) && step % t->bhyt_refresh == 0) TIMED("bhyt refresh", 0, gpt_refresh_bhyt(m));
    st->step = step;
    return r;
}

void share_run(GPT *m, AdamW *opt, RunState *st) {
    dist_broadcast(m->params, m->n_params * sizeof(real));
    dist_broadcast(opt->m, m->n_params * sizeof(real));
    dist_broadcast(opt->v, m->n_params * sizeof(real));
    dist_broadcast(&opt->t, sizeof opt->t);
    dist_broadcast(st, sizeof *st);
}

void validation_open(Validation *v, Config *cfg) {
    dataset_open(&v->data, cfg->val_data, "data.val", cfg->seq_len, cfg->vocab_size, (uint64_t)cfg->seed);
    size_t windows = v->data.n_windows, fit = windows / (size_t)cfg->batch_size;
    if (fit == 0)
        die(EXIT_CONFIG, "config: data.val holds %zu windows of %ld tokens, fewer than one batch of train.batch_size "
                         "= %ld; lower train.batch_size or train.seq_len", windows, cfg->seq_len + 1, cfg->batch_size);
    if ((size_t)cfg->eval_batches > fit) {  // a small validation set: evaluate on all of it
        printf("note: eval.batches * train.batch_size = %ld windows, but data.val holds only %zu windows of %ld "
               "tokens; evaluating on %zu batches\n", cfg->eval_batches * cfg->batch_size, windows, cfg->seq_len + 1,
               fit);
        cfg->eval_batches = (long)fit;
    }
    v->inputs = xcalloc((size_t)cfg->batch_size * cfg->seq_len, sizeof(int));
    v->targets = xcalloc((size_t)cfg->batch_size * cfg->seq_len, sizeof(int));
    v->batch_losses = xcalloc((size_t)cfg->eval_batches, sizeof(double));
}

void validation_close(Validation *v) {
    dataset_close(&v->data);
    free(v->inputs);
    free(v->targets);
    free(v->batch_losses);
}

// The ranks take turns over the validation batches; each batch's losses have exactly one contributor
// to the sum over ranks, and the means are summed in batch order: the same numbers for any world size.
// means[0]: the whole model; with `skips`, means[1 + l]: the model without block l (the probe).
static void validation_means(Validation *v, GPT *m, const Config *cfg, int skips, double *means) {
    int B = (int)cfg->batch_size, T = (int)cfg->seq_len, cols = skips ? 1 + m->L : 1;
    size_t count = (size_t)cfg->eval_batches * B, n = (size_t)cfg->eval_batches * cols;
    memset(v->batch_losses, 0, n * sizeof(double));
    for (long i = 0; i < cfg->eval_batches; i++) {
        if (i % dist_world() != dist_rank()) continue;
        double *row = v->batch_losses + (size_t)i * cols;
        dataset_fixed_batch(&v->data, (size_t)i * B, count, B, v->inputs, v->targets);
        row[0] = gpt_forward(m, v->inputs, v->targets, B, T);
        for (int l = cols - 2; l >= 0; l--) row[1 + l] = gpt_forward_skipping(m, l, v->targets, B, T);
    }
    dist_sum_double(v->batch_losses, n);
    for (int c = 0; c < cols; c++) {
        double sum = 0;
        for (long i = 0; i < cfg->eval_batches; i++) sum += v->batch_losses[(size_t)i * cols + c];
        means[c] = sum / cfg->eval_batches;
    }
}

double validation_loss(Validation *v, GPT *m, const Config *cfg) {
    double mean;
    validation_means(v, m, cfg, 0, &mean);
    return mean;
}

double validation_probe(Validation *v, GPT *m, const Config *cfg, double *skipped) {
    free(v->batch_losses);
    v->batch_losses = xcalloc((size_t)cfg->eval_batches * (1 + m->L), sizeof(double));
    double *means = xcalloc(1 + (size_t)m->L, sizeof(double));
    validation_means(v, m, cfg, 1, means);
    memcpy(skipped, means + 1, (size_t)m->L * sizeof(double));
    double full = means[0];
    free(means);
    return full;
}
