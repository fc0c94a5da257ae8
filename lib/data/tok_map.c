/* Hash maps of the tokenizers: token text -> id, and BPE merge pair -> rank.
 * Open addressing with linear probing; tables are at most half full. */
#include <string.h>

#include "tok_internal.h"

uint32_t peft__tok_hash(const char *s, size_t len)
{
    /* FNV-1a folded to 32 bits: token texts are short */
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001b3ULL;
    }
    return (uint32_t)(h ^ (h >> 32));
}

static size_t table_cap(size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n && cap <= SIZE_MAX / 4) cap *= 2;
    return cap;
}

peft_status peft__tok_index_build(peft_ctx *ctx, peft__tok_index *ix, const char *text, const size_t *off, size_t n,
                                  int32_t *dup_a, int32_t *dup_b)
{
    memset(ix, 0, sizeof *ix);
    ix->text = text;
    ix->off = off;
    ix->cap = table_cap(n);
    ix->slot = peft__malloc(ctx, ix->cap * sizeof *ix->slot);
    ix->hash = peft__malloc(ctx, ix->cap * sizeof *ix->hash);
    if (!ix->slot || !ix->hash) {
        peft__tok_index_free(ctx, ix);
        return PEFT_ERR_NOMEM;
    }
    memset(ix->slot, 0xFF, ix->cap * sizeof *ix->slot); /* -1 */
    size_t mask = ix->cap - 1;
    for (size_t id = 0; id < n; id++) {
        const char *s = text + off[id];
        size_t len = off[id + 1] - off[id];
        if (len == 0) continue;
        uint32_t h = peft__tok_hash(s, len);
        size_t i = h & mask;
        for (;; i = (i + 1) & mask) {
            int32_t other = ix->slot[i];
            if (other < 0) break;
            if (ix->hash[i] == h && off[other + 1] - off[other] == len && memcmp(text + off[other], s, len) == 0) {
                *dup_a = other;
                *dup_b = (int32_t)id;
                return PEFT_ERR_FORMAT; /* the caller frees and reports */
            }
        }
        ix->slot[i] = (int32_t)id;
        ix->hash[i] = h;
    }
    return PEFT_OK;
}

int32_t peft__tok_index_find(const peft__tok_index *ix, const char *s, size_t len)
{
    if (!ix->slot || len == 0) return -1;
    uint32_t h = peft__tok_hash(s, len);
    size_t mask = ix->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        int32_t id = ix->slot[i];
        if (id < 0) return -1;
        if (ix->hash[i] == h && ix->off[id + 1] - ix->off[id] == len && memcmp(ix->text + ix->off[id], s, len) == 0)
            return id;
    }
}

void peft__tok_index_free(peft_ctx *ctx, peft__tok_index *ix)
{
    peft__free(ctx, ix->slot);
    peft__free(ctx, ix->hash);
    ix->slot = NULL;
    ix->hash = NULL;
}

static inline uint64_t pair_key(int32_t left, int32_t right)
{
    return ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
}

peft_status peft__pair_map_init(peft_ctx *ctx, peft__pair_map *m, size_t n_expected)
{
    memset(m, 0, sizeof *m);
    m->cap = table_cap(n_expected);
    m->key = peft__malloc(ctx, m->cap * sizeof *m->key);
    m->rank = peft__malloc(ctx, m->cap * sizeof *m->rank);
    m->merged = peft__malloc(ctx, m->cap * sizeof *m->merged);
    if (!m->key || !m->rank || !m->merged) {
        peft__pair_map_free(ctx, m);
        return PEFT_ERR_NOMEM;
    }
    memset(m->key, 0xFF, m->cap * sizeof *m->key);
    return PEFT_OK;
}

static size_t pair_slot(const peft__pair_map *m, uint64_t key)
{
    size_t mask = m->cap - 1;
    size_t i = (size_t)peft__hash64(0x7A11, key) & mask;
    while (m->key[i] != UINT64_MAX && m->key[i] != key) i = (i + 1) & mask;
    return i;
}

bool peft__pair_map_put(peft_ctx *ctx, peft__pair_map *m, int32_t left, int32_t right, int32_t rank, int32_t merged)
{
    if (2 * (m->n + 1) > m->cap) { /* grow: rehash into a table twice as large */
        peft__pair_map big;
        if (peft__pair_map_init(ctx, &big, m->cap) != PEFT_OK) return false;
        for (size_t i = 0; i < m->cap; i++) {
            if (m->key[i] == UINT64_MAX) continue;
            size_t j = pair_slot(&big, m->key[i]);
            big.key[j] = m->key[i], big.rank[j] = m->rank[i], big.merged[j] = m->merged[i];
        }
        big.n = m->n;
        peft__pair_map_free(ctx, m);
        *m = big;
    }
    uint64_t key = pair_key(left, right);
    size_t i = pair_slot(m, key);
    if (m->key[i] == key) return true;
    m->key[i] = key, m->rank[i] = rank, m->merged[i] = merged;
    m->n++;
    return true;
}

bool peft__pair_map_get(const peft__pair_map *m, int32_t left, int32_t right, int32_t *rank, int32_t *merged)
{
    if (!m->key) return false;
    size_t i = pair_slot(m, pair_key(left, right));
    if (m->key[i] == UINT64_MAX) return false;
    *rank = m->rank[i];
    *merged = m->merged[i];
    return true;
}

void peft__pair_map_free(peft_ctx *ctx, peft__pair_map *m)
{
    peft__free(ctx, m->key);
    peft__free(ctx, m->rank);
    peft__free(ctx, m->merged);
    m->key = NULL;
    m->rank = m->merged = NULL;
    m->cap = m->n = 0;
}
