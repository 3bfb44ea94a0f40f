#include "rundir.h"
#include "checkpoint.h"
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

// What run_dir_lock created, for a start refused before run_dir_prepare: removed again on die().
static struct {
    char dir[4096];       // the run directory
    char outermost[4096]; // the outermost directory this process created ("" if none)
    char lock[4200];      // the lock file, if this process created it ("" if not)
} created;

static void remove_refused_start(void) {
    if (created.lock[0]) unlink(created.lock);
    if (!created.outermost[0]) return;
    char path[4096];
    snprintf(path, sizeof path, "%s", created.dir);
    for (;;) {  // from the run directory up to the outermost one created; rmdir leaves a non-empty one
        if (rmdir(path) != 0 || !strcmp(path, created.outermost)) return;
        char *slash = strrchr(path, '/');
        if (!slash || slash == path) return;
        *slash = '\0';
    }
}

static void note_created_dirs(const char *dir) {
    char path[4096];
    struct stat st;
    snprintf(created.dir, sizeof created.dir, "%s", dir);
    snprintf(path, sizeof path, "%s", dir);
    created.outermost[0] = '\0';
    while (path[0] && stat(path, &st) != 0) {
        snprintf(created.outermost, sizeof created.outermost, "%s", path);
        char *slash = strrchr(path, '/');
        if (!slash) break;
        *slash = '\0';
    }
}

void run_dir_lock(const RunDir *r, int create) {
    char lock[4200];
    snprintf(lock, sizeof lock, "%s/lock", r->dir);
    if (create) {
        note_created_dirs(r->dir);
        at_die(remove_refused_start);
        if (make_dirs(r->dir) != 0) die(1, "out.dir %s: cannot create: %s", r->dir, strerror(errno));
    }
    int existed = access(lock, F_OK) == 0;
    int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) die(1, "%s: cannot open run directory: %s", r->dir, strerror(errno));
    if (!existed) snprintf(created.lock, sizeof created.lock, "%s", lock);
    at_die(remove_refused_start);
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        die(1, "%s: in use by the run of process %s (it holds %s); wait for it to end, or stop it", r->dir,
            pid[0] ? pid : "(unknown)", lock);
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len)
        die(1, "%s: cannot write: %s", lock, strerror(errno));
    // fd stays open, and the lock held, until the process ends (however it ends).
}

