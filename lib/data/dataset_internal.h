/* Dataset layout, shared with the trainer and between dataset*.c. Never installed. */
#ifndef PEFT_DATASET_INTERNAL_H
#define PEFT_DATASET_INTERNAL_H

#include "../internal.h"

/* The examples: tokens of example e are tokens[offsets[e] .. offsets[e+1]). */
typedef struct peft__store {
    size_t n;
    int32_t *tokens;
    int64_t *offsets;    /* [n + 1] */
    int32_t *labels;     /* [n] or NULL */
    uint8_t *loss_mask;  /* [offsets[n]]: 1 where the token is a target; NULL = every token */
    int n_classes;
    char **class_names;
    /* what the load saw (zero for peft_dataset_from_ids) */
    peft_data_format format;
    size_t n_skipped, n_truncated, n_invalid_utf8;
    size_t text_peak; /* most bytes of raw text buffered at once while loading */
} peft__store;

/* A dataset is a view: positions 0..n-1 map to store examples index[i]. */
struct peft_dataset {
    peft_ctx *ctx;
    peft__store *store;
    bool owns_store;
    int64_t *index;
    size_t n;
};

/* Reusable padded batch arrays (grown as needed). */
typedef struct peft__batch_buf {
    int32_t *ids, *mask, *labels;
    int64_t *example_ids;
    size_t cap, cap_rows;
    int32_t *loss_mask; /* (cap) */
} peft__batch_buf;

/* Fill a batch from dataset positions pos[0..n) (padding after each row). */
peft_status peft__dataset_batch(const peft_dataset *ds, const int64_t *pos, size_t n, peft__batch_buf *buf,
                                peft_batch *out);
void peft__batch_buf_free(peft_ctx *ctx, peft__batch_buf *buf);
/* Fisher-Yates shuffle with splitmix64 from `seed`. */
void peft__shuffle(int64_t *a, size_t n, uint64_t seed);

/* A dataset owning `s` (identity view); frees `s` on failure. */
peft_status peft__dataset_wrap(peft_ctx *ctx, peft__store *s, peft_dataset **out);
void peft__store_free(peft_ctx *ctx, peft__store *s);

/* ---- reading (dataset_read.c) ---- */

#define PEFT__DATASET_CHUNK ((size_t)1 << 18) /* bytes read at a time */
#define PEFT__DATASET_SNIFF ((size_t)1 << 16) /* bytes looked at to detect the format */

/* A byte source: a file (plain or gzip, told apart by zlib from the magic
 * bytes) or memory (plain or gzip). The first bytes are sniffed into `pre`
 * and served again by reads. */
typedef struct peft__src peft__src;
peft_status peft__src_open_file(peft_ctx *ctx, const char *path, peft__src **out);
peft_status peft__src_open_mem(peft_ctx *ctx, const void *data, size_t len, const char *name, peft__src **out);
void peft__src_close(peft__src *s);
const char *peft__src_name(const peft__src *s);
bool peft__src_is_gzip(const peft__src *s);
/* The first up to PEFT__DATASET_SNIFF bytes (decompressed); *eof when that is all. */
peft_status peft__src_sniff(peft__src *s, const char **data, size_t *len, bool *eof);

/* Lines of a source, read `chunk` bytes at a time. A line is never split: the
 * buffer grows to hold the longest line. Lines exclude "\n" and a trailing
 * "\r"; a UTF-8 byte-order mark at the start of line 1 is dropped. */
typedef struct peft__lines {
    peft__src *src;
    char *buf;
    size_t cap, beg, end, scan, chunk;
    bool eof;
    size_t line_no; /* of the line last returned (1-based) */
} peft__lines;
peft_status peft__lines_init(peft__lines *L, peft__src *src, size_t chunk);
/* *got = false at the end. The line is valid until the next call. */
peft_status peft__lines_next(peft__lines *L, const char **line, size_t *len, bool *got);
void peft__lines_fini(peft__lines *L);

/* ---- loading (dataset_load.c) ---- */

/* peft_dataset_load / peft_dataset_from_buffer with the read size as a knob
 * (tests use tiny chunks to cross every boundary). */
peft_status peft__dataset_load_src(peft_ctx *ctx, peft_tokenizer *tok, peft__src *src, const char *path,
                                   const peft_dataset_opts *opts, size_t chunk, peft_dataset **out);
peft_status peft__dataset_load_chunked(peft_ctx *ctx, peft_tokenizer *tok, const char *path,
                                       const peft_dataset_opts *opts, size_t chunk, peft_dataset **out);

#endif
