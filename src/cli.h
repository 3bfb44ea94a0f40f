// The command line: which command runs (train, resume, --convert, --generate, --probe), its
// options, and the config it runs with (file, checkpoint or defaults, then --section.key=value
// overrides, validated). Every mistake: one line naming the argument, exit 2.
#ifndef NORMGPT_CLI_H
#define NORMGPT_CLI_H
#include "config.h"
#include "convert.h"

typedef struct {
    const char *config_path, *resume_dir, *convert_path, *convert_to, *convert_out, *probe_dir;
    const char *generate_path, *generate_tokens, *generate_batch;
    const char *prompt, *prompt_file;  // --generate's prompt, as text or a file holding it
    const char *resume_steps;          // "train.steps=N" given with --resume (extends the run), else NULL
    int generate_from_config;  // generate_path names a .json config, not a checkpoint
    int tokens, batch;         // --generate's --tokens (default block_size) and --batch (default 1)
    ConvertKind convert_kind;
    int overwrite, profile, check;
} Args;

// Fill args and the resolved, validated config of --config or --generate (the defaults for the
// commands that read theirs from a checkpoint). --help prints the usage and exits 0.
void parse_args(int argc, char **argv, Config *cfg, Args *args);

#endif
