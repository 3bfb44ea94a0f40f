#include "model.h"
#include "kernels.h"
#include "mixed.h"
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
    if (m->tensors) {
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
        *p = m->params ? m->params + m->n_params : NULL;  // NULL in a plan (gpt_plan)
        *g = m->grads ? m->grads + m->n_params : NULL;
    }
    m->n_tensors++;
    m->n_params += size;
}

static const char *tname(char *buf, const char *prefix, const char *suffix) {
    snprintf(buf, 64, "%.40s%.23s", prefix, suffix);
    return buf;
}

// The double key of cfg at byte offset `offset` (a NORM_OPS init column).
static double config_double(const Config *cfg, size_t offset) { return *(const double *)((const char *)cfg + offset); }

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
        double init = config_double(cfg, op->scale_init[site]);
        if (init == 0 && op->scale_unset) init = config_double(cfg, op->scale_unset);
        param(m, &nm->scale, &nm->dscale, 1, 1, 0, INIT_CONST, init, tname(buf, prefix, ".scale"));
    }
    if (op->has_shift)
        param(m, &nm->shift, &nm->dshift, 1, 1, 0, INIT_CONST, config_double(cfg, op->shift_init),
              tname(buf, prefix, ".shift"));
    if (op->has_weight)
        param(m, &nm->weight, &nm->dweight, width, 1, 0, INIT_CONST, 1.0, tname(buf, prefix, ".weight"));
    int bias = op->bias == BIAS_ALWAYS ||
               (cfg->bias && (op->bias == BIAS_WITH_MODEL_BIAS ||
                              (op->bias == BIAS_ON_CENTERED_STREAM && m->center_stream)));
    if (bias) param(m, &nm->bias, &nm->dbias, width, 1, 0, INIT_ZEROS, 0, tname(buf, prefix, ".bias"));
}

static void linear_params(GPT *m, Linear *lin, int out, int in, int bias, InitKind init, double std,
                          const char *prefix) {
    char buf[64];
    lin->b = lin->db = NULL;
    param(m, &lin->w, &lin->dw, out, in, 1, init, std, tname(buf, prefix, ".weight"));
    if (bias) param(m, &lin->b, &lin->db, out, 1, 0, INIT_ZEROS, 0, tname(buf, prefix, ".bias"));
}

// A block matrix (out, in): N(0, std^2) as model.init says, or with `slices` > 0 DeepNorm's
// Xavier-normal init per slice of rows[i] output rows, std = gain[i] * sqrt(2 / (in + rows[i])).
static void block_linear(GPT *m, Linear *lin, int out, int in, int bias, InitKind init, double std, int slices,
                         const int rows[], const double gain[], const char *prefix) {
    int t = m->n_tensors;
    linear_params(m, lin, out, in, bias, slices ? INIT_SLICED_NORMAL : init, std, prefix);
    if (!m->params || !slices) return;
    for (int i = 0; i < slices; i++) {
        m->tensors[t].slice_rows[i] = rows[i];
        m->tensors[t].slice_std[i] = gain[i] * sqrt(2.0 / (in + rows[i]));
    }
}

// LayerNorm Scaling: every residual-width norm of block l (N1, N2 and Peri-LN's output norms; not
// the per-head q/k/v norms) scales its output by 1/sqrt(l + 1), l + 1 the 1-based block index.
static void set_lns(Block *b, int l) {
    const PlacementSpec *p = b->place;
    real s = (real)(1 / sqrt(l + 1.0));
    if (p->attn_in_norm || p->attn_post_norm) b->n1.lns_scale = s;
    if (p->ffn_in_norm || p->ffn_post_norm) b->n2.lns_scale = s;
    if (p->attn_out_norm) b->n1o.lns_scale = s;
    if (p->ffn_out_norm) b->n2o.lns_scale = s;
}

