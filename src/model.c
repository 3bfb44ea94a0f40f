#include "model.h"
#include "kernels.h"
#include "profile.h"
#include "rng.h"
#include <math.h>
#include <omp.h>
#include <string.h>

#define BHYT_EPS 1e-6  // hard-coded in every BHyT path of the reference code

static int name_is(const char *a, const char *b) { return strcmp(a, b) == 0; }

static NormKind norm_kind(const char *name) {
    if (name_is(name, "rmsnorm")) return NORM_RMSNORM;
    if (name_is(name, "crmsnorm")) return NORM_CRMSNORM;
    if (name_is(name, "dyt")) return NORM_DYT;
    if (name_is(name, "bhyt")) return NORM_BHYT;
    return NORM_LAYERNORM;
}

// Decode a placement into the switches the block code reads.
static void set_placement(Block *b, const char *name) {
    memset(b, 0, sizeof *b);
    if (name_is(name, "post")) {
        b->placement = PLACE_POST;
        b->attn_post_norm = b->ffn_post_norm = 1;
    } else if (name_is(name, "hybrid")) {
        b->placement = PLACE_HYBRID;
        b->qkv_norm = b->ffn_in_norm = b->ffn_from_norm = 1;
    } else if (name_is(name, "hybrid_star")) {
        b->placement = PLACE_HYBRID_STAR;
        b->attn_in_norm = b->qkv_norm = b->ffn_in_norm = 1;
    } else if (name_is(name, "bhyt")) {
        b->placement = PLACE_BHYT;
        b->attn_in_norm = b->ffn_in_norm = b->shared_stat = 1;
    } else {  // pre, and bhyt_star (= pre with exact BHyT at both sites)
        b->placement = PLACE_PRE;
        b->attn_in_norm = b->ffn_in_norm = 1;
    }
}

// ---------------------------------------------------------------------------------------------
// Parameter layout. `param` is called once per tensor in storage order; the first pass (buffers
// not yet allocated) only counts, the second records the tensor and hands out its pointers.

static void param(GPT *m, real **p, real **g, int rows, int cols, int decay, InitKind init, double value,
                  const char *name) {
    size_t size = (size_t)rows * cols;
    if (m->params) {
        ParamTensor *t = &m->tensors[m->n_tensors];
        snprintf(t->name, sizeof t->name, "%s", name);
        t->offset = m->n_params;
        t->size = size;
        t->rows = rows;
        t->cols = cols;
        t->decay = decay;
        t->trainable = 1;
        t->init = init;
        t->init_value = value;
        *p = m->params + m->n_params;
        *g = m->grads + m->n_params;
    }
    m->n_tensors++;
    m->n_params += size;
}

static const char *tname(char *buf, const char *prefix, const char *suffix) {
    snprintf(buf, 64, "%.40s%.23s", prefix, suffix);
    return buf;
}

// The parameters of one norm operator of `width` features; `scale_init` is DyT's alpha or BHyT's lambda.
static void norm_params(GPT *m, Norm *nm, const char *kind, double scale_init, int bias, double eps,
                        const char *prefix, int width) {
    char buf[64];
    memset(nm, 0, sizeof *nm);
    nm->kind = norm_kind(kind);
    nm->eps = (real)(nm->kind == NORM_BHYT ? BHYT_EPS : eps);
    nm->kappa = m->bhyt_kappa;
    if (nm->kind == NORM_DYT || nm->kind == NORM_BHYT)
        param(m, &nm->scale, &nm->dscale, 1, 1, 0, INIT_CONST, scale_init, tname(buf, prefix, ".scale"));
    if (nm->kind != NORM_CRMSNORM)
        param(m, &nm->weight, &nm->dweight, width, 1, 0, INIT_CONST, 1.0, tname(buf, prefix, ".weight"));
    // RMSNorm takes a bias only on the zero-mean stream, where with it RMSNorm equals LayerNorm.
    if (bias && (nm->kind == NORM_LAYERNORM || nm->kind == NORM_DYT || (nm->kind == NORM_RMSNORM && m->center_stream)))
        param(m, &nm->bias, &nm->dbias, width, 1, 0, INIT_ZEROS, 0, tname(buf, prefix, ".bias"));
}

