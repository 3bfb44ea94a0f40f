#include "tokenizer.h"
#include "common.h"
#include <string.h>

#define TOKENIZER_MAGIC 20240328

void tokenizer_load(Tokenizer *t, const char *path, long model_vocab) {
    memset(t, 0, sizeof *t);
    if (!path[0]) return;
    FILE *f = fopen(path, "rb");
    if (!f) die(1, "%s: cannot open tokenizer (data.tokenizer)", path);
    unsigned char header[1024];
    if (fread(header, 1, sizeof header, f) != sizeof header) die(1, "%s: shorter than the tokenizer header", path);
    int32_t magic = (int32_t)le32(header), version = (int32_t)le32(header + 4);
    if (magic != TOKENIZER_MAGIC || version != 2)
        die(1, "%s: not a tokenizer file (magic %d, version %d; expected %d/2)", path, magic, version, TOKENIZER_MAGIC);
    t->vocab_size = (int32_t)le32(header + 8);
    t->separator = (int32_t)le32(header + 12);
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
    fclose(f);
}

void tokenizer_free(Tokenizer *t) {
    for (int i = 0; i < t->vocab_size; i++) free(t->pieces[i]);
    free(t->pieces);
    memset(t, 0, sizeof *t);
}

const char *tokenizer_decode(const Tokenizer *t, int id) {
    return (t->pieces && id >= 0 && id < t->vocab_size) ? t->pieces[id] : "";
}
