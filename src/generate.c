#include "generate.h"
#include "kernels.h"
#include <omp.h>
#include <string.h>

// A decoding step works on `batch` rows: most of its kernels are too small to pay for waking the
// thread team (on a busy machine a woken thread may not run for milliseconds, stalling the step at
// the barrier). The step runs on one thread, and a matmul or the attention on all of them only when
// its multiply-adds reach this. Both OpenMP and OpenBLAS are told: the OpenMP build of OpenBLAS
// stops following OpenMP's thread count once it has been 1.
#define DECODE_PARALLEL_WORK 4194304

static void use_threads(int n) {
    if (omp_get_max_threads() != n) openblas_set_num_threads(n);
}

// The buffers live in one allocation: a first pass (d->memory NULL) counts, the second hands out.
static real *take(Decoder *d, size_t *used, size_t count) {
    real *p = d->memory ? d->memory + *used : NULL;
    *used += count;
    return p;
}

static size_t layout(Decoder *d) {
    const GPT *m = d->m;
    size_t B = d->batch, S = m->S, QKV = (size_t)(m->H + 2 * m->Hkv) * m->hs;
    size_t FC = m->swiglu ? 2 * (size_t)m->F : (size_t)m->F;
    size_t cache = (size_t)m->L * B * m->Hkv * d->capacity * m->hs, n = 0;
    d->k_cache = take(d, &n, cache);
    d->v_cache = take(d, &n, cache);
    d->x = take(d, &n, B * S);
    d->res_attn = take(d, &n, B * S);
    d->h = take(d, &n, B * S);
    d->res_ffn = take(d, &n, B * S);
    d->n1 = take(d, &n, B * S);
    d->n2 = take(d, &n, B * S);
    d->n1_stats = take(d, &n, B * NORM_STATS_PER_ROW);
    d->n2_stats = take(d, &n, B * NORM_STATS_PER_ROW);
    d->post_stats = take(d, &n, B * NORM_STATS_PER_ROW);
    d->qkv_raw = take(d, &n, B * QKV);
    d->qkv = take(d, &n, B * QKV);
    d->qkv_stats = take(d, &n, B * (m->H + 2 * m->Hkv));
    d->atty = take(d, &n, B * m->C);
    d->scores = take(d, &n, B * m->H * d->capacity);
    d->fch = take(d, &n, B * FC);
    d->fch_act = take(d, &n, B * m->F);
    d->logits = take(d, &n, B * m->V);
    return n;
}

void decoder_init(Decoder *d, const GPT *m, int batch) {
    memset(d, 0, sizeof *d);
    d->m = m;
    d->batch = batch;
    d->capacity = m->maxT;
    d->threads = omp_get_max_threads();
    d->memory = xcalloc(layout(d), sizeof(real));
    layout(d);
}

void decoder_free(Decoder *d) {
    free(d->memory);
    memset(d, 0, sizeof *d);
}

void decoder_reset(Decoder *d) { d->pos = 0; }

// x (batch, S) = [embed_scale *] wte[token] + wpe[pos], centered with model.center_stream, as the
// full forward's embedding of position pos.
static void embed_step(Decoder *d, const int *tokens) {
    const GPT *m = d->m;
    int S = m->S;
    for (int b = 0; b < d->batch; b++) {
        if (tokens[b] < 0 || tokens[b] >= m->V) die(1, "internal: token %d outside the vocabulary", tokens[b]);
        const real *e = m->wte + (size_t)tokens[b] * S, *p = m->wpe ? m->wpe + (size_t)d->pos * S : NULL;
        real *x = d->x + (size_t)b * S;
        for (int c = 0; c < S; c++) x[c] = (m->embed_scale ? m->embed_scale[0] * e[c] : e[c]) + (p ? p[c] : 0);
    }
    if (m->center_stream) center_rows(d->x, d->batch, S);
}

// matmul_forward of the step's rows, on all threads when it is big enough.
static void step_matmul(const Decoder *d, real *out, const real *residual, const real *inp, const Linear *lin, int IC,
                        int OC) {
    int parallel = (double)d->batch * IC * OC >= DECODE_PARALLEL_WORK;
    if (parallel) use_threads(d->threads);
    matmul_forward(out, residual, inp, lin->w, lin->b, d->batch, IC, OC);
    if (parallel) use_threads(1);
}

// Append the new tokens' keys and values (from qkv, after QKV-norm and RoPE) to layer l's cache.
static void cache_append(Decoder *d, int l, const real *qkv) {
    const GPT *m = d->m;
    int hs = m->hs, width = (m->H + 2 * m->Hkv) * hs;
    size_t layer = (size_t)l * d->batch * m->Hkv * d->capacity * hs;
    for (int b = 0; b < d->batch; b++) {
        for (int kvh = 0; kvh < m->Hkv; kvh++) {
            size_t dst = layer + (((size_t)b * m->Hkv + kvh) * d->capacity + d->pos) * hs;
            const real *row = qkv + (size_t)b * width;
            memcpy(d->k_cache + dst, row + (size_t)(m->H + kvh) * hs, hs * sizeof(real));
            memcpy(d->v_cache + dst, row + (size_t)(m->H + m->Hkv + kvh) * hs, hs * sizeof(real));
        }
    }
}