static void linear_params(GPT *m, Linear *lin, int out, int in, int bias, InitKind init, double std,
                          const char *prefix) {
    char buf[64];
    lin->b = lin->db = NULL;
    param(m, &lin->w, &lin->dw, out, in, 1, init, std, tname(buf, prefix, ".weight"));
    if (bias) param(m, &lin->b, &lin->db, out, 1, 0, INIT_ZEROS, 0, tname(buf, prefix, ".bias"));
}

static void layout_params(GPT *m, const Config *cfg) {
    int S = m->S, C = m->C, QKV = (m->H + 2 * m->Hkv) * m->hs, bias = cfg->bias;
    double std = cfg->init_std, eps = cfg->norm_eps;
    int mixln = name_is(cfg->init, "mixln"), scaled = name_is(cfg->init, "gpt2") || name_is(cfg->init, "megatron");
    InitKind weights = name_is(cfg->init, "megatron") ? INIT_TRUNC_NORMAL : INIT_NORMAL;
    double writer_std = scaled ? std / sqrt(2.0 * m->L) : std;  // residual writers scaled by 1/sqrt(2L)
    double wte_std = mixln ? sqrt(2.0 / 5.0) : std;             // Mix-LN's released embedding init
    char prefix[64], buf[64];
    m->n_params = 0;
    m->n_tensors = 0;
    param(m, &m->wte, &m->dwte, m->V, S, 1, weights, wte_std, "wte");
    if (!m->rope) param(m, &m->wpe, &m->dwpe, m->maxT, S, 1, weights, std, "wpe");
    if (cfg->embed_scale)
        param(m, &m->embed_scale, &m->dembed_scale, 1, 1, 0, INIT_CONST, sqrt((double)S), "embed_scale");
    for (int l = 0; l < m->L; l++) {
        Block *b = &m->blocks[l];
        const char *kind = cfg->blocks[l].norm;
        set_placement(b, cfg->blocks[l].placement);
        snprintf(prefix, sizeof prefix, "h.%d", l);
        if (b->attn_in_norm || b->attn_post_norm)
            norm_params(m, &b->n1, kind, name_is(kind, "dyt") ? cfg->dyt_alpha_attn : cfg->bhyt_lambda1, bias, eps,
                        tname(buf, prefix, ".norm1"), S);
        b->qkv_eps = (real)eps;
        if (b->qkv_norm) {
            param(m, &b->gq, &b->dgq, m->hs, 1, 0, INIT_CONST, 1.0, tname(buf, prefix, ".attn.q_norm.weight"));
            param(m, &b->gk, &b->dgk, m->hs, 1, 0, INIT_CONST, 1.0, tname(buf, prefix, ".attn.k_norm.weight"));
            param(m, &b->gv, &b->dgv, m->hs, 1, 0, INIT_CONST, 1.0, tname(buf, prefix, ".attn.v_norm.weight"));
        }
        linear_params(m, &b->qkv, QKV, S, bias, weights, std, tname(buf, prefix, ".attn.qkv"));
        linear_params(m, &b->attn_proj, S, C, bias, weights, writer_std, tname(buf, prefix, ".attn.proj"));
        if (b->ffn_in_norm || b->ffn_post_norm)
            norm_params(m, &b->n2, kind, name_is(kind, "dyt") ? cfg->dyt_alpha_ffn : cfg->bhyt_lambda2, bias, eps,
                        tname(buf, prefix, ".norm2"), S);
        linear_params(m, &b->fc, m->swiglu ? 2 * m->F : m->F, S, bias, weights, std, tname(buf, prefix, ".mlp.fc"));
        linear_params(m, &b->fc_proj, S, m->F, bias, weights, writer_std, tname(buf, prefix, ".mlp.proj"));
        if (b->shared_stat) {
            real *unused;
            param(m, &b->bhyt_c, &unused, 1, 1, 0, INIT_ZEROS, 0, tname(buf, prefix, ".bhyt_c"));
            if (m->params) m->tensors[m->n_tensors - 1].trainable = 0;
        }
    }
    m->has_final_norm = !name_is(cfg->final_norm, "none");
    if (m->has_final_norm)
        norm_params(m, &m->lnf, cfg->final_norm,
                    name_is(cfg->final_norm, "dyt") ? cfg->dyt_alpha_ffn : cfg->bhyt_final_lambda, bias, eps, "lnf", S);
    m->lm_head.b = m->lm_head.db = NULL;
    if (cfg->tie_embeddings) {
        m->lm_head.w = m->wte;
        m->lm_head.dw = m->dwte;
    } else {
        param(m, &m->lm_head.w, &m->lm_head.dw, m->V, S, 1, weights, std, "lm_head.weight");
    }
    if (cfg->head_bias) param(m, &m->lm_head.b, &m->lm_head.db, m->V, 1, 0, INIT_ZEROS, 0, "lm_head.bias");
}

