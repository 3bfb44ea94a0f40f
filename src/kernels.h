// The transformer's kernels other than normalization (see norms.h), each a forward/backward pair.
// Shapes: B batch, T time, C channels, N = B*T tokens, V vocabulary, H (query) heads, Hkv key/value
// heads, hs head size.
// Conventions: forwards overwrite their output; backwards ACCUMULATE (+=) into parameter
// gradients, and into input gradients only where the comment says so.
#ifndef NORMGPT_KERNELS_H
#define NORMGPT_KERNELS_H
#include "common.h"

// out (N,C) = wte[tokens] (V,C) + wpe[t] (maxT,C); wpe may be NULL.
void encoder_forward(real *out, const int *tokens, const real *wte, const real *wpe, int B, int T, int C);
// dwte, dwpe += scatter of dout (N,C); either may be NULL.
void encoder_backward(real *dwte, real *dwpe, const real *dout, const int *tokens, int B, int T, int C);

// out (N,OC) = [residual (N,OC)] + inp (N,IC) @ weight(OC,IC)^T + [bias (OC)]; residual and bias may be NULL.
void matmul_forward(real *out, const real *residual, const real *inp, const real *weight, const real *bias,
                    int N, int IC, int OC);
// dinp (N,IC) = dout @ weight (overwritten; skipped if NULL); dweight += dout^T @ inp; dbias += sum_n dout.
void matmul_backward(real *dinp, real *dweight, real *dbias, const real *dout, const real *inp,
                     const real *weight, int N, int IC, int OC);

// Causal self-attention, grouped-query: H query heads share Hkv key/value heads (H % Hkv == 0;
// query head h reads kv head h / (H / Hkv)). qkv (B,T,(H+2*Hkv)*hs) rows laid out [q | k | v].
// out (B,T,H*hs); att (B,H,T,T) saves the softmax probabilities for the backward. The products run
// over blocks of ATT_ROWS query (or key) rows, each only against the positions the causal mask lets
// it see: 10/16 of the full T x T work at T = 4 * ATT_ROWS.
#define ATT_ROWS 32
void attention_forward(real *out, real *att, const real *qkv, int B, int T, int H, int Hkv, int hs);
// dqkv (B,T,(H+2*Hkv)*hs) overwritten. scratch: omp_get_max_threads() * T * T reals.
void attention_backward(real *dqkv, real *scratch, const real *dout, const real *qkv, const real *att,
                        int B, int T, int H, int Hkv, int hs);

// Attention's softmax on one (T,T) square, single-threaded (for callers that run the products
// themselves: src/mixed.c). P holds scaled scores; row t becomes the softmax over s <= t, the masked
// future zero. The backward turns dS = dL/dP in place into dL/d(unscaled scores): the softmax
// backward, then the score scale.
void causal_softmax(real *P, int T);
void causal_softmax_backward(real *dS, const real *P, int T, real scale);

// Attention of one new token per sequence (incremental decoding): qkv (B,(H+2*Hkv)*hs) the new
// tokens' projections (only q is read); k_cache, v_cache (B,Hkv,capacity,hs) hold positions
// 0..T-1, the new token's last. out (B,H*hs); scores (B,H,capacity) scratch for the weights.
void attention_decode_forward(real *out, real *scores, const real *qkv, const real *k_cache, const real *v_cache,
                              int B, int T, int capacity, int H, int Hkv, int hs);

// Rotary position embedding, LLaMA "rotate_half" convention: within each head (hs even) the pair
// (i, i + hs/2) turns by angle t * theta^(-2i/hs). cos/sin tables (maxT, hs/2), built once.
void rope_tables(real *cos_t, real *sin_t, int maxT, int hs, double theta);
// Rotate q and k of qkv (B,T,(H+2*Hkv)*hs) in place by position t (T <= maxT); v untouched.
void rope_forward(real *qkv, const real *cos_t, const real *sin_t, int B, int T, int H, int Hkv, int hs);
// The rotation is orthogonal: rotate dq and dk of dqkv in place by -angle; dv untouched.
void rope_backward(real *dqkv, const real *cos_t, const real *sin_t, int B, int T, int H, int Hkv, int hs);

// SwiGLU: inp (N,2F) rows [gate | up]; out (N,F) = silu(gate) * up, silu(z) = z * sigmoid(z).
void swiglu_forward(real *out, const real *inp, int N, int F);
// dinp (N,2F) overwritten.
void swiglu_backward(real *dinp, const real *dout, const real *inp, int N, int F);

// GELU, tanh approximation, elementwise over n values.
void gelu_forward(real *out, const real *inp, size_t n);
// dinp (overwritten) = gelu'(inp) * dout; dinp may alias dout.
void gelu_backward(real *dinp, const real *inp, const real *dout, size_t n);

// Softmax over V in place (logits -> probs), losses (N) = -log probs[target].
void crossentropy_forward(real *losses, real *probs, const int *targets, int N, int V);
// The LM head and loss together, backward from the probabilities the forward left: with
// dlogits = dloss * (probs - onehot(targets)), dinp (N,C) = dlogits @ weight (overwritten),
// dweight (V,C) += dlogits^T @ inp, dbias (V) += column sums of dlogits (dbias may be NULL).
void classifier_backward(real *dinp, real *dweight, real *dbias, const real *probs, const real *inp,
                         const real *weight, const int *targets, real dloss, int N, int C, int V);

// dst (C) or dst rows (rows[n], C) += scale * src rows (N,C); rows NULL: all into dst's one row.
// Parallel over blocks of channels: the same order, hence the same bits, for any thread count.
void scatter_add_rows(real *dst, const real *src, const int *rows, int N, int C, real scale);

// Subtract each row's mean (N rows of C), in place. The centering map is linear and symmetric, so
// the same call is its own backward.
void center_rows(real *x, int N, int C);

// Reductions that must give the same bits for any thread count.
// Over rows into per-channel sums: parallel over blocks of channel_block(C) channels, each block summing
// its rows in order into local accumulators of CHANNEL_BLOCK_MAX, then adding them to the destination.
// The block width changes no result, only how many parallel tasks there are: about one per thread, as
// wide as the accumulators allow (a narrow block revisits every row's cache lines once per block).
#define CHANNEL_BLOCK_MAX 128
int channel_block(int C);
// Over n items into one double: `part(ctx, lo, hi)` sums items [lo, hi) of each of `chunks` fixed
// chunks (in parallel; it may also write per-item results), then the chunk sums are added in order.
double chunked_sum(size_t n, int chunks, double (*part)(const void *ctx, size_t lo, size_t hi), const void *ctx);
// dot_product and l2_norm sum over n values this way.
double dot_product(const real *a, const real *b, size_t n);
double l2_norm(const real *x, size_t n);

// Set the thread count of our kernels and OpenBLAS together (the OpenMP build of OpenBLAS stops
// following OpenMP's count once it has been 1).
void set_threads(int n);

#endif
