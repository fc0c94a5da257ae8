/* libpeft — reading and writing tensor files.
 *
 * Each format has its own section below. Readers are strict: a file that does
 * not follow its format exactly is refused with PEFT_ERR_FORMAT and a message
 * naming the file, the item and the problem; they never read past the end of
 * a file. Writers replace their target atomically (a failed save leaves the
 * previous file, or nothing, in place).
 */
#ifndef PEFT_IO_H
#define PEFT_IO_H

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ======================================================================
 * safetensors (https://github.com/huggingface/safetensors)
 *
 * A peft_safetensors is a read-only *set* of tensors backed by one file, or by
 * every shard of a sharded checkpoint (model.safetensors.index.json). The same
 * calls (count / info / find / load) work for both; tensor names are unique
 * across the set. The files stay open (read with pread) until
 * peft_safetensors_close; the header is fully validated at open, so later
 * calls only fail on I/O errors, on tensors libpeft cannot hold, or on
 * misuse. Tensors are listed shard by shard (shards in name order), each in
 * data-offset order.
 *
 * A handle is tied to the context it was opened with; like the context, it is
 * not thread-safe.
 * ====================================================================== */

typedef struct peft_safetensors peft_safetensors;

/* Open one .safetensors file and validate its whole header: the 8-byte length
 * (header at most 100,000,000 bytes and inside the file), UTF-8 JSON object,
 * every entry's dtype / shape / data_offsets (no other fields, no duplicate
 * names), __metadata__ string->string, offsets contiguous from 0 with no gap or
 * overlap, byte sizes matching shapes, and no bytes after the last tensor.
 * On failure *out is NULL: PEFT_ERR_IO (cannot open/read; names the path),
 * PEFT_ERR_FORMAT (names the file, tensor and problem), PEFT_ERR_NOMEM. */
PEFT_API peft_status peft_safetensors_open(peft_ctx *ctx, const char *path, peft_safetensors **out);

/* Open a sharded checkpoint from its index file
 * ({"weight_map": {"<tensor>": "<shard file>", ...}, "metadata": {...}}).
 * Shard names are plain file names in the index's directory ('/', '\\' and
 * ".." are refused). Every shard named in the weight_map is opened and
 * validated; each weight_map tensor must be in the shard it names, and every
 * tensor of every shard must be in the weight_map (PEFT_ERR_FORMAT).
 * A shard that cannot be opened gives PEFT_ERR_IO naming it. Other top-level
 * fields of the index (such as "metadata") are ignored. */
PEFT_API peft_status peft_safetensors_open_index(peft_ctx *ctx, const char *index_path,
                                                 peft_safetensors **out);

/* Open the checkpoint in a directory: `dir`/model.safetensors.index.json if it
 * exists (sharded), else `dir`/model.safetensors. PEFT_ERR_IO when neither
 * exists. */
PEFT_API peft_status peft_safetensors_open_dir(peft_ctx *ctx, const char *dir, peft_safetensors **out);

/* Close the files and free the handle. NULL is a no-op. Tensors already loaded
 * are independent of the handle. */
PEFT_API void peft_safetensors_close(peft_safetensors *st);

/* Number of tensors in the set (0 for NULL). */
PEFT_API size_t peft_safetensors_count(const peft_safetensors *st);

/* Describe tensor i (0 <= i < count). Every out-parameter may be NULL.
 *  name:      borrowed, valid until close.
 *  dtype:     the libpeft dtype of the stored data (F32, F16, BF16, I32), or
 *             PEFT_DTYPE_COUNT for any other safetensors dtype.
 *  dtype_str: the file's dtype string ("F32", "I64", "F8_E4M3"...), borrowed.
 *  ndim:      the true number of dimensions (0 for a scalar; may exceed 4).
 *  shape:     4 entries; the first min(ndim, 4) dims, the rest set to 0.
 * PEFT_ERR_INVALID_ARG when st is NULL or i is out of range. */
PEFT_API peft_status peft_safetensors_info(const peft_safetensors *st, size_t i, const char **name,
                                           peft_dtype *dtype, const char **dtype_str, int *ndim,
                                           int64_t shape[PEFT_MAX_DIMS]);

/* The index of the tensor called `name`; PEFT_ERR_NOT_FOUND (message names
 * it) when the set has none. O(log count). */
PEFT_API peft_status peft_safetensors_find(const peft_safetensors *st, const char *name, size_t *index);

/* The __metadata__ value for `key`, or NULL when absent (or st/key NULL).
 * For a sharded set the shards are searched in order and the first value
 * found is returned. Borrowed; valid until close. */
PEFT_API const char *peft_safetensors_metadata(const peft_safetensors *st, const char *key);

/* Read tensor i into a new long-lived contiguous tensor (free it with
 * peft_tensor_destroy). `want`:
 *  - PEFT_DTYPE_COUNT: keep the stored dtype (F32, F16, BF16, I32; I64 is
 *    narrowed to I32),
 *  - F32 / F16 / BF16: convert from any of F32 / F16 / BF16 (to f16 / bf16
 *    rounds to nearest even),
 *  - I32: from I32 or I64 (every value must fit in int32, else PEFT_ERR_DTYPE).
 * A scalar (shape []) loads as shape [1]. Tensors with more than 4 dims or
 * with no elements are refused (PEFT_ERR_SHAPE); other dtypes (F64, U8, ...)
 * and float<->int requests give PEFT_ERR_DTYPE naming the tensor. */
PEFT_API peft_status peft_safetensors_load(peft_safetensors *st, size_t i, peft_dtype want,
                                           peft_tensor **out);

/* Write n tensors (F32, F16, BF16 or I32; strided views are written in
 * logical row-major order) and n_meta __metadata__ string pairs to `path`.
 * names / tensors hold n entries (may be NULL when n is 0); meta_keys /
 * meta_values hold n_meta entries. Names must be non-empty valid UTF-8,
 * unique, and not "__metadata__"; metadata keys unique. The header is padded
 * with spaces to a multiple of 8 bytes and the data packed back to back,
 * 4-byte dtypes first so every tensor is naturally aligned (caller order is
 * kept within a dtype size). The file is written to a temporary name in the
 * same directory, synced and renamed over `path`, so a failed save never
 * leaves a partial file. */
PEFT_API peft_status peft_safetensors_save(peft_ctx *ctx, const char *path, size_t n,
                                           const char *const *names, peft_tensor *const *tensors,
                                           size_t n_meta, const char *const *meta_keys,
                                           const char *const *meta_values);

/* ===================== end of safetensors section ===================== */

#ifdef __cplusplus
}
#endif
#endif /* PEFT_IO_H */