// ---------------------------------------------------------------------------------------------
// Activation layout, same two-pass idea: `act` counts, then hands out pointers. Parts a block's
// placement does not need are not allocated; their pointers alias what takes their place.

static real *act(GPT *m, real **p, size_t count) {
    *p = m->act_memory ? m->act_memory + m->n_acts : NULL;
    m->n_acts += count;
    return *p;
}

// One block's saved tensors. With `shared` (recompute) every tensor but the block's own output
// points into `shared`, one set sized for any block, which the backward refills block by block.
static void layout_block_acts(GPT *m, BlockActs *a, const Block *b, const BlockActs *shared) {
    size_t N = (size_t)m->maxB * m->seqT, T = m->seqT, C = m->C, S = m->S;
    size_t QKV = (size_t)(m->H + 2 * m->Hkv) * m->hs, FC = m->swiglu ? 2 * (size_t)m->F : (size_t)m->F;
    if (shared) {
        *a = *shared;
        act(m, &a->out, N * S);
    } else {
        memset(a, 0, sizeof *a);
        if (b->attn_in_norm) { act(m, &a->n1, N * S); act(m, &a->n1_stats, N * NORM_STATS_PER_ROW); }
        act(m, &a->qkv_raw, N * QKV);
        if (b->qkv_norm) { act(m, &a->qkv, N * QKV); act(m, &a->qkv_stats, N * (m->H + 2 * m->Hkv)); }
        act(m, &a->att, (size_t)m->maxB * m->H * T * T);
        act(m, &a->atty, N * C);
        act(m, &a->res_attn, N * S);
        if (b->attn_post_norm) { act(m, &a->h, N * S); act(m, &a->h_stats, N * NORM_STATS_PER_ROW); }
        if (b->ffn_in_norm) { act(m, &a->n2, N * S); act(m, &a->n2_stats, N * NORM_STATS_PER_ROW); }
        act(m, &a->fch, N * FC);
        act(m, &a->fch_act, N * m->F);
        act(m, &a->res_ffn, N * S);
        if (b->ffn_post_norm) { act(m, &a->out, N * S); act(m, &a->out_stats, N * NORM_STATS_PER_ROW); }
    }
    // What the placement lacks aliases what takes its place.
    if (!b->qkv_norm) a->qkv = a->qkv_raw;
    if (!b->attn_post_norm) a->h = a->res_attn;
    if (!b->ffn_post_norm) {
        if (shared) a->res_ffn = a->out;  // the block's own output, the next block's input: kept
        else a->out = a->res_ffn;
    }
}

static void layout_acts(GPT *m) {
    size_t B = m->maxB, T = m->seqT, C = m->C, S = m->S, N = B * T;
    size_t QKV = (size_t)(m->H + 2 * m->Hkv) * m->hs, FC = m->swiglu ? 2 * (size_t)m->F : (size_t)m->F;
    int threads = omp_get_max_threads(), any_bhyt = 0;
    m->n_acts = 0;
    if (m->embed_scale) act(m, &m->emb, N * S);
    act(m, &m->encoded, N * S);
    BlockActs shared;
    if (m->recompute) {  // one set for every placement in the model: each optional part is there
        Block all = {.attn_in_norm = 1, .qkv_norm = 1, .attn_post_norm = 1, .ffn_in_norm = 1, .ffn_post_norm = 1};
        layout_block_acts(m, &shared, &all, NULL);
    }
    for (int l = 0; l < m->L; l++) {
        layout_block_acts(m, &m->acts[l], &m->blocks[l], m->recompute ? &shared : NULL);
        any_bhyt |= m->blocks[l].shared_stat;
    }
    if (m->has_final_norm) { act(m, &m->lnf_out, N * S); act(m, &m->lnf_stats, N * NORM_STATS_PER_ROW); }
    act(m, &m->logits, N * m->V);
    act(m, &m->losses, N);
    if (m->rope) { act(m, &m->rope_cos, (size_t)m->maxT * m->hs / 2); act(m, &m->rope_sin, (size_t)m->maxT * m->hs / 2); }
    act(m, &m->dres, N * S);
    act(m, &m->dres_alt, N * S);
    act(m, &m->dC, N * C);
    act(m, &m->dqkv, N * QKV);
    act(m, &m->dqkv_raw, N * QKV);
    act(m, &m->dfch, N * FC);
    act(m, &m->dfch_act, N * m->F);
    act(m, &m->dmean_sq, N);
    act(m, &m->att_scratch, (size_t)threads * T * T);
    m->bhyt_scratch = NULL;
    if (any_bhyt) act(m, &m->bhyt_scratch, S * S);
}

