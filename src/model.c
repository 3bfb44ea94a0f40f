#include "model.h"
#include "kernels.h"
#include "profile.h"
#include "rng.h"
#include <math.h>
#include <omp.h>
#include <string.h>

static int name_is(const char *a, const char *b) { return strcmp(a, b) == 0; }

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
        *g = m->grads ? m->grads + m->n_params : NULL;
    }
    m->n_tensors++;
    m->n_params += size;
}

static const char *tname(char *buf, const char *prefix, const char *suffix) {
    snprintf(buf, 64, "%.40s%.23s", prefix, suffix);
    return buf;
}

// The parameters of one norm operator of `width` features at `site`, as its NORM_OPS row says.
static void norm_params(GPT *m, Norm *nm, NormKind kind, NormSite site, const Config *cfg, const char *prefix,
                        int width) {
    const NormOp *op = &NORM_OPS[kind];
    char buf[64];
    memset(nm, 0, sizeof *nm);
    nm->kind = kind;
    nm->eps = (real)(op->fixed_eps > 0 ? op->fixed_eps : cfg->norm_eps);
    nm->kappa = m->bhyt_kappa;
    if (op->has_scale) {
        double init = *(const double *)((const char *)cfg + op->scale_init[site]);
        param(m, &nm->scale, &nm->dscale, 1, 1, 0, INIT_CONST, init, tname(buf, prefix, ".scale"));
    }
    if (op->has_weight)
        param(m, &nm->weight, &nm->dweight, width, 1, 0, INIT_CONST, 1.0, tname(buf, prefix, ".weight"));
    int bias = cfg->bias && (op->bias == BIAS_WITH_MODEL_BIAS ||
                             (op->bias == BIAS_ON_CENTERED_STREAM && m->center_stream));
    if (bias) param(m, &nm->bias, &nm->dbias, width, 1, 0, INIT_ZEROS, 0, tname(buf, prefix, ".bias"));
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
    double std = cfg->init_std;
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
        const PlacementSpec *place = &PLACEMENTS[cfg->blocks[l].placement];
        NormKind kind = cfg->blocks[l].norm;
        memset(b, 0, sizeof *b);
        b->place = place;
        b->param_begin = m->n_params;
        b->tensor_begin = m->n_tensors;
        snprintf(prefix, sizeof prefix, "h.%d", l);
        if (place->attn_in_norm || place->attn_post_norm)
            norm_params(m, &b->n1, kind, NORM_SITE_ATTN, cfg, tname(buf, prefix, ".norm1"), S);
        b->qkv_eps = (real)cfg->norm_eps;
        if (place->qkv_norm) {
            param(m, &b->gq, &b->dgq, m->hs, 1, 0, INIT_CONST, 1.0, tname(buf, prefix, ".attn.q_norm.weight"));
            param(m, &b->gk, &b->dgk, m->hs, 1, 0, INIT_CONST, 1.0, tname(buf, prefix, ".attn.k_norm.weight"));
            param(m, &b->gv, &b->dgv, m->hs, 1, 0, INIT_CONST, 1.0, tname(buf, prefix, ".attn.v_norm.weight"));
        }
        linear_params(m, &b->qkv, QKV, S, bias, weights, std, tname(buf, prefix, ".attn.qkv"));
        linear_params(m, &b->attn_proj, S, C, bias, weights, writer_std, tname(buf, prefix, ".attn.proj"));
        if (place->ffn_in_norm || place->ffn_post_norm)
            norm_params(m, &b->n2, kind, NORM_SITE_FFN, cfg, tname(buf, prefix, ".norm2"), S);
        linear_params(m, &b->fc, m->swiglu ? 2 * m->F : m->F, S, bias, weights, std, tname(buf, prefix, ".mlp.fc"));
        linear_params(m, &b->fc_proj, S, m->F, bias, weights, writer_std, tname(buf, prefix, ".mlp.proj"));
        if (place->shared_stat) {
            real *unused;
            param(m, &b->bhyt_c, &unused, 1, 1, 0, INIT_ZEROS, 0, tname(buf, prefix, ".bhyt_c"));
            if (m->params) m->tensors[m->n_tensors - 1].trainable = 0;
        }
        b->param_end = m->n_params;
        b->tensor_end = m->n_tensors;
    }
    m->has_final_norm = cfg->final_kind != NORM_NONE;
    if (m->has_final_norm) norm_params(m, &m->lnf, cfg->final_kind, NORM_SITE_FINAL, cfg, "lnf", S);
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
// Activation layout, same two-pass idea: the arena counts, then hands out pointers. Parts a block's
// placement does not need are not allocated; their pointers alias what takes their place.

