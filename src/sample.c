#include "sample.h"
#include <math.h>
#include <string.h>

static int compare_desc(const void *a, const void *b) {
    real x = *(const real *)a, y = *(const real *)b;
    return (x < y) - (x > y);
}

int sample_logits(const real *logits, int V, double temperature, int top_k, Rng *rng, real *scratch) {
    int best = 0;
    for (int i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
    if (temperature <= 0) return best;
    real threshold = -INFINITY;
    if (top_k > 0 && top_k < V) {
        memcpy(scratch, logits, V * sizeof(real));
        qsort(scratch, V, sizeof(real), compare_desc);
        threshold = scratch[top_k - 1];
    }
    double total = 0;
    for (int i = 0; i < V; i++)
        total += logits[i] >= threshold ? exp((logits[i] - logits[best]) / temperature) : 0;
    double u = rng_uniform(rng) * total, acc = 0;
    for (int i = 0; i < V; i++) {
        if (logits[i] < threshold) continue;
        acc += exp((logits[i] - logits[best]) / temperature);
        if (acc > u) return i;
    }
    return best;
}

void generate(GPT *m, const Tokenizer *tok, int n_tokens, double temperature, int top_k, Rng *rng,
              int *context, real *scratch, FILE *out) {
    int len = 1;
    context[0] = tok->pieces ? tok->separator : 0;
    for (int i = 0; i < n_tokens; i++) {
        // Without a KV cache each token re-runs the last seqT positions; positions restart at the
        // window start once the text is longer than the window.
        int T = len;
        gpt_forward(m, context, NULL, 1, T);
        int next = sample_logits(m->logits + (size_t)(T - 1) * m->V, m->V, temperature, top_k, rng, scratch);
        if (tok->pieces) fputs(tokenizer_decode(tok, next), out);
        else fprintf(out, "%d ", next);
        if (len == m->seqT) memmove(context, context + 1, (len - 1) * sizeof(int)); else len++;
        context[len - 1] = next;
    }
    fputc('\n', out);
    fflush(out);
}
