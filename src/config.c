#include "config.h"
#include "common.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

typedef enum { KEY_INT, KEY_FLOAT, KEY_BOOL, KEY_STRING } KeyType;

typedef struct {
    const char *name;     // "section.key", as written in JSON and on the command line
    KeyType type;
    size_t offset;        // into Config
    const char *deflt;    // default, parsed by the same code as a command-line value
    double min, max;      // inclusive range for numbers
    const char *choices;  // "a|b|c" for strings with a fixed set of values, else NULL
} ConfigKey;

// The names model.norm, model.final_norm, model.placement and model.blocks take: the rows of the
// norm and placement tables, joined by names_from_tables() before the first use.
static char NORM_NAMES[256], FINAL_NORM_NAMES[256], BLOCK_PLACEMENTS[256], PLACEMENT_PRESETS[256];

static void append_name(char *list, const char *name) {
    size_t n = strlen(list);
    snprintf(list + n, 256 - n, "%s%s", n ? "|" : "", name);
}

static void names_from_tables(void) {
    if (NORM_NAMES[0]) return;
    append_name(FINAL_NORM_NAMES, "auto");
    append_name(FINAL_NORM_NAMES, "none");
    for (int k = 0; k < NORM_KINDS; k++) {
        append_name(NORM_NAMES, NORM_OPS[k].name);
        append_name(FINAL_NORM_NAMES, NORM_OPS[k].name);
    }
    for (int p = 0; p < PLACEMENTS_COUNT; p++) {
        append_name(BLOCK_PLACEMENTS, PLACEMENTS[p].name);
        append_name(PLACEMENT_PRESETS, PLACEMENTS[p].name);
    }
    append_name(PLACEMENT_PRESETS, "mix");  // post for the first K blocks, pre for the rest
}

