// The commands that read a model without training it: --convert, --generate, --probe. Each runs as
// one process and loads weights only (no AdamW state); each returns the exit status.
#ifndef NORMGPT_COMMANDS_H
#define NORMGPT_COMMANDS_H
#include "cli.h"

// Convert a Pre-LN checkpoint, compare the logits of both models, and write the result only if
// they agree. The new checkpoint keeps the run state; its AdamW state starts afresh.
int convert_command(const Args *args);
// Sample with the KV-cached decoder from a checkpoint's weights, or from a model a config
// initializes, and print the speed.
int generate_command(const Args *args, Config *cfg);
// The validation loss of the run's latest checkpoint with each block in turn replaced by the
// identity (Mix-LN's layer-removal test), printed and written to RUN_DIR/layer_removal.json.
int probe_command(const char *run_dir);

#endif
