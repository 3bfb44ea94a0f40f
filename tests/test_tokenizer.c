// The tokenizer file: llm.c's version 1 and 2 for decoding, and the encoder (src/encode.c) against
// SentencePiece itself — on the Brown validation documents (their shard holds SentencePiece's ids)
// and, through /usr/bin/python3 and python3-sentencepiece, on texts made to be hard: unicode the
// vocabulary lacks, whitespace runs, newlines, the meta-space, malformed UTF-8.
#include "tokenizer.h"
#include "testing.h"
#include <cjson/cJSON.h>
#include <string.h>
#include <unistd.h>

#define BROWN_TOKENIZER "data/brown/tokenizer.bin"
#define BROWN_MODEL "data/brown/tokenizer.model"
#define BROWN_VAL "data/brown/brown_val_000000.bin"
#define BROWN_VOCAB 8192
#define BROWN_SEPARATOR 1
#define SCRATCH "build/tmp/normgpt_tokenizer_test"

static void put_le32(unsigned char *p, int32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)((uint32_t)v >> (8 * i));
}

// A tokenizer file of n entries "t<id>" with header[1] = version and header[3] = 7 (which a version
// 1 reader must ignore); `cut` bytes are dropped from the end.
static void write_tokenizer(const char *path, int version, int n, long cut) {
    unsigned char header[1024] = {0};
    put_le32(header, 20240328);
    put_le32(header + 4, version);
    put_le32(header + 8, n);
    put_le32(header + 12, 7);
    FILE *f = fopen(path, "wb");
    fwrite(header, 1, sizeof header, f);
    for (int i = 0; i < n; i++) {
        char piece[16];
        int len = snprintf(piece, sizeof piece, "t%d", i);
        fputc(len, f);
        fwrite(piece, 1, (size_t)len, f);
    }
    long size = ftell(f);
    fclose(f);
    if (cut) CHECK(truncate(path, size - cut) == 0, "truncate %s", path);
}

typedef struct { const char *path; long vocab; } LoadCase;

static void load_and_free(void *ctx) {
    const LoadCase *c = ctx;
    Tokenizer t;
    tokenizer_load(&t, c->path, c->vocab);
    tokenizer_free(&t);
}

static void test_llmc_versions(void) {
    const char *v1 = SCRATCH "_v1.bin", *v2 = SCRATCH "_v2.bin", *small_v1 = SCRATCH "_v1_small.bin";
    write_tokenizer(v1, 1, 50257, 0);
    write_tokenizer(v2, 2, 300, 0);
    write_tokenizer(small_v1, 1, 300, 0);
    Tokenizer t;
    tokenizer_load(&t, v1, 50257);
    CHECK(t.vocab_size == 50257 && t.separator == 50256, "v1: %d tokens, separator %d (expected 50257, 50256)",
          t.vocab_size, t.separator);
    CHECK(!strcmp(tokenizer_decode(&t, 0), "t0") && !strcmp(tokenizer_decode(&t, 50256), "t50256"),
          "v1 decodes %s, %s", tokenizer_decode(&t, 0), tokenizer_decode(&t, 50256));
    CHECK(!tokenizer_can_encode(&t) && tokenizer_encode(&t, "t1", NULL, 0) == -1, "v1 has no encoding section");
    tokenizer_free(&t);
    tokenizer_load(&t, v2, 300);
    CHECK(t.separator == 7 && !strcmp(tokenizer_decode(&t, 299), "t299"), "v2: separator %d", t.separator);
    tokenizer_free(&t);

    LoadCase bad[] = {{small_v1, 300}, {v1, 50304}};
    for (int i = 0; i < 2; i++) CHECK(expect_exit(load_and_free, &bad[i], 1, bad[i].path), "bad case %d", i);
    write_tokenizer(v1, 3, 50257, 0);
    LoadCase v3 = {v1, 50257};
    CHECK(expect_exit(load_and_free, &v3, 1, "version 3"), "version 3 refused");
    remove(v1);
    remove(v2);
    remove(small_v1);
}

// The Brown tokenizer file with its encoding section cut short must be refused naming the file.
static void test_encoding_section_errors(void) {
    static char cmd[512], out[4096];
    snprintf(cmd, sizeof cmd, "head -c -100 " BROWN_TOKENIZER " > " SCRATCH "_cut.bin");
    CHECK(run_command(cmd, out, sizeof out) == 0, "%s: %s", cmd, out);
    LoadCase cut = {SCRATCH "_cut.bin", BROWN_VOCAB};
    CHECK(expect_exit(load_and_free, &cut, 1, "encoding section"), "truncated encoding section");
    remove(cut.path);
}

