// The transformer's kernels other than normalization (see norms.h), each a forward/backward pair.
// Shapes: B batch, T time, C channels, N = B*T tokens, V vocabulary, H heads, hs = C/H.
// Conventions: forwards overwrite their output; backwards ACCUMULATE (+=) into parameter
// gradients, and into input gradients only where the comment says so.
#ifndef NORMGPT_KERNELS_H
#define NORMGPT_KERNELS_H
#include "common.h"

// out (N,C) = wte[tokens] (V,C) + wpe[t] (maxT,C); wpe may be NULL.
void encoder_forward(real *out, const int *tokens, const real *wte, const real *wpe, int B, int T, int C);
// dwte, dwpe += scatter of dout (N,C).
void encoder_backward(real *dwte, real *dwpe, const real *dout, const int *tokens, int B, int T, int C);

// out (N,OC) = [residual (N,OC)] + inp (N,IC) @ weight(OC,IC)^T + [bias (OC)]; residual and bias may be NULL.
void matmul_forward(real *out, const real *residual, const real *inp, const real *weight, const real *bias,
                    int N, int IC, int OC);
// dinp (N,IC) = dout @ weight (overwritten; skipped if NULL); dweight += dout^T @ inp; dbias += sum_n dout.
void matmul_backward(real *dinp, real *dweight, real *dbias, const real *dout, const real *inp,
                     const real *weight, int N, int IC, int OC);

// Causal self-attention. qkv (B,T,3C) holds [q | k | v], heads contiguous inside each.
// out (B,T,C); att (B,H,T,T) saves the softmax probabilities for the backward.
void attention_forward(real *out, real *att, const real *qkv, int B, int T, int C, int H);
// dqkv (B,T,3C) overwritten. scratch: omp_get_max_threads() * T * T reals.
void attention_backward(real *dqkv, real *scratch, const real *dout, const real *qkv, const real *att,
                        int B, int T, int C, int H);

// GELU, tanh approximation, elementwise over n values.
void gelu_forward(real *out, const real *inp, size_t n);
// dinp (overwritten) = gelu'(inp) * dout; dinp may alias dout.
void gelu_backward(real *dinp, const real *inp, const real *dout, size_t n);

// Softmax over V in place (logits -> probs), losses (N) = -log probs[target].
void crossentropy_forward(real *losses, real *probs, const int *targets, int N, int V);
// In place: probs (N,V) -> dlogits = dloss * (probs - onehot(target)).
void crossentropy_backward(real *probs, const int *targets, real dloss, int N, int V);

#endif