static void layout_params(GPT *m, const Config *cfg) {
    int S = m->S, C = m->C, QKV = (m->H + 2 * m->Hkv) * m->hs, bias = cfg->bias;
    double std = cfg->init_std;
    int mixln = name_is(cfg->init, "mixln"), scaled = name_is(cfg->init, "gpt2") || name_is(cfg->init, "megatron");
    InitKind weights = name_is(cfg->init, "megatron") ? INIT_TRUNC_NORMAL : INIT_NORMAL;
    // Residual writers scaled by 1/sqrt(2L); LNS replaces that by the plain init unless lns_scaled_init.
    double writer_std = scaled && (!cfg->lns || cfg->lns_scaled_init) ? std / sqrt(2.0 * m->L) : std;
    double wte_std = mixln ? sqrt(2.0 / 5.0) : std;             // Mix-LN's released embedding init
    char prefix[64], buf[64];
    m->n_params = 0;
    m->n_tensors = 0;
    param(m, &m->wte, &m->dwte, m->V, S, 1, weights, wte_std, "wte");
    if (!m->rope) param(m, &m->wpe, &m->dwpe, m->maxT, S, 1, weights, std, "wpe");
    if (cfg->embed_scale)
        param(m, &m->embed_scale, &m->dembed_scale, 1, 1, 0, INIT_CONST, sqrt((double)S), "embed_scale");
    m->has_embed_norm = cfg->embed_norm;
    if (cfg->embed_norm) norm_params(m, &m->embed_norm, norm_by_name(cfg->norm), NORM_SITE_FINAL, cfg, "embed_norm", S);
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
        b->qkn = (QkNorm){.on = cfg->blocks[l].qk_norm, .full = name_is(cfg->qk_norm_mode, "full"),
                          .eps = (real)cfg->qk_norm_eps};
        if (b->qkn.on && cfg->qk_norm_affine) {
            int full = b->qkn.full, hs = m->hs;
            param(m, &b->qkn.gq, &b->qkn.dgq, full ? m->H * hs : hs, 1, 0, INIT_CONST, 1.0,
                  tname(buf, prefix, ".attn.qknorm_q.weight"));
            param(m, &b->qkn.gk, &b->qkn.dgk, full ? m->Hkv * hs : hs, 1, 0, INIT_CONST, 1.0,
                  tname(buf, prefix, ".attn.qknorm_k.weight"));
        }
        // DeepNorm: gain 1 for Q and K, beta for V, the output projection and both FFN matrices
        // (each half of a SwiGLU fc a slice of its own).
        int xavier = place->xavier_init, Hq = m->H * m->hs, Hk = m->Hkv * m->hs, F = m->F;
        double beta = m->deepnorm_beta, qkv_gain[] = {1, 1, beta}, gain[] = {beta, beta};
        block_linear(m, &b->qkv, QKV, S, bias, weights, std, xavier ? 3 : 0, (int[]){Hq, Hk, Hk}, qkv_gain,
                     tname(buf, prefix, ".attn.qkv"));
        block_linear(m, &b->attn_proj, S, C, bias, weights, writer_std, xavier, (int[]){S}, gain,
                     tname(buf, prefix, ".attn.proj"));
        if (place->attn_out_norm)
            norm_params(m, &b->n1o, kind, NORM_SITE_ATTN, cfg, tname(buf, prefix, ".norm1_out"), S);
        if (place->ffn_in_norm || place->ffn_post_norm)
            norm_params(m, &b->n2, kind, NORM_SITE_FFN, cfg, tname(buf, prefix, ".norm2"), S);
        block_linear(m, &b->fc, m->swiglu ? 2 * F : F, S, bias, weights, std, xavier ? 1 + m->swiglu : 0,
                     (int[]){F, F}, gain, tname(buf, prefix, ".mlp.fc"));
        block_linear(m, &b->fc_proj, S, F, bias, weights, writer_std, xavier, (int[]){S}, gain,
                     tname(buf, prefix, ".mlp.proj"));
        if (place->ffn_out_norm)
            norm_params(m, &b->n2o, kind, NORM_SITE_FFN, cfg, tname(buf, prefix, ".norm2_out"), S);
        if (cfg->lns) set_lns(b, l);
        if (place->shared_stat) {
            real *unused;
            param(m, &b->bhyt_c, &unused, 1, 1, 0, INIT_ZEROS, 0, tname(buf, prefix, ".bhyt_c"));
            if (m->tensors) m->tensors[m->n_tensors - 1].trainable = 0;
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
static const PlacementSpec ALL_SITES = {.attn_in_norm = 1, .qkv_norm = 1, .attn_post_norm = 1, .attn_out_norm = 1,
                                        .ffn_in_norm = 1, .ffn_post_norm = 1, .ffn_out_norm = 1};

// A norm's output (N,S) and statistics.
static void take_norm_site(Arena *arena, real **out, real **stats, size_t N, size_t S) {
    *out = arena_take(arena, N * S);
    *stats = arena_take(arena, N * NORM_STATS_PER_ROW);
}

// One block's saved tensors for N = B*T tokens, for placement p, with QK-norm if `qk`. With `shared`
// every tensor but the block's own output points into `shared`, one set sized for any block, which the
// backward refills block by block.
static void layout_block_acts(const GPT *m, BlockActs *a, const PlacementSpec *p, int qk, const BlockActs *shared,
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
            a->qkv_normed = arena_take(arena, N * QKV);
            a->qkv_stats = arena_take(arena, N * (m->H + 2 * m->Hkv));
        }
        if (qk) {
            a->qkv = arena_take(arena, N * QKV);
            a->qk_stats = arena_take(arena, N * QKNORM_STATS_PER_TOKEN(m->H, m->Hkv));
        }
        a->att = arena_take(arena, (size_t)B * m->H * T * T);
        a->atty = arena_take(arena, N * C);
        a->res_attn = arena_take(arena, N * S);
        if (p->attn_out_norm) take_norm_site(arena, &a->attn_out, &a->attn_out_stats, N, S);
        if (p->attn_post_norm) take_norm_site(arena, &a->h, &a->h_stats, N, S);
        else if (p->attn_out_norm) a->h = arena_take(arena, N * S);
        if (p->ffn_in_norm) take_norm_site(arena, &a->n2, &a->n2_stats, N, S);
        a->fch = arena_take(arena, N * FC);
        a->fch_act = arena_take(arena, N * m->F);
        a->res_ffn = arena_take(arena, N * S);
        if (p->ffn_out_norm) take_norm_site(arena, &a->ffn_out, &a->ffn_out_stats, N, S);
        if (p->ffn_post_norm) take_norm_site(arena, &a->out, &a->out_stats, N, S);
        else if (p->ffn_out_norm) a->out = arena_take(arena, N * S);
    }
    // What the placement lacks aliases what takes its place.
    if (!p->qkv_norm) a->qkv_normed = a->qkv_raw;
    if (!qk) a->qkv = a->qkv_normed;
    if (!p->attn_post_norm && !p->attn_out_norm) a->h = a->res_attn;
    if (!p->ffn_post_norm && !p->ffn_out_norm) {
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
    if (m->has_embed_norm) take_norm_site(arena, &f->embed_in, &f->embed_stats, N, S);
    f->encoded = arena_take(arena, N * S);
    BlockActs one_set;
    int any_qk = 0;
    for (int l = 0; l < m->L; l++) any_qk |= m->blocks[l].qkn.on;
    if (shared) layout_block_acts(m, &one_set, &ALL_SITES, any_qk, NULL, arena, B, T);
    for (int l = 0; l < m->L; l++)
        layout_block_acts(m, &f->blocks[l], m->blocks[l].place, m->blocks[l].qkn.on, shared ? &one_set : NULL, arena,
                          B, T);
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
        // per thread one (T,T) square; bf16 runs attention's products batched: (B,H,T,T)
        m->att_scratch = arena_take(arena, m->bf16 ? B * m->H * T * T : (size_t)omp_get_max_threads() * T * T);
    }
    m->bhyt_scratch = any_bhyt ? arena_take(arena, S * S) : NULL;
    m->lns_scratch = m->lns ? arena_take(arena, 4 * S) : NULL;
}

