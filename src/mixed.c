#include "mixed.h"
#include "kernels.h"
#include <math.h>

// The bf16 copies' parts: the products' inputs, the widest product output, q, k, v and P.
typedef struct { size_t inputs, out, qkv, sq; } CopySizes;

static CopySizes copy_sizes(const GPT *m) {
    size_t N = (size_t)m->maxB * m->seqT, S = m->S, C = m->C, F = m->F, QKV = (size_t)(m->H + 2 * m->Hkv) * m->hs;
    size_t FC = m->swiglu ? 2 * F : F, widest = QKV;
    if (S > widest) widest = S;
    if (FC > widest) widest = FC;
    if ((size_t)m->V > widest) widest = m->V;
    // Kept from a block's forward for its backward: its products' inputs, q, k, v and P (one set for
    // all blocks with train.recompute, which reruns a block's forward before its backward).
    size_t sets = m->recompute ? 1 : (size_t)m->L;
    return (CopySizes){.inputs = sets * N * (2 * S + C + F) + N * S,  // + the LM head's input
                       .out = N * widest, .qkv = sets * N * QKV, .sq = sets * m->maxB * m->H * m->seqT * m->seqT};
}

size_t mixed_count(const GPT *m) {
    CopySizes c = copy_sizes(m);
    return m->n_params + c.inputs + c.out + c.qkv + c.sq;
}

#ifdef NORMGPT_DOUBLE  // the tests' build: `real` is double, the bf16 API float

__attribute__((noreturn)) static void float_only(void) {
    die(EXIT_CONFIG, "train.precision=bf16 runs in the float build (./train) only");
}
void mixed_build(GPT *m) { float_only(); }
void mixed_free(GPT *m) {}
void mixed_refresh_weights(GPT *m) {}
void mixed_linear_forward(const GPT *m, real *out, const real *residual, const real *inp, const Linear *lin, int N,
                          int IC, int OC) { float_only(); }
void mixed_linear_backward(const GPT *m, real *dinp, const Linear *lin, const real *dout, int N, int IC, int OC) {
    float_only();
}
void mixed_attention_forward(const GPT *m, int l, real *out, real *att, const real *qkv, int B, int T) {
    float_only();
}
void mixed_attention_backward(const GPT *m, int l, real *dqkv, real *dP, const real *dout, const real *att, int B,
                              int T) { float_only(); }
void mixed_classifier_backward(const GPT *m, real *dinp, const Linear *head, const real *probs, const int *targets,
                               real dloss, int N) { float_only(); }

#else

static Bf16Heads heads(const GPT *m, int B, int T) {
    int QKV = (m->H + 2 * m->Hkv) * m->hs;
    return (Bf16Heads){B, T, m->H, m->Hkv, m->hs, QKV, QKV};
}

void mixed_build(GPT *m) {
    const char *why = bf16_unsupported();
    if (why) die(EXIT_CONFIG, "%s", why);
    int N = m->maxB * m->seqT, S = m->S, C = m->C, F = m->F, QKV = (m->H + 2 * m->Hkv) * m->hs;
    int FC = m->swiglu ? 2 * F : F;
    CopySizes sizes = copy_sizes(m);
    size_t n_out = sizes.out, n_qkv = sizes.qkv;
    m->bf16_stale = 1;
    m->n_bf16 = mixed_count(m);
    m->params_bf16 = xcalloc(m->n_bf16, sizeof(bf16));
    bf16 *next = m->params_bf16 + m->n_params;
    for (int l = 0; l < m->L; l++) {
        Block *b = &m->blocks[l];
        if (l > 0 && m->recompute) {
            const Block *first = &m->blocks[0];
            b->qkv.x16 = first->qkv.x16, b->attn_proj.x16 = first->attn_proj.x16;
            b->fc.x16 = first->fc.x16, b->fc_proj.x16 = first->fc_proj.x16;
            continue;
        }
        b->qkv.x16 = next, next += (size_t)N * S;
        b->attn_proj.x16 = next, next += (size_t)N * C;
        b->fc.x16 = next, next += (size_t)N * S;
        b->fc_proj.x16 = next, next += (size_t)N * F;
    }
    m->lm_head.x16 = next, next += (size_t)N * S;
    m->cast_out = next;
    m->cast_qkv = m->cast_out + n_out;
    m->cast_sq = m->cast_qkv + n_qkv;
    for (int l = 0; l < m->L; l++) {
        const Block *b = &m->blocks[l];
        bf16_linear_prepare(N, S, QKV, 0, b->qkv.b != NULL, 1, 0);
        bf16_linear_prepare(N, C, S, 1, b->attn_proj.b != NULL, 1, 0);
        bf16_linear_prepare(N, S, FC, 0, b->fc.b != NULL, 1, 0);
        bf16_linear_prepare(N, F, S, 1, b->fc_proj.b != NULL, 1, 0);
    }
    bf16_linear_prepare(N, S, m->V, 0, m->lm_head.b != NULL, 1, 0);
    Bf16Heads a = heads(m, m->maxB, m->seqT);
    bf16_attention_prepare(&a, 0);
}

