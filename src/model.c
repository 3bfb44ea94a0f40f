#include "model.h"
#include "kernels.h"
#include "rng.h"
#include <math.h>
#include <omp.h>
#include <string.h>

#define LN_EPS 1e-5
#define INIT_STD 0.02

// ---------------------------------------------------------------------------------------------
// Parameter layout. `param` is called once per tensor in storage order; the first pass (buffers
// not yet allocated) only counts, the second records the tensor and hands out its pointers.

static void param(GPT *m, real **p, real **g, int rows, int cols, int decay, InitKind init, double std,
                  const char *fmt, int layer) {
    size_t size = (size_t)rows * cols;
    if (m->params) {
        ParamTensor *t = &m->tensors[m->n_tensors];
        snprintf(t->name, sizeof t->name, fmt, layer);
        t->offset = m->n_params;
        t->size = size;
        t->rows = rows;
        t->cols = cols;
        t->decay = decay;
        t->init = init;
        t->init_std = std;
        *p = m->params + m->n_params;
        *g = m->grads + m->n_params;
    }
    m->n_tensors++;
    m->n_params += size;
}

static void norm_params(GPT *m, Norm *nm, int bias, const char *fmt_weight, const char *fmt_bias, int layer) {
    nm->kind = NORM_LAYERNORM;
    nm->eps = (real)LN_EPS;
    nm->bias = nm->dbias = NULL;
    param(m, &nm->weight, &nm->dweight, m->C, 1, 0, INIT_ONES, 0, fmt_weight, layer);
    if (bias) param(m, &nm->bias, &nm->dbias, m->C, 1, 0, INIT_ZEROS, 0, fmt_bias, layer);
}

static void linear_params(GPT *m, Linear *lin, int out, int in, int bias, double std, const char *fmt_weight,
                          const char *fmt_bias, int layer) {
    lin->b = lin->db = NULL;
    param(m, &lin->w, &lin->dw, out, in, 1, INIT_NORMAL, std, fmt_weight, layer);
    if (bias) param(m, &lin->b, &lin->db, out, 1, 0, INIT_ZEROS, 0, fmt_bias, layer);
}

static void layout_params(GPT *m, int bias, int tied) {
    int C = m->C;
    double proj_std = INIT_STD / sqrt(2.0 * m->L);  // GPT-2: residual writers scaled by 1/sqrt(2L)
    m->n_params = 0;
    m->n_tensors = 0;
    param(m, &m->wte, &m->dwte, m->V, C, 1, INIT_NORMAL, INIT_STD, "wte", 0);
    param(m, &m->wpe, &m->dwpe, m->maxT, C, 1, INIT_NORMAL, INIT_STD, "wpe", 0);
    for (int l = 0; l < m->L; l++) {
        Block *b = &m->blocks[l];
        norm_params(m, &b->ln1, bias, "h.%d.ln1.weight", "h.%d.ln1.bias", l);
        linear_params(m, &b->qkv, 3 * C, C, bias, INIT_STD, "h.%d.attn.qkv.weight", "h.%d.attn.qkv.bias", l);
        linear_params(m, &b->attn_proj, C, C, bias, proj_std, "h.%d.attn.proj.weight", "h.%d.attn.proj.bias", l);
        norm_params(m, &b->ln2, bias, "h.%d.ln2.weight", "h.%d.ln2.bias", l);
        linear_params(m, &b->fc, 4 * C, C, bias, INIT_STD, "h.%d.mlp.fc.weight", "h.%d.mlp.fc.bias", l);
        linear_params(m, &b->fc_proj, C, 4 * C, bias, proj_std, "h.%d.mlp.proj.weight", "h.%d.mlp.proj.bias", l);
    }
    norm_params(m, &m->lnf, bias, "lnf.weight", "lnf.bias", 0);
    m->lm_head.b = m->lm_head.db = NULL;
    if (tied) {
        m->lm_head.w = m->wte;
        m->lm_head.dw = m->dwte;
    } else {
        param(m, &m->lm_head.w, &m->lm_head.dw, m->V, C, 1, INIT_NORMAL, INIT_STD, "lm_head.weight", 0);
    }
}

// ---------------------------------------------------------------------------------------------
// Activation layout, same two-pass idea: `act` counts, then hands out pointers.

