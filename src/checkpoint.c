#include "checkpoint.h"
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HEADER_BYTES 1024

static void put32(unsigned char *h, int i, uint32_t v) {
    for (int b = 0; b < 4; b++) h[4 * i + b] = (unsigned char)(v >> (8 * b));
}
static uint32_t get32(const unsigned char *h, int i) { return le32(h + 4 * i); }

// opt NULL: a fresh optimizer (adam_t 0).
static char *metadata_json(const Config *cfg, const GPT *m, const AdamW *opt, const RunState *st) {
    cJSON *root = cJSON_CreateObject();
    char *config_text = config_to_json(cfg);
    cJSON_AddItemToObject(root, "config", cJSON_Parse(config_text));
    free(config_text);
    char rng[32];
    snprintf(rng, sizeof rng, "%016" PRIx64, st->sample_rng);
    cJSON_AddNumberToObject(root, "step", (double)st->step);
    cJSON_AddNumberToObject(root, "adam_t", opt ? (double)opt->t : 0);
    cJSON_AddNumberToObject(root, "data_position", (double)st->data_position);
    cJSON_AddStringToObject(root, "sample_rng", rng);
    cJSON_AddNumberToObject(root, "world_size", st->world_size);
    // Hex floats (C99 %a): exact, where cJSON's decimal printing may round the last bit, and a
    // resumed run must compare each step against the very same window.
    cJSON *history = cJSON_AddArrayToObject(root, "outlier_history");
    for (int i = 0; i < st->n_history; i++) {
        char pair[2][40];
        for (int k = 0; k < 2; k++) snprintf(pair[k], sizeof pair[k], "%a", st->history[i][k]);
        cJSON_AddItemToArray(history, cJSON_CreateStringArray((const char *const[]){pair[0], pair[1]}, 2));
    }
    cJSON_AddStringToObject(root, "dtype", REAL_NAME);
    cJSON_AddNumberToObject(root, "n_params", (double)m->n_params);
    cJSON *sections = cJSON_AddArrayToObject(root, "sections");
    const char *names[] = {"params", "adam_m", "adam_v"};
    for (int i = 0; i < 3; i++) cJSON_AddItemToArray(sections, cJSON_CreateString(names[i]));
    cJSON *tensors = cJSON_AddArrayToObject(root, "tensors");
    for (int i = 0; i < m->n_tensors; i++) {
        const ParamTensor *t = &m->tensors[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", t->name);
        int dims[2] = {t->rows, t->cols};
        cJSON_AddItemToObject(o, "shape", cJSON_CreateIntArray(dims, t->cols > 1 ? 2 : 1));
        cJSON_AddNumberToObject(o, "offset", (double)t->offset);
        cJSON_AddItemToArray(tensors, o);
    }
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return text;
}

typedef struct { FILE *f; const char *path; uint64_t hash; } HashedWriter;

static void write_hashed(HashedWriter *w, const void *data, size_t n) {
    if (fwrite(data, 1, n, w->f) != n) {
        int err = errno;
        fclose(w->f);
        unlink(w->path);
        die(1, "%s: write failed: %s", w->path, strerror(err));
    }
    w->hash = fnv1a(w->hash, data, n);
}

static void write_hashed_zeros(HashedWriter *w, size_t n) {
    static const unsigned char zeros[1 << 16];
    for (size_t chunk; n > 0; n -= chunk) {
        chunk = n < sizeof zeros ? n : sizeof zeros;
        write_hashed(w, zeros, chunk);
    }
}

static int ckpt_step(const char *name, long *step) {
    char tail;
    return sscanf(name, "ckpt_%ld.bi%c", step, &tail) == 2 && tail == 'n' && strlen(name) == 17;
}

static int compare_longs(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

// Steps of every ckpt_*.bin in run_dir, ascending. Caller frees.
static long *list_checkpoints(const char *run_dir, int *count) {
    *count = 0;
    DIR *dir = opendir(run_dir);
    if (!dir) die(1, "%s: cannot open run directory: %s", run_dir, strerror(errno));
    long *steps = NULL;
    int cap = 0;
    for (struct dirent *e; (e = readdir(dir));) {
        long s;
        if (!ckpt_step(e->d_name, &s)) continue;
        if (*count == cap) {
            cap = cap ? 2 * cap : 16;
            steps = realloc(steps, cap * sizeof(long));
            if (!steps) die(1, "out of memory");
        }
        steps[(*count)++] = s;
    }
    closedir(dir);
    if (*count) qsort(steps, *count, sizeof(long), compare_longs);
    return steps;
}

int checkpoint_count(const char *run_dir) {
    int count;
    free(list_checkpoints(run_dir, &count));
    return count;
}

static void ckpt_path(char *out, size_t size, const char *run_dir, long step) {
    snprintf(out, size, "%s/ckpt_%08ld.bin", run_dir, step);
}

// Steps of the checkpoints this process wrote or checked (checksum), ascending: the only ones
// retention counts. A file it cannot vouch for (unreadable, or from elsewhere) never makes it delete one.
// Kept for one run directory (another one starts the list afresh).
static struct { char dir[4096]; long *steps; int count; size_t cap; } verified;

static void note_verified(const char *run_dir, long step) {
    if (strcmp(run_dir, verified.dir) != 0) {
        snprintf(verified.dir, sizeof verified.dir, "%s", run_dir);
        verified.count = 0;
    }
    for (int i = 0; i < verified.count; i++)
        if (verified.steps[i] == step) return;
    if ((size_t)verified.count == verified.cap) {
        verified.cap = verified.cap ? 2 * verified.cap : 16;
        verified.steps = realloc(verified.steps, verified.cap * sizeof(long));
        if (!verified.steps) die(1, "out of memory");
    }
    int i = verified.count++;
    for (; i > 0 && verified.steps[i - 1] > step; i--) verified.steps[i] = verified.steps[i - 1];
    verified.steps[i] = step;
}

long checkpoint_files_needed(const Config *cfg, long *steps_left) {
    long from = verified.count ? verified.steps[verified.count - 1] : 0, every = cfg->checkpoint_every;
    *steps_left = cfg->steps > from ? cfg->steps - from : 0;
    // Due steps, the last step, and one at a stop by signal; never more than the steps left.
    long writes = (every > 0 ? cfg->steps / every - from / every : 0) + 2;
    if (writes > *steps_left) writes = *steps_left;
    if (writes == 0) return 0;
    long have = verified.count, keep = cfg->keep, steady = keep < have + writes - 1 ? keep : have + writes - 1;
    return 1 + (steady > have ? steady - have : 0);  // the one being written, plus the growth up to keep
}

// fsync the directory holding `path`, so that a rename into it survives a crash.
static void sync_parent_dir(const char *path) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == dir) dir[1] = '\0';
    else *slash = '\0';
    int dfd = open(dir, O_RDONLY);
    if (dfd >= 0) { fsync(dfd); close(dfd); }
}

