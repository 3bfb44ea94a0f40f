#include "cli.h"
#include "checkpoint.h"
#include <string.h>
#include <sys/stat.h>

static void usage(FILE *out) {
    fputs("usage: ./train --config FILE [--section.key=value ...] [--overwrite] [--profile] [--check]\n"
          "       ./train --resume RUN_DIR [--train.steps=N] [--profile]\n"
          "       ./train --convert CKPT --to rmsnorm|crmsnorm --out FILE\n"
          "       ./train --generate RUN_DIR|CKPT|CONFIG.json [--prompt TEXT | --prompt-file FILE] [--tokens N]\n"
          "                          [--batch B] [--section.key=value ...]\n"
          "       ./train --probe RUN_DIR\n"
          "Trains a GPT on token shards as the config says; see README.md for every key. Options take their\n"
          "value as --key=value or --key value.\n"
          "  --overwrite   start afresh in an out.dir that already holds a run\n"
          "  --check       check the config and data, print the run's size, memory and time, and exit\n"
          "                without allocating the model or touching out.dir\n"
          "  --profile     time every kernel and print where a step's time goes at the end\n"
          "  --resume      continue a run; --train.steps=N (more than it took) extends it\n"
          "  --convert     write the Pre-RMSNorm or Pre-CRMSNorm model equivalent to a Pre-LN checkpoint\n"
          "  --generate    sample N tokens (default block_size) for B sequences with the KV cache, after the\n"
          "                prompt if given, and print the speed; a run directory means its newest valid\n"
          "                checkpoint; a .json config gives a model initialized from train.seed\n"
          "  --probe       validation loss of the run's latest checkpoint with each block skipped in turn\n", out);
}

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
    if (!strcmp(arg, "--prompt")) return &args->prompt;
    if (!strcmp(arg, "--prompt-file")) return &args->prompt_file;
    return NULL;
}

static int *flag_slot(Args *args, const char *arg) {
    if (!strcmp(arg, "--overwrite")) return &args->overwrite;
    if (!strcmp(arg, "--profile")) return &args->profile;
    if (!strcmp(arg, "--check")) return &args->check;
    return NULL;
}

// The command line in one form: `--option=value` of an option that takes a value becomes
// `--option value`, and `--section.key value` becomes `--section.key=value`. The strings live as
// long as the program. Returns the new argc.
static int normalize(int argc, char **argv, char ***out) {
    static char **list;
    Args probe = {0};  // only asked which options take a value
    list = xcalloc(2 * (size_t)argc + 1, sizeof(char *));
    int n = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *eq = strchr(a, '=');
        char name[256];
        if (i > 0 && eq && !strncmp(a, "--", 2) && (size_t)(eq - a) < sizeof name) {
            snprintf(name, sizeof name, "%.*s", (int)(eq - a), a);
            if (value_slot(&probe, name)) {
                list[n++] = strdup(name);
                list[n++] = strdup(eq + 1);
                continue;
            }
        }
        if (i > 0 && !eq && !strncmp(a, "--", 2) && strchr(a, '.') && i + 1 < argc && strncmp(argv[i + 1], "--", 2)) {
            size_t size = strlen(a) + strlen(argv[i + 1]) + 2;
            list[n] = xcalloc(size, 1);
            snprintf(list[n++], size, "%s=%s", a, argv[++i]);
            continue;
        }
        list[n++] = strdup(a);
    }
    *out = list;
    return n;
}