#define F(field) offsetof(Config, field)
#define BIG 1e18
static const ConfigKey KEYS[] = {
    {"model.vocab_size",         KEY_INT,    F(vocab_size),         "8192",  2, 1 << 30, NULL},
    {"model.block_size",         KEY_INT,    F(block_size),         "256",   1, 1 << 20, NULL},
    {"model.n_layer",            KEY_INT,    F(n_layer),            "4",     1, 1024, NULL},
    {"model.n_head",             KEY_INT,    F(n_head),             "4",     1, 1024, NULL},
    {"model.n_embd",             KEY_INT,    F(n_embd),             "128",   1, 1 << 16, NULL},
    {"model.bias",               KEY_BOOL,   F(bias),               "true",  0, 1, NULL},
    {"model.tie_embeddings",     KEY_BOOL,   F(tie_embeddings),     "true",  0, 1, NULL},
    {"model.head_bias",          KEY_BOOL,   F(head_bias),          "false", 0, 1, NULL},
    {"model.placement",          KEY_STRING, F(placement),          "pre",   0, 0, PLACEMENT_PRESETS},
    {"model.norm",               KEY_STRING, F(norm),               "layernorm", 0, 0, NORM_NAMES},
    {"model.final_norm",         KEY_STRING, F(final_norm),         "auto",  0, 0, FINAL_NORM_NAMES},
    {"model.mix_ratio",          KEY_FLOAT,  F(mix_ratio),          "0.25",  0, 1, NULL},
    {"model.mix_post_layers",    KEY_INT,    F(mix_post_layers),    "-1",    -1, MAX_LAYERS, NULL},
    {"model.norm_eps",           KEY_FLOAT,  F(norm_eps),           "1e-5",  0, 1, NULL},
    {"model.ffn",                KEY_STRING, F(ffn),                "gelu",  0, 0, "gelu|swiglu"},
    {"model.ffn_hidden",         KEY_INT,    F(ffn_hidden),         "0",     0, 1 << 20, NULL},
    {"model.pos",                KEY_STRING, F(pos),                "learned", 0, 0, "learned|rope"},
    {"model.rope_theta",         KEY_FLOAT,  F(rope_theta),         "10000", 1, 1e12, NULL},
    {"model.n_kv_head",          KEY_INT,    F(n_kv_head),          "0",     0, 1024, NULL},
    {"model.init",               KEY_STRING, F(init),               "gpt2",  0, 0, "gpt2|megatron|mixln|llama"},
    {"model.init_std",           KEY_FLOAT,  F(init_std),           "0.02",  0, 10, NULL},
    {"model.embed_scale",        KEY_BOOL,   F(embed_scale),        "false", 0, 1, NULL},
    {"model.center_stream",      KEY_BOOL,   F(center_stream),      "false", 0, 1, NULL},
    {"model.dyt_alpha_attn",     KEY_FLOAT,  F(dyt_alpha_attn),     "1.0",   0, 100, NULL},
    {"model.dyt_alpha_ffn",      KEY_FLOAT,  F(dyt_alpha_ffn),      "1.0",   0, 100, NULL},
    {"model.bhyt_kappa",         KEY_FLOAT,  F(bhyt_kappa),         "10",    1e-3, 1e6, NULL},
    {"model.bhyt_lambda1",       KEY_FLOAT,  F(bhyt_lambda1),       "2.0",   0, 1e3, NULL},
    {"model.bhyt_lambda2",       KEY_FLOAT,  F(bhyt_lambda2),       "1.0",   0, 1e3, NULL},
    {"model.bhyt_final_lambda",  KEY_FLOAT,  F(bhyt_final_lambda),  "0",     0, 1e3, NULL},
    {"model.bhyt_refresh",       KEY_INT,    F(bhyt_refresh),       "0",     0, BIG, NULL},
    {"model.deepnorm_alpha",     KEY_FLOAT,  F(deepnorm_alpha),     "0",     0, 1e3, NULL},  // 0: (2L)^1/4
    {"model.deepnorm_beta",      KEY_FLOAT,  F(deepnorm_beta),      "0",     0, 1e3, NULL},  // 0: (8L)^-1/4
    {"model.lns",                KEY_BOOL,   F(lns),                "false", 0, 1, NULL},
    {"model.lns_scaled_init",    KEY_BOOL,   F(lns_scaled_init),    "false", 0, 1, NULL},
    {"model.embed_norm",         KEY_BOOL,   F(embed_norm),         "false", 0, 1, NULL},
    {"model.derf_alpha",         KEY_FLOAT,  F(derf_alpha),         "1.0",   0, 100, NULL},
    {"model.derf_alpha_attn",    KEY_FLOAT,  F(derf_alpha_attn),    "0",     0, 100, NULL},
    {"model.derf_alpha_other",   KEY_FLOAT,  F(derf_alpha_other),   "0",     0, 100, NULL},
    {"model.derf_shift",         KEY_FLOAT,  F(derf_shift),         "0.0",   -100, 100, NULL},
    {"model.qk_norm",            KEY_BOOL,   F(qk_norm),            "false", 0, 1, NULL},
    {"model.qk_norm_mode",       KEY_STRING, F(qk_norm_mode),       "head",  0, 0, "head|full"},
    {"model.qk_norm_affine",     KEY_BOOL,   F(qk_norm_affine),     "true",  0, 1, NULL},
    {"model.qk_norm_eps",        KEY_FLOAT,  F(qk_norm_eps),        "1e-6",  0, 1, NULL},
    {"train.batch_size",         KEY_INT,    F(batch_size),         "16",    1, 1 << 20, NULL},
    {"train.seq_len",            KEY_INT,    F(seq_len),            "256",   1, 1 << 20, NULL},
    {"train.total_batch_tokens", KEY_INT,    F(total_batch_tokens), "4096",  1, BIG, NULL},
    {"train.steps",              KEY_INT,    F(steps),              "470",  1, BIG, NULL},
    {"train.lr",                 KEY_FLOAT,  F(lr),                 "3e-3",  0, 10, NULL},
    {"train.min_lr",             KEY_FLOAT,  F(min_lr),             "3e-4",  0, 10, NULL},
    {"train.warmup_steps",       KEY_INT,    F(warmup_steps),       "30",   0, BIG, NULL},
    {"train.schedule",           KEY_STRING, F(schedule),           "cosine", 0, 0, "cosine|linear|constant|wsd"},
    {"train.decay_frac",         KEY_FLOAT,  F(decay_frac),         "0.2",   0, 1, NULL},
    {"train.weight_decay",       KEY_FLOAT,  F(weight_decay),       "0.1",   0, 10, NULL},
    {"train.beta1",              KEY_FLOAT,  F(beta1),              "0.9",   0, 0.999999, NULL},
    {"train.beta2",              KEY_FLOAT,  F(beta2),              "0.95",  0, 0.999999999, NULL},
    {"train.eps",                KEY_FLOAT,  F(eps),                "1e-8",  1e-30, 1, NULL},
    {"train.grad_clip",          KEY_FLOAT,  F(grad_clip),          "1.0",   0, BIG, NULL},
    {"train.seed",               KEY_INT,    F(seed),               "1337",  0, BIG, NULL},
    {"train.threads",            KEY_INT,    F(threads),            "0",     0, 4096, NULL},
    {"train.recompute",          KEY_BOOL,   F(recompute),          "false", 0, 1, NULL},
    {"train.precision",          KEY_STRING, F(precision),          "fp32",  0, 0, "fp32|bf16"},
    {"train.skip_outliers",      KEY_FLOAT,  F(skip_outliers),      "0",     0, 1e6, NULL},
    {"train.outlier_window",     KEY_INT,    F(outlier_window),     "50",    2, MAX_OUTLIER_WINDOW, NULL},
    {"train.init_from",          KEY_STRING, F(init_from),          "",      0, 0, NULL},
    {"data.dir",                 KEY_STRING, F(data_dir),           "",      0, 0, NULL},
    {"data.train",               KEY_STRING, F(train_data),         "data/brown/brown_train_*.bin", 0, 0, NULL},
    {"data.val",                 KEY_STRING, F(val_data),           "data/brown/brown_val_*.bin", 0, 0, NULL},
    {"data.tokenizer",           KEY_STRING, F(tokenizer),          "data/brown/tokenizer.bin", 0, 0, NULL},
    {"eval.every",               KEY_INT,    F(eval_every),         "50",   0, BIG, NULL},
    {"eval.batches",             KEY_INT,    F(eval_batches),       "8",     1, BIG, NULL},
    {"sample.every",             KEY_INT,    F(sample_every),       "100",   0, BIG, NULL},
    {"sample.tokens",            KEY_INT,    F(sample_tokens),      "128",   0, 1 << 20, NULL},
    {"sample.temperature",       KEY_FLOAT,  F(temperature),        "0.8",   0, 100, NULL},
    {"sample.top_k",             KEY_INT,    F(top_k),              "40",    0, 1 << 30, NULL},
    {"diag.every",               KEY_INT,    F(diag_every),         "0",     0, BIG, NULL},
    {"out.dir",                  KEY_STRING, F(out_dir),            "runs/default", 0, 0, NULL},
    {"out.checkpoint_every",     KEY_INT,    F(checkpoint_every),   "100",   0, BIG, NULL},
    {"out.keep",                 KEY_INT,    F(keep),               "2",     1, 1000000, NULL},
};
#undef F
#define N_KEYS (sizeof(KEYS) / sizeof(KEYS[0]))

