// Text <-> token ids. The file (written by scripts/make_dataset.py) uses llm.c's tokenizer layout:
// 256 little-endian int32 — [0] magic 20240328, [1] version 2, [2] vocab size, [3] document-separator
// id — then per id one uint8 length and that many bytes. llm.c's version 1 (GPT-2's gpt2_tokenizer.bin)
// has no [3]: its separator is <|endoftext|>, id 50256 of 50257.
// make_dataset.py's files add an encoding section, which llm.c's readers never reach: header [4] = 1,
// and after the table, per id a little-endian float32 SentencePiece score, then per id a uint8
// SentencePiece piece type (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).
#ifndef NORMGPT_TOKENIZER_H
#define NORMGPT_TOKENIZER_H

typedef struct {
    int vocab_size;
    int separator;     // the id that starts every document; generation starts from it
    char **pieces;     // NUL-terminated bytes of each id (may contain no NUL themselves)
    // Encoding (src/encode.c); NULL when the file has no encoding section.
    float *scores;          // BPE merges the adjacent pair whose merged piece scores highest first
    unsigned char *types;   // SentencePiece piece type of each id
    int *index;             // open-addressing hash: normal piece bytes -> id, -1 for an empty slot
    int index_mask;         // slots - 1 (a power of two minus one)
    int byte_ids[256];      // id of the byte-fallback piece <0xXX> of each byte
} Tokenizer;

// Leaves t empty when path is "" (samples then print ids). Errors exit naming the file.
void tokenizer_load(Tokenizer *t, const char *path, long model_vocab);
void tokenizer_free(Tokenizer *t);
// The text of one id (an empty string for control tokens).
const char *tokenizer_decode(const Tokenizer *t, int id);

// src/encode.c. Builds the piece index of a tokenizer whose scores and types are loaded; exits
// naming `path` if the encoding section is inconsistent (a byte piece missing, say).
void tokenizer_index(Tokenizer *t, const char *path);
// True when t can encode (its file has the encoding section).
int tokenizer_can_encode(const Tokenizer *t);
// Encodes UTF-8 text to ids exactly as SentencePiece's BPE does with make_dataset.py's options
// (identity normalization, no dummy prefix, spaces kept, byte fallback): writes at most max ids and
// returns how many the text takes (like snprintf), or -1 when t cannot encode. No separator is added.
int tokenizer_encode(const Tokenizer *t, const char *text, int *ids, int max);

#endif