void checkpoint_write(const char *path, const Config *cfg, const GPT *m, const AdamW *opt, const RunState *st) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    char *meta = metadata_json(cfg, m, opt, st);
    size_t meta_len = strlen(meta);
    size_t data_offset = (HEADER_BYTES + meta_len + 63) / 64 * 64;
    HashedWriter w = {fopen(tmp, "wb"), tmp, FNV_OFFSET};
    if (!w.f) die(1, "%s: cannot create checkpoint: %s", tmp, strerror(errno));
    unsigned char header[HEADER_BYTES] = {0};
    write_hashed(&w, header, HEADER_BYTES);  // a placeholder, rewritten below; its hash is not used
    w.hash = FNV_OFFSET;
    write_hashed(&w, meta, meta_len);
    write_hashed_zeros(&w, data_offset - HEADER_BYTES - meta_len);
    size_t bytes = m->n_params * sizeof(real);
    write_hashed(&w, m->params, bytes);
    if (opt) {
        write_hashed(&w, opt->m, bytes);
        write_hashed(&w, opt->v, bytes);
    } else {
        write_hashed_zeros(&w, 2 * bytes);
    }
    put32(header, 0, CKPT_MAGIC);
    put32(header, 1, CKPT_VERSION);
    put32(header, 2, (uint32_t)meta_len);
    put32(header, 3, sizeof(real));
    put32(header, 4, (uint32_t)data_offset);
    put32(header, 5, (uint32_t)m->n_params);
    put32(header, 6, (uint32_t)((uint64_t)m->n_params >> 32));
    put32(header, 7, (uint32_t)w.hash);
    put32(header, 8, (uint32_t)(w.hash >> 32));
    if (fseek(w.f, 0, SEEK_SET) != 0 || fwrite(header, 1, HEADER_BYTES, w.f) != HEADER_BYTES ||
        fflush(w.f) != 0 || fsync(fileno(w.f)) != 0) {
        int err = errno;
        fclose(w.f);
        unlink(tmp);
        die(1, "%s: write failed: %s", tmp, strerror(err));
    }
    fclose(w.f);
    free(meta);
    if (rename(tmp, path) != 0) {
        int err = errno;
        unlink(tmp);
        die(1, "%s: cannot rename to %s: %s", tmp, path, strerror(err));
    }
    sync_parent_dir(path);
}