// The shapes and parameters of cfg's model, gradients with `grads`, and activations as layout_acts says;
// without `allocate`, the shapes and sizes only.
static void build(GPT *m, const Config *cfg, int B, int T, int grads, int shared, int allocate) {
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
    m->deepnorm_alpha = (real)(cfg->deepnorm_alpha > 0 ? cfg->deepnorm_alpha : pow(2.0 * m->L, 0.25));
    m->deepnorm_beta = (real)(cfg->deepnorm_beta > 0 ? cfg->deepnorm_beta : pow(8.0 * m->L, -0.25));
    m->lns = cfg->lns;
    m->maxB = B;
    m->seqT = T;
    m->bf16 = grads && name_is(cfg->precision, "bf16");  // inference (decoding, the probe) stays fp32
    m->blocks = xcalloc(m->L, sizeof(Block));
    m->fwd.blocks = xcalloc(m->L, sizeof(BlockActs));
    layout_params(m, cfg);  // count
    if (allocate) m->params = xcalloc(m->n_params, sizeof(real));
    if (allocate && grads) m->grads = xcalloc(m->n_params, sizeof(real));
    m->tensors = xcalloc(m->n_tensors, sizeof(ParamTensor));
    layout_params(m, cfg);  // assign
    Arena arena = {0};
    layout_acts(m, &arena, shared, grads);
    m->n_acts = arena.used;
    if (!allocate) {
        m->n_bf16 = m->bf16 ? mixed_count(m) : 0;
        return;
    }
    m->act_memory = arena.base = xcalloc(arena.used, sizeof(real));
    arena.used = 0;
    layout_acts(m, &arena, shared, grads);
    for (int l = 0; l < m->L && m->lns; l++) {
        Block *b = &m->blocks[l];
        b->n1.lns_scratch = b->n2.lns_scratch = b->n1o.lns_scratch = b->n2o.lns_scratch = m->lns_scratch;
    }
    if (m->rope) rope_tables(m->rope_cos, m->rope_sin, m->maxT, m->hs, cfg->rope_theta);
    if (m->bf16) mixed_build(m);
}

