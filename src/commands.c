#include "commands.h"
#include "checkpoint.h"
#include "data.h"
#include "diagnostics.h"
#include "machine.h"
#include "rng.h"
#include "sample.h"
#include "tokenizer.h"
#include "trainer.h"
#include <errno.h>
#include <string.h>

// The model `cfg` describes, for a command that does not train (no gradients, no optimizer state;
// forward activations for (B,T), none when 0), with the weights of checkpoint `path`; its run state
// into st unless NULL.
static void load_untrained(GPT *m, const Config *cfg, const char *path, RunState *st, int B, int T) {
    gpt_build_inference(m, cfg, B, T);
    checkpoint_load_weights(path, m, st);
}

static void read_checkpoint_config(const char *path, Config *cfg) {
    checkpoint_read_config(path, cfg);
    config_validate(cfg);
}

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

int convert_command(const Args *args) {
    const char *path = args->convert_path, *out_path = args->convert_out;
    Config cfg, out_cfg;
    read_checkpoint_config(path, &cfg);
    const char *why = convert_unsupported(&cfg);
    if (why)
        die(1, "%s: not a Pre-LN checkpoint (%s); --convert needs every block pre with layernorm and a layernorm "
               "final norm", path, why);
    use_threads(&cfg);
    int B = (int)cfg.batch_size, T = (int)cfg.seq_len;
    int *inputs = xcalloc((size_t)B * T, sizeof(int)), *targets = xcalloc((size_t)B * T, sizeof(int));
    const char *windows = verification_inputs(&cfg, inputs, targets);
    GPT src, dst;
    RunState st;
    load_untrained(&src, &cfg, path, &st, B, T);
    convert_model(&src, &cfg, args->convert_kind, &dst, &out_cfg);
    double diff = max_rel_logit_diff(&src, &dst, inputs, B, T);
    printf("%s (pre-ln, %zu parameters) -> %s (%s, %zu parameters, stream width %d)\n", path, src.n_params,
           out_path, args->convert_to, dst.n_params, dst.S);
    printf("max relative logit difference on %d %s windows of %d tokens: %.3e (limit %.0e)\n", B, windows, T, diff,
           CONVERT_MAX_REL_DIFF);
    if (!(diff <= CONVERT_MAX_REL_DIFF))
        die(1, "%s: the converted logits differ by %.3e relative, more than %.0e; nothing written", out_path, diff,
            CONVERT_MAX_REL_DIFF);
    checkpoint_write(out_path, &out_cfg, &dst, NULL, &st);
    printf("wrote %s (step %ld)\n", out_path, st.step);
    free(inputs); free(targets);
    gpt_free(&src); gpt_free(&dst);
    return 0;
}

// --prompt TEXT or the text of --prompt-file FILE (one final newline dropped), NULL for neither. Caller frees.
static char *prompt_text(const Args *args) {
    if (args->prompt) return strdup(args->prompt);
    if (!args->prompt_file) return NULL;
    FILE *f = fopen(args->prompt_file, "rb");
    if (!f) die(1, "--prompt-file %s: cannot open: %s", args->prompt_file, strerror(errno));
    size_t cap = 4096, len = 0;
    char *text = xcalloc(cap, 1);
    for (size_t n; (n = fread(text + len, 1, cap - len - 1, f)) > 0;) {
        len += n;
        if (len + 1 == cap) {
            text = realloc(text, cap *= 2);
            if (!text) die(1, "--prompt-file %s: out of memory", args->prompt_file);
        }
    }
    fclose(f);
    text[len] = '\0';
    if (len > 0 && text[len - 1] == '\n') text[len - 1] = '\0';
    return text;
}

// The prompt's ids (*n of them; NULL and 0 without a prompt), which with the separator before them
// must fit the model's block_size.
static int *encode_prompt(const Args *args, const Config *cfg, const Tokenizer *tok, int *n) {
    *n = 0;
    char *text = prompt_text(args);
    if (!text) return NULL;
    const char *option = args->prompt ? "--prompt" : "--prompt-file";
    if (!tok->pieces) die(EXIT_CONFIG, "%s: the model's config has no data.tokenizer to encode the prompt with", option);
    if (!tokenizer_can_encode(tok))
        die(1, "%s: %s has no encoding section (only files written by scripts/make_dataset.py have one); "
               "give --data.tokenizer=FILE", option, cfg->tokenizer);
    *n = tokenizer_encode(tok, text, NULL, 0);
    if (1 + *n > cfg->block_size)
        die(EXIT_CONFIG, "%s: the prompt is %d tokens, with the document separator %d, more than model.block_size = %ld",
            option, *n, 1 + *n, cfg->block_size);
    int *ids = xcalloc((size_t)*n + 1, sizeof(int));
    tokenizer_encode(tok, text, ids, *n);
    free(text);
    return ids;
}

int generate_command(const Args *args, Config *cfg) {
    int threads = use_threads(cfg);
    GPT m;  // the decoder keeps its own buffers: the model needs no forward activations
    if (args->generate_from_config) {
        gpt_build_inference(&m, cfg, 0, 0);
        gpt_init(&m, (uint64_t)cfg->seed);
    } else {
        load_untrained(&m, cfg, args->generate_path, NULL, 0, 0);
    }
    Tokenizer tok;
    tokenizer_load(&tok, cfg->tokenizer, cfg->vocab_size);
    int n_prompt;
    int *prompt = encode_prompt(args, cfg, &tok, &n_prompt);
    printf("normgpt --generate: %s (%s), %zu parameters; %d x %d tokens after a prompt of %d, temperature %g, "
           "top_k %ld\n", args->generate_path, args->generate_from_config ? "initialized from train.seed" : "checkpoint",
           m.n_params, args->batch, args->tokens, n_prompt, cfg->temperature, cfg->top_k);
    print_machine(threads);
    gpt_print_blocks(&m, stdout);
    generate_benchmark(&m, &tok, prompt, n_prompt, args->tokens, args->batch, cfg->temperature, (int)cfg->top_k,
                       (uint64_t)cfg->seed, threads, stdout);
    free(prompt);
    tokenizer_free(&tok);
    gpt_free(&m);
    return 0;
}

// It changes nothing else, so a signal simply ends it.
int probe_command(const char *run_dir) {
    char *path = checkpoint_find_latest(run_dir);
    Config cfg;
    read_checkpoint_config(path, &cfg);
    if (!cfg.val_data[0]) die(1, "%s: the probe needs validation data, and its config has no data.val", path);
    use_threads(&cfg);
    GPT m;
    RunState st;
    load_untrained(&m, &cfg, path, &st, (int)cfg.batch_size, (int)cfg.seq_len);
    Validation val;
    validation_open(&val, &cfg);
    double *skipped = xcalloc(m.L, sizeof(double));
    double full = validation_probe(&val, &m, &cfg, skipped);
    printf("%s (step %ld): val loss %.4f on %ld batches\nblock  val loss without it  delta\n", path, st.step, full,
           cfg.eval_batches);
    for (int l = 0; l < m.L; l++) printf("%5d  %18.4f  %+.4f\n", l, skipped[l], skipped[l] - full);
    char out_path[4200];
    snprintf(out_path, sizeof out_path, "%s/layer_removal.json", run_dir);
    diag_write_removal_json(out_path, st.step, full, skipped, m.L);
    printf("wrote %s\n", out_path);
    free(skipped); free(path);
    validation_close(&val);
    gpt_free(&m);
    return 0;
}
