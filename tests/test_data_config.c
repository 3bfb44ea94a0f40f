// The shard reader, the training order, and configuration parsing and errors.
#include "config.h"
#include "data.h"
#include "testing.h"
#include <string.h>
#include <unistd.h>

static char tmpdir[64];

static const char *tmp_path(const char *name) {
    static char buf[4][256];
    static int next;
    if (!tmpdir[0]) {
        strcpy(tmpdir, "build/tmp/normgpt_data_XXXXXX");
        if (!mkdtemp(tmpdir)) die(1, "mkdtemp failed");
    }
    char *p = buf[next++ % 4];
    snprintf(p, 256, "%s/%s", tmpdir, name);
    return p;
}

// Write a shard; header_count and extra_bytes let a test lie about the length.
static void write_shard(const char *path, int magic, int version, int header_count, const uint32_t *tokens,
                        int n, int token_bytes, int extra_bytes) {
    FILE *f = fopen(path, "wb");
    int32_t header[SHARD_HEADER_INTS] = {magic, version, header_count};
    fwrite(header, 4, SHARD_HEADER_INTS, f);
    for (int i = 0; i < n; i++) fwrite(&tokens[i], token_bytes, 1, f);  // little-endian host
    for (int i = 0; i < extra_bytes; i++) fputc(0, f);
    fclose(f);
}

enum { SEQ = 4, NTOK = 41 };  // (41 - 1) / 4 = 10 windows

static void test_shards_u16_u32(void) {
    uint32_t tok[NTOK];
    for (int i = 0; i < NTOK; i++) tok[i] = (uint32_t)i;
    write_shard(tmp_path("a_000.bin"), SHARD_MAGIC_U16, 1, NTOK, tok, NTOK, 2, 0);
    write_shard(tmp_path("a_001.bin"), SHARD_MAGIC_U32, 7, NTOK, tok, NTOK, 4, 0);
    Dataset d;
    dataset_open(&d, tmp_path("a_*.bin"), "data.train", SEQ, 100, 1);
    CHECK(d.n_shards == 2 && d.n_windows == 20, "shards %d windows %zu", d.n_shards, d.n_windows);
    int in[2 * SEQ], tg[2 * SEQ];
    dataset_fixed_batch(&d, 0, 20, 2, in, tg);  // windows 0 and 1 of the first shard
    CHECK(in[0] == 0 && tg[0] == 1 && in[SEQ] == 4 && tg[SEQ - 1] == 4, "window contents/shift");
    dataset_fixed_batch(&d, 10, 20, 1, in, tg);  // the first window of the uint32 shard
    CHECK(in[0] == 0 && tg[SEQ - 1] == SEQ, "uint32 shard window");
    // One epoch visits every window exactly once; the next epoch is a different order.
    int seen[20] = {0}, first_epoch[20], differs = 0;
    for (int i = 0; i < 20; i++) {
        dataset_batch_at(&d, (uint64_t)i, 1, in, tg);
        first_epoch[i] = in[0];
    }
    // Windows of the two shards have the same contents, so count start tokens (each twice).
    for (int i = 0; i < 20; i++) seen[first_epoch[i] / SEQ]++;
    for (int i = 0; i < 10; i++) CHECK(seen[i] == 2, "window start %d seen %d times", i * SEQ, seen[i]);
    for (int i = 0; i < 20; i++) { dataset_batch_at(&d, 20 + (uint64_t)i, 1, in, tg); differs |= in[0] != first_epoch[i]; }
    CHECK(differs, "second epoch repeats the first order");
    // Same seed, same position: the same continuation (the resume contract), whatever was read before.
    Dataset e;
    dataset_open(&e, tmp_path("a_*.bin"), "data.train", SEQ, 100, 1);
    int in2[2 * SEQ], tg2[2 * SEQ];
    dataset_batch_at(&d, 37, 2, in, tg);
    dataset_batch_at(&e, 37, 2, in2, tg2);
    CHECK(memcmp(in, in2, sizeof in) == 0 && memcmp(tg, tg2, sizeof tg) == 0, "resume position");
    dataset_close(&d);
    dataset_close(&e);
}

typedef struct { const char *pattern; long vocab; } OpenCase;
static void open_dataset(void *p) {
    const OpenCase *c = p;
    Dataset d;
    dataset_open(&d, c->pattern, "data.train", SEQ, c->vocab, 1);
}

