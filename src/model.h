// The GPT model: parameter layout, initialization, forward and backward.
//
// All parameters live in one contiguous buffer and all gradients in a second buffer with the same
// layout; the tensor table records each tensor's name, shape, offset, weight-decay flag and init,
// in the order they are stored (which is also the order in checkpoint files).
#ifndef NORMGPT_MODEL_H
#define NORMGPT_MODEL_H
#include "common.h"
#include "config.h"
#include "norms.h"

typedef enum { INIT_ZEROS, INIT_ONES, INIT_NORMAL } InitKind;

typedef struct {
    char name[64];
    size_t offset, size;
    int rows, cols;   // cols = 1 for vectors
    int decay;        // AdamW weight decay applies (matrices and embeddings)
    InitKind init;
    double init_std;
} ParamTensor;

// A linear map y = x W^T + b with W (out, in); the gradient pointers share the layout.
typedef struct { real *w, *b, *dw, *db; } Linear;

typedef struct {
    Norm ln1, ln2;
    Linear qkv, attn_proj, fc, fc_proj;
} Block;

// Activations one block saves for its backward (N = B*T tokens).
typedef struct {
    real *ln1, *ln1_stats;   // (N,C), (N,2)
    real *qkv;               // (N,3C)
    real *att;               // (B,H,T,T) softmax probabilities
    real *atty;              // (N,C) attention output before the projection
    real *res_attn;          // (N,C) residual stream after the attention sublayer
    real *ln2, *ln2_stats;   // (N,C), (N,2)
    real *fch, *fch_gelu;    // (N,4C)
    real *res_out;           // (N,C) block output
} BlockActs;

typedef struct {
    int V, maxT, L, H, C;     // vocab, block size, layers, heads, channels
    int maxB, seqT;           // activation buffers are sized for (maxB, seqT)
    // parameters
    size_t n_params;
    real *params, *grads;
    ParamTensor *tensors;
    int n_tensors;
    real *wte, *wpe, *dwte, *dwpe;
    Block *blocks;
    Norm lnf;
    Linear lm_head;           // w == wte when embeddings are tied
    // activations and backward scratch
    real *act_memory;
    size_t n_acts;
    real *encoded, *lnf_out, *lnf_stats, *logits, *losses;
    BlockActs *acts;
    real *dres, *dC, *dqkv, *dfch, *att_scratch;
} GPT;

// Build the layout and buffers for `cfg`; activations are sized for (batch_size, seq_len).
void gpt_build(GPT *m, const Config *cfg);
void gpt_free(GPT *m);
// Initialize parameters from `seed` (GPT-2 scheme), independent of thread count.
void gpt_init(GPT *m, uint64_t seed);
// Forward over inputs (B,T). With targets: returns the mean cross-entropy and leaves softmax
// probabilities in m->logits; without: leaves raw logits (B*T, V) and returns 0.
double gpt_forward(GPT *m, const int *inputs, const int *targets, int B, int T);
// Backward of the last forward (which must have had targets): grads += dloss_scale * dLoss_sum,
// where the loss is the SUM of token losses (so dloss_scale = 1/(tokens per optimizer step)).
void gpt_backward(GPT *m, const int *inputs, const int *targets, int B, int T, real dloss_scale);
void gpt_zero_grad(GPT *m);
// Matmul FLOPs per trained token (forward + backward), attention included, for MFU.
double gpt_flops_per_token(const GPT *m, int T);
// Bytes of parameters + grads + AdamW state + activations.
size_t gpt_memory_bytes(const GPT *m);

#endif
