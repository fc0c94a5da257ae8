/* Q8_0 blocks (ggml's block_q8_0): quantize and dequantize.
 *
 * A block holds 32 consecutive weights of a row as an fp16 scale d and 32
 * int8 codes q; the weight is q * d. Quantization follows ggml's reference
 * quantize_row_q8_0_ref bit for bit (so files written here match what
 * llama.cpp's converter would produce): d = amax / 127 in f32, codes =
 * roundf(x * (1/d)) computed with the f32 d, then d is stored as fp16. The
 * dequantized value therefore uses the fp16-rounded d. */
#include <math.h>
#include <string.h>

#include "../internal.h"

void peft__q8_0_quantize(const float *x, size_t n, void *blocks)
{
    PEFT_ASSERT(n % PEFT__Q8_0_BLOCK == 0);
    uint8_t *out = blocks;
    for (size_t b = 0; b < n / PEFT__Q8_0_BLOCK; b++) {
        const float *x_b = x + b * PEFT__Q8_0_BLOCK;
        uint8_t *blk = out + b * PEFT__Q8_0_BYTES;
        float amax = 0.0f;
        for (int j = 0; j < PEFT__Q8_0_BLOCK; j++) {
            float a = fabsf(x_b[j]);
            if (a > amax) amax = a;
        }
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t d16 = peft__f32_to_f16(d);
        blk[0] = (uint8_t)(d16 & 0xFF); /* little-endian fp16 */
        blk[1] = (uint8_t)(d16 >> 8);
        for (int j = 0; j < PEFT__Q8_0_BLOCK; j++) {
            float v = roundf(x_b[j] * id); /* |v| <= 127 for finite blocks */
            /* NaN/Inf inputs: clamp instead of an undefined float->int cast */
            if (!(v >= -127.0f)) v = v != v ? 0.0f : -127.0f;
            if (v > 127.0f) v = 127.0f;
            int8_t q = (int8_t)v;
            memcpy(blk + 2 + j, &q, 1);
        }
    }
}

void peft__q8_0_to_f32(const void *blocks, size_t first, size_t n, float *dst)
{
    const uint8_t *in = blocks;
    size_t i = first, end = first + n;
    while (i < end) {
        size_t b = i / PEFT__Q8_0_BLOCK, j = i % PEFT__Q8_0_BLOCK;
        const uint8_t *blk = in + b * PEFT__Q8_0_BYTES;
        float d = peft__f16_to_f32((uint16_t)(blk[0] | (blk[1] << 8)));
        /* the rest of this block, or up to `end` */
        size_t stop = PEFT__Q8_0_BLOCK;
        if (end - i < stop - j) stop = j + (end - i);
        for (; j < stop; j++, i++) {
            int8_t q;
            memcpy(&q, blk + 2 + j, 1);
            *dst++ = (float)q * d;
        }
    }
}
