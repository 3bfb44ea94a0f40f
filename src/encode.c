// Text -> token ids: SentencePiece's BPE encoding (bpe_model.cc) for the tokenizers scripts/make_dataset.py
// trains: identity normalization, no dummy prefix, spaces kept as they are, byte fallback.
//
// SentencePiece writes a space as the meta-space U+2581 and keeps a literal U+2581 of the text, so
// both are one symbol to it; the decoding table (tokenizer.h) holds pieces with " " in place of the
// meta-space, so here both become " " and the table's bytes serve as the index keys. The algorithm:
// every character is a symbol; repeatedly merge the adjacent pair whose concatenation is a piece with
// the highest score (the leftmost pair among equal scores) until no pair is a piece; a symbol that is
// no piece is emitted as the byte pieces of its UTF-8 bytes.
#include "tokenizer.h"
#include "common.h"
#include <string.h>

enum { PIECE_NORMAL = 1, PIECE_USER_DEFINED = 4, PIECE_UNUSED = 5, PIECE_BYTE = 6 };

static const char META_SPACE[] = "\xe2\x96\x81", REPLACEMENT[] = "\xef\xbf\xbd";

// The hash index's slot of the bytes s[0..n) (FNV-1a, common.c).
static uint32_t piece_hash(const char *s, size_t n) { return (uint32_t)fnv1a(FNV_OFFSET, s, n); }

// The id of the normal piece whose bytes are s[0..n), or -1.
static int piece_id(const Tokenizer *t, const char *s, size_t n) {
    for (uint32_t slot = piece_hash(s, n) & (uint32_t)t->index_mask;; slot = (slot + 1) & (uint32_t)t->index_mask) {
        int id = t->index[slot];
        if (id < 0) return -1;
        if (strncmp(t->pieces[id], s, n) == 0 && t->pieces[id][n] == '\0') return id;
    }
}

void tokenizer_index(Tokenizer *t, const char *path) {
    int slots = 1;
    while (slots < 2 * t->vocab_size) slots *= 2;
    t->index_mask = slots - 1;
    t->index = xcalloc((size_t)slots, sizeof(int));
    memset(t->index, -1, (size_t)slots * sizeof(int));
    for (int b = 0; b < 256; b++) t->byte_ids[b] = -1;
    for (int id = 0; id < t->vocab_size; id++) {
        const char *p = t->pieces[id];
        if (t->types[id] == PIECE_USER_DEFINED || t->types[id] == PIECE_UNUSED)
            die(1, "%s: token %d is a user-defined or unused piece, which the encoder does not handle", path, id);
        if (t->types[id] == PIECE_BYTE) {
            unsigned char b = (unsigned char)p[0];
            if (strlen(p) > 1 || t->byte_ids[b] >= 0) die(1, "%s: byte piece %d is not one new byte", path, id);
            t->byte_ids[b] = id;
        } else if (t->types[id] == PIECE_NORMAL) {
            size_t n = strlen(p);
            if (n == 0 || piece_id(t, p, n) >= 0) die(1, "%s: normal piece %d is empty or repeated", path, id);
            uint32_t slot = piece_hash(p, n) & (uint32_t)t->index_mask;
            while (t->index[slot] >= 0) slot = (slot + 1) & (uint32_t)t->index_mask;
            t->index[slot] = id;
        }
    }
    for (int b = 0; b < 256; b++)
        if (t->byte_ids[b] < 0) die(1, "%s: no byte-fallback piece <0x%02X>", path, b);
}

int tokenizer_can_encode(const Tokenizer *t) { return t->index != NULL; }