static int is_directory(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int count_arg(const char *option, const char *value, int fallback, long max) {
    if (!value) return fallback;
    char *end;
    long n = strtol(value, &end, 10);
    if (*value == '\0' || *end != '\0' || n < 1 || n > max)
        die(EXIT_CONFIG, "command line: %s must be an integer in [1, %ld], got '%s'", option, max, value);
    return (int)n;
}

// Which command, and that its options go together.
static void check_command(Args *args) {
    if ((args->config_path != NULL) + (args->resume_dir != NULL) + (args->convert_path != NULL) +
        (args->generate_path != NULL) + (args->probe_dir != NULL) != 1) {
        usage(stderr);
        die(EXIT_CONFIG, "command line: give exactly one of --config FILE, --resume RUN_DIR, --convert CKPT, "
            "--generate RUN_DIR|CKPT|CONFIG.json or --probe RUN_DIR");
    }
    if ((args->generate_tokens || args->generate_batch || args->prompt || args->prompt_file) && !args->generate_path)
        die(EXIT_CONFIG, "command line: --tokens, --batch, --prompt and --prompt-file go with --generate");
    if (args->prompt && args->prompt_file)
        die(EXIT_CONFIG, "command line: give --prompt TEXT or --prompt-file FILE, not both");
    if (args->check && !args->config_path)
        die(EXIT_CONFIG, "command line: --check goes with --config FILE");
    int convert_options = (args->convert_to != NULL) + (args->convert_out != NULL);
    if (convert_options != (args->convert_path ? 2 : 0))
        die(EXIT_CONFIG, "command line: --convert CKPT goes with --to rmsnorm|crmsnorm and --out FILE");
    if (args->convert_to) {
        if (strcmp(args->convert_to, "rmsnorm") && strcmp(args->convert_to, "crmsnorm"))
            die(EXIT_CONFIG, "command line: --to must be rmsnorm or crmsnorm, got '%s'", args->convert_to);
        args->convert_kind = strcmp(args->convert_to, "rmsnorm") ? CONVERT_CRMSNORM : CONVERT_RMSNORM;
    }
}

// The --section.key=value overrides, in order, onto cfg.
static void apply_overrides(int argc, char **argv, Config *cfg, Args *args) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (value_slot(args, a)) { i++; continue; }
        if (flag_slot(args, a)) continue;
        if (strncmp(a, "--", 2) != 0 || !strchr(a, '.')) die(EXIT_CONFIG, "command line: unknown argument '%s'", a);
        if (args->generate_path && !args->generate_from_config && !strncmp(a, "--model.", 8))
            die(EXIT_CONFIG, "command line: '%s': the checkpoint's weights fix its model", a);
        if (args->resume_dir && !strncmp(a, "--train.steps=", 14)) { args->resume_steps = a + 2; continue; }
        if (!args->config_path && !args->generate_path)
            die(EXIT_CONFIG, "command line: '%s': %s keeps the config saved in its checkpoint%s", a,
                args->resume_dir ? "a resumed run" : args->probe_dir ? "the probe" : "a conversion",
                args->resume_dir ? " (only --train.steps=N may extend it)" : "");
        config_apply_override(cfg, a + 2);
    }
}

void parse_args(int argc, char **argv, Config *cfg, Args *args) {
    memset(args, 0, sizeof *args);
    config_defaults(cfg);
    argc = normalize(argc, argv, &argv);
    for (int i = 1; i < argc; i++) {  // the config file first, so overrides apply on top of it
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage(stdout); exit(0); }
        int *flag = flag_slot(args, argv[i]);
        if (flag) *flag = 1;
        const char **slot = value_slot(args, argv[i]);
        if (!slot) continue;
        if (i + 1 >= argc) die(EXIT_CONFIG, "command line: %s needs an argument", argv[i]);
        if (*slot) die(EXIT_CONFIG, "command line: %s is given twice", argv[i]);
        *slot = argv[++i];
    }
    check_command(args);
    if (args->config_path) config_load_file(cfg, args->config_path);
    if (args->generate_path) {
        size_t n = strlen(args->generate_path);
        args->generate_from_config = n >= 5 && !strcmp(args->generate_path + n - 5, ".json");
        if (is_directory(args->generate_path)) {  // the run directory's newest valid checkpoint
            static char latest[4200];
            char *path = checkpoint_find_latest(args->generate_path);
            snprintf(latest, sizeof latest, "%s", path);
            free(path);
            args->generate_path = latest;
        }
        if (args->generate_from_config) config_load_file(cfg, args->generate_path);
        else checkpoint_read_config(args->generate_path, cfg);
    }
    apply_overrides(argc, argv, cfg, args);
    if (cfg->data_dir[0]) {  // the manifest's keys, then the command line again: keys given there win
        config_apply_dataset(cfg);
        apply_overrides(argc, argv, cfg, args);
    }
    config_validate(cfg);
    if (args->generate_path) {
        args->tokens = count_arg("--tokens", args->generate_tokens, (int)cfg->block_size, 100000000);
        args->batch = count_arg("--batch", args->generate_batch, 1, 4096);
    }
}
