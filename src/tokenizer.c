#include "tokenizer.h"
#include "common.h"
#include <string.h>

#define TOKENIZER_MAGIC 20240328
#define GPT2_VOCAB 50257  // llm.c's version 1 files are GPT-2's: <|endoftext|> is the last id

// The encoding section (tokenizer.h): scores, then types, then the piece index (src/encode.c).
static void tokenizer_load_encoding(Tokenizer *t, FILE *f, const char *path) {
    size_t n = (size_t)t->vocab_size;
    unsigned char *raw = xcalloc(n, 4);
    t->scores = xcalloc(n, sizeof(float));
    t->types = xcalloc(n, 1);
    if (fread(raw, 4, n, f) != n || fread(t->types, 1, n, f) != n)
        die(1, "%s: truncated in the encoding section (scores and types of %zu tokens)", path, n);
    for (size_t i = 0; i < n; i++) {
        uint32_t bits = le32(raw + 4 * i);
        memcpy(&t->scores[i], &bits, sizeof bits);
    }
    free(raw);
    tokenizer_index(t, path);
}

void tokenizer_load(Tokenizer *t, const char *path, long model_vocab) {
    memset(t, 0, sizeof *t);
    if (!path[0]) return;
    const char *why;
    FILE *f = open_input(path, &why);
    if (!f) die(1, "%s: cannot open tokenizer (data.tokenizer): %s", path, why);
    unsigned char header[1024];
    if (fread(header, 1, sizeof header, f) != sizeof header) die(1, "%s: shorter than the tokenizer header", path);
    int32_t magic = (int32_t)le32(header), version = (int32_t)le32(header + 4);
    if (magic != TOKENIZER_MAGIC || (version != 1 && version != 2))
        die(1, "%s: not a tokenizer file (magic %d, version %d; expected %d, version 1 or 2)", path,
            magic, version, TOKENIZER_MAGIC);
    t->vocab_size = (int32_t)le32(header + 8);
    if (version == 1 && t->vocab_size != GPT2_VOCAB)
        die(1, "%s: a version 1 tokenizer file must be GPT-2's (%d tokens), this one has %d", path,
            GPT2_VOCAB, t->vocab_size);
    t->separator = version == 1 ? GPT2_VOCAB - 1 : (int32_t)le32(header + 12);
    if (t->vocab_size != model_vocab)
        die(1, "%s: tokenizer has %d tokens but model.vocab_size is %ld", path, t->vocab_size, model_vocab);
    if (t->separator < 0 || t->separator >= t->vocab_size)
        die(1, "%s: separator id %d outside the vocabulary", path, t->separator);
    t->pieces = xcalloc(t->vocab_size, sizeof(char *));
    for (int i = 0; i < t->vocab_size; i++) {
        int len = fgetc(f);
        if (len == EOF) die(1, "%s: truncated at token %d", path, i);
        t->pieces[i] = xcalloc((size_t)len + 1, 1);
        if (fread(t->pieces[i], 1, (size_t)len, f) != (size_t)len) die(1, "%s: truncated at token %d", path, i);
    }
    if (version == 2 && le32(header + 16) == 1) tokenizer_load_encoding(t, f, path);
    fclose(f);
}

void tokenizer_free(Tokenizer *t) {
    for (int i = 0; i < t->vocab_size; i++) free(t->pieces[i]);
    free(t->pieces);
    free(t->scores);
    free(t->types);
    free(t->index);
    memset(t, 0, sizeof *t);
}

const char *tokenizer_decode(const Tokenizer *t, int id) {
    return (t->pieces && id >= 0 && id < t->vocab_size) ? t->pieces[id] : "";
}
