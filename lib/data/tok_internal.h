/* libpeft — declarations shared by the tokenizer files under lib/data/. Never
 * installed. Kept beside them (not in lib/internal.h) because nothing outside
 * the tokenizers uses them.
 *
 * Legend: n_vocab tokens; a token's "text" is how the vocabulary spells it
 * (byte-level alphabet, "▁", "<0xXX>"), its "piece" the bytes it decodes to.
 */
#ifndef PEFT_TOK_INTERNAL_H
#define PEFT_TOK_INTERNAL_H

#include "../internal.h"
#include "peft/tokenizer.h"

/* ---- Unicode (unicode.c, unicode_table.c) ---- */

enum { PEFT__UC_OTHER = 0, PEFT__UC_L = 1, PEFT__UC_N = 2, PEFT__UC_WS = 4 };

typedef struct peft__unicode_range {
    uint32_t first, last;
    uint32_t cls; /* PEFT__UC_* */
} peft__unicode_range;

extern const peft__unicode_range peft__unicode_ranges[];
extern const size_t peft__unicode_n_ranges;
extern const char peft__unicode_version[];

/* The class of a code point (PEFT__UC_OTHER when in no range). */
uint32_t peft__unicode_class(uint32_t cp);
/* Decode one UTF-8 code point from s[0..n) (n >= 1). Returns its length and
 * sets *cp; an invalid or truncated sequence (overlong, surrogate, > U+10FFFF,
 * stray continuation) yields length 1 and *cp = UINT32_MAX. */
size_t peft__utf8_decode(const uint8_t *s, size_t n, uint32_t *cp);
/* Encode cp (<= U+10FFFF) into out (4 bytes); returns the length. */
size_t peft__utf8_encode(uint32_t cp, uint8_t *out);

/* ---- hash maps (tok_map.c) ---- */

/* Token text -> id. Holds ids only; keys are read back from the tokenizer's
 * text table, so the table must not move while the index is used. */
typedef struct peft__tok_index {
    int32_t *slot;  /* (cap) id or -1 */
    uint32_t *hash; /* (cap) hash of the key in the slot */
    size_t cap;     /* power of two, >= 2 * entries */
    const char *text;
    const size_t *off; /* token i is text[off[i] .. off[i+1]) */
} peft__tok_index;

uint32_t peft__tok_hash(const char *s, size_t len);
/* Build over ids [0, n); when two ids spell the same non-empty text, fails
 * with *dup_a < *dup_b set (empty texts are not indexed). */
peft_status peft__tok_index_build(peft_ctx *ctx, peft__tok_index *ix, const char *text, const size_t *off, size_t n,
                                  int32_t *dup_a, int32_t *dup_b);
int32_t peft__tok_index_find(const peft__tok_index *ix, const char *s, size_t len);
void peft__tok_index_free(peft_ctx *ctx, peft__tok_index *ix);

/* (left id, right id) -> (rank, merged id) for BPE merges. */
typedef struct peft__pair_map {
    uint64_t *key; /* (cap) left << 32 | right, or UINT64_MAX when empty */
    int32_t *rank; /* (cap) */
    int32_t *merged;
    size_t cap, n;
} peft__pair_map;

peft_status peft__pair_map_init(peft_ctx *ctx, peft__pair_map *m, size_t n_expected);
/* Insert unless present (the first, lowest rank wins). false = out of memory. */
bool peft__pair_map_put(peft_ctx *ctx, peft__pair_map *m, int32_t left, int32_t right, int32_t rank, int32_t merged);
bool peft__pair_map_get(const peft__pair_map *m, int32_t left, int32_t right, int32_t *rank, int32_t *merged);
void peft__pair_map_free(peft_ctx *ctx, peft__pair_map *m);

/* ---- the merge loop shared by BPE and SPM (tok_merge.c) ---- */

/* The best pair is the one with the lowest key, leftmost on ties. pair_fn says
 * whether ids a, b merge, into which id and with which key. */
typedef bool (*peft__pair_fn)(void *user, int32_t a, int32_t b, double *key, int32_t *merged);