static const ConfigKey *find_key(const char *name) {
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(KEYS[i].name, name) == 0) return &KEYS[i];
    return NULL;
}

// Levenshtein distance (insertions, deletions, substitutions), for suggesting a misspelled key.
static size_t edit_distance(const char *a, const char *b) {
    size_t n = strlen(b), row[512];
    if (n >= sizeof row / sizeof row[0]) return (size_t)-1;
    for (size_t j = 0; j <= n; j++) row[j] = j;
    for (size_t i = 1; a[i - 1]; i++) {
        size_t diagonal = row[0];
        row[0] = i;
        for (size_t j = 1; j <= n; j++) {
            size_t up = row[j], best = diagonal + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            diagonal = up;
            row[j] = best;
        }
    }
    return row[n];
}

const char *config_nearest_key(const char *name) {
    const char *best = NULL;
    size_t best_distance = 4;  // further than 3 edits is no longer a typo
    for (size_t i = 0; i < N_KEYS; i++) {
        size_t d = edit_distance(name, KEYS[i].name);
        if (d < best_distance) { best_distance = d; best = KEYS[i].name; }
    }
    return best;
}

// Exits: `name` is no key, with the nearest key suggested when one is close.
static void die_unknown_key(const char *source, const char *name) {
    const char *near = config_nearest_key(name);
    if (near) die(EXIT_CONFIG, "%s: unknown key %s (did you mean %s?)", source, name, near);
    die(EXIT_CONFIG, "%s: unknown key %s", source, name);
}

static void *field(Config *c, const ConfigKey *k) { return (char *)c + k->offset; }
static const void *cfield(const Config *c, const ConfigKey *k) { return (const char *)c + k->offset; }

static int in_choices(const char *choices, const char *value) {
    size_t n = strlen(value);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, value, n) == 0) return 1;
        p += len + (bar != NULL);
    }
    return 0;
}

