// bf16 mixed precision (train.precision=bf16): the model's products with bf16 operands and fp32
// accumulation through oneDNN (bf16.h), each the counterpart of an fp32 kernel in kernels.h.
// Master weights, gradients, AdamW, norms, softmax, cross-entropy and every reduction stay fp32;
// the weights' bf16 copy is made once per optimizer step (gpt_weights_changed), activations and
// gradients are cast as they enter a product. Which tensors and why: docs/bf16.md. The tests' double
// build has no bf16 path: mixed_build refuses there.
#ifndef NORMGPT_MIXED_H
#define NORMGPT_MIXED_H
#include "model.h"

// The bf16 buffers of a training model of (maxB, seqT) tokens, and oneDNN's primitives for every
// product shape, created now rather than in the first step. Exits with one line (bf16_unsupported)
// where bf16 cannot run.
// How many bf16 values mixed_build allocates for m (its shapes set): the memory budget's share.
size_t mixed_count(const GPT *m);
void mixed_build(GPT *m);
void mixed_free(GPT *m);
// Cast the weights to their bf16 copy when they changed since the last cast.
void mixed_refresh_weights(GPT *m);

// The same products as matmul_forward/matmul_backward, attention_forward/attention_backward and
// classifier_backward (kernels.h), same conventions. A forward keeps the bf16 copy of its input
// (in lin->x16; q, k, v and P for attention) for the backward, which reads it instead of the fp32
// input: a backward must follow the forward of the same block.
void mixed_linear_forward(const GPT *m, real *out, const real *residual, const real *inp, const Linear *lin, int N,
                          int IC, int OC);
void mixed_linear_backward(const GPT *m, real *dinp, const Linear *lin, const real *dout, int N, int IC, int OC);
// Block l's attention. dP (B,H,T,T) scratch.
void mixed_attention_forward(const GPT *m, int l, real *out, real *att, const real *qkv, int B, int T);
void mixed_attention_backward(const GPT *m, int l, real *dqkv, real *dP, const real *dout, const real *att, int B,
                              int T);
void mixed_classifier_backward(const GPT *m, real *dinp, const Linear *head, const real *probs, const int *targets,
                               real dloss, int N);

#endif
