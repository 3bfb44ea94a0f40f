// The GPT model: parameter layout, initialization, forward and backward.
//
// All parameters live in one contiguous buffer and all gradients in a second buffer with the same
// layout; the tensor table records each tensor's name, shape, offset, weight-decay flag and init,
// in the order they are stored (which is also the order in checkpoint files).
//
// Each block has its own placement and normalization operator (config model.blocks), rows of the
// tables in placement.h and norms.h. One block forward (block_forward in model.c) computes every
// placement, for training, the layer-removal probe and KV-cached decoding alike (see Attention).
// With model.center_stream every writer into the residual stream (embeddings, attention and FFN
// projections) is centered per token, so the stream has zero mean and RMSNorm (with LayerNorm's
// gain and bias) computes exactly LayerNorm: Jiang et al.'s Pre-RMSNorm, equivalent to Pre-LN.
// Shapes: C = n_embd (attention width n_head * head size), S = residual stream width (C, or C-1
// for crmsnorm), F = FFN hidden width, QKV = (H + 2 Hkv) * hs, N = B*T tokens.
#ifndef NORMGPT_MODEL_H
#define NORMGPT_MODEL_H
#include "bf16.h"
#include "common.h"
#include "config.h"
#include "norms.h"

// INIT_SLICED_NORMAL: N(0, slice_std[i]^2) over consecutive slices of slice_rows[i] rows (DeepNorm's
// Xavier-normal init, drawn per d x d_in slice of a fused matrix).
typedef enum { INIT_ZEROS, INIT_CONST, INIT_NORMAL, INIT_TRUNC_NORMAL, INIT_SLICED_NORMAL } InitKind;
#define MAX_INIT_SLICES 3

typedef struct {
    char name[64];
    size_t offset, size;
    int rows, cols;      // cols = 1 for vectors and scalars
    int decay;           // AdamW weight decay applies (matrices and embeddings)
    int trainable;       // 0 for buffers derived from the weights (BHyT's c): AdamW leaves them alone
    InitKind init;
    double init_value;   // the constant, or the standard deviation
    int slice_rows[MAX_INIT_SLICES];      // INIT_SLICED_NORMAL: rows per slice (0 after the last)
    double slice_std[MAX_INIT_SLICES];    // and each slice's standard deviation
} ParamTensor;

// A linear map y = x W^T + b with W (out, in); the gradient pointers share the layout. In a bf16
// run, x16 holds the bf16 copy of its last forward's input, which its backward reuses.
typedef struct { real *w, *b, *dw, *db; bf16 *x16; } Linear;

// QK-norm (model.qk_norm, docs/norms.md): RMSNorm of the projected q and k, before RoPE, after the
// QKV-norm of the HybridNorm placements when the block has both.
typedef struct {
    int on, full;               // per (token, head) over hs, or (full) per token over all of q and all of k
    real eps;
    real *gq, *gk, *dgq, *dgk;  // gains: hs each, or H*hs and Hkv*hs (full); NULL with qk_norm_affine false
} QkNorm;

typedef struct {
    const PlacementSpec *place;  // where the norms sit: a row of PLACEMENTS
    Norm n1, n2;                 // the attention-site and FFN-site norms (whichever the placement has)
    Norm n1o, n2o;               // Peri-LN's norms on the attention and FFN outputs
    real *gq, *gk, *gv, *dgq, *dgk, *dgv;  // QKV-norm gains (hs each)
    real qkv_eps;
    QkNorm qkn;
    Linear qkv, attn_proj, fc, fc_proj;
    real *bhyt_c;         // BHyT: ||W_V W_O||_F^2 / (T d), refreshed from the weights
    // Where the block's parameters are stored, recorded when the layout is built: offsets
    // [param_begin, param_end) in params (and grads), tensors [tensor_begin, tensor_end).
    size_t param_begin, param_end;
    int tensor_begin, tensor_end;
} Block;