static void set_string(Config *c, const ConfigKey *k, const char *value, const char *source) {
    names_from_tables();
    if (strlen(value) >= CONFIG_STR)
        die(EXIT_CONFIG, "%s: %s is longer than %d characters", source, k->name, CONFIG_STR - 1);
    if (k->choices && !in_choices(k->choices, value))
        die(EXIT_CONFIG, "%s: %s = \"%s\" is not one of %s", source, k->name, value, k->choices);
    strcpy((char *)field(c, k), value);
}

static void set_number(Config *c, const ConfigKey *k, double v, const char *source) {
    if (k->type == KEY_INT) {
        if (v != floor(v) || fabs(v) > 9e15)
            die(EXIT_CONFIG, "%s: %s must be an integer, got %g", source, k->name, v);
        *(long *)field(c, k) = (long)v;
    } else if (k->type == KEY_FLOAT) {
        if (!isfinite(v)) die(EXIT_CONFIG, "%s: %s must be a finite number", source, k->name);
        *(double *)field(c, k) = v;
    }
}

// Parse a textual value (defaults and command-line overrides) into the key's field.
static void set_from_text(Config *c, const ConfigKey *k, const char *text, const char *source) {
    switch (k->type) {
    case KEY_STRING: set_string(c, k, text, source); return;
    case KEY_BOOL:
        if (!strcasecmp(text, "true") || !strcmp(text, "1")) *(int *)field(c, k) = 1;
        else if (!strcasecmp(text, "false") || !strcmp(text, "0")) *(int *)field(c, k) = 0;
        else die(EXIT_CONFIG, "%s: %s must be true or false, got '%s'", source, k->name, text);
        return;
    case KEY_INT:
    case KEY_FLOAT: {
        char *end;
        errno = 0;
        double v = strtod(text, &end);
        if (end == text || *end != '\0' || errno == ERANGE)
            die(EXIT_CONFIG, "%s: %s must be a number, got '%s'", source, k->name, text);
        set_number(c, k, v, source);
        return;
    }
    }
}

void config_defaults(Config *c) {
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < N_KEYS; i++) set_from_text(c, &KEYS[i], KEYS[i].deflt, "built-in defaults");
}

static void set_from_json(Config *c, const ConfigKey *k, const cJSON *item, const char *source) {
    static const char *type_names[] = {"an integer", "a number", "true or false", "a string"};
    int ok = (k->type == KEY_INT || k->type == KEY_FLOAT) ? cJSON_IsNumber(item)
           : k->type == KEY_BOOL ? cJSON_IsBool(item) : cJSON_IsString(item);
    if (!ok) die(EXIT_CONFIG, "%s: %s must be %s", source, k->name, type_names[k->type]);
    if (k->type == KEY_BOOL) *(int *)field(c, k) = cJSON_IsTrue(item);
    else if (k->type == KEY_STRING) set_string(c, k, item->valuestring, source);
    else set_number(c, k, item->valuedouble, source);
}

// A key given twice in one object (first: its first key): cJSON keeps both, the last would silently win.
static void refuse_repeated_key(const cJSON *first, const cJSON *item, const char *prefix, const char *source) {
    for (const cJSON *before = first; before != item; before = before->next)
        if (!strcmp(before->string, item->string))
            die(EXIT_CONFIG, "%s: key %s%s is given twice", source, prefix, item->string);
}

