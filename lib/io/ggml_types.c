/* The ggml tensor types a GGUF file may name, with their block geometry, and
 * the sizes of GGUF metadata scalars.
 *
 * Sizes are from ggml's block structs (ggml-common.h, QK_K = 256). The reader
 * needs them for every type, not only the ones libpeft can decode, so that it
 * can validate the layout of any file; loading an undecodable type then fails
 * with PEFT_ERR_UNSUPPORTED. */
#include "../internal.h"

#include "peft/gguf.h"

typedef struct ggml_type_desc {
    const char *name; /* NULL: retired id */
    uint16_t blck;    /* elements per block; 0: exists in newer ggml, size unknown here */
    uint16_t bytes;   /* bytes per block */
} ggml_type_desc;

static const ggml_type_desc k_types[] = {
    [0] = {"F32", 1, 4},
    [1] = {"F16", 1, 2},
    [2] = {"Q4_0", 32, 18},
    [3] = {"Q4_1", 32, 20},
    [6] = {"Q5_0", 32, 22},
    [7] = {"Q5_1", 32, 24},
    [8] = {"Q8_0", 32, 34},
    [9] = {"Q8_1", 32, 36},
    [10] = {"Q2_K", 256, 84},
    [11] = {"Q3_K", 256, 110},
    [12] = {"Q4_K", 256, 144},
    [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210},
    [15] = {"Q8_K", 256, 292},
    [16] = {"IQ2_XXS", 256, 66},
    [17] = {"IQ2_XS", 256, 74},
    [18] = {"IQ3_XXS", 256, 98},
    [19] = {"IQ1_S", 256, 50},
    [20] = {"IQ4_NL", 32, 18},
    [21] = {"IQ3_S", 256, 110},
    [22] = {"IQ2_S", 256, 82},
    [23] = {"IQ4_XS", 256, 136},
    [24] = {"I8", 1, 1},
    [25] = {"I16", 1, 2},
    [26] = {"I32", 1, 4},
    [27] = {"I64", 1, 8},
    [28] = {"F64", 1, 8},
    [29] = {"IQ1_M", 256, 56},
    [30] = {"BF16", 1, 2},
    [34] = {"TQ1_0", 256, 54},
    [35] = {"TQ2_0", 256, 66},
    [39] = {"MXFP4", 32, 17},
    [40] = {"NVFP4", 0, 0},
    [41] = {"Q1_0", 0, 0},
    [42] = {"Q2_0", 0, 0},
};
#define N_TYPES (sizeof k_types / sizeof k_types[0])

const char *peft_ggml_type_name(uint32_t ggml_type)
{
    return ggml_type < N_TYPES ? k_types[ggml_type].name : NULL;
}

bool peft__ggml_type_size(uint32_t ggml_type, size_t *block_elems, size_t *block_bytes, bool *known)
{
    const ggml_type_desc *d = ggml_type < N_TYPES ? &k_types[ggml_type] : NULL;
    if (known) *known = d != NULL && d->name != NULL;
    if (!d || !d->name || d->blck == 0) return false;
    *block_elems = d->blck;
    *block_bytes = d->bytes;
    return true;
}

size_t peft__gguf_scalar_size(uint32_t gguf_type)
{
    switch (gguf_type) {
    case PEFT_GGUF_UINT8: case PEFT_GGUF_INT8: case PEFT_GGUF_BOOL: return 1;
    case PEFT_GGUF_UINT16: case PEFT_GGUF_INT16: return 2;
    case PEFT_GGUF_UINT32: case PEFT_GGUF_INT32: case PEFT_GGUF_FLOAT32: return 4;
    case PEFT_GGUF_UINT64: case PEFT_GGUF_INT64: case PEFT_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

const char *peft_gguf_type_name(peft_gguf_type type)
{
    static const char *const names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32",
                                        "bool", "str", "arr", "u64", "i64", "f64"};
    return (unsigned)type < PEFT_GGUF_TYPE_COUNT ? names[type] : "?";
}
