// Decoding token ids to text for samples. The file (written by scripts/make_dataset.py) uses
// llm.c's tokenizer layout: 256 little-endian int32 — [0] magic 20240328, [1] version 2,
// [2] vocab size, [3] document-separator id — then per id one uint8 length and that many bytes.
#ifndef NORMGPT_TOKENIZER_H
#define NORMGPT_TOKENIZER_H

typedef struct {
    int vocab_size;
    int separator;     // the id that starts every document; generation starts from it
    char **pieces;     // NUL-terminated bytes of each id (may contain no NUL themselves)
} Tokenizer;

// Leaves t empty when path is "" (samples then print ids). Errors exit naming the file.
void tokenizer_load(Tokenizer *t, const char *path, long model_vocab);
void tokenizer_free(Tokenizer *t);
// The text of one id (an empty string for control tokens).
const char *tokenizer_decode(const Tokenizer *t, int id);

#endif