// model.blocks: an array of {"placement": P, "norm": N, "qk_norm": B}; a missing norm means model.norm,
// a missing qk_norm model.qk_norm.
static void set_blocks(Config *c, const cJSON *array, const char *source) {
    names_from_tables();
    if (!cJSON_IsArray(array) || cJSON_GetArraySize(array) < 1 || cJSON_GetArraySize(array) > MAX_LAYERS)
        die(EXIT_CONFIG, "%s: model.blocks must be an array of 1 to %d block objects", source, MAX_LAYERS);
    c->n_blocks = 0;
    for (const cJSON *b = array->child; b; b = b->next, c->n_blocks++) {
        BlockSpec *spec = &c->blocks[c->n_blocks];
        int placement = -1;
        spec->norm = NORM_NONE;
        spec->qk_norm = QK_NORM_UNSET;
        if (!cJSON_IsObject(b)) die(EXIT_CONFIG, "%s: model.blocks[%d] must be an object", source, c->n_blocks);
        for (const cJSON *item = b->child; item; item = item->next) {
            char prefix[64];
            snprintf(prefix, sizeof prefix, "model.blocks[%d].", c->n_blocks);
            refuse_repeated_key(b->child, item, prefix, source);
            if (!strcmp(item->string, "qk_norm")) {
                if (!cJSON_IsBool(item))
                    die(EXIT_CONFIG, "%s: model.blocks[%d].qk_norm must be true or false", source, c->n_blocks);
                spec->qk_norm = cJSON_IsTrue(item);
                continue;
            }
            int is_placement = !strcmp(item->string, "placement"), is_norm = !strcmp(item->string, "norm");
            if (!is_placement && !is_norm)
                die(EXIT_CONFIG, "%s: unknown key model.blocks[%d].%s", source, c->n_blocks, item->string);
            const char *name = cJSON_IsString(item) ? item->valuestring : "";
            int found = is_placement ? (placement = placement_by_name(name)) >= 0
                                     : (spec->norm = norm_by_name(name)) != NORM_NONE;
            if (!found)
                die(EXIT_CONFIG, "%s: model.blocks[%d].%s must be one of %s", source, c->n_blocks, item->string,
                    is_placement ? BLOCK_PLACEMENTS : NORM_NAMES);
        }
        if (placement < 0) die(EXIT_CONFIG, "%s: model.blocks[%d] needs a placement", source, c->n_blocks);
        spec->placement = (Placement)placement;
    }
}

static int line_at(const char *text, const char *at) {
    int line = 1;
    for (const char *p = text; at && p < at; p++) line += (*p == '\n');
    return line;
}

// cJSON decodes \u0000 into a NUL that silently cuts a key, a name or a path short: refused.
static void refuse_nul_escapes(const char *text, const char *source) {
    for (const char *p = text; *p; p++) {
        if (*p != '\\' || !p[1]) continue;
        if (p[1] == 'u' && !strncmp(p + 2, "0000", 4))
            die(EXIT_CONFIG, "%s:%d: \\u0000 (a NUL character) inside a string", source, line_at(text, p));
        p++;  // the escaped character, so that \\u0000 (an escaped backslash, then text) is not mistaken for one
    }
}

void config_apply_json(Config *c, const char *json_text, const char *source) {
    const char *error_at = NULL;
    cJSON *root = cJSON_ParseWithOpts(json_text, &error_at, 1);
    if (!root) die(EXIT_CONFIG, "%s:%d: malformed JSON", source, line_at(json_text, error_at));
    refuse_nul_escapes(json_text, source);
    if (!cJSON_IsObject(root)) die(EXIT_CONFIG, "%s: the top level must be a JSON object", source);
    for (const cJSON *section = root->child; section; section = section->next) {
        if (!cJSON_IsObject(section))
            die(EXIT_CONFIG, "%s: '%s' must be an object of keys (model, train, data, eval, sample, diag, out)",
                source, section->string);
        refuse_repeated_key(root->child, section, "", source);
        for (const cJSON *item = section->child; item; item = item->next) {
            char name[512];
            snprintf(name, sizeof name, "%s.", section->string);
            refuse_repeated_key(section->child, item, name, source);
            snprintf(name, sizeof name, "%s.%s", section->string, item->string);
            if (!strcmp(name, "model.blocks")) { set_blocks(c, item, source); continue; }
            const ConfigKey *k = find_key(name);
            if (!k) die_unknown_key(source, name);
            set_from_json(c, k, item, source);
        }
    }
    cJSON_Delete(root);
}

void config_load_file(Config *c, const char *path) {
    const char *why;
    FILE *f = open_input(path, &why);
    if (!f) die(EXIT_CONFIG, "%s: cannot open config file: %s", path, why);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (size < 0 || size > (1 << 24)) die(EXIT_CONFIG, "%s: not a readable config file", path);
    char *text = xcalloc((size_t)size + 1, 1);
    if (fread(text, 1, (size_t)size, f) != (size_t)size) die(EXIT_CONFIG, "%s: read failed", path);
    fclose(f);
    config_apply_json(c, text, path);
    free(text);
}

// A string field of the manifest, or exit naming it.
static const char *manifest_string(const cJSON *object, const char *key, const char *path) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, key);
    if (!cJSON_IsString(item) || !item->valuestring[0]) die(EXIT_CONFIG, "%s: '%s' must be a non-empty string", path, key);
    return item->valuestring;
}

// DIR/NAME into the string key `name`, or exit naming the manifest when it does not fit.
static void set_dataset_path(Config *c, const char *name, const char *dir, const char *file, const char *path) {
    char joined[2 * CONFIG_STR];
    snprintf(joined, sizeof joined, "%s/%s", dir, file);
    set_string(c, find_key(name), joined, path);
}