// Activations one block saves for its backward. Pointers of parts a placement lacks alias the
// tensor that takes their place (e.g. qkv_normed == qkv_raw without QKV-norm, h == res_attn without a
// post-norm).
typedef struct {
    real *n1, *n1_stats;        // (N,S), (N,2)
    real *qkv_raw, *qkv_normed, *qkv;  // (N,QKV) projection, after QKV-norm, after QK-norm and RoPE
    real *qkv_stats, *qk_stats; // (N, H + 2 Hkv), (N, H + Hkv)
    real *att;                  // (B,H,T,T) softmax probabilities
    real *atty;                 // (N,C) attention output before the projection
    real *res_attn, *h, *h_stats;  // (N,S) x + attention; h = N1(res_attn) for post
                                // (DeepNorm: alpha x + attention; Peri-LN: the attention output alone)
    real *attn_out, *attn_out_stats;  // (N,S), (N,2) Peri-LN: N1o(res_attn); h = x + attn_out
    real *n2, *n2_stats;        // (N,S), (N,2) (BHyT site 2: stats[n] = rstd2)
    real *fch, *fch_act;        // (N,F or 2F), (N,F)
    real *res_ffn, *out, *out_stats;  // (N,S) base + FFN; out = N2(res_ffn) for post
                                // (DeepNorm: alpha h + FFN; Peri-LN: the FFN output alone)
    real *ffn_out, *ffn_out_stats;  // (N,S), (N,2) Peri-LN: N2o(res_ffn); out = h + ffn_out
} BlockActs;

// What one forward pass writes, for up to N = B*T tokens: the model's own set for training and the
// probe, or a decoder's set for one position of each sequence.
typedef struct {
    real *emb;                  // (N,S) token embeddings before the scale (model.embed_scale only)
    real *embed_in, *embed_stats;  // (N,S), (N,2) model.embed_norm: the embedding before its norm
    real *encoded;              // (N,S) block 0's input
    BlockActs *blocks;          // (L) each block's; with shared blocks, all but the outputs are one set
    real *lnf_out, *lnf_stats;  // (N,S), (N,2) the final norm's
    real *logits;               // (N,V)
} ForwardActs;

// How attention sees the sequence in a forward pass.
//   ATTN_FULL    causal attention over the T positions of each of B sequences (training, probe)
//   ATTN_CACHED  T = 1: one new position `pos` per sequence; its key and value are appended to the
//                cache, and it attends over positions 0..pos there (decoding)
// In cached mode the pass runs on one thread, and a matmul or the attention on `threads` threads only
// when its multiply-adds reach DECODE_PARALLEL_WORK: a step's small kernels do not pay for waking
// the team (on a busy machine a woken thread may not run for milliseconds). The caller sets the
// thread count to 1 around the pass (set_threads).
typedef enum { ATTN_FULL, ATTN_CACHED } AttnMode;

#define DECODE_PARALLEL_WORK 4194304

typedef struct {
    AttnMode mode;
    int pos;                 // cached: the position of the tokens fed
    int capacity;            // cached: positions the cache holds
    real *k_cache, *v_cache; // cached: (L, B, Hkv, capacity, hs) keys after QKV-norm and RoPE, values
    real *scores;            // cached: (B, H, capacity) attention weights
    int threads;             // cached: the thread count for kernels big enough
} Attention;

// Buffers laid out in one allocation, in two passes: with base NULL, arena_take only counts.
typedef struct { real *base; size_t used; } Arena;
real *arena_take(Arena *a, size_t count);

