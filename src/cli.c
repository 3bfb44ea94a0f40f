#include "cli.h"
#include "checkpoint.h"
#include <string.h>

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
}

void parse_args(int argc, char **argv, Config *cfg, Args *args) {
    memset(args, 0, sizeof *args);
    config_defaults(cfg);
    for (int i = 1; i < argc; i++) {  // the config file first, so overrides apply on top of it
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage(stdout); exit(0); }
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
    if (args->generate_path) {
        args->tokens = count_arg("--tokens", args->generate_tokens, (int)cfg->block_size, 100000000);
        args->batch = count_arg("--batch", args->generate_batch, 1, 4096);
    }
}