void config_apply_dataset(Config *c) {
    char path[CONFIG_STR + 16];
    snprintf(path, sizeof path, "%s/dataset.json", c->data_dir);
    FILE *f = fopen(path, "rb");
    if (!f) die(EXIT_CONFIG, "data.dir: cannot open %s: %s", path, strerror(errno));
    char text[1 << 16];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    cJSON *root = cJSON_Parse(text);
    if (!cJSON_IsObject(root)) die(EXIT_CONFIG, "%s: not a JSON object (a dataset manifest of make_dataset.py)", path);
    const cJSON *format = cJSON_GetObjectItemCaseSensitive(root, "format");
    const cJSON *version = cJSON_GetObjectItemCaseSensitive(root, "version");
    if (!cJSON_IsString(format) || strcmp(format->valuestring, "normgpt-dataset") || !cJSON_IsNumber(version) ||
        version->valuedouble != 1)
        die(EXIT_CONFIG, "%s: 'format' must be \"normgpt-dataset\" and 'version' 1", path);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(root, "vocab_size");
    if (!cJSON_IsNumber(vocab)) die(EXIT_CONFIG, "%s: 'vocab_size' must be a number", path);
    set_number(c, find_key("model.vocab_size"), vocab->valuedouble, path);
    set_dataset_path(c, "data.tokenizer", c->data_dir, manifest_string(root, "tokenizer", path), path);
    static const char *splits[][2] = {{"train", "data.train"}, {"val", "data.val"}};
    for (int i = 0; i < 2; i++) {
        const cJSON *split = cJSON_GetObjectItemCaseSensitive(root, splits[i][0]);
        if (!split && i == 1) { set_string(c, find_key("data.val"), "", path); continue; }  // no validation split
        if (!cJSON_IsObject(split)) die(EXIT_CONFIG, "%s: '%s' must be an object with 'shards'", path, splits[i][0]);
        char key[32];
        snprintf(key, sizeof key, "%s.shards", splits[i][0]);
        const cJSON *shards = cJSON_GetObjectItemCaseSensitive(split, "shards");
        if (!cJSON_IsString(shards) || !shards->valuestring[0])
            die(EXIT_CONFIG, "%s: '%s' must be a non-empty string", path, key);
        set_dataset_path(c, splits[i][1], c->data_dir, shards->valuestring, path);
    }
    cJSON_Delete(root);
}

void config_apply_override(Config *c, const char *assignment) {
    const char *eq = strchr(assignment, '=');
    if (!eq) die(EXIT_CONFIG, "command line: override '--%s' needs a value: --section.key=value or --section.key value", assignment);
    char name[512];
    size_t len = (size_t)(eq - assignment);
    if (len >= sizeof name) die(EXIT_CONFIG, "command line: override key too long");
    memcpy(name, assignment, len);
    name[len] = '\0';
    if (!strcmp(name, "model.blocks")) {  // the value is the JSON array itself
        cJSON *array = cJSON_Parse(eq + 1);
        if (!array) die(EXIT_CONFIG, "command line: model.blocks must be a JSON array of block objects");
        set_blocks(c, array, "command line");
        cJSON_Delete(array);
        return;
    }
    const ConfigKey *k = find_key(name);
    if (!k) die_unknown_key("command line", name);
    set_from_text(c, k, eq + 1, "command line");
}

#define REQUIRE(cond, ...) do { if (!(cond)) die(EXIT_CONFIG, "config: " __VA_ARGS__); } while (0)