static void test_bad_shards(void) {
    uint32_t tok[NTOK];
    for (int i = 0; i < NTOK; i++) tok[i] = (uint32_t)i;
    struct { const char *name; int magic, version, count, n, bytes, extra; long vocab; } cases[] = {
        {"bad_magic.bin", 12345, 1, NTOK, NTOK, 2, 0, 100},
        {"bad_version.bin", SHARD_MAGIC_U16, 7, NTOK, NTOK, 2, 0, 100},
        {"truncated.bin", SHARD_MAGIC_U16, 1, NTOK + 10, NTOK, 2, 0, 100},
        {"trailing.bin", SHARD_MAGIC_U16, 1, NTOK, NTOK, 2, 6, 100},
        {"big_id.bin", SHARD_MAGIC_U16, 1, NTOK, NTOK, 2, 0, 40},
        {"too_short.bin", SHARD_MAGIC_U16, 1, 3, 3, 2, 0, 100},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *path = tmp_path(cases[i].name);
        write_shard(path, cases[i].magic, cases[i].version, cases[i].count, tok, cases[i].n, cases[i].bytes,
                    cases[i].extra);
        OpenCase c = {path, cases[i].vocab};
        CHECK(expect_exit(open_dataset, &c, 1, path), "%s", cases[i].name);
    }
    FILE *f = fopen(tmp_path("header_only.bin"), "wb");
    fputs("tiny", f);
    fclose(f);
    OpenCase c = {tmp_path("header_only.bin"), 100};
    CHECK(expect_exit(open_dataset, &c, 1, c.pattern), "file shorter than a header");
    OpenCase none = {tmp_path("nothing_*.bin"), 100};
    CHECK(expect_exit(open_dataset, &none, 1, "data.train"), "no matching file");
}

// ---------------------------------------------------------------------------------------------

typedef struct { const char *json, *override; } ConfigCase;
static void load_config(void *p) {
    const ConfigCase *c = p;
    Config cfg;
    config_defaults(&cfg);
    if (c->json) config_apply_json(&cfg, c->json, "test.json");
    if (c->override) config_apply_override(&cfg, c->override);
    config_validate(&cfg);
}

static void test_config_errors(void) {
    ConfigCase cases[][1] = {
        {{"{\"model\": {\"n_layers\": 4}}", NULL}},
        {{"{\"train\": {\"lr\": \"fast\"}}", NULL}},
        {{"{\"model\": {\"n_layer\": 2.5}}", NULL}},
        {{"{\"model\": {\"n_embd\": 100, \"n_head\": 3}}", NULL}},
        {{"{\"train\": {\"seq_len\": 512}}", NULL}},
        {{"{\"train\": {\"lr\": -0.001}}", NULL}},
        {{"{\"train\": {\"schedule\": \"exponential\"}}", NULL}},
        {{"{\"train\": {\"total_batch_tokens\": 1000}}", NULL}},
        {{"{\"model\": {\"bias\": 1}}", NULL}},
        {{"{\"train\": {\"lr\": 0.001,}}", NULL}},
        {{"{\"model\": 3}", NULL}},
        {{NULL, "train.lr=abc"}},
        {{NULL, "train.nothing=1"}},
        {{NULL, "train.lr"}},
    };
    const char *expect[] = {"model.n_layers", "train.lr", "model.n_layer", "model.n_embd", "train.seq_len",
                            "train.lr", "train.schedule", "train.total_batch_tokens", "model.bias", "test.json:1",
                            "model", "train.lr", "train.nothing", "train.lr"};
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++)
        CHECK(expect_exit(load_config, cases[i], EXIT_CONFIG, expect[i]), "case %zu (%s)", i, expect[i]);
}

static void test_config_roundtrip_and_overrides(void) {
    Config a, b;
    config_defaults(&a);
    config_apply_json(&a, "{\"model\": {\"n_layer\": 6, \"bias\": false}, \"train\": {\"lr\": 0.0003}}", "t");
    config_apply_override(&a, "train.schedule=wsd");
    config_apply_override(&a, "out.dir=/tmp/x y");
    CHECK(a.n_layer == 6 && !a.bias && a.lr == 0.0003 && !strcmp(a.schedule, "wsd") && !strcmp(a.out_dir, "/tmp/x y"),
          "values applied");
    char *text = config_to_json(&a);
    config_defaults(&b);
    config_apply_json(&b, text, "resolved");
    CHECK(memcmp(&a, &b, sizeof a) == 0, "resolved config does not round-trip");
    free(text);
    config_validate(&a);
}

const TestCase data_config_tests[] = {
    {"shards: uint16/uint32, windows, epoch order", test_shards_u16_u32},
    {"shards: bad magic, version, length, ids", test_bad_shards},
    {"config: errors name the key, exit 2", test_config_errors},
    {"config: overrides and round trip", test_config_roundtrip_and_overrides},
    {NULL, NULL},
};