real *arena_take(Arena *a, size_t count) {
    real *p = a->base ? a->base + a->used : NULL;
    a->used += count;
    return p;
}

// Every site a placement can have: the shared set serves any block.
static const PlacementSpec ALL_SITES = {.attn_in_norm = 1, .qkv_norm = 1, .attn_post_norm = 1, .ffn_in_norm = 1,
                                        .ffn_post_norm = 1};

// A norm's output (N,S) and statistics.
static void take_norm_site(Arena *arena, real **out, real **stats, size_t N, size_t S) {
    *out = arena_take(arena, N * S);
    *stats = arena_take(arena, N * NORM_STATS_PER_ROW);
}

// One block's saved tensors for N = B*T tokens. With `shared` every tensor but the block's own output
// points into `shared`, one set sized for any block, which the backward refills block by block.
static void layout_block_acts(const GPT *m, BlockActs *a, const PlacementSpec *p, const BlockActs *shared,
                              Arena *arena, int B, int T) {
    size_t N = (size_t)B * T, C = m->C, S = m->S;
    size_t QKV = (size_t)(m->H + 2 * m->Hkv) * m->hs, FC = m->swiglu ? 2 * (size_t)m->F : (size_t)m->F;
    if (shared) {
        *a = *shared;
        a->out = arena_take(arena, N * S);
    } else {
        memset(a, 0, sizeof *a);
        if (p->attn_in_norm) take_norm_site(arena, &a->n1, &a->n1_stats, N, S);
        a->qkv_raw = arena_take(arena, N * QKV);
        if (p->qkv_norm) {
            a->qkv = arena_take(arena, N * QKV);
            a->qkv_stats = arena_take(arena, N * (m->H + 2 * m->Hkv));
        }
        a->att = arena_take(arena, (size_t)B * m->H * T * T);
        a->atty = arena_take(arena, N * C);
        a->res_attn = arena_take(arena, N * S);
        if (p->attn_post_norm) take_norm_site(arena, &a->h, &a->h_stats, N, S);
        if (p->ffn_in_norm) take_norm_site(arena, &a->n2, &a->n2_stats, N, S);
        a->fch = arena_take(arena, N * FC);
        a->fch_act = arena_take(arena, N * m->F);
        a->res_ffn = arena_take(arena, N * S);
        if (p->ffn_post_norm) take_norm_site(arena, &a->out, &a->out_stats, N, S);
    }
    // What the placement lacks aliases what takes its place.
    if (!p->qkv_norm) a->qkv = a->qkv_raw;
    if (!p->attn_post_norm) a->h = a->res_attn;
    if (!p->ffn_post_norm) {
        if (shared) a->res_ffn = a->out;  // the block's own output, the next block's input: kept
        else a->out = a->res_ffn;
    }
}

void gpt_layout_forward(const GPT *m, ForwardActs *f, Arena *arena, int B, int T, int shared) {
    size_t N = (size_t)B * T, S = m->S;
    BlockActs *blocks = f->blocks;
    memset(f, 0, sizeof *f);
    f->blocks = blocks;
    if (m->embed_scale) f->emb = arena_take(arena, N * S);
    f->encoded = arena_take(arena, N * S);
    BlockActs one_set;
    if (shared) layout_block_acts(m, &one_set, &ALL_SITES, NULL, arena, B, T);
    for (int l = 0; l < m->L; l++)
        layout_block_acts(m, &f->blocks[l], m->blocks[l].place, shared ? &one_set : NULL, arena, B, T);
    if (m->has_final_norm) take_norm_site(arena, &f->lnf_out, &f->lnf_stats, N, S);
    f->logits = arena_take(arena, N * m->V);
}

