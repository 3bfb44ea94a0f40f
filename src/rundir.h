// The run directory (out.dir, or the directory --resume names): config.json, log.jsonl and the
// checkpoints (checkpoint.h). Rank 0 alone calls these; it refuses a directory it cannot use before
// anything in it changes.
#ifndef NORMGPT_RUNDIR_H
#define NORMGPT_RUNDIR_H
#include "config.h"
#include "model.h"

typedef struct {
    const char *dir;
    char log_path[4200], config_path[4200];
    // A resumed run that --train.steps extends: the config its checkpoint holds (config.json may still
    // say that, or already the extension), and run_dir_prepare rewrites config.json. NULL otherwise.
    const Config *before_extension;
} RunDir;

RunDir run_dir_at(const char *dir);
// First of all: lock the directory for the life of the process (flock on RUN_DIR/lock, which holds
// the PID; the lock dies with the process, however it ends). `create`: a fresh run, which creates
// the directory; a resumed run needs it. Exits naming the PID when another live run holds it. Until
// run_dir_prepare, an error removes what this created (lock file, directories): a refused start
// leaves nothing behind.
void run_dir_lock(const RunDir *r, int create);
// Before anything is read or built: the directory exists (created if need be) and can be written;
// a fresh run (resume_path NULL) does not mix with an earlier one unless `overwrite`; a resumed
// run's config.json agrees with `cfg`, the config of its checkpoint `resume_path`.
void run_dir_check(const RunDir *r, const Config *cfg, const char *resume_path, int overwrite);
// With every input checked and the model built: room for out.keep + 1 checkpoints, then the first
// change: a fresh run removes an earlier run's log and checkpoints and writes its config.json; a
// resumed run removes only the partial checkpoints a killed run left.
void run_dir_prepare(const RunDir *r, const Config *cfg, const GPT *m, int resuming);
// Keep only the whole log lines of steps <= last_step, so a resumed run's log reads as one run (a
// torn last line is dropped; lines may be any length).
void run_dir_truncate_log(const RunDir *r, long last_step);
// log.jsonl opened for appending on rank 0 (`root`), /dev/null on the other ranks.
FILE *run_dir_open_log(const RunDir *r, int root);
// After each record: flush the log, or stop the run (exit 1, naming the file) when a write failed,
// e.g. on a full disk. Lines are never lost silently.
void run_log_flush(FILE *log);

#endif