// Length of the well-formed UTF-8 character at s (the rules of SentencePiece's DecodeUTF8: no
// overlong forms, no surrogates, nothing past U+10FFFF), or 0 when the byte at s starts none.
static int utf8_char_len(const unsigned char *s) {
    int n = s[0] < 0x80 ? 1 : s[0] >= 0xC2 && s[0] < 0xE0 ? 2 : s[0] >= 0xE0 && s[0] < 0xF0 ? 3
          : s[0] >= 0xF0 && s[0] < 0xF5 ? 4 : 0;
    for (int i = 1; i < n; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    if (n == 3 && ((s[0] == 0xE0 && s[1] < 0xA0) || (s[0] == 0xED && s[1] >= 0xA0))) return 0;
    if (n == 4 && ((s[0] == 0xF0 && s[1] < 0x90) || (s[0] == 0xF4 && s[1] >= 0x90))) return 0;
    return n;
}

typedef struct { int start, len, prev, next; } Symbol;         // a run of norm; len 0 once merged away
typedef struct { float score; int left, right, len; } Pair;    // a merge candidate: symbols left, right

static int pair_before(const Pair *a, const Pair *b) {  // SentencePiece's agenda order
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(Pair *heap, int *n, Pair p) {
    int i = (*n)++;
    for (; i > 0 && pair_before(&p, &heap[(i - 1) / 2]); i = (i - 1) / 2) heap[i] = heap[(i - 1) / 2];
    heap[i] = p;
}

static Pair heap_pop(Pair *heap, int *n) {
    Pair top = heap[0], last = heap[--*n];
    int i = 0;
    for (int child; (child = 2 * i + 1) < *n; i = child) {
        if (child + 1 < *n && pair_before(&heap[child + 1], &heap[child])) child++;
        if (!pair_before(&heap[child], &last)) break;
        heap[i] = heap[child];
    }
    heap[i] = last;
    return top;
}

static void push_if_piece(const Tokenizer *t, const char *norm, const Symbol *sym, int left, Pair *heap, int *n) {
    if (left < 0 || sym[left].next < 0) return;
    int right = sym[left].next, len = sym[left].len + sym[right].len;
    int id = piece_id(t, norm + sym[left].start, (size_t)len);
    if (id >= 0) heap_push(heap, n, (Pair){t->scores[id], left, right, len});
}

int tokenizer_encode(const Tokenizer *t, const char *text, int *ids, int max) {
    if (!tokenizer_can_encode(t)) return -1;
    size_t text_len = strlen(text);
    // Normalize: a malformed byte becomes U+FFFD (as SentencePiece's normalizer does), the
    // meta-space becomes " "; every character is one symbol.
    char *norm = xcalloc(3 * text_len + 1, 1);
    Symbol *sym = xcalloc(text_len + 1, sizeof(Symbol));
    int n_sym = 0;
    size_t len = 0;
    for (size_t i = 0; i < text_len;) {
        const unsigned char *s = (const unsigned char *)text + i;
        int n = utf8_char_len(s);
        const char *c = (const char *)s;
        size_t c_len = (size_t)n;
        if (n == 0) c = REPLACEMENT, c_len = 3, n = 1;
        else if (n == 3 && memcmp(s, META_SPACE, 3) == 0) c = " ", c_len = 1;
        sym[n_sym] = (Symbol){(int)len, (int)c_len, n_sym - 1, n_sym + 1};
        memcpy(norm + len, c, c_len);
        len += c_len;
        n_sym++;
        i += (size_t)n;
    }
    if (n_sym) sym[n_sym - 1].next = -1;

    Pair *heap = xcalloc(3 * (size_t)n_sym + 1, sizeof(Pair));
    int n_heap = 0;
    for (int i = 0; i + 1 < n_sym; i++) push_if_piece(t, norm, sym, i, heap, &n_heap);
    while (n_heap) {
        Pair p = heap_pop(heap, &n_heap);
        Symbol *l = &sym[p.left], *r = &sym[p.right];
        if (l->len == 0 || r->len == 0 || l->len + r->len != p.len) continue;  // stale: a side has changed
        l->len += r->len;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = p.left;
        r->len = 0;
        push_if_piece(t, norm, sym, l->prev, heap, &n_heap);
        push_if_piece(t, norm, sym, p.left, heap, &n_heap);
    }

    int count = 0;
    for (int i = n_sym ? 0 : -1; i >= 0; i = sym[i].next) {
        const char *s = norm + sym[i].start;
        int id = piece_id(t, s, (size_t)sym[i].len);
        if (id >= 0) {
            if (count < max) ids[count] = id;
            count++;
            continue;
        }
        // Byte fallback: SentencePiece emits the bytes of its normalized text, a space as U+2581.
        if (sym[i].len == 1 && s[0] == ' ') s = META_SPACE, sym[i].len = 3;
        for (int b = 0; b < sym[i].len; b++, count++)
            if (count < max) ids[count] = t->byte_ids[(unsigned char)s[b]];
    }
    free(heap);
    free(sym);
    free(norm);
    return count;
}
