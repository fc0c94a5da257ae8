/* libpeft — GGUF files (llama.cpp / ggml): a validating reader and a writer.
 *
 * Reader. peft_gguf_open maps the file read-only and validates all of it up
 * front (header, every key/value, every tensor record, the tensor data
 * ranges), so the accessors below never fail on a malformed file: a corrupt
 * or hostile file is rejected by open with PEFT_ERR_FORMAT and a message
 * naming the file, the item and the problem. Versions 2 and 3 are read
 * (little-endian only); version 1 and byte-swapped (big-endian) files are
 * rejected.
 *
 * Dimension order. GGUF lists a tensor's dimensions innermost first (ne[0]
 * is the contiguous one); PyTorch/libpeft list them outermost first. The
 * reader reports ne[] in GGUF order and loads tensors with the PyTorch
 * shape (reversed): an nn.Linear weight stored with ne = [in, out] loads as
 * [out, in]. The bytes are the same.
 *
 * Ownership. Strings and names returned by the reader are borrowed from the
 * handle and valid until peft_gguf_close. Loaded tensors are long-lived
 * copies owned by the caller (peft_tensor_destroy); they stay valid after
 * the handle is closed.
 *
 * Threads. A reader or writer reports errors and allocates through the
 * context it was created with, so use it like that context: from one thread
 * at a time.
 */
#ifndef PEFT_GGUF_H
#define PEFT_GGUF_H

#include "core.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* GGUF metadata value types (the ids stored in the file). */
typedef enum peft_gguf_type {
    PEFT_GGUF_UINT8 = 0,
    PEFT_GGUF_INT8 = 1,
    PEFT_GGUF_UINT16 = 2,
    PEFT_GGUF_INT16 = 3,
    PEFT_GGUF_UINT32 = 4,
    PEFT_GGUF_INT32 = 5,
    PEFT_GGUF_FLOAT32 = 6,
    PEFT_GGUF_BOOL = 7,
    PEFT_GGUF_STRING = 8,
    PEFT_GGUF_ARRAY = 9,
    PEFT_GGUF_UINT64 = 10,
    PEFT_GGUF_INT64 = 11,
    PEFT_GGUF_FLOAT64 = 12,
    PEFT_GGUF_TYPE_COUNT
} peft_gguf_type;

/* "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr",
 * "u64", "i64", "f64"; "?" for anything else. */
PEFT_API const char *peft_gguf_type_name(peft_gguf_type type);

/* ggml tensor type ids that libpeft loads and writes (ggml.h enum ggml_type). */
#define PEFT_GGML_TYPE_F32 0u
#define PEFT_GGML_TYPE_F16 1u
#define PEFT_GGML_TYPE_Q8_0 8u
#define PEFT_GGML_TYPE_I32 26u
#define PEFT_GGML_TYPE_BF16 30u

/* The ggml name of a tensor type id ("F32", "Q4_K", "BF16", ...), or NULL
 * for an id that is retired or unknown. */
PEFT_API const char *peft_ggml_type_name(uint32_t ggml_type);

/* ---- reader ---- */

typedef struct peft_gguf peft_gguf;

/* Open and validate a GGUF file. On failure *out is NULL, the status is
 * PEFT_ERR_IO (cannot open/map), PEFT_ERR_FORMAT (malformed) or
 * PEFT_ERR_UNSUPPORTED (a valid file libpeft cannot represent, e.g. a newer
 * ggml type whose size it does not know), and ctx has the message. The
 * handle keeps ctx for its messages and allocations. */
PEFT_API peft_status peft_gguf_open(peft_ctx *ctx, const char *path, peft_gguf **out);
/* Unmap and free; NULL is a no-op. Tensors already loaded stay valid. */
PEFT_API void peft_gguf_close(peft_gguf *g);

/* File facts: version (2 or 3), tensor data alignment (general.alignment or
 * 32), absolute byte offset of the tensor data section, file size. 0 for NULL. */
PEFT_API uint32_t peft_gguf_version(const peft_gguf *g);
PEFT_API size_t peft_gguf_alignment(const peft_gguf *g);
PEFT_API uint64_t peft_gguf_data_offset(const peft_gguf *g);
PEFT_API uint64_t peft_gguf_file_size(const peft_gguf *g);

/* ---- metadata keys ---- */

/* Keys are enumerated in file order: i in [0, n_keys). key_name returns
 * NULL and key_type PEFT_GGUF_TYPE_COUNT for an index out of range. */
PEFT_API size_t peft_gguf_n_keys(const peft_gguf *g);
PEFT_API const char *peft_gguf_key_name(const peft_gguf *g, size_t i);
PEFT_API peft_gguf_type peft_gguf_key_type(const peft_gguf *g, size_t i);
/* The index of `key` (hash lookup). PEFT_ERR_NOT_FOUND when absent: the
 * message is set but, since optional keys are normal, not logged. */