void gpt_build(GPT *m, const Config *cfg) {
    memset(m, 0, sizeof *m);
    m->V = (int)cfg->vocab_size;
    m->maxT = (int)cfg->block_size;
    m->L = (int)cfg->n_layer;
    m->H = (int)cfg->n_head;
    m->Hkv = cfg->n_kv_head ? (int)cfg->n_kv_head : m->H;
    m->C = (int)cfg->n_embd;
    m->hs = m->C / m->H;
    int compressed = name_is(cfg->blocks[0].norm, "crmsnorm");  // config guarantees: all blocks or none
    m->S = compressed ? m->C - 1 : m->C;
    m->swiglu = name_is(cfg->ffn, "swiglu");
    // SwiGLU's default keeps the parameter count of a 4x GELU MLP: 8/3 C, rounded up to a multiple of 32.
    m->F = cfg->ffn_hidden ? (int)cfg->ffn_hidden : m->swiglu ? (8 * m->C / 3 + 31) / 32 * 32 : 4 * m->C;
    m->rope = name_is(cfg->pos, "rope");
    m->center_stream = cfg->center_stream;
    m->recompute = cfg->recompute;
    m->bhyt_kappa = (real)cfg->bhyt_kappa;
    m->skip_block = -1;
    m->maxB = (int)cfg->batch_size;
    m->seqT = (int)cfg->seq_len;
    m->blocks = xcalloc(m->L, sizeof(Block));
    m->acts = xcalloc(m->L, sizeof(BlockActs));
    layout_params(m, cfg);  // count
    m->params = xcalloc(m->n_params, sizeof(real));
    m->grads = xcalloc(m->n_params, sizeof(real));
    m->tensors = xcalloc(m->n_tensors, sizeof(ParamTensor));
    layout_params(m, cfg);  // assign
    layout_acts(m);
    m->act_memory = xcalloc(m->n_acts, sizeof(real));
    layout_acts(m);
    if (m->rope) rope_tables(m->rope_cos, m->rope_sin, m->maxT, m->hs, cfg->rope_theta);
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
        for (size_t j = 0; j < t->size; j++) {
            double z = 0;
            switch (t->init) {
            case INIT_ZEROS: z = 0; break;
            case INIT_CONST: z = t->init_value; break;
            case INIT_NORMAL: z = t->init_value * rng_normal(&r); break;
            case INIT_TRUNC_NORMAL:  // resample beyond 3 sigma, as Megatron's truncated init
                do { z = rng_normal(&r); } while (fabs(z) > 3.0);
                z *= t->init_value;
                break;
            }
            p[j] = (real)z;
        }
    }
    gpt_refresh_bhyt(m);
}

void gpt_zero_grad(GPT *m) { memset(m->grads, 0, m->n_params * sizeof(real)); }

int gpt_has_bhyt(const GPT *m) { return m->bhyt_scratch != NULL; }

// c = ||W_V W_O||_F^2 / (T d) with the value heads repeated to match the query heads (GQA):
// W_O W_V = sum over query heads h of W_O[:, h] W_V[kv(h)], one S x S product per refresh.
void gpt_refresh_bhyt(GPT *m) {
    int S = m->S, hs = m->hs, group = m->H / m->Hkv;
    for (int l = 0; l < m->L; l++) {
        Block *b = &m->blocks[l];
        if (!b->shared_stat) continue;
        const real *wv = b->qkv.w + (size_t)(m->H + m->Hkv) * hs * S;
        for (int h = 0; h < m->H; h++)
            cblas_gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, S, S, hs, 1, b->attn_proj.w + h * hs, m->C,
                       wv + (size_t)(h / group) * hs * S, S, h ? 1 : 0, m->bhyt_scratch, S);
        double norm = l2_norm(m->bhyt_scratch, (size_t)S * S);
        *b->bhyt_c = (real)(norm * norm / ((double)m->seqT * S));
    }
}

