/* Embedding lookup: out[n, :] = table[ids[n], :].
 *
 * table: (V, C) f32, or f16/bf16/q8_0 storage for a frozen table (rows converted
 * as they are read); ids: (N) i32 of any shape; out: (N, C) f32 shaped
 * [ids..., C]. Backward scatters dout rows into the used rows of dtable only,
 * so a 50k-row vocabulary costs nothing for rows the batch never touched. */
#include <string.h>

#include "../internal.h"

typedef struct embed_saved {
    const int32_t *ids; /* (N) a copy: the caller may reuse its id buffer before backward */
    int64_t N, C;
} embed_saved;

typedef struct embed_fwd_arg {
    const peft_tensor *table;
    int64_t row_stride; /* elements between table rows */
    const int32_t *ids;
    float *out; /* (N, C) */
    int64_t C;
} embed_fwd_arg;

static void embed_fwd_range(void *p, size_t begin, size_t end)
{
    const embed_fwd_arg *a = p;
    for (size_t n = begin; n < end; n++) {
        float *out_n = a->out + n * (size_t)a->C;
        size_t first = (size_t)a->ids[n] * (size_t)a->row_stride;
        /* f32 rows are a memcpy; half rows convert (the dtype was checked) */
        (void)peft__to_f32(a->table->dtype, a->table->data, first, (size_t)a->C, out_n);
    }
}

typedef struct embed_bwd_arg {
    const int32_t *ids;
    const float *dout; /* (N, C) */
    float *dtable;     /* (V, C) */
    int64_t N, C;
} embed_bwd_arg;

/* Threads own disjoint column ranges and each walks the ids in order, so
 * duplicate ids accumulate race-free and in the same order for any thread
 * count. */
static void embed_bwd_range(void *p, size_t begin, size_t end)
{
    const embed_bwd_arg *a = p;
    for (int64_t n = 0; n < a->N; n++) {
        const float *dout_n = a->dout + n * a->C;
        float *dtable_v = a->dtable + (int64_t)a->ids[n] * a->C;
        for (size_t c = begin; c < end; c++) dtable_v[c] += dout_n[c];
    }
}

static peft_status embedding_backward(peft_ctx *ctx, peft__node *node)
{
    const embed_saved *s = node->saved;
    peft_tensor *table = node->in[0];
    if (!peft__needs_grad(table)) return PEFT_OK;
    float *dtable;
    peft_status st = peft__grad_buffer(ctx, table, &dtable);
    if (st != PEFT_OK) return st;
    embed_bwd_arg a = {s->ids, node->out->grad, dtable, s->N, s->C};
    peft__parallel_for(ctx, (size_t)s->C, 64, embed_bwd_range, &a);
    return PEFT_OK;
}

peft_status peft_embedding(peft_ctx *ctx, peft_tensor *table, peft_tensor *ids, peft_tensor **out)
{
    static const char op[] = "peft_embedding";
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", op);
    *out = NULL;
    peft_status st;
    if ((st = peft__check_input(ctx, op, "table", table)) != PEFT_OK) return st;
    if ((st = peft__check_input(ctx, op, "ids", ids)) != PEFT_OK) return st;
    if (table->dtype != PEFT_DTYPE_F32 && table->dtype != PEFT_DTYPE_F16 && table->dtype != PEFT_DTYPE_BF16 &&
        table->dtype != PEFT_DTYPE_Q8_0)
        return peft__fail(ctx, PEFT_ERR_DTYPE, "%s: table dtype %s is not supported (f32, f16, bf16, q8_0)", op,
                          peft_dtype_name(table->dtype));
    if (ids->dtype != PEFT_DTYPE_I32)
        return peft__fail(ctx, PEFT_ERR_DTYPE, "%s: ids are %s, expected i32", op, peft_dtype_name(ids->dtype));
    char s1[64], s2[64];
    if (table->ndim != 2)
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: table %s must be 2-D [V, C]", op,
                          peft__shape_str(table, s1, sizeof s1));
    if (ids->ndim + 1 > PEFT_MAX_DIMS)
        return peft__fail(ctx, PEFT_ERR_SHAPE, "%s: ids %s have too many dims (output would exceed %d)", op,
                          peft__shape_str(ids, s2, sizeof s2), PEFT_MAX_DIMS);
    if ((st = peft__check_rows(ctx, op, "table", table)) != PEFT_OK) return st;
    if ((st = peft__check_contiguous(ctx, op, "ids", ids)) != PEFT_OK) return st;
    if (peft__needs_grad(table) && table->dtype != PEFT_DTYPE_F32)
        return peft__fail(ctx, PEFT_ERR_DTYPE, "%s: a %s table cannot train", op, peft_dtype_name(table->dtype));
    const int64_t V = table->shape[0], C = table->shape[1], N = peft_tensor_numel(ids);
    const int32_t *id = ids->data;
    for (int64_t n = 0; n < N; n++)
        if (id[n] < 0 || id[n] >= V)
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: ids[%lld] = %d is out of range [0, %lld) for table %s",
                              op, (long long)n, (int)id[n], (long long)V, peft__shape_str(table, s1, sizeof s1));

    int64_t shape[PEFT_MAX_DIMS];
    for (int i = 0; i < ids->ndim; i++) shape[i] = ids->shape[i];
    shape[ids->ndim] = C;
    peft_tensor *o;
    if ((st = peft__new_output(ctx, op, ids->ndim + 1, shape, &o)) != PEFT_OK) return st;
    embed_fwd_arg fa = {table, peft__row_stride(table), id, o->data, C};
    peft__parallel_for(ctx, (size_t)N, (size_t)(4096 / C + 1), embed_fwd_range, &fa);

    peft_tensor *in[2] = {table, ids};
    if (peft__should_record(ctx, in, 2)) {
        embed_saved *saved = peft__scratch(ctx, sizeof *saved, op);
        if (!saved) return PEFT_ERR_NOMEM;
        int32_t *ids_copy = peft__scratch(ctx, (size_t)N * sizeof *ids_copy, op);
        if (!ids_copy) return PEFT_ERR_NOMEM;
        memcpy(ids_copy, id, (size_t)N * sizeof *ids_copy);
        *saved = (embed_saved){ids_copy, N, C};
        if ((st = peft__record(ctx, op, embedding_backward, o, in, 2, saved)) != PEFT_OK) return st;
    }
    *out = o;
    return PEFT_OK;
}
