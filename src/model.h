// The GPT model: parameter layout, initialization, forward and backward.
//
// All parameters live in one contiguous buffer and all gradients in a second buffer with the same
// layout; the tensor table records each tensor's name, shape, offset, weight-decay flag and init,
// in the order they are stored (which is also the order in checkpoint files).
//
// Each block has its own placement and normalization operator (config model.blocks):
//   pre          h = x + Attn(N1(x));             x' = h + FFN(N2(h))
//   post         h = N1(x + Attn(x));             x' = N2(h + FFN(h))
//   hybrid       h = x + Attn_qkvnorm(x);         z = N2(h);  x' = z + FFN(z)
//   hybrid_star  h = x + Attn_qkvnorm(N1(x));     x' = h + FFN(N2(h))
//   bhyt         h = x + Attn(BHyT1(x));          x' = h + FFN(BHyT2~(h)), BHyT2~ scaled by x's statistic
//   bhyt_star    pre with exact BHyT at both sites
// With model.center_stream every writer into the residual stream (embeddings, attention and FFN
// projections) is centered per token, so the stream has zero mean and RMSNorm (with LayerNorm's
// gain and bias) computes exactly LayerNorm: Jiang et al.'s Pre-RMSNorm, equivalent to Pre-LN.
// Shapes: C = n_embd (attention width n_head * head size), S = residual stream width (C, or C-1
// for crmsnorm), F = FFN hidden width, QKV = (H + 2 Hkv) * hs, N = B*T tokens.
#ifndef NORMGPT_MODEL_H
#define NORMGPT_MODEL_H
#include "common.h"
#include "config.h"
#include "norms.h"

typedef enum { INIT_ZEROS, INIT_CONST, INIT_NORMAL, INIT_TRUNC_NORMAL } InitKind;

typedef struct {
    char name[64];
    size_t offset, size;
    int rows, cols;      // cols = 1 for vectors and scalars
    int decay;           // AdamW weight decay applies (matrices and embeddings)
    int trainable;       // 0 for buffers derived from the weights (BHyT's c): AdamW leaves them alone
    InitKind init;
    double init_value;   // the constant, or the standard deviation
} ParamTensor;

// A linear map y = x W^T + b with W (out, in); the gradient pointers share the layout.
typedef struct { real *w, *b, *dw, *db; } Linear;

typedef enum { PLACE_PRE, PLACE_POST, PLACE_HYBRID, PLACE_HYBRID_STAR, PLACE_BHYT } Placement;

typedef struct {
    Placement placement;
    // What the placement implies:
    int attn_in_norm;     // N1 before attention (pre, hybrid_star, bhyt)
    int attn_post_norm;   // N1 after the attention residual (post)
    int qkv_norm;         // per-head RMSNorm of q, k, v (hybrid, hybrid_star)
    int ffn_in_norm;      // N2 before the FFN (pre, hybrid, hybrid_star, bhyt)
    int ffn_from_norm;    // the FFN residual starts from N2(h), not h (hybrid)
    int ffn_post_norm;    // N2 after the FFN residual (post)
    int shared_stat;      // N2 is BHyT's approximate site, reusing N1's statistic (bhyt)
    Norm n1, n2;
    real *gq, *gk, *gv, *dgq, *dgk, *dgv;  // QKV-norm gains (hs each)
    real qkv_eps;
    Linear qkv, attn_proj, fc, fc_proj;
    real *bhyt_c;         // BHyT: ||W_V W_O||_F^2 / (T d), refreshed from the weights
} Block;