static void check_writable_dir(const char *dir) {
    if (make_dirs(dir) != 0) die(1, "out.dir %s: cannot create: %s", dir, strerror(errno));
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/.write_test", dir);
    static const char bytes[4096];
    if (write_file_atomic(probe, bytes, sizeof bytes) != 0)
        die(1, "out.dir %s: not writable: %s", dir, strerror(errno));
    unlink(probe);
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

// A resumed run trains with the config embedded in its checkpoint; a config.json that says otherwise
// (edited by hand) would misdescribe the run, so it is refused rather than silently ignored. `also`,
// when not NULL, is another config the file may hold (that of a run being extended).
static void check_config_file_agrees(const char *config_path, const Config *cfg, const Config *also, const char *ckpt) {
    if (!file_exists(config_path)) return;  // e.g. a converted checkpoint placed in a new directory
    Config saved;
    config_defaults(&saved);
    config_load_file(&saved, config_path);
    config_validate(&saved);
    const char *key = config_first_difference(&saved, cfg);
    if (key && also && !config_first_difference(&saved, also)) key = NULL;
    if (key)
        die(EXIT_CONFIG, "%s: %s differs from the config in %s, which a resumed run uses; restore the file or "
            "start a new run", config_path, key, ckpt);
}

RunDir run_dir_at(const char *dir) {
    RunDir r = {.dir = dir};
    snprintf(r.log_path, sizeof r.log_path, "%s/log.jsonl", dir);
    snprintf(r.config_path, sizeof r.config_path, "%s/config.json", dir);
    return r;
}

void run_dir_check(const RunDir *r, const Config *cfg, const char *resume_path, int overwrite) {
    const char *dir = r->dir;
    check_writable_dir(dir);
    if (resume_path) check_config_file_agrees(r->config_path, cfg, r->before_extension, resume_path);
    else if (file_exists(r->log_path) && !overwrite && checkpoint_count(dir) == 0)
        die(1, "out.dir %s holds a run stopped before its first checkpoint; start it again with --overwrite, "
               "or choose another --out.dir=...", dir);
    else if (file_exists(r->log_path) && !overwrite)
        die(1, "out.dir %s already holds a run; resume it with --resume %s, or pass --overwrite, "
               "or choose another --out.dir=...", dir, dir);
}

// What the log and config.json grow by, at most, over `steps` steps: a step line, an evaluation
// line and a diagnostics line (numbers of up to 16 characters per block and series) as due.
static double log_growth_bytes(const Config *cfg, long steps) {
    double evals = cfg->eval_every > 0 ? steps / cfg->eval_every + 2 : 2;
    double diags = cfg->diag_every > 0 ? steps / cfg->diag_every + 2 : 0;
    char *config_text = config_to_json(cfg);
    double bytes = 200.0 * steps + 64 * evals + diags * (256 + 16 * 16.0 * cfg->n_layer) + strlen(config_text);
    free(config_text);
    return bytes;
}

// Refuse to start when the directory cannot hold what the run will add: the checkpoints beyond
// those already there (checkpoint_files_needed), the log and config.json.
static void check_free_space(const char *dir, const Config *cfg, const GPT *m) {
    struct statvfs fs;
    if (statvfs(dir, &fs) != 0) die(1, "out.dir %s: cannot query free space: %s", dir, strerror(errno));
    long steps_left, files = checkpoint_files_needed(cfg, &steps_left);
    double ckpt = (double)checkpoint_bytes(cfg, m), log = log_growth_bytes(cfg, steps_left);
    double have = (double)fs.f_bavail * (double)fs.f_frsize;
    if (files * ckpt + log > have)
        die(1, "out.dir %s: %.1f MB free, but the run needs %.1f MB: %ld more checkpoint(s) of %.1f MB "
            "(out.keep = %ld) and %.1f MB of log", dir, have / 1e6, (files * ckpt + log) / 1e6, files, ckpt / 1e6,
            cfg->keep, log / 1e6);
}

// Remove what an earlier run left in dir before a fresh start (its log and checkpoints), or, with
// partial_only, the temporary files of checkpoints a killed run was writing.
static void clear_run(const char *dir, int partial_only) {
    DIR *d = opendir(dir);
    if (!d) return;
    char path[4200];
    for (struct dirent *e; (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        int partial = n > 4 && !strcmp(e->d_name + n - 4, ".tmp");
        int ours = !strncmp(e->d_name, "ckpt_", 5) || (!partial_only && !strcmp(e->d_name, "log.jsonl"));
        if (!ours || (partial_only && !partial)) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
}

void run_dir_prepare(const RunDir *r, const Config *cfg, const GPT *m, int resuming) {
    check_free_space(r->dir, cfg, m);
    at_die(NULL);  // from here on the directory holds the run: an error keeps it
    clear_run(r->dir, resuming);
    if (resuming && !r->before_extension) return;
    char *text = config_to_json(cfg);
    if (write_file_atomic(r->config_path, text, strlen(text)) != 0)
        die(1, "%s: cannot write: %s", r->config_path, strerror(errno));
    free(text);
}

void run_dir_truncate_log(const RunDir *r, long last_step) {
    const char *why;
    FILE *f = open_input(r->log_path, &why);
    if (!f && errno == ENOENT) return;
    if (!f) die(1, "%s: cannot open: %s", r->log_path, why);
    struct stat st;
    if (fstat(fileno(f), &st) != 0) die(1, "%s: cannot stat: %s", r->log_path, strerror(errno));
    size_t size = (size_t)st.st_size, len = 0;
    char *text = xcalloc(size + 1, 1), *kept = xcalloc(size + 1, 1);
    if (fread(text, 1, size, f) != size) die(1, "%s: read failed", r->log_path);
    fclose(f);
    // Whole lines only: a last line without its newline is what a failed write or a kill left torn.
    for (char *line = text, *end; (end = strchr(line, '\n')); line = end + 1) {
        *end = '\0';
        cJSON *o = cJSON_Parse(line);
        const cJSON *s = o ? cJSON_GetObjectItemCaseSensitive(o, "step") : NULL;
        int keep = cJSON_IsNumber(s) && s->valuedouble <= last_step;
        cJSON_Delete(o);
        if (!keep) continue;
        size_t n = (size_t)(end - line);
        memcpy(kept + len, line, n);
        kept[len + n] = '\n';
        len += n + 1;
    }
    if (write_file_atomic(r->log_path, kept, len) != 0) die(1, "%s: cannot rewrite: %s", r->log_path, strerror(errno));
    free(text);
    free(kept);
}

static const char *open_log_path = "/dev/null";

FILE *run_dir_open_log(const RunDir *r, int root) {
    open_log_path = root ? r->log_path : "/dev/null";
    FILE *log = fopen(open_log_path, "a");
    if (!log) die(1, "%s: cannot open: %s", open_log_path, strerror(errno));
    return log;
}

void run_log_flush(FILE *log) {
    if (fflush(log) != 0 || ferror(log))
        die(1, "%s: write failed: %s; stopping (the checkpoints on disk are kept: free space, then ./train --resume)",
            open_log_path, strerror(errno));
}