// The model's activations: the forward's for (maxB, seqT) unless maxB is 0, the backward's scratch
// with `backward`, and what every build needs (RoPE tables, BHyT's scratch).
static void layout_acts(GPT *m, Arena *arena, int shared, int backward) {
    size_t B = m->maxB, T = m->seqT, C = m->C, S = m->S, N = B * T;
    size_t QKV = (size_t)(m->H + 2 * m->Hkv) * m->hs, FC = m->swiglu ? 2 * (size_t)m->F : (size_t)m->F;
    int any_bhyt = 0;
    if (N) {
        gpt_layout_forward(m, &m->fwd, arena, (int)B, (int)T, shared);
        m->losses = arena_take(arena, N);
    }
    for (int l = 0; l < m->L; l++) any_bhyt |= m->blocks[l].place->shared_stat;
    if (m->rope) {
        m->rope_cos = arena_take(arena, (size_t)m->maxT * m->hs / 2);
        m->rope_sin = arena_take(arena, (size_t)m->maxT * m->hs / 2);
    }
    if (backward) {
        m->dres = arena_take(arena, N * S);
        m->dres_alt = arena_take(arena, N * S);
        m->dC = arena_take(arena, N * C);
        m->dqkv = arena_take(arena, N * QKV);
        m->dqkv_raw = arena_take(arena, N * QKV);
        m->dfch = arena_take(arena, N * FC);
        m->dfch_act = arena_take(arena, N * m->F);
        m->dmean_sq = arena_take(arena, N);
        m->att_scratch = arena_take(arena, (size_t)omp_get_max_threads() * T * T);
    }
    m->bhyt_scratch = any_bhyt ? arena_take(arena, S * S) : NULL;
}

// The shapes of cfg's model, its parameters counted (nothing allocated but the per-block tables).
static void shape(GPT *m, const Config *cfg, int B, int T, int shared) {
    memset(m, 0, sizeof *m);
    m->V = (int)cfg->vocab_size;
    m->maxT = (int)cfg->block_size;
    m->L = (int)cfg->n_layer;
    m->H = (int)cfg->n_head;
    m->Hkv = cfg->n_kv_head ? (int)cfg->n_kv_head : m->H;
    m->C = (int)cfg->n_embd;
    m->hs = m->C / m->H;
    m->S = NORM_OPS[cfg->blocks[0].norm].compresses_stream ? m->C - 1 : m->C;  // config: all blocks or none
    m->swiglu = name_is(cfg->ffn, "swiglu");
    // SwiGLU's default keeps the parameter count of a 4x GELU MLP: 8/3 C, rounded up to a multiple of 32.
    m->F = cfg->ffn_hidden ? (int)cfg->ffn_hidden : m->swiglu ? (8 * m->C / 3 + 31) / 32 * 32 : 4 * m->C;
    m->rope = name_is(cfg->pos, "rope");
    m->center_stream = cfg->center_stream;
    m->recompute = shared;
    m->bhyt_kappa = (real)cfg->bhyt_kappa;
    m->skip_block = -1;
    m->maxB = B;
    m->seqT = T;
    m->blocks = xcalloc(m->L, sizeof(Block));
    m->fwd.blocks = xcalloc(m->L, sizeof(BlockActs));
    layout_params(m, cfg);  // count
}

// The shapes and parameters of cfg's model, gradients with `grads`, and activations as layout_acts says.
static void build(GPT *m, const Config *cfg, int B, int T, int grads, int shared) {
    shape(m, cfg, B, T, shared);
    m->params = xcalloc(m->n_params, sizeof(real));
    if (grads) m->grads = xcalloc(m->n_params, sizeof(real));
    m->tensors = xcalloc(m->n_tensors, sizeof(ParamTensor));
    layout_params(m, cfg);  // assign
    Arena arena = {0};
    layout_acts(m, &arena, shared, grads);
    m->n_acts = arena.used;
    m->act_memory = arena.base = xcalloc(arena.used, sizeof(real));
    arena.used = 0;
    layout_acts(m, &arena, shared, grads);
    if (m->rope) rope_tables(m->rope_cos, m->rope_sin, m->maxT, m->hs, cfg->rope_theta);
}