// Activations one block saves for its backward. Pointers of parts a placement lacks alias the
// tensor that takes their place (e.g. qkv == qkv_raw without QKV-norm, h == res_attn without a
// post-norm).
typedef struct {
    real *n1, *n1_stats;        // (N,S), (N,2)
    real *qkv_raw, *qkv;        // (N,QKV) projection, then after QKV-norm and RoPE
    real *qkv_stats;            // (N, H + 2 Hkv)
    real *att;                  // (B,H,T,T) softmax probabilities
    real *atty;                 // (N,C) attention output before the projection
    real *res_attn, *h, *h_stats;  // (N,S) x + attention; h = N1(res_attn) for post
    real *n2, *n2_stats;        // (N,S), (N,2) (BHyT site 2: stats[n] = rstd2)
    real *fch, *fch_act;        // (N,F or 2F), (N,F)
    real *res_ffn, *out, *out_stats;  // (N,S) base + FFN; out = N2(res_ffn) for post
} BlockActs;

typedef struct {
    int V, maxT, L, H, Hkv, hs, C, S, F;
    int swiglu, rope, center_stream;
    int recompute;             // blocks share one activation set, refilled by a forward in the backward
    int maxB, seqT;            // activation buffers are sized for (maxB, seqT)
    // parameters
    size_t n_params;
    real *params, *grads;
    ParamTensor *tensors;
    int n_tensors;
    real *wte, *wpe, *dwte, *dwpe;       // wpe NULL with RoPE
    real *embed_scale, *dembed_scale;    // NULL unless model.embed_scale
    Block *blocks;
    int has_final_norm;
    Norm lnf;
    Linear lm_head;            // w == wte when embeddings are tied; b only with model.head_bias
    real bhyt_kappa;
    int skip_block;            // the forward passes block skip_block's input through unchanged (-1: none);
                               // for the layer-removal probe: forward only, no backward
    // activations and backward scratch
    real *act_memory;
    size_t n_acts;
    real *emb, *encoded, *lnf_out, *lnf_stats, *logits, *losses;
    BlockActs *acts;
    real *rope_cos, *rope_sin;
    real *dres, *dres_alt, *dS, *dC, *dqkv, *dqkv_raw, *dfch, *dfch_act, *dmean_sq, *att_scratch;
    real *bhyt_scratch;        // (S, S) for refreshing c
} GPT;

// Build the layout and buffers for `cfg` (validated, blocks resolved); activations are sized for
// (batch_size, seq_len).
void gpt_build(GPT *m, const Config *cfg);
void gpt_free(GPT *m);
// Initialize parameters from `seed` as model.init says, independent of thread count.
void gpt_init(GPT *m, uint64_t seed);
// Forward over inputs (B,T). With targets: returns the mean cross-entropy and leaves softmax
// probabilities in m->logits; without: leaves raw logits (B*T, V) and returns 0.
double gpt_forward(GPT *m, const int *inputs, const int *targets, int B, int T);
// Backward of the last forward (which must have had targets): grads += dloss_scale * dLoss_sum,
// where the loss is the SUM of token losses (so dloss_scale = 1/(tokens per optimizer step)).
void gpt_backward(GPT *m, const int *inputs, const int *targets, int B, int T, real dloss_scale);
void gpt_zero_grad(GPT *m);
// After a non-finite loss or gradient norm (and only then: it scans every activation): names where it
// first appears, in forward order — the embeddings or the first block whose output or parameter
// gradient holds a non-finite value — from the last forward of (B,T) and the accumulated gradients.
void gpt_locate_nonfinite(const GPT *m, int B, int T, char *out, size_t size);
// The hidden state entering block l (l = L: the one leaving the last block), from the last forward.
const real *gpt_block_input(const GPT *m, int l);
// Recompute BHyT's per-block constant c = ||W_V W_O||_F^2 / (T d) from the current weights.
void gpt_refresh_bhyt(GPT *m);
int gpt_has_bhyt(const GPT *m);
// The correction c * lambda1^2 / kappa^2 that block l's approximate BHyT site adds to the block
// input's mean square (block l must have shared_stat).
real gpt_bhyt_correction(const GPT *m, int l);
// Matmul FLOPs per trained token (forward + backward), attention included, for MFU.
double gpt_flops_per_token(const GPT *m, int T);
// Print the per-block table (placement, norms, parameters added) to out.
void gpt_print_blocks(const GPT *m, FILE *out);

#endif
