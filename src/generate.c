#include "generate.h"
#include "kernels.h"
#include <omp.h>
#include <string.h>

// The caches and one position's activations in one allocation: a first pass (arena base NULL)
// counts, the second hands out.
static void layout(Decoder *d, Arena *arena) {
    const GPT *m = d->m;
    size_t B = d->batch, cache = (size_t)m->L * B * m->Hkv * d->capacity * m->hs;
    d->attn = (Attention){.mode = ATTN_CACHED, .capacity = d->capacity, .threads = d->threads};
    d->attn.k_cache = arena_take(arena, cache);
    d->attn.v_cache = arena_take(arena, cache);
    d->attn.scores = arena_take(arena, B * m->H * d->capacity);
    gpt_layout_forward(m, &d->acts, arena, d->batch, 1, 1);
}

void decoder_init(Decoder *d, const GPT *m, int batch) {
    memset(d, 0, sizeof *d);
    d->m = m;
    d->batch = batch;
    d->capacity = m->maxT;
    d->threads = omp_get_max_threads();
    d->acts.blocks = xcalloc(m->L, sizeof(BlockActs));
    Arena arena = {0};
    layout(d, &arena);
    d->memory = arena.base = xcalloc(arena.used, sizeof(real));
    arena.used = 0;
    layout(d, &arena);
}

void decoder_free(Decoder *d) {
    free(d->memory);
    free(d->acts.blocks);
    memset(d, 0, sizeof *d);
}

void decoder_reset(Decoder *d) { d->pos = 0; }

const real *decoder_step(Decoder *d, const int *tokens) {
    const GPT *m = d->m;
    if (d->pos >= d->capacity) die(1, "internal: decoder step at position %d, cache holds %d", d->pos, d->capacity);
    for (int b = 0; b < d->batch; b++)
        if (tokens[b] < 0 || tokens[b] >= m->V) die(1, "internal: token %d outside the vocabulary", tokens[b]);
    d->attn.pos = d->pos;
    set_threads(1);
    gpt_forward_pass(m, &d->acts, tokens, d->batch, 1, &d->attn);
    set_threads(d->threads);
    d->pos++;
    return d->acts.logits;
}
