/* Dataset layout, shared with the trainer. Never installed. */
#ifndef PEFT_DATASET_INTERNAL_H
#define PEFT_DATASET_INTERNAL_H

#include "../internal.h"

/* The examples: tokens of example e are tokens[offsets[e] .. offsets[e+1]). */
typedef struct peft__store {
    size_t n;
    int32_t *tokens;
    int64_t *offsets; /* [n + 1] */
    int32_t *labels;  /* [n] or NULL */
    int n_classes;
    char **class_names;
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
} peft__batch_buf;

/* Fill a batch from dataset positions pos[0..n) (padding after each row). */
peft_status peft__dataset_batch(const peft_dataset *ds, const int64_t *pos, size_t n, peft__batch_buf *buf,
                                peft_batch *out);
void peft__batch_buf_free(peft_ctx *ctx, peft__batch_buf *buf);
/* Fisher-Yates shuffle with splitmix64 from `seed`. */
void peft__shuffle(int64_t *a, size_t n, uint64_t seed);

#endif
