#include "convert.h"
#include <math.h>
#include <string.h>

static const NormKind KINDS[] = {NORM_RMSNORM, NORM_CRMSNORM};

const char *convert_unsupported(const Config *cfg) {
    static char why[128];
    for (int l = 0; l < cfg->n_layer; l++) {
        const BlockSpec *b = &cfg->blocks[l];
        if (b->placement != PLACE_PRE || b->norm != NORM_LAYERNORM) {
            snprintf(why, sizeof why, "block %d is %s/%s", l, PLACEMENTS[b->placement].name, NORM_OPS[b->norm].name);
            return why;
        }
    }
    // (model.center_stream needs rmsnorm blocks, so it is off here.)
    if (cfg->final_kind != NORM_LAYERNORM) {
        snprintf(why, sizeof why, "the final norm is %.64s", cfg->final_norm);
        return why;
    }
    return NULL;
}

// A writer into the stream: `n` vectors over the d stream coordinates, coordinate i of vector k at
// src[k * src_step + i * stride] (in dst at dst[k * dst_step + i * stride]). Each is centred, so the
// stream stays zero-mean (2.3, step B), and dst keeps its first `keep` coordinates: all d, or d - 1
// when the stream is compressed (2.4).
static void convert_writer(real *dst, const real *src, int n, size_t dst_step, size_t src_step, size_t stride, int d,
                           int keep) {
    for (int k = 0; k < n; k++) {
        const real *s = src + k * src_step;
        real *t = dst + k * dst_step;
        double mean = 0;
        for (int i = 0; i < d; i++) mean += s[i * stride];
        mean /= d;
        for (int i = 0; i < keep; i++) t[i * stride] = (real)(s[i * stride] - mean);
    }
}

// Embeddings hold one stream vector per row; a linear layer's weight (d, in) one per column, its bias one.
static void convert_embedding(real *dst, const real *src, int rows, int d, int keep) {
    convert_writer(dst, src, rows, keep, d, 1, d, keep);
}

static void convert_linear_writer(const Linear *dst, const Linear *src, int in, int d, int keep) {
    convert_writer(dst->w, src->w, in, 1, 1, in, d, keep);
    if (src->b) convert_writer(dst->b, src->b, 1, 0, 0, 1, d, keep);
}

// A reader (out, d) behind the LayerNorm `ln`: its bias takes W beta (2.3, step A, with the unscaled W).
// Uncompressed, W is copied and the gain stays in the RMSNorm. Compressed, the gain is folded into W
// (CRMSNorm has none: it could not act on the implicit coordinate), and since that coordinate is
// -sum(x_i), its column is subtracted from the others and dropped (2.4).
static void convert_reader(const Linear *dst, const Linear *src, int out, int d, const Norm *ln, int compress) {
    for (int o = 0; o < out; o++) {
        const real *w = src->w + (size_t)o * d;
        if (dst->b) {  // exists whenever src->b or ln->bias does
            double b = src->b ? src->b[o] : 0;
            if (ln->bias)
                for (int i = 0; i < d; i++) b += (double)w[i] * ln->bias[i];
            dst->b[o] = (real)b;
        }
        if (!compress) {
            memcpy(dst->w + (size_t)o * d, w, d * sizeof(real));
            continue;
        }
        real *t = dst->w + (size_t)o * (d - 1);
        double last = (double)w[d - 1] * ln->weight[d - 1];
        for (int i = 0; i < d - 1; i++) t[i] = (real)((double)w[i] * ln->weight[i] - last);
    }
}

// An RMSNorm keeps its LayerNorm's gain; a CRMSNorm has none (convert_reader folded it).
static void copy_gain(const Norm *dst, const Norm *src, int d) {
    if (dst->weight) memcpy(dst->weight, src->weight, d * sizeof(real));
}

void convert_model(const GPT *src, const Config *src_cfg, ConvertKind kind, GPT *dst, Config *dst_cfg) {
    const char *why = convert_unsupported(src_cfg);
    if (why) die(1, "internal: converting a model that is not Pre-LN (%s)", why);
    *dst_cfg = *src_cfg;
    const char *name = NORM_OPS[KINDS[kind]].name;
    snprintf(dst_cfg->placement, CONFIG_STR, "%s", PLACEMENTS[PLACE_PRE].name);
    snprintf(dst_cfg->norm, CONFIG_STR, "%s", name);
    snprintf(dst_cfg->final_norm, CONFIG_STR, "%s", name);
    for (int l = 0; l < src->L; l++) dst_cfg->blocks[l].norm = KINDS[kind];
    dst_cfg->tie_embeddings = 0;
    dst_cfg->head_bias = src_cfg->head_bias || src->lnf.bias != NULL;
    config_validate(dst_cfg);
    gpt_build_inference(dst, dst_cfg, src->maxB, src->seqT);

    int d = src->C, S = dst->S, compress = kind == CONVERT_CRMSNORM;
    int QKV = (src->H + 2 * src->Hkv) * src->hs, FC = src->swiglu ? 2 * src->F : src->F;
    convert_embedding(dst->wte, src->wte, src->V, d, S);
    if (src->wpe) convert_embedding(dst->wpe, src->wpe, src->maxT, d, S);
    if (src->embed_scale) dst->embed_scale[0] = src->embed_scale[0];
    for (int l = 0; l < src->L; l++) {
        const Block *s = &src->blocks[l], *t = &dst->blocks[l];
        copy_gain(&t->n1, &s->n1, d);
        convert_reader(&t->qkv, &s->qkv, QKV, d, &s->n1, compress);
        if (s->qkn.gq) {  // QK-norm sees the same q and k after the fold: its gains carry over
            memcpy(t->qkn.gq, s->qkn.gq, (size_t)(s->qkn.full ? src->H * src->hs : src->hs) * sizeof(real));
            memcpy(t->qkn.gk, s->qkn.gk, (size_t)(s->qkn.full ? src->Hkv * src->hs : src->hs) * sizeof(real));
        }
        convert_linear_writer(&t->attn_proj, &s->attn_proj, src->C, d, S);
        copy_gain(&t->n2, &s->n2, d);
        convert_reader(&t->fc, &s->fc, FC, d, &s->n2, compress);
        convert_linear_writer(&t->fc_proj, &s->fc_proj, src->F, d, S);
    }
    copy_gain(&dst->lnf, &src->lnf, d);
    // The head reads the un-centred wte when tied: its own copy, since dst's wte is centred.
    convert_reader(&dst->lm_head, &src->lm_head, src->V, d, &src->lnf, compress);
}

double max_rel_logit_diff(GPT *a, GPT *b, const int *inputs, int B, int T) {
    gpt_forward(a, inputs, NULL, B, T);
    gpt_forward(b, inputs, NULL, B, T);
    double diff = 0, scale = 0;
    for (size_t i = 0; i < (size_t)B * T * a->V; i++) {
        diff = fmax(diff, fabs((double)a->fwd.logits[i] - b->fwd.logits[i]));
        scale = fmax(scale, fabs((double)a->fwd.logits[i]));
    }
    return diff / scale;
}