static void act(GPT *m, real **p, size_t count) {
    if (m->act_memory) *p = m->act_memory + m->n_acts;
    m->n_acts += count;
}

static void layout_acts(GPT *m) {
    size_t B = m->maxB, T = m->seqT, C = m->C, N = B * T;
    int threads = omp_get_max_threads();
    m->n_acts = 0;
    act(m, &m->encoded, N * C);
    for (int l = 0; l < m->L; l++) {
        BlockActs *a = &m->acts[l];
        act(m, &a->ln1, N * C);
        act(m, &a->ln1_stats, N * NORM_STATS_PER_ROW);
        act(m, &a->qkv, N * 3 * C);
        act(m, &a->att, B * m->H * T * T);
        act(m, &a->atty, N * C);
        act(m, &a->res_attn, N * C);
        act(m, &a->ln2, N * C);
        act(m, &a->ln2_stats, N * NORM_STATS_PER_ROW);
        act(m, &a->fch, N * 4 * C);
        act(m, &a->fch_gelu, N * 4 * C);
        act(m, &a->res_out, N * C);
    }
    act(m, &m->lnf_out, N * C);
    act(m, &m->lnf_stats, N * NORM_STATS_PER_ROW);
    act(m, &m->logits, N * m->V);
    act(m, &m->losses, N);
    act(m, &m->dres, N * C);
    act(m, &m->dC, N * C);
    act(m, &m->dqkv, N * 3 * C);
    act(m, &m->dfch, N * 4 * C);
    act(m, &m->att_scratch, (size_t)threads * T * T);
}

void gpt_build(GPT *m, const Config *cfg) {
    memset(m, 0, sizeof *m);
    m->V = (int)cfg->vocab_size;
    m->maxT = (int)cfg->block_size;
    m->L = (int)cfg->n_layer;
    m->H = (int)cfg->n_head;
    m->C = (int)cfg->n_embd;
    m->maxB = (int)cfg->batch_size;
    m->seqT = (int)cfg->seq_len;
    m->blocks = xcalloc(m->L, sizeof(Block));
    m->acts = xcalloc(m->L, sizeof(BlockActs));
    layout_params(m, cfg->bias, cfg->tie_embeddings);  // count
    m->params = xcalloc(m->n_params, sizeof(real));
    m->grads = xcalloc(m->n_params, sizeof(real));
    m->tensors = xcalloc(m->n_tensors, sizeof(ParamTensor));
    layout_params(m, cfg->bias, cfg->tie_embeddings);  // assign
    layout_acts(m);
    m->act_memory = xcalloc(m->n_acts, sizeof(real));
    layout_acts(m);
}

void gpt_free(GPT *m) {
    free(m->params);
    free(m->grads);
    free(m->tensors);
    free(m->blocks);
    free(m->acts);
    free(m->act_memory);
    memset(m, 0, sizeof *m);
}

void gpt_init(GPT *m, uint64_t seed) {
    Rng r = rng_stream(seed, 1);
    for (int i = 0; i < m->n_tensors; i++) {
        const ParamTensor *t = &m->tensors[i];
        real *p = m->params + t->offset;
        for (size_t j = 0; j < t->size; j++)
            p[j] = t->init == INIT_ONES ? 1 : t->init == INIT_ZEROS ? 0 : (real)(t->init_std * rng_normal(&r));
    }
}

void gpt_zero_grad(GPT *m) { memset(m->grads, 0, m->n_params * sizeof(real)); }

// ---------------------------------------------------------------------------------------------
// Forward and backward. Pre-LN block:  h = x + Attn(LN1(x)),  x' = h + MLP(LN2(h)).

static const real *block_input(const GPT *m, int l) { return l == 0 ? m->encoded : m->acts[l - 1].res_out; }

