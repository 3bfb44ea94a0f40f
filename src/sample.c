#include "sample.h"
#include <math.h>
#include <string.h>
#include <time.h>

// Restore the min-heap order of heap[0..k) below position i.
static void sift_down(real *heap, int k, int i) {
    for (;;) {
        int child = 2 * i + 1;
        if (child >= k) return;
        if (child + 1 < k && heap[child + 1] < heap[child]) child++;
        if (heap[i] <= heap[child]) return;
        real t = heap[i]; heap[i] = heap[child]; heap[child] = t;
        i = child;
    }
}

// The k-th largest of a[0..n) (1 <= k <= n): a min-heap (k reals of scratch) keeps the k largest
// seen so far, so one pass suffices and most values cost one comparison with its root, where
// sorting the vocabulary for every token would cost more than a decoder step.
static real kth_largest(const real *a, int n, int k, real *heap) {
    for (int i = 0; i < k; i++) heap[i] = a[i];
    for (int i = k / 2 - 1; i >= 0; i--) sift_down(heap, k, i);
    for (int i = k; i < n; i++) {
        if (a[i] <= heap[0]) continue;
        heap[0] = a[i];
        sift_down(heap, k, 0);
    }
    return heap[0];
}

int sample_logits(const real *logits, int V, double temperature, int top_k, Rng *rng, real *scratch) {
    int best = 0;
    for (int i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
    if (temperature <= 0) return best;
    real threshold = -INFINITY;
    if (top_k > 0 && top_k < V) threshold = kth_largest(logits, V, top_k, scratch);
    double total = 0;
    for (int i = 0; i < V; i++) {  // scratch now holds the unnormalized probabilities
        scratch[i] = logits[i] >= threshold ? (real)exp((logits[i] - logits[best]) / temperature) : 0;
        total += scratch[i];
    }
    double u = rng_uniform(rng) * total, acc = 0;
    for (int i = 0; i < V; i++) {
        acc += scratch[i];
        if (acc > u) return i;
    }
    return best;
}

double sample_tokens(Decoder *dec, int *seqs, int n_given, int n_tokens, double temperature, int top_k, Rng *rng) {
    int B = dec->batch, V = dec->m->V, keep = dec->capacity / 2 > 1 ? dec->capacity / 2 : 1;
    size_t width = (size_t)n_given + n_tokens;
    int *inputs = xcalloc(B, sizeof(int));
    real *scratch = xcalloc(V, sizeof(real));
    double seconds = 0;
    decoder_reset(dec);
    for (int i = 0; i + 1 < (int)width; i++) {  // step i feeds column i and, past the given ones, samples i + 1
        double t0 = now_seconds();
        if (dec->pos == dec->capacity) {  // restart from the last `keep` tokens, column i the last of them
            decoder_reset(dec);
            for (int j = i - keep + 1; j < i; j++) {
                for (int b = 0; b < B; b++) inputs[b] = seqs[b * width + j];
                decoder_step(dec, inputs);
            }
        }
        for (int b = 0; b < B; b++) inputs[b] = seqs[b * width + i];
        const real *logits = decoder_step(dec, inputs);
        seconds += now_seconds() - t0;
        if (i + 1 < n_given) continue;  // the prompt: its next token is given
        for (int b = 0; b < B; b++)
            seqs[b * width + i + 1] = sample_logits(logits + (size_t)b * V, V, temperature, top_k, rng, scratch);
    }
    free(inputs);
    free(scratch);
    return seconds;
}

static void print_text(const Tokenizer *tok, const int *ids, int n, FILE *out) {
    for (int i = 0; i < n; i++) {
        if (tok->pieces) fputs(tokenizer_decode(tok, ids[i]), out);
        else fprintf(out, "%d ", ids[i]);
    }
    fputc('\n', out);
}

static int start_token(const Tokenizer *tok) { return tok->pieces ? tok->separator : 0; }

void generate(const GPT *m, const Tokenizer *tok, int n_tokens, double temperature, int top_k, Rng *rng, FILE *out) {
    Decoder dec;
    decoder_init(&dec, m, 1);
    int *seq = xcalloc((size_t)n_tokens + 1, sizeof(int));
    seq[0] = start_token(tok);
    sample_tokens(&dec, seq, 1, n_tokens, temperature, top_k, rng);
    print_text(tok, seq + 1, n_tokens, out);
    fflush(out);
    free(seq);
    decoder_free(&dec);
}

#define WARMUP_TOKENS 8

// CPU time of the whole process (all threads): on a machine shared with other programs, the time
// this run actually got.
static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

void generate_benchmark(const GPT *m, const Tokenizer *tok, const int *prompt, int n_prompt, int n_tokens, int batch,
                        double temperature, int top_k, uint64_t seed, int threads, FILE *out) {
    Decoder dec;
    decoder_init(&dec, m, batch);
    int n_given = 1 + n_prompt;
    size_t width = (size_t)n_given + n_tokens;
    int *seqs = xcalloc(batch * width, sizeof(int));
    for (int b = 0; b < batch; b++) {
        seqs[b * width] = start_token(tok);
        if (n_prompt > 0) memcpy(seqs + b * width + 1, prompt, (size_t)n_prompt * sizeof(int));  // prompt NULL when 0
    }
    // Warm-up: the first steps fault in the caches' pages and wake the thread pool.
    Rng warm = rng_stream(seed, 5), rng = rng_stream(seed, 4);
    sample_tokens(&dec, seqs, n_given, n_tokens < WARMUP_TOKENS ? n_tokens : WARMUP_TOKENS, temperature, top_k, &warm);
    double t0 = now_seconds(), c0 = cpu_seconds();
    double step_seconds = sample_tokens(&dec, seqs, n_given, n_tokens, temperature, top_k, &rng);
    double seconds = now_seconds() - t0, cpu = cpu_seconds() - c0;
    for (int b = 0; b < batch; b++) {
        fprintf(out, "---- sequence %d ----\n", b);
        print_text(tok, seqs + b * width + 1, (int)width - 1, out);  // the prompt, then what followed it
    }
    double generated = (double)batch * n_tokens, steps = n_given - 1 + n_tokens;
    fprintf(out, "{\"gen_tokens\":%.0f,\"prompt_tokens\":%d,\"batch\":%d,\"threads\":%d,\"n_params\":%zu,"
            "\"seconds\":%.6f,\"cpu_seconds\":%.6f,\"gen_tokens_per_s\":%.1f,\"decode_tokens_per_s\":%.1f,"
            "\"ms_per_step\":%.4f}\n", generated, n_prompt, batch, threads, m->n_params, seconds, cpu,
            generated / seconds, batch * steps / step_seconds, 1e3 * seconds / steps);
    fflush(out);
    free(seqs);
    decoder_free(&dec);
}