PEFT_API peft_status peft_gguf_find_key(const peft_gguf *g, const char *key, size_t *index);

/* Typed getters. Each returns PEFT_ERR_NOT_FOUND for a missing key and
 * PEFT_ERR_DTYPE when the stored type does not fit:
 *  - get_int accepts every integer type (u8..i64; a u64 above INT64_MAX is
 *    PEFT_ERR_DTYPE); bools are not integers.
 *  - get_float accepts f32 and f64, and integers (converted).
 *  - get_bool: *out is 0 or 1.
 *  - get_str: *s is NUL-terminated (a copy owned by the handle); *len is the
 *    byte length, which also counts any NUL stored inside the string. len
 *    may be NULL. */
PEFT_API peft_status peft_gguf_get_int(const peft_gguf *g, const char *key, int64_t *out);
PEFT_API peft_status peft_gguf_get_float(const peft_gguf *g, const char *key, double *out);
PEFT_API peft_status peft_gguf_get_bool(const peft_gguf *g, const char *key, int *out);
PEFT_API peft_status peft_gguf_get_str(const peft_gguf *g, const char *key, const char **s, size_t *len);

/* Arrays. get_arr gives the element type and count (PEFT_ERR_DTYPE if the
 * key is not an array). Element access is O(1) (string arrays get an offset
 * index at open) and range-checked (PEFT_ERR_INVALID_ARG):
 *  - get_arr_str: *s points into the file mapping and is NOT NUL-terminated;
 *    use *len.
 *  - get_arr_int: integer element types, as get_int.
 *  - get_arr_f32: f32, f64 and integer element types, converted.
 *  - get_arr_data: the raw little-endian elements of a numeric or bool
 *    array (count * element size bytes, not aligned), for bulk copies. */
PEFT_API peft_status peft_gguf_get_arr(const peft_gguf *g, const char *key, peft_gguf_type *elem_type,
                                       size_t *count);
PEFT_API peft_status peft_gguf_get_arr_str(const peft_gguf *g, const char *key, size_t i, const char **s,
                                           size_t *len);
PEFT_API peft_status peft_gguf_get_arr_int(const peft_gguf *g, const char *key, size_t i, int64_t *out);
PEFT_API peft_status peft_gguf_get_arr_f32(const peft_gguf *g, const char *key, size_t i, float *out);
PEFT_API peft_status peft_gguf_get_arr_data(const peft_gguf *g, const char *key, const void **data,
                                            size_t *nbytes);

/* ---- tensors ---- */

/* What the file says about one tensor. Plain data; pointers are borrowed
 * from the handle. */
typedef struct peft_gguf_tensor_info {
    const char *name;      /* NUL-terminated, < 64 bytes */
    uint32_t ggml_type;    /* ggml type id */
    const char *type_name; /* peft_ggml_type_name(ggml_type) */
    int n_dims;            /* 1..4 */
    int64_t ne[4];         /* GGUF order: ne[0] is the contiguous dim; entries past n_dims are 1 */
    int64_t numel;
    uint64_t nbytes;      /* bytes of data in the file */
    uint64_t offset;      /* from the start of the data section */
    uint64_t file_offset; /* from the start of the file */
} peft_gguf_tensor_info;

/* Tensors in file (record) order: i in [0, n_tensors). */
PEFT_API size_t peft_gguf_n_tensors(const peft_gguf *g);
PEFT_API peft_status peft_gguf_get_tensor_info(const peft_gguf *g, size_t i, peft_gguf_tensor_info *out);
/* The index of a tensor by name; PEFT_ERR_NOT_FOUND (not logged) if absent. */
PEFT_API peft_status peft_gguf_find_tensor(const peft_gguf *g, const char *name, size_t *index);
/* Borrowed pointer to a tensor's bytes inside the mapping (valid until close). */
PEFT_API peft_status peft_gguf_tensor_data(const peft_gguf *g, size_t i, const void **data, size_t *nbytes);
/* Load tensor i as a new long-lived contiguous tensor with the PyTorch shape
 * (ne reversed), named after the GGUF tensor. `want` is the storage dtype of
 * the result:
 *  - F32/F16/BF16 file data: any of f32, f16, bf16 (converted, round to
 *    nearest even), or q8_0 (quantized; ne[0] % 32 == 0);
 *  - Q8_0 file data: q8_0 (the raw blocks) or f32/f16/bf16 (dequantized);
 *  - I32 file data: i32.
 * Other ggml types (Q4_K, ...) give PEFT_ERR_UNSUPPORTED naming the tensor
 * and the type; an impossible conversion gives PEFT_ERR_DTYPE. */