// Block l on the new tokens: block_forward's placements (model.h), with attention over the cache.
// On entry d->x holds the block input, on exit the block output.
static void block_step(Decoder *d, int l) {
    const GPT *m = d->m;
    const Block *b = &m->blocks[l];
    int B = d->batch, C = m->C, S = m->S, QKV = (m->H + 2 * m->Hkv) * m->hs;
    int FC = m->swiglu ? 2 * m->F : m->F, half = m->hs / 2;
    const real *x = d->x;
    // attention sublayer
    const real *attn_in = x;
    if (b->attn_in_norm) { norm_forward(&b->n1, d->n1, d->n1_stats, x, B, S); attn_in = d->n1; }
    step_matmul(d, d->qkv_raw, NULL, attn_in, &b->qkv, S, QKV);
    real *qkv = d->qkv_raw;
    if (b->qkv_norm) {
        qkvnorm_forward(d->qkv, d->qkv_stats, d->qkv_raw, b->gq, b->gk, b->gv, b->qkv_eps, B, m->H, m->Hkv, m->hs);
        qkv = d->qkv;
    }
    // With T = 1, rope_forward rotates every row by the first row of the tables it is given.
    if (m->rope)
        rope_forward(qkv, m->rope_cos + (size_t)d->pos * half, m->rope_sin + (size_t)d->pos * half, B, 1, m->H, m->Hkv,
                     m->hs);
    cache_append(d, l, qkv);
    size_t layer = (size_t)l * B * m->Hkv * d->capacity * m->hs;
    int parallel = 2.0 * B * m->H * (d->pos + 1) * m->hs >= DECODE_PARALLEL_WORK;
    if (parallel) use_threads(d->threads);
    attention_decode_forward(d->atty, d->scores, qkv, d->k_cache + layer, d->v_cache + layer, B, d->pos + 1,
                             d->capacity, m->H, m->Hkv, m->hs);
    if (parallel) use_threads(1);
    step_matmul(d, d->res_attn, x, d->atty, &b->attn_proj, C, S);
    if (m->center_stream) center_rows(d->res_attn, B, S);
    const real *h = d->res_attn;
    if (b->attn_post_norm) { norm_forward(&b->n1, d->h, d->post_stats, d->res_attn, B, S); h = d->h; }
    // FFN sublayer
    const real *ffn_in = h;
    if (b->ffn_in_norm) {
        if (b->shared_stat)
            bhyt_shared_forward(d->n2, d->n2_stats, h, d->n1_stats, gpt_bhyt_correction(m, l), b->n2.scale,
                                b->n2.weight, m->bhyt_kappa, b->n2.eps, B, S);
        else
            norm_forward(&b->n2, d->n2, d->n2_stats, h, B, S);
        ffn_in = d->n2;
    }
    step_matmul(d, d->fch, NULL, ffn_in, &b->fc, S, FC);
    if (m->swiglu) swiglu_forward(d->fch_act, d->fch, B, m->F);
    else gelu_forward(d->fch_act, d->fch, (size_t)B * m->F);
    const real *ffn_base = b->ffn_from_norm ? ffn_in : h;
    step_matmul(d, d->res_ffn, ffn_base, d->fch_act, &b->fc_proj, m->F, S);
    if (m->center_stream) center_rows(d->res_ffn, B, S);
    // The block input is no longer needed: its buffer takes the output.
    if (b->ffn_post_norm) {
        norm_forward(&b->n2, d->x, d->post_stats, d->res_ffn, B, S);
    } else {
        real *t = d->x;
        d->x = d->res_ffn;
        d->res_ffn = t;
    }
}

const real *decoder_step(Decoder *d, const int *tokens) {
    const GPT *m = d->m;
    if (d->pos >= d->capacity) die(1, "internal: decoder step at position %d, cache holds %d", d->pos, d->capacity);
    use_threads(1);
    embed_step(d, tokens);
    for (int l = 0; l < m->L; l++) block_step(d, l);
    const real *head_in = d->x;
    if (m->has_final_norm) {
        norm_forward(&m->lnf, d->n1, d->n1_stats, d->x, d->batch, m->S);
        head_in = d->n1;
    }
    step_matmul(d, d->logits, NULL, head_in, &m->lm_head, m->S, m->V);
    use_threads(d->threads);
    d->pos++;
    return d->logits;
}