typedef struct peft__heap_entry {
    double key;
    int32_t left, right;       /* symbol positions */
    int32_t id_left, id_right; /* ids when pushed: stale if either changed */
    int32_t merged;
} peft__heap_entry;

/* Reusable buffers of the merge loop (grown as needed). */
typedef struct peft__merger {
    int32_t *prev, *next; /* (cap_sym) each; one block. Linked list over positions, -1 ends */
    size_t cap_sym;
    peft__heap_entry *heap; /* (cap_heap) */
    size_t cap_heap, n_heap;
} peft__merger;

/* Merge ids[0..n) in place; *n_out = the count left. */
peft_status peft__merge_run(peft_ctx *ctx, peft__merger *m, int32_t *ids, size_t n, peft__pair_fn fn, void *user,
                            size_t *n_out);
void peft__merger_free(peft_ctx *ctx, peft__merger *m);

/* ---- the tokenizer object (tokenizer.c) ---- */

enum {
    PEFT__TOK_CONTROL = 1u << 0,   /* decodes to nothing */
    PEFT__TOK_BYTE = 1u << 1,      /* a byte-fallback token */
    PEFT__TOK_MERGEABLE = 1u << 2, /* spm: may come out of code point lookup and merges */
    PEFT__TOK_ADDED = 1u << 3,     /* tokenizer.json added token: matched in the text before the model runs */
    PEFT__TOK_LSTRIP = 1u << 4,    /* added: takes the whitespace on its left */
    PEFT__TOK_RSTRIP = 1u << 5,    /* added: takes the whitespace on its right */
    PEFT__TOK_SINGLE_WORD = 1u << 6, /* added: matches only between non-word characters */
};

/* When spm encoding adds its dummy-prefix space to a piece of text (a whole
 * text, or a segment between added tokens). */
enum {
    PEFT__PREFIX_ALWAYS = 0,        /* llama2.c, GGUF, tokenizer.json Prepend("▁") normalizer */
    PEFT__PREFIX_NEVER = 1,         /* no prefix */
    PEFT__PREFIX_IF_MISSING = 2,    /* Metaspace "always": unless it starts with a space */
    PEFT__PREFIX_FIRST_MISSING = 3, /* Metaspace "first": only at the start of the text, unless a space is there */
};

struct peft_tokenizer {
    peft_ctx *ctx;
    peft_tokenizer_kind kind;
    size_t n_vocab;
    int32_t bos, eos, unk; /* -1 = none */
    char *text;            /* all token texts back to back */
    size_t *off;           /* (n_vocab + 1) token i is text[off[i] .. off[i+1]) */
    char *piece;           /* all decoded pieces back to back */
    size_t *piece_off;     /* (n_vocab + 1) */
    uint8_t *attr;         /* (n_vocab) PEFT__TOK_* */
    size_t max_text;       /* longest token text, bytes */
    peft__tok_index index;
    int32_t byte_id[256]; /* bpe: the one-character token of each byte; spm: "<0xXX>", -1 none */
    bool strip_after_bos; /* spm: drop the dummy-prefix space after BOS when decoding */
    /* gpt2-bpe */
    peft__pair_map merges;
    uint32_t byte_cp[256]; /* byte -> code point of GPT-2's alphabet */
    /* spm */
    float *scores; /* (n_vocab) */
    bool space_is_u2581;
    /* what a tokenizer.json asks for beyond the defaults (zero for the other loaders) */
    uint8_t spm_prefix;       /* PEFT__PREFIX_* */
    bool spm_split;           /* spm: merges stay within each "▁word" (Metaspace split) */
    bool bpe_prefix_space;    /* bpe: a space before text that does not start with one */
    bool bpe_no_regex;        /* bpe: the whole text is one pre-token */
    bool bpe_ignore_merges;   /* bpe: a pre-token that is a token is that token */
    bool strip_first_space;   /* decode: drop one space at the start of the output (decoder Strip) */
    size_t *added_len;        /* (n_added_len) distinct lengths of added tokens, longest first */
    size_t n_added_len;       /* 0: no added-token matching */
    uint8_t added_first[32];  /* bit set of the first bytes of added tokens */
};