// ---------------------------------------------------------------------------------------------
// Forward and backward of one block (the placements are listed in model.h).

const real *gpt_block_input(const GPT *m, int l) { return l == 0 ? m->encoded : m->acts[l - 1].out; }

static real bhyt_correction(const Block *b, real kappa) {
    real lambda1 = b->n1.scale[0];  // a stop-gradient copy: C = c * sg(lambda1)^2 / kappa^2
    return *b->bhyt_c * lambda1 * lambda1 / (kappa * kappa);
}

real gpt_bhyt_correction(const GPT *m, int l) { return bhyt_correction(&m->blocks[l], m->bhyt_kappa); }

static void block_forward(GPT *m, int l, int B, int T) {
    const Block *b = &m->blocks[l];
    BlockActs *a = &m->acts[l];
    int N = B * T, C = m->C, S = m->S, QKV = (m->H + 2 * m->Hkv) * m->hs;
    int FC = m->swiglu ? 2 * m->F : m->F;
    double n = N;  // FLOP counts in double: N * S * FC overflows int at paper scale
    const real *x = gpt_block_input(m, l);
    // attention sublayer
    const real *attn_in = x;
    if (b->attn_in_norm) {
        TIMED("norm (fwd)", 0, norm_forward(&b->n1, a->n1, a->n1_stats, x, N, S));
        attn_in = a->n1;
    }
    TIMED("matmul qkv (fwd)", 2 * n * S * QKV, matmul_forward(a->qkv_raw, NULL, attn_in, b->qkv.w, b->qkv.b, N, S, QKV));
    if (b->qkv_norm)
        TIMED("qkv-norm (fwd)", 0, qkvnorm_forward(a->qkv, a->qkv_stats, a->qkv_raw, b->gq, b->gk, b->gv, b->qkv_eps,
                                                   N, m->H, m->Hkv, m->hs));
    if (m->rope) TIMED("rope (fwd)", 0, rope_forward(a->qkv, m->rope_cos, m->rope_sin, B, T, m->H, m->Hkv, m->hs));
    TIMED("attention (fwd)", 4 * n * T * C, attention_forward(a->atty, a->att, a->qkv, B, T, m->H, m->Hkv, m->hs));
    TIMED("matmul attn.proj (fwd)", 2 * n * C * S,
          matmul_forward(a->res_attn, x, a->atty, b->attn_proj.w, b->attn_proj.b, N, C, S));
    if (m->center_stream) TIMED("center stream", 0, center_rows(a->res_attn, N, S));
    if (b->attn_post_norm) TIMED("norm (fwd)", 0, norm_forward(&b->n1, a->h, a->h_stats, a->res_attn, N, S));
    // FFN sublayer
    const real *ffn_in = a->h;
    if (b->ffn_in_norm) {
        if (b->shared_stat)
            TIMED("norm (fwd)", 0, bhyt_shared_forward(a->n2, a->n2_stats, a->h, a->n1_stats,
                                                       bhyt_correction(b, m->bhyt_kappa), b->n2.scale, b->n2.weight,
                                                       m->bhyt_kappa, b->n2.eps, N, S));
        else
            TIMED("norm (fwd)", 0, norm_forward(&b->n2, a->n2, a->n2_stats, a->h, N, S));
        ffn_in = a->n2;
    }
    TIMED("matmul fc (fwd)", 2 * n * S * FC, matmul_forward(a->fch, NULL, ffn_in, b->fc.w, b->fc.b, N, S, FC));
    if (m->swiglu) TIMED("swiglu (fwd)", 0, swiglu_forward(a->fch_act, a->fch, N, m->F));
    else TIMED("gelu (fwd)", 0, gelu_forward(a->fch_act, a->fch, (size_t)N * m->F));
    const real *ffn_base = b->ffn_from_norm ? ffn_in : a->h;
    TIMED("matmul fc.proj (fwd)", 2 * n * m->F * S,
          matmul_forward(a->res_ffn, ffn_base, a->fch_act, b->fc_proj.w, b->fc_proj.b, N, m->F, S));
    if (m->center_stream) TIMED("center stream", 0, center_rows(a->res_ffn, N, S));
    if (b->ffn_post_norm) TIMED("norm (fwd)", 0, norm_forward(&b->n2, a->out, a->out_stats, a->res_ffn, N, S));
}