size_t checkpoint_bytes(const Config *cfg, const GPT *m) {
    static const RunState st;
    char *meta = metadata_json(cfg, m, NULL, &st);
    // Numbers in the run state and each (loss, grad norm) pair take at most 64 characters.
    size_t meta_len = strlen(meta) + 64 * (4 + (size_t)cfg->outlier_window);
    free(meta);
    return HEADER_BYTES + meta_len + 64 + 3 * m->n_params * sizeof(real);
}

void checkpoint_save(const char *run_dir, const Config *cfg, const GPT *m, const AdamW *opt,
                     const RunState *st, long keep) {
    char path[4096];
    ckpt_path(path, sizeof path, run_dir, st->step);
    checkpoint_write(path, cfg, m, opt, st);
    note_verified(run_dir, st->step);
    if (verified.count < keep) return;
    // The newest `keep` verified checkpoints stay; every file named like a checkpoint older than them goes.
    long oldest_kept = verified.steps[verified.count - keep];
    int count;
    long *steps = list_checkpoints(run_dir, &count);
    for (int i = 0; i < count && steps[i] < oldest_kept; i++) {
        char old[4096];
        ckpt_path(old, sizeof old, run_dir, steps[i]);
        unlink(old);
    }
    free(steps);
    memmove(verified.steps, verified.steps + verified.count - keep, keep * sizeof(long));
    verified.count = (int)keep;
}

typedef struct {
    unsigned char header[HEADER_BYTES];
    char *meta;            // NUL-terminated JSON
    size_t data_offset, n_params, value_bytes;
} CkptInfo;

// Read and check a checkpoint's header, metadata and checksum. Returns an error message or NULL.
static const char *ckpt_open(const char *path, CkptInfo *info, FILE **out) {
    memset(info, 0, sizeof *info);
    const char *why;
    FILE *f = open_input(path, &why);
    if (!f) return why;
    if (fread(info->header, 1, HEADER_BYTES, f) != HEADER_BYTES) { fclose(f); return "shorter than its header"; }
    const unsigned char *h = info->header;
    if (get32(h, 0) != CKPT_MAGIC) { fclose(f); return "not a normgpt checkpoint (bad magic)"; }
    if (get32(h, 1) != CKPT_VERSION) { fclose(f); return "unsupported checkpoint version"; }
    size_t meta_len = get32(h, 2);
    info->value_bytes = get32(h, 3);
    info->data_offset = get32(h, 4);
    info->n_params = (size_t)get32(h, 5) | (size_t)get32(h, 6) << 32;
    uint64_t want = (uint64_t)get32(h, 7) | (uint64_t)get32(h, 8) << 32;
    struct stat st;
    fstat(fileno(f), &st);
    size_t size = (size_t)st.st_size, section = 3 * info->value_bytes;
    // Divided rather than multiplied: header fields are untrusted, and a product could wrap around.
    if (info->value_bytes == 0 || info->data_offset < HEADER_BYTES + meta_len || info->data_offset > size ||
        (size - info->data_offset) % section != 0 || (size - info->data_offset) / section != info->n_params) {
        fclose(f);
        return "truncated or inconsistent sizes";
    }
    uint64_t hash = FNV_OFFSET;
    static unsigned char buf[1 << 20];
    for (size_t n; (n = fread(buf, 1, sizeof buf, f)) > 0;) hash = fnv1a(hash, buf, n);
    if (hash != want) { fclose(f); return "checksum mismatch (corrupt file)"; }
    info->meta = xcalloc(meta_len + 1, 1);
    if (fseek(f, HEADER_BYTES, SEEK_SET) != 0 || fread(info->meta, 1, meta_len, f) != meta_len) {
        fclose(f);
        free(info->meta);
        return "unreadable metadata";
    }
    *out = f;
    return NULL;
}

