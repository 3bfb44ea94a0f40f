#include "data.h"
#include "common.h"
#include "rng.h"
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static uint32_t read_token(const Shard *s, size_t i) {
    const uint8_t *p = (const uint8_t *)s->map + SHARD_HEADER_INTS * 4 + i * (size_t)s->token_bytes;
    return s->token_bytes == 2 ? (uint32_t)(p[0] | p[1] << 8) : le32(p);
}

static void shard_open(Shard *s, const char *path, long vocab_size) {
    s->path = strdup(path);
    const char *why;
    FILE *f = open_input(path, &why);
    if (!f) die(1, "%s: cannot open shard: %s", path, why);
    int fd = fileno(f);
    struct stat st;
    if (fstat(fd, &st) != 0) die(1, "%s: cannot stat shard: %s", path, strerror(errno));
    size_t size = (size_t)st.st_size;
    if (size < SHARD_HEADER_INTS * 4)
        die(1, "%s: shorter (%zu bytes) than the 1024-byte shard header", path, size);
    s->map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    fclose(f);
    if (s->map == MAP_FAILED) die(1, "%s: cannot map shard: %s", path, strerror(errno));
    s->map_bytes = size;
    const uint8_t *h = s->map;
    int32_t magic = (int32_t)le32(h), version = (int32_t)le32(h + 4), count = (int32_t)le32(h + 8);
    if (magic == SHARD_MAGIC_U16 && version == 1) s->token_bytes = 2;
    else if (magic == SHARD_MAGIC_U32 && version == 7) s->token_bytes = 4;
    else die(1, "%s: not a token shard (magic %d, version %d; expected 20240520/1 or 20240801/7)",
             path, magic, version);
    if (count < 0) die(1, "%s: negative token count %d in header", path, count);
    s->n_tokens = (size_t)count;
    size_t expect = SHARD_HEADER_INTS * 4 + s->n_tokens * s->token_bytes;
    if (size < expect)
        die(1, "%s: truncated: header says %zu tokens (%zu bytes) but the file has %zu bytes",
            path, s->n_tokens, expect, size);
    if (size > expect)
        die(1, "%s: %zu bytes after the %zu tokens its header declares", path, size - expect, s->n_tokens);
    size_t bad = SIZE_MAX;
    #pragma omp parallel for reduction(min:bad)
    for (size_t i = 0; i < s->n_tokens; i++)
        if (read_token(s, i) >= (uint32_t)vocab_size && i < bad) bad = i;
    if (bad != SIZE_MAX)
        die(1, "%s: token %zu has id %u, not below model.vocab_size %ld", path, bad, read_token(s, bad), vocab_size);
}

void dataset_open(Dataset *d, const char *pattern, const char *key, long seq_len, long vocab_size,
                  uint64_t seed) {
    memset(d, 0, sizeof *d);
    glob_t g;
    int rc = glob(pattern, 0, NULL, &g);
    if (rc == GLOB_NOMATCH) die(1, "%s: no file matches '%s'", key, pattern);
    if (rc != 0) die(1, "%s: cannot expand '%s'", key, pattern);
    d->n_shards = (int)g.gl_pathc;
    d->shards = xcalloc(d->n_shards, sizeof(Shard));
    d->first_window = xcalloc(d->n_shards + 1, sizeof(size_t));
    d->seq_len = seq_len;
    d->seed = seed;
    for (int i = 0; i < d->n_shards; i++) {  // glob sorts, so the shard order is stable
        shard_open(&d->shards[i], g.gl_pathv[i], vocab_size);
        size_t n = d->shards[i].n_tokens;
        size_t windows = n > (size_t)seq_len ? (n - 1) / seq_len : 0;
        d->first_window[i + 1] = d->first_window[i] + windows;
    }
    globfree(&g);
    d->n_windows = d->first_window[d->n_shards];
    if (d->n_windows == 0)
        die(1, "%s: no shard matching '%s' holds a window of %ld tokens", key, pattern, seq_len + 1);
    d->order = xcalloc(d->n_windows, sizeof(size_t));
    d->order_epoch = UINT64_MAX;
}

void dataset_close(Dataset *d) {
    for (int i = 0; i < d->n_shards; i++) {
        munmap(d->shards[i].map, d->shards[i].map_bytes);
        free(d->shards[i].path);
    }
    free(d->shards);
    free(d->first_window);
    free(d->order);
    memset(d, 0, sizeof *d);
}

// Global window `w` as inputs (its first T tokens) and targets (its last T tokens).
static void read_window(const Dataset *d, size_t w, int *inputs, int *targets) {
    int lo = 0, hi = d->n_shards - 1;  // the shard whose window range holds w
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (d->first_window[mid] <= w) lo = mid; else hi = mid - 1;
    }
    const Shard *s = &d->shards[lo];
    size_t start = (w - d->first_window[lo]) * (size_t)d->seq_len;
    for (long i = 0; i < d->seq_len; i++) {
        inputs[i] = (int)read_token(s, start + i);
        targets[i] = (int)read_token(s, start + i + 1);
    }
}

// Fisher-Yates shuffle drawn from (seed, epoch): any epoch's order can be rebuilt on resume.
static void build_order(Dataset *d, uint64_t epoch) {
    Rng r = rng_stream(d->seed, 0x5EED0000ull + epoch);
    for (size_t i = 0; i < d->n_windows; i++) d->order[i] = i;
    for (size_t i = d->n_windows - 1; i > 0; i--) {
        size_t j = (size_t)rng_below(&r, i + 1);
        size_t t = d->order[i]; d->order[i] = d->order[j]; d->order[j] = t;
    }
    d->order_epoch = epoch;
}

void dataset_batch_at(Dataset *d, uint64_t position, int B, int *inputs, int *targets) {
    long T = d->seq_len;
    for (int b = 0; b < B; b++, position++) {
        uint64_t epoch = position / d->n_windows;
        if (epoch != d->order_epoch) build_order(d, epoch);
        read_window(d, d->order[position % d->n_windows], inputs + b * T, targets + b * T);
    }
}

void dataset_fixed_batch(const Dataset *d, size_t first, size_t count, int B, int *inputs, int *targets) {
    long T = d->seq_len;
    for (int b = 0; b < B; b++) {
        size_t w = (size_t)((unsigned __int128)(first + b) * d->n_windows / count);
        read_window(d, w, inputs + b * T, targets + b * T);
    }
}