// Replace m->dres (dL/d of a norm's output) by dL/d of that norm's input.
static void through_post_norm(GPT *m, const Norm *nm, const real *inp, const real *stats, int N) {
    memset(m->dres_alt, 0, (size_t)N * m->S * sizeof(real));
    norm_backward(nm, m->dres_alt, m->dres, inp, stats, N, m->S);
    real *t = m->dres; m->dres = m->dres_alt; m->dres_alt = t;
}

static void add_into(real *dst, const real *src, size_t n) {
    #pragma omp parallel for
    for (size_t i = 0; i < n; i++) dst[i] += src[i];
}

// On entry m->dres holds dL/d(block output); on exit dL/d(block input).
static void block_backward(GPT *m, int l, int B, int T) {
    const Block *b = &m->blocks[l];
    const BlockActs *a = &m->acts[l];
    int N = B * T, C = m->C, S = m->S, QKV = (m->H + 2 * m->Hkv) * m->hs;
    int FC = m->swiglu ? 2 * m->F : m->F;
    size_t NS = (size_t)N * S;
    double n = N;
    const real *x = gpt_block_input(m, l);
    // FFN sublayer: m->dres = dL/d out -> dL/d h
    if (b->ffn_post_norm) TIMED("norm (bwd)", 0, through_post_norm(m, &b->n2, a->res_ffn, a->out_stats, N));
    if (m->center_stream) TIMED("center stream", 0, center_rows(m->dres, N, S));
    const real *ffn_in = b->ffn_in_norm ? a->n2 : a->h;
    TIMED("matmul fc.proj (bwd)", 4 * n * m->F * S,
          matmul_backward(m->dfch_act, b->fc_proj.dw, b->fc_proj.db, m->dres, a->fch_act, b->fc_proj.w, N, m->F, S));
    if (m->swiglu) TIMED("swiglu (bwd)", 0, swiglu_backward(m->dfch, m->dfch_act, a->fch, N, m->F));
    else TIMED("gelu (bwd)", 0, gelu_backward(m->dfch, a->fch, m->dfch_act, (size_t)N * m->F));
    TIMED("matmul fc (bwd)", 4 * n * S * FC, matmul_backward(m->dC, b->fc.dw, b->fc.db, m->dfch, ffn_in, b->fc.w, N, S, FC));
    if (b->ffn_from_norm) {  // the residual carried N2(h): its gradient joins the FFN's, then crosses N2
        add_into(m->dC, m->dres, NS);
        memset(m->dres, 0, NS * sizeof(real));
    }
    if (!b->ffn_in_norm) add_into(m->dres, m->dC, NS);
    else if (b->shared_stat)
        TIMED("norm (bwd)", 0, bhyt_shared_backward(m->dres, m->dmean_sq, b->n2.dscale, b->n2.dweight, m->dC, a->h,
                                                    a->n2_stats, b->n2.scale, b->n2.weight, m->bhyt_kappa, N, S));
    else TIMED("norm (bwd)", 0, norm_backward(&b->n2, m->dres, m->dC, a->h, a->n2_stats, N, S));
    // attention sublayer: m->dres = dL/d h -> dL/d x
    if (b->attn_post_norm) TIMED("norm (bwd)", 0, through_post_norm(m, &b->n1, a->res_attn, a->h_stats, N));
    if (m->center_stream) TIMED("center stream", 0, center_rows(m->dres, N, S));
    TIMED("matmul attn.proj (bwd)", 4 * n * C * S,
          matmul_backward(m->dC, b->attn_proj.dw, b->attn_proj.db, m->dres, a->atty, b->attn_proj.w, N, C, S));
    TIMED("attention (bwd)", 8 * n * T * C,
          attention_backward(m->dqkv, m->att_scratch, m->dC, a->qkv, a->att, B, T, m->H, m->Hkv, m->hs));
    if (m->rope) TIMED("rope (bwd)", 0, rope_backward(m->dqkv, m->rope_cos, m->rope_sin, B, T, m->H, m->Hkv, m->hs));
    const real *dqkv = m->dqkv;
    if (b->qkv_norm) {
        TIMED("qkv-norm (bwd)", 0, qkvnorm_backward(m->dqkv_raw, b->dgq, b->dgk, b->dgv, m->dqkv, a->qkv_raw,
                                                    a->qkv_stats, b->gq, b->gk, b->gv, N, m->H, m->Hkv, m->hs));
        dqkv = m->dqkv_raw;
    }
    const real *attn_in = b->attn_in_norm ? a->n1 : x;
    TIMED("matmul qkv (bwd)", 4 * n * S * QKV,
          matmul_backward(m->dC, b->qkv.dw, b->qkv.db, dqkv, attn_in, b->qkv.w, N, S, QKV));
    if (!b->attn_in_norm) { add_into(m->dres, m->dC, NS); return; }
    TIMED("norm (bwd)", 0, norm_backward(&b->n1, m->dres, m->dC, x, a->n1_stats, N, S));
    if (b->shared_stat) TIMED("norm (bwd)", 0, mean_square_backward(m->dres, m->dmean_sq, x, N, S));
}