char *checkpoint_find_latest(const char *run_dir) {
    int count;
    long *steps = list_checkpoints(run_dir, &count);
    char *latest = NULL;
    for (int i = count - 1; i >= 0; i--) {  // the older ones are checked too: retention counts them
        char path[4096];
        ckpt_path(path, sizeof path, run_dir, steps[i]);
        CkptInfo info;
        FILE *f = NULL;
        const char *err = ckpt_open(path, &info, &f);
        if (!err) {
            fclose(f);
            free(info.meta);
            note_verified(run_dir, steps[i]);
            if (!latest) latest = strdup(path);
        } else if (!latest) {
            warn("%s: %s; trying an older checkpoint", path, err);
        }
    }
    free(steps);
    if (latest) return latest;
    die(1, "%s: no valid checkpoint to resume from (a run stopped before its first checkpoint starts again: "
        "./train --config FILE --overwrite)", run_dir);
}

static cJSON *open_meta(const char *path, CkptInfo *info, FILE **f) {
    const char *err = ckpt_open(path, info, f);
    if (err) die(1, "%s: %s", path, err);
    cJSON *meta = cJSON_Parse(info->meta);
    if (!meta) die(1, "%s: metadata is not valid JSON", path);
    return meta;
}

void checkpoint_read_config(const char *path, Config *cfg) {
    CkptInfo info;
    FILE *f;
    cJSON *meta = open_meta(path, &info, &f);
    fclose(f);
    cJSON *config = cJSON_GetObjectItemCaseSensitive(meta, "config");
    if (!cJSON_IsObject(config)) die(1, "%s: metadata has no config", path);
    char *text = cJSON_PrintUnformatted(config);
    config_defaults(cfg);
    config_apply_json(cfg, text, path);
    free(text);
    cJSON_Delete(meta);
    free(info.meta);
}

static double meta_number(const cJSON *meta, const char *key, const char *path) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(meta, key);
    if (!cJSON_IsNumber(item)) die(1, "%s: metadata lacks the number '%s'", path, key);
    return item->valuedouble;
}

// A count in the metadata: an integer in [0, max] (max below 2^53, where doubles hold every integer).
static double meta_count(const cJSON *meta, const char *key, double max, const char *path) {
    double x = meta_number(meta, key, path);
    if (!(x >= 0 && x <= max) || x != floor(x))
        die(1, "%s: metadata '%s' is %g, not an integer in [0, %.0f]", path, key, x, max);
    return x;
}

#define MAX_COUNT 9e15  // steps, windows: far beyond any run, and exact in a double and a long

long checkpoint_step(const char *path) {
    CkptInfo info;
    FILE *f;
    cJSON *meta = open_meta(path, &info, &f);
    fclose(f);
    long step = (long)meta_count(meta, "step", MAX_COUNT, path);
    cJSON_Delete(meta);
    free(info.meta);
    return step;
}

// The run state's part of the metadata (metadata_json writes it), every field checked: a
// checkpoint is a file, and what it says must be a state the trainer can reach.
static void read_run_state(const cJSON *meta, const char *path, RunState *st) {
    st->step = (long)meta_count(meta, "step", MAX_COUNT, path);
    st->data_position = (uint64_t)meta_count(meta, "data_position", MAX_COUNT, path);
    const cJSON *rng = cJSON_GetObjectItemCaseSensitive(meta, "sample_rng");
    int digits = 0;
    if (!cJSON_IsString(rng) || strlen(rng->valuestring) != 16 ||
        sscanf(rng->valuestring, "%" SCNx64 "%n", &st->sample_rng, &digits) != 1 || digits != 16)
        die(1, "%s: metadata 'sample_rng' is not 16 hexadecimal digits", path);
    // Absent in checkpoints from before data-parallel training: one process.
    const cJSON *world = cJSON_GetObjectItemCaseSensitive(meta, "world_size");
    double ranks = world ? meta_number(meta, "world_size", path) : 1;
    if (!(ranks >= 1 && ranks <= 1 << 24) || ranks != (int)ranks)
        die(1, "%s: metadata 'world_size' is %g, not a number of ranks", path, ranks);
    st->world_size = (int)ranks;
    // Absent in checkpoints from before train.skip_outliers: an empty window.
    const cJSON *history = cJSON_GetObjectItemCaseSensitive(meta, "outlier_history");
    if (history && !cJSON_IsArray(history))
        die(1, "%s: metadata 'outlier_history' is not a list of (loss, grad norm) pairs", path);
    st->n_history = 0;
    for (const cJSON *pair = history ? history->child : NULL; pair; pair = pair->next, st->n_history++) {
        for (int k = 0; k < 2; k++) {
            const cJSON *v = cJSON_GetArrayItem(pair, k);
            char *end = NULL;
            double x = cJSON_IsString(v) ? strtod(v->valuestring, &end) : 0;
            if (st->n_history == MAX_OUTLIER_WINDOW || cJSON_GetArraySize(pair) != 2 || !end ||
                end == v->valuestring || *end || !isfinite(x) || x < 0)
                die(1, "%s: metadata 'outlier_history' is not a list of finite (loss, grad norm) pairs", path);
            st->history[st->n_history][k] = x;
        }
    }
}