// Expand the model.placement preset into the per-block table (unless one was given), fill blocks
// without a norm with model.norm, and check the combinations the model cannot build.
static void resolve_blocks(Config *c) {
    int L = (int)c->n_layer;
    if (c->n_blocks == 0) {
        int mix = !strcmp(c->placement, "mix"), n_post = 0;
        if (mix) {
            n_post = c->mix_post_layers >= 0 ? (int)c->mix_post_layers : (int)floor(c->mix_ratio * L);
            REQUIRE(n_post <= L, "model.mix_post_layers (%d) exceeds model.n_layer (%d)", n_post, L);
            if (n_post == 0)  // a warning, not an error: Pre-LN as the K = 0 end of a Mix-LN sweep is legitimate
                fprintf(stderr, "warning: model.placement = mix with K = 0 Post-LN blocks (%s): every block is "
                        "pre, this model is plain Pre-LN\n", c->mix_post_layers >= 0 ? "model.mix_post_layers = 0" :
                        "floor(model.mix_ratio * model.n_layer) = 0");
        }
        for (int l = 0; l < L; l++) {
            Placement p;
            if (mix) p = l < n_post ? PLACE_POST : PLACE_PRE;
            else p = (Placement)placement_by_name(c->placement);  // a table name: checked when it was set
            c->blocks[l] = (BlockSpec){.placement = l == 0 ? p : PLACEMENTS[p].preset_rest, .norm = NORM_NONE,
                                       .qk_norm = QK_NORM_UNSET};
        }
        c->n_blocks = L;
    }
    REQUIRE(c->n_blocks == L, "model.blocks has %d entries but model.n_layer is %d", c->n_blocks, L);
    // A compressed stream is one operator's (crmsnorm's) for the whole model, final norm included.
    int n_compressed = 0;
    const char *compressed = NULL;
    for (int l = 0; l < L; l++) {
        BlockSpec *b = &c->blocks[l];
        if (b->norm == NORM_NONE) b->norm = norm_by_name(c->norm);
        if (b->qk_norm == QK_NORM_UNSET) b->qk_norm = c->qk_norm;
        const PlacementSpec *p = &PLACEMENTS[b->placement];
        const NormOp *op = &NORM_OPS[b->norm];
        const char *why = placement_refuses(b->placement, b->norm);
        REQUIRE(!why, "model.blocks[%d]: %s", l, why);
        if (op->compresses_stream) {
            n_compressed++;
            compressed = op->name;
        }
        REQUIRE(!c->lns || b->norm != NORM_BHYT, "model.lns is undefined for BHyT (block %d uses norm bhyt)", l);
        REQUIRE(!c->center_stream || (p->zero_mean_stream && b->norm == NORM_RMSNORM),
                "model.center_stream needs every block to be pre with rmsnorm (block %d is %s/%s)", l, p->name,
                op->name);
    }
    REQUIRE(n_compressed == 0 || n_compressed == L, "model.blocks: %s compresses the whole residual stream, so "
            "every block must use it (%d of %d do)", compressed, n_compressed, L);
    if (!strcmp(c->final_norm, "auto")) {  // BHyT's released runs end in an RMSNorm unless a final lambda is set
        int bhyt_final = norm_by_name(c->norm) != NORM_BHYT || c->bhyt_final_lambda > 0;
        snprintf(c->final_norm, CONFIG_STR, "%s", compressed ? compressed : bhyt_final ? c->norm : "rmsnorm");
    }
    c->final_kind = norm_by_name(c->final_norm);  // NORM_NONE for "none"
    REQUIRE(!c->embed_norm || norm_by_name(c->norm) != NORM_BHYT,
            "model.embed_norm is undefined for model.norm = bhyt (BHyT's lambda inits are per block site)");
    REQUIRE(!c->embed_norm || !c->center_stream, "model.embed_norm and model.center_stream cannot be combined "
            "(the equivalence with Pre-LN has no embedding norm)");
    REQUIRE(!compressed || !strcmp(c->final_norm, compressed),
            "model.final_norm must be %s (or auto) in a %s model", compressed, compressed);
    REQUIRE(compressed || c->final_kind == NORM_NONE || !NORM_OPS[c->final_kind].compresses_stream,
            "model.final_norm = %s needs %s blocks", c->final_norm, c->final_norm);
    REQUIRE(c->final_kind != NORM_BHYT || c->bhyt_final_lambda > 0,
            "model.final_norm = bhyt needs model.bhyt_final_lambda > 0 (its initial lambda)");
}

