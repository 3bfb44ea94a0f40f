// Incremental decoding with a key/value cache: each step feeds one new token per sequence and
// returns its next-token logits, attending over the keys and values cached for the tokens before
// it, so a token costs O(position) instead of the full forward's O(position^2) over the window.
// A step is the model's own forward pass (gpt_forward_pass: the same embedding, block forward,
// final norm and head as training) on one position per sequence with cached attention, so it runs
// every placement, norm and option the model can build; its logits equal the full forward's at
// every position (tests/test_generate.c).
#ifndef NORMGPT_GENERATE_H
#define NORMGPT_GENERATE_H
#include "model.h"

typedef struct {
    const GPT *m;
    int batch;                  // sequences decoded in lockstep, all at the same position
    int capacity;               // positions the cache holds: the model's block_size
    int pos;                    // tokens fed since the last reset = position of the next one
    int threads;                // the thread count when built: big kernels use it, the rest one thread
    Attention attn;             // cached mode: the KV caches, (L, batch, Hkv, capacity, hs) each
    ForwardActs acts;           // one position of each sequence, blocks sharing one set
    real *memory;
} Decoder;

// Allocate the caches and step buffers once; the model's weights are read, never written.
void decoder_init(Decoder *d, const GPT *m, int batch);
void decoder_free(Decoder *d);
// Forget every cached position: the next step is position 0.
void decoder_reset(Decoder *d);
// Feed tokens (batch,) at position d->pos (< capacity) and return their logits (batch, V), valid
// until the next step.
const real *decoder_step(Decoder *d, const int *tokens);

#endif
