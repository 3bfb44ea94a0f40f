// Run configuration: every key a user can set, its default, its range, and the JSON/CLI parsing.
// The key table in config.c is the single source of truth; README's key list mirrors it.
#ifndef NORMGPT_CONFIG_H
#define NORMGPT_CONFIG_H

#include "placement.h"

#define CONFIG_STR 256
#define MAX_LAYERS 1024
#define MAX_OUTLIER_WINDOW 1000

// One block's normalization: where (placement) and which operator (norm), rows of the tables in
// placement.h and norms.h, and whether q and k get QK-norm. Names are resolved when the config is
// read; norm is NORM_NONE and qk_norm QK_NORM_UNSET until config_validate fills them from model.norm
// and model.qk_norm.
#define QK_NORM_UNSET (-1)
typedef struct { Placement placement; NormKind norm; int qk_norm; } BlockSpec;

typedef struct {
    // model
    long vocab_size, block_size, n_layer, n_head, n_embd, n_kv_head, ffn_hidden, mix_post_layers, bhyt_refresh;
    int bias, tie_embeddings, head_bias, embed_scale, center_stream;
    int lns, lns_scaled_init, embed_norm;
    double mix_ratio, norm_eps, rope_theta, init_std, dyt_alpha_attn, dyt_alpha_ffn;
    double deepnorm_alpha, deepnorm_beta;  // 0: the decoder-only formulas (2L)^1/4, (8L)^-1/4
    double bhyt_kappa, bhyt_lambda1, bhyt_lambda2, bhyt_final_lambda;
    double derf_alpha, derf_alpha_attn, derf_alpha_other, derf_shift;  // alpha_attn/_other: 0 = derf_alpha
    int qk_norm, qk_norm_affine;
    double qk_norm_eps;
    char qk_norm_mode[CONFIG_STR];
    char placement[CONFIG_STR], norm[CONFIG_STR], final_norm[CONFIG_STR], ffn[CONFIG_STR], pos[CONFIG_STR],
        init[CONFIG_STR];
    // model.blocks: per-block table; empty until given or expanded from the preset by config_validate
    int n_blocks;
    BlockSpec blocks[MAX_LAYERS];
    NormKind final_kind;  // model.final_norm resolved by config_validate: NORM_NONE for none
    // train
    long batch_size, seq_len, total_batch_tokens, steps, warmup_steps, seed, threads, outlier_window;
    int recompute;
    double lr, min_lr, decay_frac, weight_decay, beta1, beta2, eps, grad_clip, skip_outliers;
    char schedule[CONFIG_STR], init_from[CONFIG_STR];
    char precision[CONFIG_STR];  // fp32, or bf16: the matmuls on bf16 copies (src/mixed.h)
    // data
    char data_dir[CONFIG_STR], train_data[CONFIG_STR], val_data[CONFIG_STR], tokenizer[CONFIG_STR];
    // eval, sample, out
    long eval_every, eval_batches;
    long sample_every, sample_tokens, top_k;
    double temperature;
    long diag_every;
    char out_dir[CONFIG_STR];
    long checkpoint_every, keep;
} Config;

// Fill every key with its default.
void config_defaults(Config *c);
// Apply a JSON object (file contents or the copy embedded in a checkpoint). `source` names the
// file in error messages. Any problem: one line naming the file and key, exit 2.
void config_apply_json(Config *c, const char *json_text, const char *source);
void config_load_file(Config *c, const char *path);
// data.dir: model.vocab_size, data.tokenizer, data.train and data.val from DIR/dataset.json (the
// manifest scripts/make_dataset.py writes). A missing or bad field: one line naming the manifest, exit 2.
void config_apply_dataset(Config *c);
// Apply one `section.key=value` override from the command line.
void config_apply_override(Config *c, const char *assignment);
// The key nearest to a misspelled `name` (at most 3 edits away), or NULL.
const char *config_nearest_key(const char *name);
// Check ranges and cross-key constraints, expand the model.placement preset into model.blocks
// when no table was given, and resolve model.final_norm; exits 2 naming the key on the first violation.
void config_validate(Config *c);
// The resolved config as pretty JSON (caller frees).
char *config_to_json(const Config *c);
// The first key on which two validated configs differ, or NULL when they are the same.
const char *config_first_difference(const Config *a, const Config *b);

#endif