static uint16_t *read_shard(const char *path, long *n) {
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL, "cannot open %s", path);
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = (ftell(f) - 1024) / 2;
    fseek(f, 1024, SEEK_SET);
    uint16_t *tokens = xcalloc((size_t)*n, sizeof *tokens);
    CHECK(fread(tokens, 2, (size_t)*n, f) == (size_t)*n, "short read of %s", path);
    fclose(f);
    return tokens;
}

// Every validation document: its text (the decoded shard tokens: the files decode exactly) encoded
// in C must give back the tokens SentencePiece wrote. A little-endian host is assumed for the shard.
static void test_encode_brown_val(void) {
    Tokenizer t;
    tokenizer_load(&t, BROWN_TOKENIZER, BROWN_VOCAB);
    CHECK(tokenizer_can_encode(&t), BROWN_TOKENIZER " has no encoding section");
    long n = 0;
    uint16_t *tokens = read_shard(BROWN_VAL, &n);
    if (!tokens || !tokenizer_can_encode(&t)) return;
    size_t cap = 1 << 20, len;
    char *text = xcalloc(cap, 1);
    int *ids = xcalloc((size_t)n, sizeof(int));
    int docs = 0, bad_docs = 0;
    for (long start = 0; start < n;) {
        CHECK(tokens[start] == BROWN_SEPARATOR, "document at %ld does not start with <s>", start);
        long end = start + 1;
        while (end < n && tokens[end] != BROWN_SEPARATOR) end++;
        len = 0;
        for (long i = start + 1; i < end; i++) {
            const char *p = tokenizer_decode(&t, tokens[i]);
            size_t k = strlen(p);
            if (len + k + 1 > cap) text = realloc(text, cap *= 2);
            memcpy(text + len, p, k);
            len += k;
        }
        text[len] = '\0';
        int count = tokenizer_encode(&t, text, ids, (int)n);
        int same = count == end - start - 1;
        for (int i = 0; same && i < count; i++) same = ids[i] == tokens[start + 1 + i];
        if (!same && bad_docs++ == 0)
            CHECK(0, "document %d (tokens %ld..%ld): C gives %d ids, SentencePiece %ld", docs, start, end, count,
                  end - start - 1);
        docs++;
        start = end;
    }
    CHECK(docs == 25 && bad_docs == 0, "%d of %d documents differ", bad_docs, docs);
    // Too small a buffer: the count of the whole text, and only max ids written.
    int few[3] = {-5, -5, -5};
    int count = tokenizer_encode(&t, "The jury said it did find that", few, 2);
    CHECK(count > 2 && few[2] == -5 && few[0] >= 0, "truncation: count %d, few[2] %d", count, few[2]);
    CHECK(tokenizer_encode(&t, "", few, 3) == 0, "empty text gives no ids");
    free(ids);
    free(text);
    free(tokens);
    tokenizer_free(&t);
}

// Hard texts, each written to a file and encoded by SentencePiece (tests/tools/spm_encode.py) and here.
static const char *HARD_TEXTS[] = {
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "   three leading spaces,\ttabs\t\tand   runs    of     spaces      ",
    "line one\nline two\n\n\nafter blank lines\r\nwindows line\n",
    "na\xc3\xafve caf\xc3\xa9 \xe2\x80\x94 \xe2\x80\x9cquotes\xe2\x80\x9d \xe2\x80\xa6 \xe6\x9d\xb1\xe4\xba\xac "
    "\xf0\x9f\x99\x82 \xce\x95\xce\xbb\xce\xbb\xce\xb7\xce\xbd\xce\xb9\xce\xba\xce\xac",
    "\xe2\x96\x81meta\xe2\x96\x81space \xe2\x96\x81\xe2\x96\x81 mixed\xe2\x96\x81",
    "1234567890 3.14159 1/2 $1,000,000.00 1960s",
    "bad \xff byte \xc3( and \xe2\x82 cut \xed\xa0\x80 surrogate \xc0\xaf overlong \xf4\x90\x80\x80 too big \xf0\x9f\x99",
    "\x01\x02 control \x7f chars \xc2\xa0nbsp\xe2\x80\x8bzero-width",
    " ",
    "a",
    // runs of one character: equal-scored pairs overlap, so only leftmost-first merging gets these right
    "Wait..... ----- ======= !!!!! eeeee ooooooo lll ** *** 0000000 .......      x       y",
    "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election "
    "produced \"no evidence\" that any irregularities took place.",
};
#define N_HARD (int)(sizeof HARD_TEXTS / sizeof HARD_TEXTS[0])