typedef struct {
    int V, maxT, L, H, Hkv, hs, C, S, F;
    int swiglu, rope, center_stream;
    int recompute;             // blocks share one activation set, refilled by a forward in the backward
    int maxB, seqT;            // the forward's activation buffers are sized for (maxB, seqT); 0: none
    // parameters
    size_t n_params;
    real *params, *grads;      // grads NULL in an inference build
    ParamTensor *tensors;
    int n_tensors;
    real *wte, *wpe, *dwte, *dwpe;       // wpe NULL with RoPE
    real *embed_scale, *dembed_scale;    // NULL unless model.embed_scale
    int has_embed_norm;                  // model.embed_norm: a norm of model.norm's kind on the embedding
    Norm embed_norm;
    Block *blocks;
    int has_final_norm;
    Norm lnf;
    Linear lm_head;            // w == wte when embeddings are tied; b only with model.head_bias
    real bhyt_kappa;
    real deepnorm_alpha, deepnorm_beta;  // resolved (model.deepnorm_alpha/_beta, 0 = (2L)^1/4, (8L)^-1/4)
    int lns;                   // model.lns: block l's norms scale their output by 1/sqrt(l+1)
    real *lns_scratch;         // (4 S) the scaled gain and bias of the norm being run (Norm.lns_scratch)
    // activations and backward scratch
    real *act_memory;
    size_t n_acts;             // reals in act_memory
    ForwardActs fwd;
    real *losses;
    real *rope_cos, *rope_sin;
    real *dres, *dres_alt, *dC, *dqkv, *dqkv_raw, *dfch, *dfch_act, *dmean_sq, *att_scratch;
    real *bhyt_scratch;        // (S, S) for refreshing c
    // train.precision=bf16 (src/mixed.h): the products run on bf16 copies of their operands
    int bf16;
    int bf16_stale;            // the weights changed since params_bf16 was cast from them
    bf16 *params_bf16;         // (n_params) a matrix's copy sits at its offset in params
    bf16 *cast_out;            // a product's output gradient, (N, widest)
    bf16 *cast_qkv, *cast_sq;  // each block's q, k, v (N,QKV) and P, then dS (B,H,T,T)
    size_t n_bf16;             // bf16 values in the buffers above, for the memory budget
} GPT;

// Build the layout and buffers for training `cfg` (validated, blocks resolved): parameters,
// gradients, the forward's activations for (train.batch_size, train.seq_len) and the backward's.
void gpt_build(GPT *m, const Config *cfg);
// What gpt_build would build, without allocating its parameters, gradients or activations: the
// shapes, tensor table, n_params and n_acts (for --check, and the memory budget before allocating).
// gpt_free frees it.
void gpt_plan(GPT *m, const Config *cfg);
// Build for inference: parameters without gradients. With B, T > 0 also the forward's activations
// for (B, T), blocks sharing one set (gpt_forward works, with or without targets; gpt_backward does
// not): the layer-removal probe, --convert's check. With B = T = 0 no activations: enough for a
// Decoder (--generate), which brings its own.
void gpt_build_inference(GPT *m, const Config *cfg, int B, int T);
void gpt_free(GPT *m);
// Initialize parameters from `seed` as model.init says, independent of thread count.
void gpt_init(GPT *m, uint64_t seed);
// Forward over inputs (B,T). With targets: returns the mean cross-entropy and leaves softmax
// probabilities in m->fwd.logits; without: leaves raw logits (B*T, V) and returns 0.
double gpt_forward(GPT *m, const int *inputs, const int *targets, int B, int T);
// The layer-removal probe's forward: gpt_forward of the batch the last gpt_forward saw, with block l's
// input passed through unchanged (the model without block l). It reuses the stored outputs of blocks
// 0..l-1, so it is valid after gpt_forward of the batch followed only by skips of deeper blocks: the
// probe's L skips, deepest first, run L(L-1)/2 blocks instead of L^2. Forward only, no backward.
double gpt_forward_skipping(GPT *m, int l, const int *targets, int B, int T);
// The forward of inputs (B,T) into f (raw logits in f->logits): embedding, every block, final norm
// and head, attention as `attn` says (ATTN_CACHED: T = 1). gpt_forward is this on m->fwd with full
// attention; a Decoder is this on its own one-position set against its cache.
void gpt_forward_pass(const GPT *m, ForwardActs *f, const int *inputs, int B, int T, const Attention *attn);
// Lay out in `arena` a ForwardActs for (B,T) (f->blocks, L entries, allocated by the caller); with
// `shared`, the blocks share one set besides their outputs.
void gpt_layout_forward(const GPT *m, ForwardActs *f, Arena *arena, int B, int T, int shared);
// Backward of the last forward (which must have had targets): grads += dloss_scale * dLoss_sum,
// where the loss is the SUM of token losses (so dloss_scale = 1/(tokens per optimizer step)).
void gpt_backward(GPT *m, const int *inputs, const int *targets, int B, int T, real dloss_scale);
void gpt_zero_grad(GPT *m);
// The weights changed (an optimizer step): a bf16 model recasts its copies before the next forward.
void gpt_weights_changed(GPT *m);
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
