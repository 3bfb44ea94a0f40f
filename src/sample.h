// Text generation from a trained model: temperature and top-k sampling over the KV-cached decoder
// (generate.h).
#ifndef NORMGPT_SAMPLE_H
#define NORMGPT_SAMPLE_H
#include "generate.h"
#include "model.h"
#include "rng.h"
#include "tokenizer.h"

// Draw one id from logits (V): temperature 0 means argmax; top_k 0 means the full vocabulary.
// scratch: V reals.
int sample_logits(const real *logits, int V, double temperature, int top_k, Rng *rng, real *scratch);

// Continue dec->batch sequences, one token per decoder step: seqs (batch, n_given + n_tokens) holds each
// sequence's given tokens (the separator, then any prompt) in columns 0..n_given-1, which are fed
// through the decoder, and receives the n_tokens sampled after them. When the cache is
// full (block_size positions), it restarts from the last block_size / 2 tokens of each sequence,
// re-fed from position 0, and continues. Returns the seconds spent in decoder steps.
double sample_tokens(Decoder *dec, int *seqs, int n_given, int n_tokens, double temperature, int top_k, Rng *rng);

// Generate n_tokens after the document separator and write the text to `out`.
void generate(const GPT *m, const Tokenizer *tok, int n_tokens, double temperature, int top_k, Rng *rng, FILE *out);

// ./train --generate: `batch` sequences of n_tokens after the separator and the prompt (n_prompt ids;
// after an untimed warm-up), their text (prompt included), then one JSON line with the speed (the keys
// are listed in README.md).
void generate_benchmark(const GPT *m, const Tokenizer *tok, const int *prompt, int n_prompt, int n_tokens, int batch,
                        double temperature, int top_k, uint64_t seed, int threads, FILE *out);

#endif