void config_validate(Config *c) {
    for (size_t i = 0; i < N_KEYS; i++) {
        const ConfigKey *k = &KEYS[i];
        double v;
        if (k->type == KEY_INT) v = (double)*(const long *)cfield(c, k);
        else if (k->type == KEY_FLOAT) v = *(const double *)cfield(c, k);
        else continue;
        REQUIRE(v >= k->min && v <= k->max, "%s = %g is out of range [%g, %g]", k->name, v, k->min, k->max);
    }
    REQUIRE(c->n_embd % c->n_head == 0, "model.n_embd (%ld) must be divisible by model.n_head (%ld)",
            c->n_embd, c->n_head);
    REQUIRE(c->seq_len <= c->block_size, "train.seq_len (%ld) must not exceed model.block_size (%ld)",
            c->seq_len, c->block_size);
    long micro = c->batch_size * c->seq_len;
    REQUIRE(c->total_batch_tokens % micro == 0,
            "train.total_batch_tokens (%ld) must be a multiple of train.batch_size * train.seq_len (%ld)",
            c->total_batch_tokens, micro);
    REQUIRE(c->min_lr <= c->lr, "train.min_lr (%g) must not exceed train.lr (%g)", c->min_lr, c->lr);
    if (c->warmup_steps > c->steps) {  // a quick try with few steps: warm up over all of them
        printf("note: train.warmup_steps = %ld exceeds train.steps = %ld; warming up over all %ld steps\n",
               c->warmup_steps, c->steps, c->steps);
        c->warmup_steps = c->steps;
    }
    REQUIRE(c->top_k <= c->vocab_size, "sample.top_k (%ld) must not exceed model.vocab_size (%ld)",
            c->top_k, c->vocab_size);
    REQUIRE(c->train_data[0] != '\0', "data.train must name the training shards");
    long kv = c->n_kv_head ? c->n_kv_head : c->n_head;
    REQUIRE(c->n_head % kv == 0, "model.n_kv_head (%ld) must divide model.n_head (%ld)", kv, c->n_head);
    REQUIRE(strcmp(c->pos, "rope") || (c->n_embd / c->n_head) % 2 == 0,
            "model.pos = rope needs an even head size (model.n_embd / model.n_head)");
    resolve_blocks(c);
    REQUIRE(c->out_dir[0] != '\0', "out.dir must name a directory");
}

const char *config_first_difference(const Config *a, const Config *b) {
    for (size_t i = 0; i < N_KEYS; i++) {
        const ConfigKey *k = &KEYS[i];
        const void *x = cfield(a, k), *y = cfield(b, k);
        int same = k->type == KEY_INT ? *(const long *)x == *(const long *)y
                 : k->type == KEY_FLOAT ? *(const double *)x == *(const double *)y
                 : k->type == KEY_BOOL ? *(const int *)x == *(const int *)y : !strcmp(x, y);
        if (!same) return k->name;
    }
    if (a->n_blocks != b->n_blocks) return "model.blocks";
    for (int l = 0; l < a->n_blocks; l++)
        if (a->blocks[l].placement != b->blocks[l].placement || a->blocks[l].norm != b->blocks[l].norm ||
            a->blocks[l].qk_norm != b->blocks[l].qk_norm)
            return "model.blocks";
    return NULL;
}


char *config_to_json(const Config *c) {
    cJSON *root = cJSON_CreateObject();
    for (size_t i = 0; i < N_KEYS; i++) {
        const ConfigKey *k = &KEYS[i];
        char section[64];
        const char *dot = strchr(k->name, '.');
        snprintf(section, sizeof section, "%.*s", (int)(dot - k->name), k->name);
        cJSON *obj = cJSON_GetObjectItemCaseSensitive(root, section);
        if (!obj) obj = cJSON_AddObjectToObject(root, section);
        const void *p = cfield(c, k);
        switch (k->type) {
        case KEY_INT: cJSON_AddNumberToObject(obj, dot + 1, (double)*(const long *)p); break;
        case KEY_FLOAT: cJSON_AddNumberToObject(obj, dot + 1, *(const double *)p); break;
        case KEY_BOOL: cJSON_AddBoolToObject(obj, dot + 1, *(const int *)p); break;
        case KEY_STRING: cJSON_AddStringToObject(obj, dot + 1, (const char *)p); break;
        }
    }
    if (c->n_blocks) {
        cJSON *blocks = cJSON_AddArrayToObject(cJSON_GetObjectItemCaseSensitive(root, "model"), "blocks");
        for (int l = 0; l < c->n_blocks; l++) {
            cJSON *b = cJSON_CreateObject();
            cJSON_AddStringToObject(b, "placement", PLACEMENTS[c->blocks[l].placement].name);
            if (c->blocks[l].norm != NORM_NONE) cJSON_AddStringToObject(b, "norm", NORM_OPS[c->blocks[l].norm].name);
            // Only where it differs from model.qk_norm, which a block without the key takes.
            if (c->blocks[l].qk_norm != QK_NORM_UNSET && c->blocks[l].qk_norm != c->qk_norm)
                cJSON_AddBoolToObject(b, "qk_norm", c->blocks[l].qk_norm);
            cJSON_AddItemToArray(blocks, b);
        }
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    return text;
}
