// Incremental decoding with a key/value cache: each step feeds one new token per sequence and
// returns its next-token logits, attending over the keys and values cached for the tokens before
// it, so a token costs O(position) instead of the full forward's O(position^2) over the window.
// The step runs every placement, norm and option the model can build, with the same norm and
// matmul kernels as the training forward (on `batch` rows instead of B*T); its logits equal the
// full forward's at every position (tests/test_generate.c).
// Shapes: S stream width, C = H * hs attention width, QKV = (H + 2 Hkv) * hs, F FFN hidden width.
#ifndef NORMGPT_GENERATE_H
#define NORMGPT_GENERATE_H
#include "model.h"

typedef struct {
    const GPT *m;
    int batch;                  // sequences decoded in lockstep, all at the same position
    int capacity;               // positions the cache holds: the model's block_size
    int pos;                    // tokens fed since the last reset = position of the next one
    int threads;                // the thread count when built: big kernels use it, the rest one thread
    real *k_cache, *v_cache;    // (L, batch, Hkv, capacity, hs): keys after QKV-norm and RoPE, values
    // One step's activations, (batch, width) each; x is the residual stream between blocks.
    real *x, *res_attn, *h, *res_ffn, *n1, *n2;               // (batch, S)
    real *n1_stats, *n2_stats, *post_stats;                   // (batch, NORM_STATS_PER_ROW)
    real *qkv_raw, *qkv, *qkv_stats;                          // (batch, QKV), (batch, QKV), (batch, H + 2 Hkv)
    real *atty;                                               // (batch, C)
    real *scores;                                             // (batch, H, capacity) attention weights
    real *fch, *fch_act;                                      // (batch, F or 2F), (batch, F)
    real *logits;                                             // (batch, V)
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
