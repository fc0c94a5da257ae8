/* The merge loop shared by byte-level BPE and SPM: repeatedly merge the
 * adjacent pair with the lowest key (leftmost on ties) until no pair merges.
 *
 * Symbols live at fixed positions linked into a list; candidate pairs sit in
 * a binary min-heap. A merge keeps the left position and kills the right one,
 * so positions stay in text order and "leftmost" is the smaller position. An
 * entry is stale once either of its symbols changed; it is skipped on pop.
 * Each merge pushes at most two entries: O(n log n) for n symbols. */
#include <string.h>

#include "tok_internal.h"

static inline bool entry_less(const peft__heap_entry *a, const peft__heap_entry *b)
{
    return a->key < b->key || (a->key == b->key && a->left < b->left);
}

static void heap_push(peft__merger *m, const peft__heap_entry *e)
{
    size_t i = m->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!entry_less(e, &m->heap[parent])) break;
        m->heap[i] = m->heap[parent];
        i = parent;
    }
    m->heap[i] = *e;
}

static peft__heap_entry heap_pop(peft__merger *m)
{
    peft__heap_entry top = m->heap[0], last = m->heap[--m->n_heap];
    size_t i = 0, n = m->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && entry_less(&m->heap[c + 1], &m->heap[c])) c++;
        if (!entry_less(&m->heap[c], &last)) break;
        m->heap[i] = m->heap[c];
        i = c;
    }
    if (n > 0) m->heap[i] = last;
    return top;
}

static void try_push(peft__merger *m, const int32_t *ids, int32_t left, int32_t right, peft__pair_fn fn, void *user)
{
    peft__heap_entry e;
    if (!fn(user, ids[left], ids[right], &e.key, &e.merged)) return;
    e.left = left, e.right = right;
    e.id_left = ids[left], e.id_right = ids[right];
    heap_push(m, &e);
}

static bool grow(peft_ctx *ctx, void **buf, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return true;
    size_t n = *cap ? *cap : 64, bytes;
    while (n < need) n *= 2;
    if (!peft__mul_ok(n, elem, &bytes)) return false;
    void *p = peft__malloc(ctx, bytes);
    if (!p) return false;
    peft__free(ctx, *buf); /* contents need not survive: every run starts afresh */
    *buf = p;
    *cap = n;
    return true;
}

peft_status peft__merge_run(peft_ctx *ctx, peft__merger *m, int32_t *ids, size_t n, peft__pair_fn fn, void *user,
                            size_t *n_out)
{
    *n_out = n;
    if (n < 2) return PEFT_OK;
    if (n > INT32_MAX / 3)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "tokenizer: %zu symbols in one run is too many", n);
    /* prev and next share one block of 2 * cap_sym */
    size_t cap_links = 2 * m->cap_sym;
    if (!grow(ctx, (void **)&m->prev, &cap_links, 2 * n, sizeof *m->prev) ||
        !grow(ctx, (void **)&m->heap, &m->cap_heap, 3 * n, sizeof *m->heap))
        return peft__fail(ctx, PEFT_ERR_NOMEM, "tokenizer: no memory for merging %zu symbols", n);
    m->cap_sym = cap_links / 2;
    m->next = m->prev + m->cap_sym;
    for (size_t i = 0; i < n; i++) {
        m->prev[i] = (int32_t)i - 1;
        m->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    m->n_heap = 0;
    for (size_t i = 0; i + 1 < n; i++) try_push(m, ids, (int32_t)i, (int32_t)i + 1, fn, user);
    while (m->n_heap > 0) {
        peft__heap_entry e = heap_pop(m);
        if (ids[e.left] != e.id_left || m->next[e.left] != e.right || ids[e.right] != e.id_right) continue;
        ids[e.left] = e.merged;
        ids[e.right] = -1; /* dead */
        int32_t after = m->next[e.right];
        m->next[e.left] = after;
        if (after >= 0) m->prev[after] = e.left;
        if (m->prev[e.left] >= 0) try_push(m, ids, m->prev[e.left], e.left, fn, user);
        if (after >= 0) try_push(m, ids, e.left, after, fn, user);
    }
    size_t k = 0; /* position 0 is never a right side, so the list starts there */
    for (int32_t i = 0; i >= 0; i = m->next[i]) ids[k++] = ids[i];
    *n_out = k;
    return PEFT_OK;
}

void peft__merger_free(peft_ctx *ctx, peft__merger *m)
{
    peft__free(ctx, m->prev); /* next is part of this block */
    peft__free(ctx, m->heap);
    memset(m, 0, sizeof *m);
}
