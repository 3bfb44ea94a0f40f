#include "optim.h"
#include <math.h>
#include <string.h>

void adamw_init(AdamW *opt, size_t n) {
    opt->m = xcalloc(n, sizeof(real));
    opt->v = xcalloc(n, sizeof(real));
    opt->t = 0;
}

void adamw_free(AdamW *opt) {
    free(opt->m);
    free(opt->v);
    memset(opt, 0, sizeof *opt);
}

void adamw_step(AdamW *opt, GPT *model, double lr, double grad_scale, double beta1, double beta2,
                double eps, double weight_decay) {
    opt->t++;
    real b1 = (real)beta1, b2 = (real)beta2, g_scale = (real)grad_scale;
    real m_corr = (real)(1.0 / (1.0 - pow(beta1, (double)opt->t)));
    real v_corr = (real)(1.0 / (1.0 - pow(beta2, (double)opt->t)));
    // One parallel region for all tensors (each wake-up of the threads costs tens of microseconds when
    // they sleep between regions); elementwise, so the split changes no result.
    #pragma omp parallel
    for (int i = 0; i < model->n_tensors; i++) {
        const ParamTensor *t = &model->tensors[i];
        if (!t->trainable) continue;
        real *p = model->params + t->offset, *g = model->grads + t->offset;
        real *m = opt->m + t->offset, *v = opt->v + t->offset;
        real decay = (real)(t->decay ? 1.0 - lr * weight_decay : 1.0);
        real step = (real)lr, e = (real)eps;
        #pragma omp for schedule(static) nowait
        for (size_t j = 0; j < t->size; j++) {
            real grad = g[j] * g_scale;
            m[j] = b1 * m[j] + (1 - b1) * grad;
            v[j] = b2 * v[j] + (1 - b2) * grad * grad;
            p[j] = p[j] * decay - step * (m[j] * m_corr) / (real_sqrt(v[j] * v_corr) + e);
        }
    }
}

double lr_schedule(const Config *c, long s) {
    if (s < c->warmup_steps) return c->lr * (double)(s + 1) / (double)c->warmup_steps;
    const char *kind = c->schedule;
    if (!strcmp(kind, "constant")) return c->lr;
    long decay_start = c->warmup_steps;
    if (!strcmp(kind, "wsd")) {  // warmup, stable at lr, then a linear decay over the last decay_frac
        long tail = (long)floor(c->decay_frac * (double)c->steps);
        decay_start = c->steps - tail > c->warmup_steps ? c->steps - tail : c->warmup_steps;
    }
    long span = c->steps - decay_start;
    if (s < decay_start || span <= 0) return c->lr;
    double progress = (double)(s - decay_start + 1) / (double)span;  // reaches 1 at the last step
    double shape = !strcmp(kind, "cosine") ? 0.5 * (1.0 + cos(M_PI * progress)) : 1.0 - progress;
    return c->min_lr + shape * (c->lr - c->min_lr);
}

double clip_scale(double norm, double max_norm) {
    if (max_norm <= 0 || !(norm > max_norm)) return 1.0;
    return max_norm / (norm + 1e-6);
}