static void test_encode_matches_sentencepiece(void) {
    static char cmd[1024], out[1 << 16];
    char path[256];
    for (int i = 0; i < N_HARD; i++) {
        snprintf(path, sizeof path, SCRATCH "_text%02d.txt", i);
        FILE *f = fopen(path, "wb");
        fputs(HARD_TEXTS[i], f);
        fclose(f);
    }
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/tools/spm_encode.py " BROWN_MODEL " " SCRATCH "_text*.txt");
    int rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 0, "%s failed (rc %d; needs python3-sentencepiece: make test-deps): %s", cmd, rc, out);
    if (rc) return;
    Tokenizer t;
    tokenizer_load(&t, BROWN_TOKENIZER, BROWN_VOCAB);
    int ids[1024];
    char *line = out;
    for (int i = 0; i < N_HARD; i++) {
        char *end = strchr(line, '\n');
        CHECK(end != NULL, "text %d: no line from spm_encode.py", i);
        if (!end) break;
        *end = '\0';
        int count = tokenizer_encode(&t, HARD_TEXTS[i], ids, 1024), same = 1, k = 0;
        for (char *p = line, *next;; p = next, k++) {
            long v = strtol(p, &next, 10);
            if (next == p) break;
            same &= k < count && ids[k] == v;
        }
        CHECK(same && k == count, "text %d: C gives %d ids, SentencePiece %d: %s", i, count, k, line);
        line = end + 1;
    }
    tokenizer_free(&t);
    for (int i = 0; i < N_HARD; i++) {
        snprintf(path, sizeof path, SCRATCH "_text%02d.txt", i);
        remove(path);
    }
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = xcalloc((size_t)n + 1, 1);
    size_t got = fread(text, 1, (size_t)n, f);
    text[got] = '\0';
    fclose(f);
    return text;
}

static long json_long(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNumber(v) ? (long)v->valuedouble : -1;
}

// scripts/make_dataset.py end to end on the repository's own text (the C sources to train on,
// README.md, unicode included, to validate): the manifest describes the shards it wrote, and the C
// encoder, from the new tokenizer.bin, gives the validation shard's tokens for README.md.
static void test_make_dataset(void) {
    static char cmd[1024], out[1 << 14];
    snprintf(cmd, sizeof cmd, "rm -rf " SCRATCH "_data && /usr/bin/python3 scripts/make_dataset.py --train 'src/*.c' "
             "--val README.md --out " SCRATCH "_data --name mini --vocab-size 500");
    int rc = run_command(cmd, out, sizeof out);
    CHECK(rc == 0, "make_dataset.py failed (rc %d): %s", rc, out);
    char *manifest_text = read_file(SCRATCH "_data/dataset.json");
    cJSON *manifest = manifest_text ? cJSON_Parse(manifest_text) : NULL;
    CHECK(manifest != NULL, SCRATCH "_data/dataset.json missing or not JSON");
    if (rc || !manifest) { free(manifest_text); return; }
    const cJSON *val = cJSON_GetObjectItemCaseSensitive(manifest, "val");
    const cJSON *shards = cJSON_GetObjectItemCaseSensitive(val, "shards");
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(manifest, "tokenizer");
    CHECK(json_long(manifest, "vocab_size") == 500 && json_long(val, "documents") == 1 &&
          cJSON_IsString(shards) && !strcmp(shards->valuestring, "mini_val_*.bin") && cJSON_IsString(tok) &&
          !strcmp(tok->valuestring, "tokenizer.bin"), "manifest: %s", manifest_text);
    long n = 0;
    uint16_t *tokens = read_shard(SCRATCH "_data/mini_val_000000.bin", &n);
    CHECK(tokens && n == json_long(val, "tokens"), "val shard has %ld tokens, the manifest says %ld", n,
          json_long(val, "tokens"));
    Tokenizer t;
    tokenizer_load(&t, SCRATCH "_data/tokenizer.bin", 500);
    char *readme = read_file("README.md");
    int *ids = xcalloc((size_t)n + 1, sizeof(int));
    int count = tokenizer_encode(&t, readme, ids, (int)n + 1), same = tokens && count == n - 1 && tokens[0] == 1;
    for (int i = 0; same && i < count; i++) same = ids[i] == tokens[i + 1];
    CHECK(same, "README.md: C gives %d ids, the val shard holds %ld after <s>", count, n - 1);
    free(ids);
    free(readme);
    free(tokens);
    tokenizer_free(&t);
    cJSON_Delete(manifest);
    free(manifest_text);
    run_command("rm -rf " SCRATCH "_data", out, sizeof out);
}

const TestCase tokenizer_tests[] = {
    {"tokenizer: llm.c version 1 and 2 files decode", test_llmc_versions},
    {"tokenizer: a cut encoding section is refused", test_encoding_section_errors},
    {"tokenizer: encoding the Brown val documents", test_encode_brown_val},
    {"tokenizer: encoding hard texts as SentencePiece", test_encode_matches_sentencepiece},
    {"tokenizer: make_dataset.py writes shards, manifest, encoder", test_make_dataset},
    {NULL, NULL},
};