void mixed_free(GPT *m) { free(m->params_bf16); }

void mixed_refresh_weights(GPT *m) {
    if (!m->bf16_stale) return;
    bf16_from_floats(m->params_bf16, m->params, 1, m->n_params);
    m->bf16_stale = 0;
}

static const bf16 *weight_copy(const GPT *m, const real *w) { return m->params_bf16 + (w - m->params); }

void mixed_linear_forward(const GPT *m, real *out, const real *residual, const real *inp, const Linear *lin, int N,
                          int IC, int OC) {
    bf16_from_floats(lin->x16, inp, 1, (size_t)N * IC);
    bf16_linear_forward(out, residual, lin->x16, weight_copy(m, lin->w), lin->b, N, IC, OC);
}

void mixed_linear_backward(const GPT *m, real *dinp, const Linear *lin, const real *dout, int N, int IC, int OC) {
    bf16_from_rows(m->cast_out, lin->db, dout, N, OC);
    bf16_linear_backward(dinp, 0, lin->dw, m->cast_out, lin->x16, weight_copy(m, lin->w), N, IC, OC);
}

// Block l's bf16 copies of q, k, v (N,QKV) and of P (B,H,T,T), written by its forward and read by
// its backward (one set for all blocks with train.recompute, which reruns a block's forward first).
static bf16 *qkv_copy(const GPT *m, int l) {
    return m->cast_qkv + (m->recompute ? 0 : (size_t)l * m->maxB * m->seqT * (m->H + 2 * m->Hkv) * m->hs);
}
static bf16 *probs_copy(const GPT *m, int l) {
    return m->cast_sq + (m->recompute ? 0 : (size_t)l * m->maxB * m->H * m->seqT * m->seqT);
}

// Where the keys and the values start in a qkv row [q | k | v] (the queries at 0).
static size_t k_col(const GPT *m) { return (size_t)m->H * m->hs; }
static size_t v_col(const GPT *m) { return (size_t)(m->H + m->Hkv) * m->hs; }

void mixed_attention_forward(const GPT *m, int l, real *out, real *att, const real *qkv, int B, int T) {
    Bf16Heads a = heads(m, B, T);
    size_t TT = (size_t)T * T, squares = (size_t)B * m->H * TT;
    bf16 *q = qkv_copy(m, l), *P = probs_copy(m, l);
    bf16_from_floats(q, qkv, 1, (size_t)B * T * a.ldq);
    bf16_attention_scores(att, q, q + k_col(m), &a);
    #pragma omp parallel for  // each square's bf16 copy written while the square is in cache
    for (size_t sq = 0; sq < squares; sq += TT) {
        causal_softmax(att + sq, T);
        bf16_round_row(P + sq, att + sq, 1, TT);
    }
    bf16_attention_values(out, 0, P, q + v_col(m), &a);
}

// dS overwrites P's copy once the dv product has read it.
void mixed_attention_backward(const GPT *m, int l, real *dqkv, real *dP, const real *dout, const real *att, int B,
                              int T) {
    Bf16Heads a = heads(m, B, T);
    size_t TT = (size_t)T * T, squares = (size_t)B * m->H * TT;
    bf16 *q = qkv_copy(m, l), *P = probs_copy(m, l), *dS = P;
    bf16_from_floats(m->cast_out, dout, 1, (size_t)B * T * m->C);
    bf16_attention_values_backward(dP, dqkv + v_col(m), m->cast_out, P, q + v_col(m), &a);
    real scale = (real)(1.0 / sqrt((double)m->hs));
    #pragma omp parallel for
    for (size_t sq = 0; sq < squares; sq += TT) {
        causal_softmax_backward(dP + sq, att + sq, T, scale);
        bf16_round_row(dS + sq, dP + sq, 1, TT);
    }
    bf16_attention_scores_backward(dqkv, dqkv + k_col(m), dS, q, q + k_col(m), &a);
}

// dlogits = dloss (probs - onehot(targets)) written as bf16 row by row, then the head's two products.
void mixed_classifier_backward(const GPT *m, real *dinp, const Linear *head, const real *probs, const int *targets,
                               real dloss, int N) {
    int S = m->S, V = m->V;
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const real *p = probs + (size_t)n * V;
        bf16 *d = m->cast_out + (size_t)n * V;
        bf16_round_row(d, p, dloss, V);
        d[targets[n]] = bf16_round(dloss * (p[targets[n]] - 1));
    }
    bf16_linear_backward(dinp, 0, head->dw, m->cast_out, head->x16, weight_copy(m, head->w), N, S, V);
    if (!head->db) return;
    scatter_add_rows(head->db, probs, NULL, N, V, dloss);
    for (int n = 0; n < N; n++) head->db[targets[n]] -= dloss;
}

#endif