void gpt_sizes(const Config *cfg, size_t *n_params, size_t *n_acts) {
    GPT m;
    shape(&m, cfg, (int)cfg->batch_size, (int)cfg->seq_len, cfg->recompute);
    Arena arena = {0};
    layout_acts(&m, &arena, cfg->recompute, 1);
    *n_params = m.n_params;
    *n_acts = arena.used;
    free(m.blocks);
    free(m.fwd.blocks);
}

void gpt_build(GPT *m, const Config *cfg) {
    build(m, cfg, (int)cfg->batch_size, (int)cfg->seq_len, 1, cfg->recompute);
}

void gpt_build_inference(GPT *m, const Config *cfg, int B, int T) { build(m, cfg, B, T, 0, 1); }

void gpt_free(GPT *m) {
    free(m->params);
    free(m->grads);
    free(m->tensors);
    free(m->blocks);
    free(m->fwd.blocks);
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

void gpt_zero_grad(GPT *m) {
    if (!m->grads) die(1, "internal: zeroing the gradients of a model built for inference");
    memset(m->grads, 0, m->n_params * sizeof(real));
}

int gpt_has_bhyt(const GPT *m) { return m->bhyt_scratch != NULL; }

// c = ||W_V W_O||_F^2 / (T d) with the value heads repeated to match the query heads (GQA):
// W_O W_V = sum over query heads h of W_O[:, h] W_V[kv(h)], one S x S product per refresh.
void gpt_refresh_bhyt(GPT *m) {
    int S = m->S, hs = m->hs, group = m->H / m->Hkv;
    for (int l = 0; l < m->L; l++) {
        Block *b = &m->blocks[l];
        if (!b->place->shared_stat) continue;
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

static const real *block_input(const ForwardActs *f, int l) { return l == 0 ? f->encoded : f->blocks[l - 1].out; }

const real *gpt_block_input(const GPT *m, int l) { return block_input(&m->fwd, l); }

static real bhyt_correction(const Block *b, real kappa) {
    real lambda1 = b->n1.scale[0];  // a stop-gradient copy: C = c * sg(lambda1)^2 / kappa^2
    return *b->bhyt_c * lambda1 * lambda1 / (kappa * kappa);
}

real gpt_bhyt_correction(const GPT *m, int l) { return bhyt_correction(&m->blocks[l], m->bhyt_kappa); }

// A kernel of `work` multiply-adds in cached mode: on all the attention's threads when big enough.
static int widen(const Attention *at, double work) {
    int wide = at->mode == ATTN_CACHED && work >= DECODE_PARALLEL_WORK;
    if (wide) set_threads(at->threads);
    return wide;
}

static void narrow(int wide) {
    if (wide) set_threads(1);
}

// out (N,OC) = inp (N,IC) @ lin^T (+ residual).
static void linear_forward(const Attention *at, real *out, const real *residual, const real *inp, const Linear *lin,
                           int N, int IC, int OC) {
    int wide = widen(at, (double)N * IC * OC);
    matmul_forward(out, residual, inp, lin->w, lin->b, N, IC, OC);
    narrow(wide);
}

// atty (N,C) from qkv (N,QKV) of B sequences: causal over their T positions, or (cached) the one new
// position of each against block l's cache, after appending its key and value there.
static void attend(const GPT *m, int l, BlockActs *a, int B, int T, const Attention *at) {
    if (at->mode == ATTN_FULL) {
        attention_forward(a->atty, a->att, a->qkv, B, T, m->H, m->Hkv, m->hs);
        return;
    }
    int hs = m->hs, width = (m->H + 2 * m->Hkv) * hs;
    size_t layer = (size_t)l * B * m->Hkv * at->capacity * hs;
    real *k_cache = at->k_cache + layer, *v_cache = at->v_cache + layer;
    for (int b = 0; b < B; b++) {
        const real *row = a->qkv + (size_t)b * width;
        for (int kvh = 0; kvh < m->Hkv; kvh++) {
            size_t dst = (((size_t)b * m->Hkv + kvh) * at->capacity + at->pos) * hs;
            memcpy(k_cache + dst, row + (size_t)(m->H + kvh) * hs, hs * sizeof(real));
            memcpy(v_cache + dst, row + (size_t)(m->H + m->Hkv + kvh) * hs, hs * sizeof(real));
        }
    }
    int wide = widen(at, 2.0 * B * m->H * (at->pos + 1) * hs);
    attention_decode_forward(a->atty, at->scores, a->qkv, k_cache, v_cache, B, at->pos + 1, at->capacity, m->H,
                             m->Hkv, hs);
    narrow(wide);
}

// Block l of the model on (B,T) tokens, from block_input(f, l) into f->blocks[l]; every placement's
// wiring is read from its PLACEMENTS row.
static void block_forward(const GPT *m, ForwardActs *f, int l, int B, int T, const Attention *at) {
    const Block *b = &m->blocks[l];
    const PlacementSpec *p = b->place;
    BlockActs *a = &f->blocks[l];
    int N = B * T, C = m->C, S = m->S, QKV = (m->H + 2 * m->Hkv) * m->hs;
    int FC = m->swiglu ? 2 * m->F : m->F;
    int pos0 = at->mode == ATTN_CACHED ? at->pos : 0;  // the position of the first of the T tokens
    double n = N;  // FLOP counts in double: N * S * FC overflows int at paper scale
    const real *x = block_input(f, l);
    // attention sublayer
    const real *attn_in = x;
    if (p->attn_in_norm) {
        TIMED("norm (fwd)", 0, norm_forward(&b->n1, a->n1, a->n1_stats, x, N, S));
        attn_in = a->n1;
    }
    TIMED("matmul qkv (fwd)", 2 * n * S * QKV, linear_forward(at, a->qkv_raw, NULL, attn_in, &b->qkv, N, S, QKV));
    if (p->qkv_norm)
        TIMED("qkv-norm (fwd)", 0, qkvnorm_forward(a->qkv, a->qkv_stats, a->qkv_raw, b->gq, b->gk, b->gv, b->qkv_eps,
                                                   N, m->H, m->Hkv, m->hs));
    if (m->rope) {
        size_t from = (size_t)pos0 * (m->hs / 2);
        TIMED("rope (fwd)", 0, rope_forward(a->qkv, m->rope_cos + from, m->rope_sin + from, B, T, m->H, m->Hkv, m->hs));
    }
    TIMED("attention (fwd)", 4 * n * T * C, attend(m, l, a, B, T, at));
    TIMED("matmul attn.proj (fwd)", 2 * n * C * S, linear_forward(at, a->res_attn, x, a->atty, &b->attn_proj, N, C, S));
    if (m->center_stream) TIMED("center stream", 0, center_rows(a->res_attn, N, S));
    if (p->attn_post_norm) TIMED("norm (fwd)", 0, norm_forward(&b->n1, a->h, a->h_stats, a->res_attn, N, S));
    // FFN sublayer
    const real *ffn_in = a->h;
    if (p->ffn_in_norm) {
        if (p->shared_stat)
            TIMED("norm (fwd)", 0, bhyt_shared_forward(a->n2, a->n2_stats, a->h, a->n1_stats,
                                                       bhyt_correction(b, m->bhyt_kappa), b->n2.scale, b->n2.weight,
                                                       m->bhyt_kappa, b->n2.eps, N, S));
        else
            TIMED("norm (fwd)", 0, norm_forward(&b->n2, a->n2, a->n2_stats, a->h, N, S));
        ffn_in = a->n2;
    }
    TIMED("matmul fc (fwd)", 2 * n * S * FC, linear_forward(at, a->fch, NULL, ffn_in, &b->fc, N, S, FC));
    if (m->swiglu) TIMED("swiglu (fwd)", 0, swiglu_forward(a->fch_act, a->fch, N, m->F));
    else TIMED("gelu (fwd)", 0, gelu_forward(a->fch_act, a->fch, (size_t)N * m->F));
    const real *ffn_base = p->ffn_from_norm ? ffn_in : a->h;
    TIMED("matmul fc.proj (fwd)", 2 * n * m->F * S,
          linear_forward(at, a->res_ffn, ffn_base, a->fch_act, &b->fc_proj, N, m->F, S));
    if (m->center_stream) TIMED("center stream", 0, center_rows(a->res_ffn, N, S));
    if (p->ffn_post_norm) TIMED("norm (fwd)", 0, norm_forward(&b->n2, a->out, a->out_stats, a->res_ffn, N, S));
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
    const PlacementSpec *p = b->place;
    const BlockActs *a = &m->fwd.blocks[l];
    int N = B * T, C = m->C, S = m->S, QKV = (m->H + 2 * m->Hkv) * m->hs;
    int FC = m->swiglu ? 2 * m->F : m->F;
    size_t NS = (size_t)N * S;
    double n = N;
    const real *x = block_input(&m->fwd, l);
    // FFN sublayer: m->dres = dL/d out -> dL/d h
    if (p->ffn_post_norm) TIMED("norm (bwd)", 0, through_post_norm(m, &b->n2, a->res_ffn, a->out_stats, N));
    if (m->center_stream) TIMED("center stream", 0, center_rows(m->dres, N, S));
    const real *ffn_in = p->ffn_in_norm ? a->n2 : a->h;
    TIMED("matmul fc.proj (bwd)", 4 * n * m->F * S,
          matmul_backward(m->dfch_act, b->fc_proj.dw, b->fc_proj.db, m->dres, a->fch_act, b->fc_proj.w, N, m->F, S));
    if (m->swiglu) TIMED("swiglu (bwd)", 0, swiglu_backward(m->dfch, m->dfch_act, a->fch, N, m->F));
    else TIMED("gelu (bwd)", 0, gelu_backward(m->dfch, a->fch, m->dfch_act, (size_t)N * m->F));
    TIMED("matmul fc (bwd)", 4 * n * S * FC,
          matmul_backward(m->dC, b->fc.dw, b->fc.db, m->dfch, ffn_in, b->fc.w, N, S, FC));
    if (p->ffn_from_norm) {  // the residual carried N2(h): its gradient joins the FFN's, then crosses N2
        add_into(m->dC, m->dres, NS);
        memset(m->dres, 0, NS * sizeof(real));
    }
    if (!p->ffn_in_norm) add_into(m->dres, m->dC, NS);
    else if (p->shared_stat)
        TIMED("norm (bwd)", 0, bhyt_shared_backward(m->dres, m->dmean_sq, b->n2.dscale, b->n2.dweight, m->dC, a->h,
                                                    a->n2_stats, b->n2.scale, b->n2.weight, m->bhyt_kappa, N, S));
    else TIMED("norm (bwd)", 0, norm_backward(&b->n2, m->dres, m->dC, a->h, a->n2_stats, N, S));
    // attention sublayer: m->dres = dL/d h -> dL/d x
    if (p->attn_post_norm) TIMED("norm (bwd)", 0, through_post_norm(m, &b->n1, a->res_attn, a->h_stats, N));
    if (m->center_stream) TIMED("center stream", 0, center_rows(m->dres, N, S));
    TIMED("matmul attn.proj (bwd)", 4 * n * C * S,
          matmul_backward(m->dC, b->attn_proj.dw, b->attn_proj.db, m->dres, a->atty, b->attn_proj.w, N, C, S));
    TIMED("attention (bwd)", 8 * n * T * C,
          attention_backward(m->dqkv, m->att_scratch, m->dC, a->qkv, a->att, B, T, m->H, m->Hkv, m->hs));
    if (m->rope) TIMED("rope (bwd)", 0, rope_backward(m->dqkv, m->rope_cos, m->rope_sin, B, T, m->H, m->Hkv, m->hs));
    const real *dqkv = m->dqkv;
    if (p->qkv_norm) {
        TIMED("qkv-norm (bwd)", 0, qkvnorm_backward(m->dqkv_raw, b->dgq, b->dgk, b->dgv, m->dqkv, a->qkv_raw,
                                                    a->qkv_stats, b->gq, b->gk, b->gv, N, m->H, m->Hkv, m->hs));
        dqkv = m->dqkv_raw;
    }
    const real *attn_in = p->attn_in_norm ? a->n1 : x;
    TIMED("matmul qkv (bwd)", 4 * n * S * QKV,
          matmul_backward(m->dC, b->qkv.dw, b->qkv.db, dqkv, attn_in, b->qkv.w, N, S, QKV));
    if (!p->attn_in_norm) { add_into(m->dres, m->dC, NS); return; }
    TIMED("norm (bwd)", 0, norm_backward(&b->n1, m->dres, m->dC, x, a->n1_stats, N, S));
    if (p->shared_stat) TIMED("norm (bwd)", 0, mean_square_backward(m->dres, m->dmean_sq, x, N, S));
}

// ---------------------------------------------------------------------------------------------
// The whole model.

// f->encoded (N,S) = [embed_scale *] wte[inputs] + wpe[pos0 + t] for the T positions of B sequences.
static void embed_forward(const GPT *m, ForwardActs *f, const int *inputs, int B, int T, int pos0) {
    const real *wpe = m->wpe ? m->wpe + (size_t)pos0 * m->S : NULL;
    if (!m->embed_scale) { encoder_forward(f->encoded, inputs, m->wte, wpe, B, T, m->S); return; }
    encoder_forward(f->emb, inputs, m->wte, NULL, B, T, m->S);
    real s = m->embed_scale[0];
    #pragma omp parallel for
    for (int n = 0; n < B * T; n++)
        for (int c = 0; c < m->S; c++)
            f->encoded[(size_t)n * m->S + c] = s * f->emb[(size_t)n * m->S + c] +
                                                (wpe ? wpe[(size_t)(n % T) * m->S + c] : 0);
}

// Consumes m->dres = dL/d encoded.
static void embed_backward(GPT *m, const int *inputs, int B, int T) {
    if (!m->embed_scale) { encoder_backward(m->dwte, m->dwpe, m->dres, inputs, B, T, m->S); return; }
    size_t n = (size_t)B * T * m->S;
    if (m->dwpe) encoder_backward(NULL, m->dwpe, m->dres, inputs, B, T, m->S);
    m->dembed_scale[0] += (real)dot_product(m->dres, m->fwd.emb, n);
    real s = m->embed_scale[0];
    #pragma omp parallel for
    for (size_t i = 0; i < n; i++) m->dres[i] *= s;
    encoder_backward(m->dwte, NULL, m->dres, inputs, B, T, m->S);
}

void gpt_forward_pass(const GPT *m, ForwardActs *f, const int *inputs, int B, int T, const Attention *at) {
    int N = B * T, S = m->S;
    TIMED("embedding (fwd)", 0, embed_forward(m, f, inputs, B, T, at->mode == ATTN_CACHED ? at->pos : 0));
    if (m->center_stream) TIMED("center stream", 0, center_rows(f->encoded, N, S));
    for (int l = 0; l < m->L; l++) {
        if (l == m->skip_block) memcpy(f->blocks[l].out, block_input(f, l), (size_t)N * S * sizeof(real));
        else block_forward(m, f, l, B, T, at);
    }
    const real *head_in = block_input(f, m->L);
    if (m->has_final_norm) {
        TIMED("norm (fwd)", 0, norm_forward(&m->lnf, f->lnf_out, f->lnf_stats, head_in, N, S));
        head_in = f->lnf_out;
    }
    TIMED("matmul lm_head (fwd)", 2.0 * N * S * m->V,
          linear_forward(at, f->logits, NULL, head_in, &m->lm_head, N, S, m->V));
}

static const Attention FULL_ATTENTION = {.mode = ATTN_FULL};

double gpt_forward(GPT *m, const int *inputs, const int *targets, int B, int T) {
    int N = B * T;
    if (B > m->maxB || T > m->seqT)
        die(1, "internal: forward of (%d,%d) exceeds buffers (%d,%d)", B, T, m->maxB, m->seqT);
    gpt_forward_pass(m, &m->fwd, inputs, B, T, &FULL_ATTENTION);
    if (!targets) return 0;
    TIMED("softmax + loss (fwd)", 0, crossentropy_forward(m->losses, m->fwd.logits, targets, N, m->V));
    double sum = 0;
    for (int n = 0; n < N; n++) sum += m->losses[n];
    return sum / N;
}

void gpt_backward(GPT *m, const int *inputs, const int *targets, int B, int T, real dloss_scale) {
    int N = B * T, S = m->S;
    if (!m->grads) die(1, "internal: backward of a model built for inference");
    const real *top = gpt_block_input(m, m->L);
    TIMED("matmul lm_head + loss (bwd)", 4.0 * N * S * m->V,
          classifier_backward(m->dC, m->lm_head.dw, m->lm_head.db, m->fwd.logits,
                              m->has_final_norm ? m->fwd.lnf_out : top,
                              m->lm_head.w, targets, dloss_scale, N, S, m->V));
    if (m->has_final_norm) {
        memset(m->dres, 0, (size_t)N * S * sizeof(real));
        TIMED("norm (bwd)", 0, norm_backward(&m->lnf, m->dres, m->dC, top, m->fwd.lnf_stats, N, S));
    } else {
        memcpy(m->dres, m->dC, (size_t)N * S * sizeof(real));
    }
    for (int l = m->L - 1; l >= 0; l--) {
        // The shared activations still hold the last block's forward; refill them for the others.
        if (m->recompute && l < m->L - 1) block_forward(m, &m->fwd, l, B, T, &FULL_ATTENTION);
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
    if (!all_finite(m->fwd.encoded, NS)) { snprintf(out, size, "the embeddings (activations)"); return; }
    for (int l = 0; l < m->L; l++)
        if (!all_finite(m->fwd.blocks[l].out, NS)) { snprintf(out, size, "block %d (activations)", l); return; }
    for (int l = 0; l < m->L; l++) {
        for (int i = m->blocks[l].tensor_begin; i < m->blocks[l].tensor_end; i++) {
            const ParamTensor *t = &m->tensors[i];
            if (!all_finite(m->grads + t->offset, t->size)) {
                snprintf(out, size, "block %d (gradient of %s)", l, t->name);
                return;
            }
        }
    }
    snprintf(out, size, "the final norm, LM head or embeddings (no block output or block gradient is non-finite)");
}

double gpt_flops_per_token(const GPT *m, int T) {
    double matmul_params = (double)m->V * m->S;  // the LM head
    for (int l = 0; l < m->L; l++) {
        for (int i = m->blocks[l].tensor_begin; i < m->blocks[l].tensor_end; i++)
            if (m->tensors[i].cols > 1) matmul_params += (double)m->tensors[i].size;
    }
    return 6.0 * matmul_params + 12.0 * m->L * m->C * T;  // attention: QK^T and AV, fwd + bwd
}

void gpt_print_blocks(const GPT *m, FILE *out) {
    fprintf(out, "blocks (stream width %d):\n", m->S);
    for (int l = 0; l < m->L; l++) {
        const Block *b = &m->blocks[l];
        const PlacementSpec *p = b->place;
        const Norm *nm = (p->attn_in_norm || p->attn_post_norm) ? &b->n1 : &b->n2;
        fprintf(out, "  %3d  %-11s %-9s  attn: %s%s%s  ffn: %s%s%s\n", l, p->name, NORM_OPS[nm->kind].name,
                p->attn_in_norm ? "norm before" : p->attn_post_norm ? "norm after residual" : "no norm",
                p->qkv_norm ? ", qkv-norm" : "", m->rope ? ", rope" : "",
                p->shared_stat ? "bhyt approx. (block statistic)" : p->ffn_in_norm ? "norm before" :
                p->ffn_post_norm ? "norm after residual" : "no norm",
                p->ffn_from_norm ? ", residual from norm" : "", m->swiglu ? ", swiglu" : ", gelu");
    }
    fprintf(out, "  final norm: %s\n", m->has_final_norm ? NORM_OPS[m->lnf.kind].name : "none");
}