void gpt_build(GPT *m, const Config *cfg) {
    build(m, cfg, (int)cfg->batch_size, (int)cfg->seq_len, 1, cfg->recompute, 1);
}

void gpt_plan(GPT *m, const Config *cfg) {
    build(m, cfg, (int)cfg->batch_size, (int)cfg->seq_len, 1, cfg->recompute, 0);
}

void gpt_build_inference(GPT *m, const Config *cfg, int B, int T) { build(m, cfg, B, T, 0, 1, 1); }

void gpt_free(GPT *m) {
    free(m->params);
    free(m->grads);
    free(m->tensors);
    free(m->blocks);
    free(m->fwd.blocks);
    free(m->act_memory);
    if (m->bf16) mixed_free(m);
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
            case INIT_SLICED_NORMAL: {
                size_t row = j / t->cols, end = 0;
                int i = 0;
                while (i < MAX_INIT_SLICES - 1 && row >= (end += t->slice_rows[i])) i++;
                z = t->slice_std[i] * rng_normal(&r);
                break;
            }
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

void gpt_weights_changed(GPT *m) { m->bf16_stale = 1; }

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

// The model's products, one function per kind: fp32 through BLAS (kernels.h), or with
// train.precision=bf16 through oneDNN on bf16 copies (mixed.h).

// out (N,OC) = inp (N,IC) @ lin^T (+ residual). Decoding (the samples of a bf16 run too) stays fp32.
static void linear_forward(const GPT *m, const Attention *at, real *out, const real *residual, const real *inp,
                           const Linear *lin, int N, int IC, int OC) {
    if (m->bf16 && at->mode == ATTN_FULL) { mixed_linear_forward(m, out, residual, inp, lin, N, IC, OC); return; }
    int wide = widen(at, (double)N * IC * OC);
    matmul_forward(out, residual, inp, lin->w, lin->b, N, IC, OC);
    narrow(wide);
}

// dinp (N,IC) = dout @ lin (overwritten), lin's gradients += those of dout (N,OC) for inp (N,IC).
static void linear_backward(const GPT *m, real *dinp, const Linear *lin, const real *dout, const real *inp, int N,
                            int IC, int OC) {
    if (m->bf16) mixed_linear_backward(m, dinp, lin, dout, N, IC, OC);
    else matmul_backward(dinp, lin->dw, lin->db, dout, inp, lin->w, N, IC, OC);
}

static void attention_full_backward(GPT *m, int l, const BlockActs *a, int B, int T) {
    if (m->bf16) mixed_attention_backward(m, l, m->dqkv, m->att_scratch, m->dC, a->att, B, T);
    else attention_backward(m->dqkv, m->att_scratch, m->dC, a->qkv, a->att, B, T, m->H, m->Hkv, m->hs);
}

// atty (N,C) from qkv (N,QKV) of B sequences: causal over their T positions, or (cached) the one new
// position of each against block l's cache, after appending its key and value there.
static void attend(const GPT *m, int l, BlockActs *a, int B, int T, const Attention *at) {
    if (at->mode == ATTN_FULL) {
        if (m->bf16) mixed_attention_forward(m, l, a->atty, a->att, a->qkv, B, T);
        else attention_forward(a->atty, a->att, a->qkv, B, T, m->H, m->Hkv, m->hs);
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

static void add_into(real *dst, const real *src, size_t n) {
    #pragma omp parallel for
    for (size_t i = 0; i < n; i++) dst[i] += src[i];
}

// out = alpha * x (out may be x).
static void scale_into(real *out, real alpha, const real *x, size_t n) {
    #pragma omp parallel for
    for (size_t i = 0; i < n; i++) out[i] = alpha * x[i];
}

// What a sublayer's output projection adds its result to (matmul_forward's residual): the stream
// `base` itself; DeepNorm's alpha * base, written into the projection's output `res` first; or
// nothing when the sublayer has an output norm (Peri-LN), which comes before the residual add.
static const real *residual_base(const GPT *m, const PlacementSpec *p, int out_norm, real *res, const real *base,
                                 size_t n) {
    if (out_norm) return NULL;
    if (!p->scaled_residual) return base;
    scale_into(res, m->deepnorm_alpha, base, n);
    return res;
}

// Peri-LN's residual add: y = N_out(res), the sublayer output normalized, then sum = base + y.
static void out_norm_residual(const Norm *nm, real *sum, real *y, real *y_stats, const real *base, const real *res,
                              int N, int S) {
    norm_forward(nm, y, y_stats, res, N, S);
    size_t n = (size_t)N * S;
    #pragma omp parallel for
    for (size_t i = 0; i < n; i++) sum[i] = base[i] + y[i];
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
    TIMED("matmul qkv (fwd)", 2 * n * S * QKV, linear_forward(m, at, a->qkv_raw, NULL, attn_in, &b->qkv, N, S, QKV));
    if (p->qkv_norm)
        TIMED("qkv-norm (fwd)", 0, qkvnorm_forward(a->qkv_normed, a->qkv_stats, a->qkv_raw, b->gq, b->gk, b->gv,
                                                   b->qkv_eps, N, m->H, m->Hkv, m->hs));
    if (b->qkn.on)
        TIMED("qk-norm (fwd)", 0, qknorm_forward(a->qkv, a->qk_stats, a->qkv_normed, b->qkn.gq, b->qkn.gk, b->qkn.eps,
                                                 b->qkn.full, N, m->H, m->Hkv, m->hs));
    if (m->rope) {
        size_t from = (size_t)pos0 * (m->hs / 2);
        TIMED("rope (fwd)", 0, rope_forward(a->qkv, m->rope_cos + from, m->rope_sin + from, B, T, m->H, m->Hkv, m->hs));
    }
    TIMED("attention (fwd)", 4 * n * T * C, attend(m, l, a, B, T, at));
    const real *attn_base = residual_base(m, p, p->attn_out_norm, a->res_attn, x, (size_t)N * S);
    TIMED("matmul attn.proj (fwd)", 2 * n * C * S,
          linear_forward(m, at, a->res_attn, attn_base, a->atty, &b->attn_proj, N, C, S));
    if (m->center_stream) TIMED("center stream", 0, center_rows(a->res_attn, N, S));
    if (p->attn_out_norm)
        TIMED("norm (fwd)", 0, out_norm_residual(&b->n1o, a->h, a->attn_out, a->attn_out_stats, x, a->res_attn, N, S));
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
    TIMED("matmul fc (fwd)", 2 * n * S * FC, linear_forward(m, at, a->fch, NULL, ffn_in, &b->fc, N, S, FC));
    if (m->swiglu) TIMED("swiglu (fwd)", 0, swiglu_forward(a->fch_act, a->fch, N, m->F));
    else TIMED("gelu (fwd)", 0, gelu_forward(a->fch_act, a->fch, (size_t)N * m->F));
    const real *ffn_base = p->ffn_from_norm ? ffn_in : a->h;
    const real *proj_base = residual_base(m, p, p->ffn_out_norm, a->res_ffn, ffn_base, (size_t)N * S);
    TIMED("matmul fc.proj (fwd)", 2 * n * m->F * S,
          linear_forward(m, at, a->res_ffn, proj_base, a->fch_act, &b->fc_proj, N, m->F, S));
    if (m->center_stream) TIMED("center stream", 0, center_rows(a->res_ffn, N, S));
    if (p->ffn_out_norm)
        TIMED("norm (fwd)", 0, out_norm_residual(&b->n2o, a->out, a->ffn_out, a->ffn_out_stats, ffn_base, a->res_ffn,
                                                 N, S));
    if (p->ffn_post_norm) TIMED("norm (fwd)", 0, norm_forward(&b->n2, a->out, a->out_stats, a->res_ffn, N, S));
}

// Replace m->dres (dL/d of a norm's output) by dL/d of that norm's input.
static void through_post_norm(GPT *m, const Norm *nm, const real *inp, const real *stats, int N) {
    memset(m->dres_alt, 0, (size_t)N * m->S * sizeof(real));
    norm_backward(nm, m->dres_alt, m->dres, inp, stats, N, m->S);
    real *t = m->dres; m->dres = m->dres_alt; m->dres_alt = t;
}

// Peri-LN: m->dres = dL/d(base + N_out(res)) also crosses the output norm: dL/d res, in m->dres_alt.
static const real *through_out_norm(GPT *m, const Norm *nm, const real *res, const real *stats, int N) {
    memset(m->dres_alt, 0, (size_t)N * m->S * sizeof(real));
    norm_backward(nm, m->dres_alt, m->dres, res, stats, N, m->S);
    return m->dres_alt;
}

// The residual path's gradient joins the sublayer input's (m->dC): dres = alpha * dres + dC, with
// DeepNorm's alpha, else 1.
static void join_residual(GPT *m, const PlacementSpec *p, size_t n) {
    if (p->scaled_residual) scale_into(m->dres, m->deepnorm_alpha, m->dres, n);
    add_into(m->dres, m->dC, n);
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
    const real *ffn_in = p->ffn_in_norm ? a->n2 : a->h, *dffn_out = m->dres;
    if (p->ffn_out_norm) TIMED("norm (bwd)", 0, dffn_out = through_out_norm(m, &b->n2o, a->res_ffn, a->ffn_out_stats, N));
    TIMED("matmul fc.proj (bwd)", 4 * n * m->F * S,
          linear_backward(m, m->dfch_act, &b->fc_proj, dffn_out, a->fch_act, N, m->F, S));
    if (m->swiglu) TIMED("swiglu (bwd)", 0, swiglu_backward(m->dfch, m->dfch_act, a->fch, N, m->F));
    else TIMED("gelu (bwd)", 0, gelu_backward(m->dfch, a->fch, m->dfch_act, (size_t)N * m->F));
    TIMED("matmul fc (bwd)", 4 * n * S * FC,
          linear_backward(m, m->dC, &b->fc, m->dfch, ffn_in, N, S, FC));
    if (p->ffn_from_norm) {  // the residual carried N2(h): its gradient joins the FFN's, then crosses N2
        add_into(m->dC, m->dres, NS);
        memset(m->dres, 0, NS * sizeof(real));
    }
    if (!p->ffn_in_norm) join_residual(m, p, NS);
    else if (p->shared_stat)
        TIMED("norm (bwd)", 0, bhyt_shared_backward(m->dres, m->dmean_sq, b->n2.dscale, b->n2.dweight, m->dC, a->h,
                                                    a->n2_stats, b->n2.scale, b->n2.weight, m->bhyt_kappa, N, S));
    else TIMED("norm (bwd)", 0, norm_backward(&b->n2, m->dres, m->dC, a->h, a->n2_stats, N, S));
    // attention sublayer: m->dres = dL/d h -> dL/d x
    if (p->attn_post_norm) TIMED("norm (bwd)", 0, through_post_norm(m, &b->n1, a->res_attn, a->h_stats, N));
    if (m->center_stream) TIMED("center stream", 0, center_rows(m->dres, N, S));
    const real *dattn_out = m->dres;
    if (p->attn_out_norm)
        TIMED("norm (bwd)", 0, dattn_out = through_out_norm(m, &b->n1o, a->res_attn, a->attn_out_stats, N));
    TIMED("matmul attn.proj (bwd)", 4 * n * C * S,
          linear_backward(m, m->dC, &b->attn_proj, dattn_out, a->atty, N, C, S));
    TIMED("attention (bwd)", 8 * n * T * C, attention_full_backward(m, l, a, B, T));
    if (m->rope) TIMED("rope (bwd)", 0, rope_backward(m->dqkv, m->rope_cos, m->rope_sin, B, T, m->H, m->Hkv, m->hs));
    // dL/dqkv crosses QK-norm, then QKV-norm, each from one of the two buffers into the other.
    real *dqkv = m->dqkv, *spare = m->dqkv_raw, *t;
    if (b->qkn.on) {
        TIMED("qk-norm (bwd)", 0, qknorm_backward(spare, b->qkn.dgq, b->qkn.dgk, dqkv, a->qkv_normed, a->qk_stats,
                                                  b->qkn.gq, b->qkn.gk, b->qkn.full, N, m->H, m->Hkv, m->hs));
        t = dqkv; dqkv = spare; spare = t;
    }
    if (p->qkv_norm) {
        TIMED("qkv-norm (bwd)", 0, qkvnorm_backward(spare, b->dgq, b->dgk, b->dgv, dqkv, a->qkv_raw,
                                                    a->qkv_stats, b->gq, b->gk, b->gv, N, m->H, m->Hkv, m->hs));
        t = dqkv; dqkv = spare; spare = t;
    }
    const real *attn_in = p->attn_in_norm ? a->n1 : x;
    TIMED("matmul qkv (bwd)", 4 * n * S * QKV,
          linear_backward(m, m->dC, &b->qkv, dqkv, attn_in, N, S, QKV));
    if (!p->attn_in_norm) { join_residual(m, p, NS); return; }
    TIMED("norm (bwd)", 0, norm_backward(&b->n1, m->dres, m->dC, x, a->n1_stats, N, S));
    if (p->shared_stat) TIMED("norm (bwd)", 0, mean_square_backward(m->dres, m->dmean_sq, x, N, S));
}

// ---------------------------------------------------------------------------------------------
// The whole model.

// e = embed_scale * wte[inputs] + wpe[pos0 + t]; the token embeddings before the scale saved in f->emb.
static void embed_scale_forward(const GPT *m, ForwardActs *f, real *e, const int *inputs, const real *wpe, int B,
                                int T) {
    encoder_forward(f->emb, inputs, m->wte, NULL, B, T, m->S);
    real s = m->embed_scale[0];
    #pragma omp parallel for
    for (int n = 0; n < B * T; n++) {
        real *o = e + (size_t)n * m->S;
        const real *t = f->emb + (size_t)n * m->S, *p = wpe ? wpe + (size_t)(n % T) * m->S : NULL;
        if (p) for (int c = 0; c < m->S; c++) o[c] = s * t[c] + p[c];  // the test outside: norms.c, map_row_forward
        else for (int c = 0; c < m->S; c++) o[c] = s * t[c];
    }
}

// e (N,S) = [embed_scale *] wte[inputs] + wpe[pos0 + t] for the T positions of B sequences: f->encoded,
// or with model.embed_norm f->embed_in, normalized into f->encoded.
static void embed_forward(const GPT *m, ForwardActs *f, const int *inputs, int B, int T, int pos0) {
    const real *wpe = m->wpe ? m->wpe + (size_t)pos0 * m->S : NULL;
    real *e = m->has_embed_norm ? f->embed_in : f->encoded;
    if (!m->embed_scale) encoder_forward(e, inputs, m->wte, wpe, B, T, m->S);
    else embed_scale_forward(m, f, e, inputs, wpe, B, T);
    if (m->has_embed_norm) norm_forward(&m->embed_norm, f->encoded, f->embed_stats, e, B * T, m->S);
}

// Consumes m->dres = dL/d encoded.
static void embed_backward(GPT *m, const int *inputs, int B, int T) {
    if (m->has_embed_norm) through_post_norm(m, &m->embed_norm, m->fwd.embed_in, m->fwd.embed_stats, B * T);
    if (!m->embed_scale) { encoder_backward(m->dwte, m->dwpe, m->dres, inputs, B, T, m->S); return; }
    size_t n = (size_t)B * T * m->S;
    if (m->dwpe) encoder_backward(NULL, m->dwpe, m->dres, inputs, B, T, m->S);
    m->dembed_scale[0] += (real)dot_product(m->dres, m->fwd.emb, n);
    real s = m->embed_scale[0];
    #pragma omp parallel for
    for (size_t i = 0; i < n; i++) m->dres[i] *= s;
    encoder_backward(m->dwte, NULL, m->dres, inputs, B, T, m->S);
}

// Blocks first..L-1, the final norm and the head, from block_input(f, first) on: raw logits in f->logits.
static void forward_from(const GPT *m, ForwardActs *f, int first, int B, int T, const Attention *at) {
    int N = B * T, S = m->S;
    for (int l = first; l < m->L; l++) block_forward(m, f, l, B, T, at);
    const real *head_in = block_input(f, m->L);
    if (m->has_final_norm) {
        TIMED("norm (fwd)", 0, norm_forward(&m->lnf, f->lnf_out, f->lnf_stats, head_in, N, S));
        head_in = f->lnf_out;
    }
    TIMED("matmul lm_head (fwd)", 2.0 * N * S * m->V,
          linear_forward(m, at, f->logits, NULL, head_in, &m->lm_head, N, S, m->V));
}

void gpt_forward_pass(const GPT *m, ForwardActs *f, const int *inputs, int B, int T, const Attention *at) {
    TIMED("embedding (fwd)", 0, embed_forward(m, f, inputs, B, T, at->mode == ATTN_CACHED ? at->pos : 0));
    if (m->center_stream) TIMED("center stream", 0, center_rows(f->encoded, B * T, m->S));
    forward_from(m, f, 0, B, T, at);
}

static const Attention FULL_ATTENTION = {.mode = ATTN_FULL};

// The mean cross-entropy of the logits in m->fwd, which become the softmax probabilities.
static double mean_loss(GPT *m, const int *targets, int N) {
    TIMED("softmax + loss (fwd)", 0, crossentropy_forward(m->losses, m->fwd.logits, targets, N, m->V));
    double sum = 0;
    for (int n = 0; n < N; n++) sum += m->losses[n];
    return sum / N;
}

static void check_shape(const GPT *m, int B, int T) {
    if (B > m->maxB || T > m->seqT)
        die(1, "internal: forward of (%d,%d) exceeds buffers (%d,%d)", B, T, m->maxB, m->seqT);
}

double gpt_forward(GPT *m, const int *inputs, const int *targets, int B, int T) {
    check_shape(m, B, T);
    if (m->bf16) TIMED("bf16 weight copy", 0, mixed_refresh_weights(m));
    gpt_forward_pass(m, &m->fwd, inputs, B, T, &FULL_ATTENTION);
    return targets ? mean_loss(m, targets, B * T) : 0;
}

double gpt_forward_skipping(GPT *m, int l, const int *targets, int B, int T) {
    check_shape(m, B, T);
    memcpy(m->fwd.blocks[l].out, block_input(&m->fwd, l), (size_t)B * T * m->S * sizeof(real));
    forward_from(m, &m->fwd, l + 1, B, T, &FULL_ATTENTION);
    return targets ? mean_loss(m, targets, B * T) : 0;
}

void gpt_backward(GPT *m, const int *inputs, const int *targets, int B, int T, real dloss_scale) {
    int N = B * T, S = m->S;
    if (!m->grads) die(1, "internal: backward of a model built for inference");
    const real *top = gpt_block_input(m, m->L);
    const real *head_in = m->has_final_norm ? m->fwd.lnf_out : top;
    if (m->bf16)
        TIMED("matmul lm_head + loss (bwd)", 4.0 * N * S * m->V,
              mixed_classifier_backward(m, m->dC, &m->lm_head, m->fwd.logits, targets, dloss_scale, N));
    else
        TIMED("matmul lm_head + loss (bwd)", 4.0 * N * S * m->V,
              classifier_backward(m->dC, m->lm_head.dw, m->lm_head.db, m->fwd.logits, head_in, m->lm_head.w, targets,
                                  dloss_scale, N, S, m->V));
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
    if (m->has_embed_norm) fprintf(out, "  embedding norm: %s\n", NORM_OPS[m->embed_norm.kind].name);
    for (int l = 0; l < m->L; l++) {
        const Block *b = &m->blocks[l];
        const PlacementSpec *p = b->place;
        const Norm *nm = (p->attn_in_norm || p->attn_post_norm) ? &b->n1 : &b->n2;
        const char *qk = !b->qkn.on ? "" : b->qkn.full ? (b->qkn.gq ? ", qk-norm (full)" : ", qk-norm (full, no gain)")
                                                       : (b->qkn.gq ? ", qk-norm (head)" : ", qk-norm (head, no gain)");
        fprintf(out, "  %3d  %-11s %-9s  attn: %s%s%s%s%s  ffn: %s%s%s%s", l, p->name, NORM_OPS[nm->kind].name,
                p->attn_in_norm ? "norm before" : p->attn_post_norm ? "norm after residual" : "no norm",
                p->attn_out_norm ? ", norm on output" : "", p->qkv_norm ? ", qkv-norm" : "", qk, m->rope ? ", rope" : "",
                p->shared_stat ? "bhyt approx. (block statistic)" : p->ffn_in_norm ? "norm before" :
                p->ffn_post_norm ? "norm after residual" : "no norm",
                p->ffn_out_norm ? ", norm on output" : "", p->ffn_from_norm ? ", residual from norm" : "",
                m->swiglu ? ", swiglu" : ", gelu");
        if (p->scaled_residual) fprintf(out, "  residual x %.4g, xavier init beta %.4g", m->deepnorm_alpha,
                                        m->deepnorm_beta);
        if (nm->lns_scale) fprintf(out, "  lns scale %.4f", nm->lns_scale);
        // pre with bhyt is BHyT* (bhyt_star), not the paper's BHyT (placement bhyt): say so.
        if (!p->shared_stat && p->attn_in_norm && p->ffn_in_norm && nm->kind == NORM_BHYT && !p->qkv_norm &&
            !p->attn_out_norm)
            fprintf(out, "  = BHyT* (exact statistic at both sites; the paper's BHyT is placement bhyt)");
        fputc('\n', out);
    }
    fprintf(out, "  final norm: %s\n", m->has_final_norm ? NORM_OPS[m->lnf.kind].name : "none");
}
