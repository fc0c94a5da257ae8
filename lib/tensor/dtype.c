/* Storage dtypes and their conversion to and from f32.
 *
 * f16 and bf16 are converted in software (bit manipulation) so results do not
 * depend on the CPU; rounding is to nearest even, NaN stays NaN. */
#include <string.h>

#include "../internal.h"

const char *peft_dtype_name(peft_dtype dtype)
{
    switch (dtype) {
    case PEFT_DTYPE_F32: return "f32";
    case PEFT_DTYPE_F16: return "f16";
    case PEFT_DTYPE_BF16: return "bf16";
    case PEFT_DTYPE_Q8_0: return "q8_0";
    case PEFT_DTYPE_NF4: return "nf4";
    case PEFT_DTYPE_I32: return "i32";
    default: return "?";
    }
}

size_t peft_dtype_block_elems(peft_dtype dtype)
{
    switch (dtype) {
    case PEFT_DTYPE_Q8_0: return 32;
    case PEFT_DTYPE_NF4: return 64;
    case PEFT_DTYPE_F32: case PEFT_DTYPE_F16: case PEFT_DTYPE_BF16: case PEFT_DTYPE_I32: return 1;
    default: return 0;
    }
}

size_t peft_dtype_block_bytes(peft_dtype dtype)
{
    switch (dtype) {
    case PEFT_DTYPE_F32: case PEFT_DTYPE_I32: return 4;
    case PEFT_DTYPE_F16: case PEFT_DTYPE_BF16: return 2;
    case PEFT_DTYPE_Q8_0: return 34;      /* fp16 scale + 32 x int8 */
    case PEFT_DTYPE_NF4: return 32 + 4;   /* 64 x 4-bit codes + f32 absmax */
    default: return 0;
    }
}

static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float peft__bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t peft__f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 64); /* quiet NaN */
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

float peft__f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t man = h & 0x3FFu;
    if (exp == 0x1F) return bits_f32(sign | 0x7F800000u | (man << 13)); /* inf / nan */
    if (exp == 0) {
        if (man == 0) return bits_f32(sign);
        /* subnormal: value = man * 2^-24 */
        float v = (float)man * 0x1.0p-24f;
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t peft__f32_to_f16(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return sign | 0x7E00u;      /* NaN */
    if (a >= 0x477FF000u) return sign | 0x7C00u;     /* rounds to >= 65520: inf */
    if (a < 0x38800000u) {                           /* below 2^-14: subnormal or zero */
        /* value * 2^24 rounded to nearest even gives the subnormal mantissa */
        float v = bits_f32(a) * 0x1.0p24f;
        uint32_t m = (uint32_t)v;
        float rem = v - (float)m;
        if (rem > 0.5f || (rem == 0.5f && (m & 1u))) m++;
        return sign | (uint16_t)m; /* m == 0x400 carries into the smallest normal */
    }
    /* normal: rebias exponent, round the 13 dropped bits to nearest even */
    uint32_t r = a - 0x38000000u;
    r += 0xFFFu + ((r >> 13) & 1u);
    return sign | (uint16_t)(r >> 13);
}

peft_status peft__to_f32(peft_dtype dtype, const void *src, size_t first, size_t n, float *dst)
{
    switch (dtype) {
    case PEFT_DTYPE_F32:
        memcpy(dst, (const float *)src + first, n * sizeof(float));
        return PEFT_OK;
    case PEFT_DTYPE_F16: {
        const uint16_t *s = (const uint16_t *)src + first;
        for (size_t i = 0; i < n; i++) dst[i] = peft__f16_to_f32(s[i]);
        return PEFT_OK;
    }
    case PEFT_DTYPE_BF16: {
        const uint16_t *s = (const uint16_t *)src + first;
        for (size_t i = 0; i < n; i++) dst[i] = peft__bf16_to_f32(s[i]);
        return PEFT_OK;
    }
    case PEFT_DTYPE_Q8_0:
        if (first % PEFT__Q8_0_BLOCK != 0) return PEFT_ERR_DTYPE;
        peft__q8_0_to_f32(src, first, n, dst);
        return PEFT_OK;
    default:
        return PEFT_ERR_DTYPE;
    }
}