// ---------------------------------------------------------------------------------------------
// The whole model.

static void embed_forward(GPT *m, const int *inputs, int B, int T) {
    if (!m->embed_scale) { encoder_forward(m->encoded, inputs, m->wte, m->wpe, B, T, m->S); return; }
    encoder_forward(m->emb, inputs, m->wte, NULL, B, T, m->S);
    real s = m->embed_scale[0];
    #pragma omp parallel for
    for (int n = 0; n < B * T; n++)
        for (int c = 0; c < m->S; c++)
            m->encoded[(size_t)n * m->S + c] = s * m->emb[(size_t)n * m->S + c] +
                                                (m->wpe ? m->wpe[(size_t)(n % T) * m->S + c] : 0);
}

// Consumes m->dres = dL/d encoded.
static void embed_backward(GPT *m, const int *inputs, int B, int T) {
    if (!m->embed_scale) { encoder_backward(m->dwte, m->dwpe, m->dres, inputs, B, T, m->S); return; }
    size_t n = (size_t)B * T * m->S;
    if (m->dwpe) encoder_backward(NULL, m->dwpe, m->dres, inputs, B, T, m->S);
    m->dembed_scale[0] += (real)dot_product(m->dres, m->emb, n);
    real s = m->embed_scale[0];
    #pragma omp parallel for
    for (size_t i = 0; i < n; i++) m->dres[i] *= s;
    encoder_backward(m->dwte, NULL, m->dres, inputs, B, T, m->S);
}

double gpt_forward(GPT *m, const int *inputs, const int *targets, int B, int T) {
    int N = B * T, S = m->S;
    if (B > m->maxB || T > m->seqT) die(1, "internal: forward of (%d,%d) exceeds buffers (%d,%d)", B, T, m->maxB, m->seqT);
    TIMED("embedding (fwd)", 0, embed_forward(m, inputs, B, T));
    if (m->center_stream) TIMED("center stream", 0, center_rows(m->encoded, N, S));
    for (int l = 0; l < m->L; l++) {
        if (l == m->skip_block) memcpy(m->acts[l].out, gpt_block_input(m, l), (size_t)N * S * sizeof(real));
        else block_forward(m, l, B, T);
    }
    const real *head_in = gpt_block_input(m, m->L);
    if (m->has_final_norm) {
        TIMED("norm (fwd)", 0, norm_forward(&m->lnf, m->lnf_out, m->lnf_stats, head_in, N, S));
        head_in = m->lnf_out;
    }
    TIMED("matmul lm_head (fwd)", 2.0 * N * S * m->V,
          matmul_forward(m->logits, NULL, head_in, m->lm_head.w, m->lm_head.b, N, S, m->V));
    if (!targets) return 0;
    TIMED("softmax + loss (fwd)", 0, crossentropy_forward(m->losses, m->logits, targets, N, m->V));
    double sum = 0;
    for (int n = 0; n < N; n++) sum += m->losses[n];
    return sum / N;
}

