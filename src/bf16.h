// bfloat16 mixed precision: conversions, and matmuls with bf16 inputs and fp32 accumulation on the
// CPU's bf16 dot-product units (AVX512_BF16) through oneDNN's matmul primitive.
// How the model uses it (which tensors get bf16 copies, what stays fp32): docs/bf16.md.
//
// Every product reads its operands where they already are: transposes and per-head views are
// strides in oneDNN memory descriptors, never copies. Accumulation is fp32 inside oneDNN; the
// outputs are fp32 (or bf16 where the next consumer is another matmul). A primitive is created once
// per shape (bf16_*_prepare, at start-up) and kept in a small cache; running an unprepared shape
// creates it then and counts it in bf16_late_primitives().
//
// Shapes: N tokens, IC/OC input/output channels, B batch, T time, H query heads, Hkv key/value
// heads (H % Hkv == 0), hs head size. The API is float and bf16 whatever `real` is, so the double test build can call it.
#ifndef NORMGPT_BF16_H
#define NORMGPT_BF16_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef uint16_t bf16;  // the upper half of an IEEE float

// Round to nearest even, as the AVX512_BF16 instructions do: NaN stays NaN (quieted, sign kept),
// and a subnormal float becomes a zero of its sign (the instructions treat them as zero).
static inline bf16 bf16_round(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16)((u >> 16) | 0x40);  // NaN
    if ((u & 0x7f800000u) == 0) return (bf16)((u >> 16) & 0x8000);         // zero or subnormal
    return (bf16)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}
static inline float bf16_to_float(bf16 h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

// dst[i] = bf16_round(scale * src[i]), vectorized with AVX512_BF16 where the CPU has it (same bits
// either way). scale folds a factor into the cast (the loss scale of the LM head's backward); pass 1
// otherwise. bf16_from_floats is threaded, for whole tensors (the weights once per optimizer step);
// bf16_round_row is not, for a kernel that writes the bf16 copy of each row it has just computed,
// inside its own parallel loop.
void bf16_from_floats(bf16 *dst, const float *src, float scale, size_t n);
void bf16_round_row(bf16 *dst, const float *src, float scale, size_t n);
// dst (N,C) = bf16_round(src), and col_sums[c] += the sum over rows of src[n][c] (NULL: the cast
// alone) in the same pass over src: a linear layer's output gradient cast for its products while
// its bias gradient is summed.
void bf16_from_rows(bf16 *dst, float *col_sums, const float *src, int N, int C);
void floats_from_bf16(float *dst, const bf16 *src, size_t n);

// NULL when bf16 matmuls can run here; otherwise one line saying why (a build without oneDNN, or a
// CPU without AVX512_BF16), for the trainer to print when it refuses train.precision=bf16.
const char *bf16_unsupported(void);

// --- linear layers (the same products as matmul_forward/matmul_backward in kernels.h)
// out (N,OC) = [residual (N,OC)] + inp (N,IC) @ weight (OC,IC)^T + [bias (OC)]; residual, bias may be NULL.
void bf16_linear_forward(float *out, const float *residual, const bf16 *inp, const bf16 *weight, const float *bias,
                         int N, int IC, int OC);
// dinp (N,IC) = dout (N,OC) @ weight (OC,IC), added to dinp's contents when accumulate, skipped when
// dinp is NULL; dweight (OC,IC) += dout^T @ inp (N,IC). The bias gradient is the caller's (a column
// sum of its fp32 dout).
void bf16_linear_backward(float *dinp, int accumulate, float *dweight, const bf16 *dout, const bf16 *inp,
                          const bf16 *weight, int N, int IC, int OC);
void bf16_linear_prepare(int N, int IC, int OC, int has_residual, int has_bias, int has_dinp, int accumulate);

// --- causal self-attention's four products, batched over (batch, head); the softmax and its
// backward stay fp32 in the caller, which writes their bf16 copies (P, dS) as it goes.
// Where q, k, v live: q (B,T,H*hs) with rows ldq apart, k and v (B,T,Hkv*hs) with rows ldkv apart;
// their gradients dq, dk, dv (fp32) are laid out the same. kernels.h's qkv rows are ldq = ldkv =
// (H+2*Hkv)*hs, k = q + H*hs, v = k + Hkv*hs. Separate dense q, k, v (ldq = H*hs, ldkv = Hkv*hs)
// without groups (Hkv = H) are what oneDNN 2.6's brgemm kernels take; any other layout runs its
// slower gemm-based ones (docs/bf16.md has the measurements).
typedef struct { int B, T, H, Hkv, hs, ldq, ldkv; } Bf16Heads;
// att (B,H,T,T) = Q K^T / sqrt(hs), the full square: the caller's softmax masks the future.
void bf16_attention_scores(float *att, const bf16 *q, const bf16 *k, const Bf16Heads *a);
// out (B,T,H*hs) = P V per head; out is bf16 (the output projection's input) when out_bf16, else fp32.
void bf16_attention_values(void *out, int out_bf16, const bf16 *P, const bf16 *v, const Bf16Heads *a);
// dP (B,H,T,T) = dout V^T per head; dv = sum over the query heads sharing each kv head of P^T dout.
void bf16_attention_values_backward(float *dP, float *dv, const bf16 *dout, const bf16 *P, const bf16 *v,
                                    const Bf16Heads *a);
// From dS (B,H,T,T), the gradient of the unscaled scores (the 1/sqrt(hs) folded in): dq = dS K,
// dk = sum over the query heads sharing each kv head of dS^T Q.
void bf16_attention_scores_backward(float *dq, float *dk, const bf16 *dS, const bf16 *q, const bf16 *k,
                                    const Bf16Heads *a);
void bf16_attention_prepare(const Bf16Heads *a, int out_bf16);

// Primitives created by a run call rather than by a prepare (0 when start-up prepared every shape).
int bf16_late_primitives(void);

// Best of `reps` runs of one linear-layer product (fp32 inputs when !bf16_inputs: oneDNN's fp32
// matmul, for comparison with sgemm), in FLOP/s, on zero-filled buffers it allocates.
enum { LINEAR_FORWARD, LINEAR_DINP, LINEAR_DWEIGHT };
double onednn_linear_rate(int product, int bf16_inputs, int N, int IC, int OC, int reps);
// Best of several 1024^3 products, in FLOP/s: the bf16 counterpart of the sgemm peak.
double bf16_measure_peak(void);

#endif