// The checkpoint's tensors are the model's, in order, name and shape; exits naming the first that is not.
static void check_tensor_table(const cJSON *tensors, const char *path, const GPT *m) {
    int n = cJSON_GetArraySize(tensors);
    for (int i = 0; i < m->n_tensors || i < n; i++) {
        if (i >= n) die(1, "%s: has no tensor %s (the model's tensor %d)", path, m->tensors[i].name, i);
        const cJSON *entry = cJSON_GetArrayItem(tensors, i);
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(entry, "name");
        if (!cJSON_IsString(name)) die(1, "%s: tensor %d has no name", path, i);
        if (i >= m->n_tensors) die(1, "%s: tensor %s is not in the model", path, name->valuestring);
        const ParamTensor *t = &m->tensors[i];
        if (strcmp(name->valuestring, t->name) != 0)
            die(1, "%s: tensor %d is %s, the model's is %s", path, i, name->valuestring, t->name);
        const cJSON *shape = cJSON_GetObjectItemCaseSensitive(entry, "shape");
        int dims = cJSON_GetArraySize(shape), rows = -1, cols = 1;
        if (dims >= 1 && cJSON_IsNumber(cJSON_GetArrayItem(shape, 0))) rows = cJSON_GetArrayItem(shape, 0)->valueint;
        if (dims == 2 && cJSON_IsNumber(cJSON_GetArrayItem(shape, 1))) cols = cJSON_GetArrayItem(shape, 1)->valueint;
        if (dims < 1 || dims > 2 || rows != t->rows || cols != t->cols)
            die(1, "%s: tensor %s has shape (%d, %d), the model's has (%d, %d)", path, t->name, rows, cols, t->rows,
                t->cols);
    }
}

// The parameters, and the optimizer state and the run state where they are not NULL.
static void load(const char *path, GPT *m, AdamW *opt, RunState *st) {
    CkptInfo info;
    FILE *f;
    cJSON *meta = open_meta(path, &info, &f);
    if (info.value_bytes != sizeof(real))
        die(1, "%s: holds %zu-byte values, this build uses %zu-byte values", path, info.value_bytes, sizeof(real));
    check_tensor_table(cJSON_GetObjectItemCaseSensitive(meta, "tensors"), path, m);
    if (info.n_params != m->n_params)
        die(1, "%s: holds %zu parameters, the model has %zu", path, info.n_params, m->n_params);
    if (st) read_run_state(meta, path, st);
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    long named;
    if (st && ckpt_step(base, &named) && named != st->step)
        warn("%s: its name says step %ld, but it holds step %ld (renamed by hand?); using step %ld", path, named,
             st->step, st->step);
    if (opt) {  // every AdamW update is an optimizer step (skipped steps update nothing)
        double steps = st ? (double)st->step : MAX_COUNT;
        opt->t = (long)meta_count(meta, "adam_t", steps, path);
    }
    size_t n = m->n_params;
    real *dest[3] = {m->params, opt ? opt->m : NULL, opt ? opt->v : NULL};
    if (fseek(f, (long)info.data_offset, SEEK_SET) != 0) die(1, "%s: seek failed", path);
    for (int i = 0; i < 3 && dest[i]; i++)
        if (fread(dest[i], sizeof(real), n, f) != n) die(1, "%s: truncated tensor data", path);
    fclose(f);
    cJSON_Delete(meta);
    free(info.meta);
}

void checkpoint_load(const char *path, GPT *m, AdamW *opt, RunState *st) { load(path, m, opt, st); }

void checkpoint_load_weights(const char *path, GPT *m, RunState *st) { load(path, m, NULL, st); }
