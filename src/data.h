// Token shards in llm.c's format, and the deterministic order in which training windows are read.
//
// Shard file: a 1024-byte header of 256 little-endian int32 — [0] magic, [1] version, [2] token
// count — then the tokens: magic 20240520 / version 1 stores uint16 tokens, magic 20240801 /
// version 7 stores uint32 tokens. A window is seq_len + 1 consecutive tokens of one shard (inputs
// and shifted targets); windows start every seq_len tokens. Each epoch visits every window once
// in an order drawn from the seed, so the whole data position is one counter.
#ifndef NORMGPT_DATA_H
#define NORMGPT_DATA_H
#include <stddef.h>
#include <stdint.h>

#define SHARD_HEADER_INTS 256
#define SHARD_MAGIC_U16 20240520
#define SHARD_MAGIC_U32 20240801

typedef struct {
    char *path;
    void *map;            // whole file, mmap'ed read-only
    size_t map_bytes;
    int token_bytes;      // 2 or 4
    size_t n_tokens;
} Shard;

typedef struct {
    Shard *shards;
    int n_shards;
    long seq_len;
    size_t *first_window;  // first global window index of each shard; [n_shards] = total
    size_t n_windows;
    uint64_t seed;
    size_t *order;         // permutation of windows for `order_epoch`
    uint64_t order_epoch;
} Dataset;

// Open every shard matching `pattern`; `key` (e.g. "data.train") names the source in errors.
// Any bad shard: one line naming the file, exit 1.
void dataset_open(Dataset *d, const char *pattern, const char *key, long seq_len, long vocab_size,
                  uint64_t seed);
void dataset_close(Dataset *d);
// The B windows at `position` .. position+B-1 of the shuffled stream (epoch after epoch), split into
// inputs and targets, each (B, seq_len). The trainer keeps the position (its run state); each rank
// of a data-parallel run reads its own slice of the global batch.
void dataset_batch_at(Dataset *d, uint64_t position, int B, int *inputs, int *targets);
// Windows `first .. first+B-1` of an evenly spaced fixed subset of `count` windows (validation).
void dataset_fixed_batch(const Dataset *d, size_t first, size_t count, int B, int *inputs, int *targets);

#endif