static void block_forward(GPT *m, int l, int B, int T) {
    const Block *b = &m->blocks[l];
    BlockActs *a = &m->acts[l];
    int N = B * T, C = m->C;
    const real *x = block_input(m, l);
    norm_forward(&b->ln1, a->ln1, a->ln1_stats, x, N, C);
    matmul_forward(a->qkv, NULL, a->ln1, b->qkv.w, b->qkv.b, N, C, 3 * C);
    attention_forward(a->atty, a->att, a->qkv, B, T, C, m->H);
    matmul_forward(a->res_attn, x, a->atty, b->attn_proj.w, b->attn_proj.b, N, C, C);
    norm_forward(&b->ln2, a->ln2, a->ln2_stats, a->res_attn, N, C);
    matmul_forward(a->fch, NULL, a->ln2, b->fc.w, b->fc.b, N, C, 4 * C);
    gelu_forward(a->fch_gelu, a->fch, (size_t)N * 4 * C);
    matmul_forward(a->res_out, a->res_attn, a->fch_gelu, b->fc_proj.w, b->fc_proj.b, N, 4 * C, C);
}

// On entry m->dres holds dL/d(block output); on exit dL/d(block input).
static void block_backward(GPT *m, int l, int B, int T) {
    const Block *b = &m->blocks[l];
    const BlockActs *a = &m->acts[l];
    int N = B * T, C = m->C;
    const real *x = block_input(m, l);
    matmul_backward(m->dfch, b->fc_proj.dw, b->fc_proj.db, m->dres, a->fch_gelu, b->fc_proj.w, N, 4 * C, C);
    gelu_backward(m->dfch, a->fch, m->dfch, (size_t)N * 4 * C);
    matmul_backward(m->dC, b->fc.dw, b->fc.db, m->dfch, a->ln2, b->fc.w, N, C, 4 * C);
    norm_backward(&b->ln2, m->dres, m->dC, a->res_attn, a->ln2_stats, N, C);
    matmul_backward(m->dC, b->attn_proj.dw, b->attn_proj.db, m->dres, a->atty, b->attn_proj.w, N, C, C);
    attention_backward(m->dqkv, m->att_scratch, m->dC, a->qkv, a->att, B, T, C, m->H);
    matmul_backward(m->dC, b->qkv.dw, b->qkv.db, m->dqkv, a->ln1, b->qkv.w, N, C, 3 * C);
    norm_backward(&b->ln1, m->dres, m->dC, x, a->ln1_stats, N, C);
}

double gpt_forward(GPT *m, const int *inputs, const int *targets, int B, int T) {
    int N = B * T, C = m->C;
    if (B > m->maxB || T > m->seqT) die(1, "internal: forward of (%d,%d) exceeds buffers (%d,%d)", B, T, m->maxB, m->seqT);
    encoder_forward(m->encoded, inputs, m->wte, m->wpe, B, T, C);
    for (int l = 0; l < m->L; l++) block_forward(m, l, B, T);
    const real *top = block_input(m, m->L);
    norm_forward(&m->lnf, m->lnf_out, m->lnf_stats, top, N, C);
    matmul_forward(m->logits, NULL, m->lnf_out, m->lm_head.w, NULL, N, C, m->V);
    if (!targets) return 0;
    crossentropy_forward(m->losses, m->logits, targets, N, m->V);
    double sum = 0;
    for (int n = 0; n < N; n++) sum += m->losses[n];
    return sum / N;
}

void gpt_backward(GPT *m, const int *inputs, const int *targets, int B, int T, real dloss_scale) {
    int N = B * T, C = m->C;
    crossentropy_backward(m->logits, targets, dloss_scale, N, m->V);
    matmul_backward(m->dC, m->lm_head.dw, NULL, m->logits, m->lnf_out, m->lm_head.w, N, C, m->V);
    memset(m->dres, 0, (size_t)N * C * sizeof(real));
    norm_backward(&m->lnf, m->dres, m->dC, block_input(m, m->L), m->lnf_stats, N, C);
    for (int l = m->L - 1; l >= 0; l--) block_backward(m, l, B, T);
    encoder_backward(m->dwte, m->dwpe, m->dres, inputs, B, T, C);
}

double gpt_flops_per_token(const GPT *m, int T) {
    double matmul_params = (double)m->V * m->C;  // the LM head
    for (int i = 0; i < m->n_tensors; i++) {
        const ParamTensor *t = &m->tensors[i];
        if (t->cols > 1 && strncmp(t->name, "h.", 2) == 0) matmul_params += (double)t->size;
    }
    return 6.0 * matmul_params + 12.0 * m->L * m->C * T;  // attention: QK^T and AV, fwd + bwd
}

size_t gpt_memory_bytes(const GPT *m) { return (4 * m->n_params + m->n_acts) * sizeof(real); }