PEFT_API peft_status peft_gguf_load_tensor(const peft_gguf *g, size_t i, peft_dtype want, peft_tensor **out);

/* ---- writer ----
 *
 * Collects key/values and tensors in memory, then writes a GGUF v3 file laid
 * out like llama.cpp's gguf-py writer (and as ggml's reader requires): the
 * header, the key/values and tensor records in the order they were added,
 * zero padding to the alignment, then each tensor's data padded to the
 * alignment (including the last); tensor offsets are the running sum of the
 * padded sizes. The alignment is 32 unless a u32 "general.alignment" key (a
 * power of two) is added. Keys and tensor names must be unique. Added data is
 * copied, so the caller's buffers and tensors may be freed right away.
 *
 * peft_gguf_writer_write writes to a temporary file next to `path`, fsyncs
 * it and renames it over `path`: a failed write leaves no file behind and
 * never a half-written `path`. The writer can be written several times. */

typedef struct peft_gguf_writer peft_gguf_writer;

PEFT_API peft_status peft_gguf_writer_create(peft_ctx *ctx, peft_gguf_writer **out);
/* NULL is a no-op. */
PEFT_API void peft_gguf_writer_destroy(peft_gguf_writer *w);

/* Scalars. Keys are non-empty, at most 65535 bytes. */
PEFT_API peft_status peft_gguf_writer_add_u8(peft_gguf_writer *w, const char *key, uint8_t value);
PEFT_API peft_status peft_gguf_writer_add_i8(peft_gguf_writer *w, const char *key, int8_t value);
PEFT_API peft_status peft_gguf_writer_add_u16(peft_gguf_writer *w, const char *key, uint16_t value);
PEFT_API peft_status peft_gguf_writer_add_i16(peft_gguf_writer *w, const char *key, int16_t value);
PEFT_API peft_status peft_gguf_writer_add_u32(peft_gguf_writer *w, const char *key, uint32_t value);
PEFT_API peft_status peft_gguf_writer_add_i32(peft_gguf_writer *w, const char *key, int32_t value);
PEFT_API peft_status peft_gguf_writer_add_u64(peft_gguf_writer *w, const char *key, uint64_t value);
PEFT_API peft_status peft_gguf_writer_add_i64(peft_gguf_writer *w, const char *key, int64_t value);
PEFT_API peft_status peft_gguf_writer_add_f32(peft_gguf_writer *w, const char *key, float value);
PEFT_API peft_status peft_gguf_writer_add_f64(peft_gguf_writer *w, const char *key, double value);
/* value 0 or 1. */
PEFT_API peft_status peft_gguf_writer_add_bool(peft_gguf_writer *w, const char *key, int value);
/* A NUL-terminated string. */
PEFT_API peft_status peft_gguf_writer_add_str(peft_gguf_writer *w, const char *key, const char *value);
/* An array of `count` numeric or bool elements of elem_type, given in host
 * layout (uint8_t for bool, each 0 or 1). data may be NULL when count is 0. */
PEFT_API peft_status peft_gguf_writer_add_arr(peft_gguf_writer *w, const char *key, peft_gguf_type elem_type,
                                              const void *data, size_t count);
/* An array of strings: strs[i] has lens[i] bytes (lens NULL = NUL-terminated). */
PEFT_API peft_status peft_gguf_writer_add_arr_str(peft_gguf_writer *w, const char *key,
                                                  const char *const *strs, const size_t *lens, size_t count);

/* A tensor from a libpeft tensor (any strides) stored as `as`: F32, F16,
 * BF16 or Q8_0 (quantized, last dim % 32 == 0) from f32/f16/bf16/q8_0
 * tensors, or I32 from i32. Dims are written reversed (GGUF order). Names
 * are 1..63 bytes. */
PEFT_API peft_status peft_gguf_writer_add_tensor(peft_gguf_writer *w, const char *name, const peft_tensor *t,
                                                 peft_dtype as);
/* A tensor from raw bytes of any ggml type whose size libpeft knows:
 * ne[0..n_dims) in GGUF order, nbytes must equal the type's byte size. */
PEFT_API peft_status peft_gguf_writer_add_tensor_raw(peft_gguf_writer *w, const char *name, uint32_t ggml_type,
                                                     int n_dims, const int64_t *ne, const void *data,
                                                     size_t nbytes);
/* Write everything to `path` (atomically, see above). PEFT_ERR_IO on failure. */
PEFT_API peft_status peft_gguf_writer_write(peft_gguf_writer *w, const char *path);

#ifdef __cplusplus
}
#endif
#endif /* PEFT_GGUF_H */