/* Appends ids up to cap and counts them all, so a too-small buffer still
 * learns the needed count. */
typedef struct peft__tok_out {
    int32_t *ids;
    size_t cap, n;
} peft__tok_out;

static inline void peft__tok_emit(peft__tok_out *o, int32_t id)
{
    if (o->n < o->cap) o->ids[o->n] = id;
    o->n++;
}

/* A tokenizer of `kind` holding copies of n token texts; checks the arrays
 * and that non-empty texts are distinct. `who` starts every message (e.g.
 * "peft_tokenizer_load_gpt2: /x/vocab.json"). piece/piece_off/attr are
 * allocated (zeroed) for the kind to fill; bos/eos/unk are -1. */
peft_status peft__tok_new(peft_ctx *ctx, const char *who, peft_tokenizer_kind kind, size_t n, const char *const *texts,
                          const size_t *lens, peft_tokenizer **out);
/* Allocate the decoded-piece table for `bytes` total bytes. */
peft_status peft__tok_alloc_pieces(peft_tokenizer *tok, const char *who, size_t bytes);
/* A printable, quoted copy of s[0..len) for messages (\xNN escapes, cut at size). */
const char *peft__tok_quote(const char *s, size_t len, char *buf, size_t size);
/* Read a whole file through the context allocator (free with peft__free). A
 * NUL is appended after the *len bytes. */
peft_status peft__tok_read_file(peft_ctx *ctx, const char *who, const char *path, char **data, size_t *len);

/* Kind-specific encoders (no BOS/EOS) of one piece of text; text_start: it
 * begins the text given to peft_tokenizer_encode (the other pieces follow an
 * added token). */
peft_status peft__tok_bytes_encode(peft_tokenizer *tok, const uint8_t *s, size_t n, peft__tok_out *o);
peft_status peft__tok_bpe_encode(peft_tokenizer *tok, const uint8_t *s, size_t n, peft__tok_out *o);
peft_status peft__tok_spm_encode(peft_tokenizer *tok, const uint8_t *s, size_t n, bool text_start, peft__tok_out *o);

/* ---- builders shared with the tokenizer.json loader (tok_bpe.c, tok_spm.c) ---- */

/* A byte-level BPE tokenizer with no merges yet (room for n_merges): checks
 * the alphabet, fills the pieces. `who` starts messages. */
peft_status peft__tok_bpe_build(peft_ctx *ctx, const char *who, size_t n_tokens, const char *const *tokens,
                                const size_t *token_lens, int32_t bos, int32_t eos, size_t n_merges,
                                peft_tokenizer **out);
/* Add merge (a, b) -> a+b with `rank` to tok->merges (the first of equal
 * pairs wins). a, b and a+b must be tokens, else PEFT_ERR_FORMAT
 * "<who>: <where>: merge 'a b': ...". cat holds tok->max_text bytes. */
peft_status peft__tok_add_merge(peft_tokenizer *tok, const char *who, const char *where, const char *a, size_t la,
                                const char *b, size_t lb, int32_t rank, char *cat);
/* The pair function of merges by rank (tok->merges); user is the tokenizer. */
bool peft__tok_rank_pair(void *user, int32_t a, int32_t b, double *key, int32_t *merged);
/* peft_tokenizer_create_spm with `who` starting the messages. */
peft_status peft__tok_spm_build(peft_ctx *ctx, const char *who, size_t n, const char *const *pieces,
                                const size_t *lens, const float *scores, const int32_t *types, int32_t bos,
                                int32_t eos, int32_t unk, int space_is_u2581, peft_tokenizer **out);
/* The byte of a "<0xXX>" text, or -1. */
int peft__tok_byte_piece(const char *t, size_t len);

/* GPT-2's pre-tokenizer: the end of the pre-token that starts at s[i] (i < n). */
size_t peft__gpt2_pretoken_end(const uint8_t *s, size_t n, size_t i);

#endif /* PEFT_TOK_INTERNAL_H */
