// Checkpoints: everything a run needs to continue exactly where it stopped: the weights, AdamW's
// state and the run state the trainer keeps (RunState, trainer.h; only saved and loaded here).
//
// File RUN_DIR/ckpt_SSSSSSSS.bin (S = optimizer steps taken; --convert's output may have any name), little-endian:
//   bytes 0..1023  header, 256 int32: [0] magic 20261122, [1] version 1, [2] metadata length L,
//                  [3] bytes per value (4 = float32), [4] data offset D (multiple of 64),
//                  [5..6] number of parameters P (int64), [7..8] FNV-1a 64 checksum of bytes 1024..end
//   1024 ..        metadata: L bytes of JSON — the resolved config, the run state (step, data position,
//                  sample RNG, world size, outlier window) and the tensor table (name, shape, offset in values)
//   D ..           P parameters, then P AdamW first moments, then P AdamW second moments
// Files are written to a temporary name, fsync'ed and renamed, so a crash never leaves a partial one.
#ifndef NORMGPT_CHECKPOINT_H
#define NORMGPT_CHECKPOINT_H
#include "config.h"
#include "model.h"
#include "optim.h"
#include "trainer.h"

#define CKPT_MAGIC 20261122
#define CKPT_VERSION 1

// Write a checkpoint file at `path` atomically: the model's parameters, the optimizer state `opt`
// (NULL: a fresh one, zero moments and adam_t 0) and the trainer's run state `st`.
void checkpoint_write(const char *path, const Config *cfg, const GPT *m, const AdamW *opt, const RunState *st);
// Write RUN_DIR/ckpt_<step>.bin (checkpoint_write), then delete the files named like checkpoints
// older than the newest `keep` that this process wrote or verified (checkpoint_find_latest): a file
// that does not pass its checksum is never counted, and the newest valid one never deleted.
void checkpoint_save(const char *run_dir, const Config *cfg, const GPT *m, const AdamW *opt,
                     const RunState *st, long keep);
// How many checkpoints beyond those on disk now the run of cfg needs room for at its fullest: it
// continues from the newest verified one (a fresh run: from step 0; *steps_left says how many
// steps remain), and the verified ones on disk count towards out.keep.
long checkpoint_files_needed(const Config *cfg, long *steps_left);
// An upper bound on the size of a checkpoint of this model (for the free-space check at start).
size_t checkpoint_bytes(const Config *cfg, const GPT *m);
// Path of the newest checkpoint in run_dir that passes its checksum (older ones are tried in
// turn, with a warning naming each bad file newer than it; all are checked, for retention). Exits
// if there is none. Caller frees.
char *checkpoint_find_latest(const char *run_dir);
// The optimizer steps a checkpoint's run had taken.
long checkpoint_step(const char *path);
// How many files in run_dir are named like checkpoints (ckpt_SSSSSSSS.bin), valid or not.
int checkpoint_count(const char *run_dir);
// Read only the config embedded in a checkpoint.
void checkpoint_read_config(const char *path, Config *cfg);
// Resume a run: parameters, optimizer state and run state, into a model built from the
// checkpoint's config.
void checkpoint_load(const char *path, GPT *m, AdamW *opt, RunState *st);
// The model's tensors must be the checkpoint's, in name and shape: the first that differs is named.
// For the commands that do not train (and train.init_from): the parameters only (AdamW's moments are not read), and the
// run state when `st` is not NULL.
void checkpoint_load_weights(const char *path, GPT *m, RunState *st);

#endif
