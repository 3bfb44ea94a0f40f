// Text generation from a trained model: temperature and top-k sampling.
#ifndef NORMGPT_SAMPLE_H
#define NORMGPT_SAMPLE_H
#include "model.h"
#include "rng.h"
#include "tokenizer.h"

// Draw one id from logits (V): temperature 0 means argmax; top_k 0 means the full vocabulary.
// scratch: V reals.
int sample_logits(const real *logits, int V, double temperature, int top_k, Rng *rng, real *scratch);

// Generate n_tokens after the document separator and write the text to `out`.
// context: at least model->seqT ints; scratch: V reals.
void generate(GPT *m, const Tokenizer *tok, int n_tokens, double temperature, int top_k, Rng *rng,
              int *context, real *scratch, FILE *out);

#endif