void gpt_backward(GPT *m, const int *inputs, const int *targets, int B, int T, real dloss_scale) {
    int N = B * T, S = m->S;
    const real *top = gpt_block_input(m, m->L);
    TIMED("matmul lm_head + loss (bwd)", 4.0 * N * S * m->V,
          classifier_backward(m->dC, m->lm_head.dw, m->lm_head.db, m->logits, m->has_final_norm ? m->lnf_out : top,
                              m->lm_head.w, targets, dloss_scale, N, S, m->V));
    if (m->has_final_norm) {
        memset(m->dres, 0, (size_t)N * S * sizeof(real));
        TIMED("norm (bwd)", 0, norm_backward(&m->lnf, m->dres, m->dC, top, m->lnf_stats, N, S));
    } else {
        memcpy(m->dres, m->dC, (size_t)N * S * sizeof(real));
    }
    for (int l = m->L - 1; l >= 0; l--) {
        // The shared activations still hold the last block's forward; refill them for the others.
        if (m->recompute && l < m->L - 1) block_forward(m, l, B, T);
        block_backward(m, l, B, T);
    }
    if (m->center_stream) TIMED("center stream", 0, center_rows(m->dres, N, S));
    TIMED("embedding (bwd)", 0, embed_backward(m, inputs, B, T));
}

static int all_finite(const real *x, size_t n) {
    int ok = 1;
    #pragma omp parallel for reduction(&&:ok)
    for (size_t i = 0; i < n; i++) ok = ok && isfinite(x[i]);
    return ok;
}

void gpt_locate_nonfinite(const GPT *m, int B, int T, char *out, size_t size) {
    size_t NS = (size_t)B * T * m->S;
    if (!all_finite(m->encoded, NS)) { snprintf(out, size, "the embeddings (activations)"); return; }
    for (int l = 0; l < m->L; l++)
        if (!all_finite(m->acts[l].out, NS)) { snprintf(out, size, "block %d (activations)", l); return; }
    // Each block's tensors are contiguous and named h.<l>.*, in block order.
    for (int i = 0; i < m->n_tensors; i++) {
        const ParamTensor *t = &m->tensors[i];
        int l;
        if (sscanf(t->name, "h.%d.", &l) == 1 && !all_finite(m->grads + t->offset, t->size)) {
            snprintf(out, size, "block %d (gradient of %s)", l, t->name);
            return;
        }
    }
    snprintf(out, size, "the final norm, LM head or embeddings (no block output or block gradient is non-finite)");
}

double gpt_flops_per_token(const GPT *m, int T) {
    double matmul_params = (double)m->V * m->S;  // the LM head
    for (int i = 0; i < m->n_tensors; i++) {
        const ParamTensor *t = &m->tensors[i];
        if (t->cols > 1 && strncmp(t->name, "h.", 2) == 0) matmul_params += (double)t->size;
    }
    return 6.0 * matmul_params + 12.0 * m->L * m->C * T;  // attention: QK^T and AV, fwd + bwd
}

void gpt_print_blocks(const GPT *m, FILE *out) {
    static const char *places[] = {"pre", "post", "hybrid", "hybrid_star", "bhyt"};
    static const char *norms[] = {"layernorm", "rmsnorm", "crmsnorm", "dyt", "bhyt"};
    fprintf(out, "blocks (stream width %d):\n", m->S);
    for (int l = 0; l < m->L; l++) {
        const Block *b = &m->blocks[l];
        const Norm *nm = (b->attn_in_norm || b->attn_post_norm) ? &b->n1 : &b->n2;
        fprintf(out, "  %3d  %-11s %-9s  attn: %s%s%s  ffn: %s%s%s\n", l, places[b->placement], norms[nm->kind],
                b->attn_in_norm ? "norm before" : b->attn_post_norm ? "norm after residual" : "no norm",
                b->qkv_norm ? ", qkv-norm" : "", m->rope ? ", rope" : "",
                b->shared_stat ? "bhyt approx. (block statistic)" : b->ffn_in_norm ? "norm before" :
                b->ffn_post_norm ? "norm after residual" : "no norm",
                b->ffn_from_norm ? ", residual from norm" : "", m->swiglu ? ", swiglu" : ", gelu");
    }
    fprintf(out, "  final norm: %s\n", m->has_final_norm ? norms[m->lnf.kind] : "none");
}
