/* UTF-8 decoding and the Unicode classes (letter, number, whitespace) of the
 * GPT-2 pre-tokenizer. The ranges come from tools/gen_unicode.py. */
#include "tok_internal.h"

uint32_t peft__unicode_class(uint32_t cp)
{
    /* ASCII is most text: answer it without the search */
    if (cp < 0x80) {
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return PEFT__UC_L;
        if (cp >= '0' && cp <= '9') return PEFT__UC_N;
        if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return PEFT__UC_WS;
        return PEFT__UC_OTHER;
    }
    size_t lo = 0, hi = peft__unicode_n_ranges; /* first range with last >= cp */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (peft__unicode_ranges[mid].last < cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < peft__unicode_n_ranges && peft__unicode_ranges[lo].first <= cp) return peft__unicode_ranges[lo].cls;
    return PEFT__UC_OTHER;
}

size_t peft__utf8_decode(const uint8_t *s, size_t n, uint32_t *cp)
{
    uint8_t b = s[0];
    size_t len;
    uint32_t c, min;
    if (b < 0x80) {
        *cp = b;
        return 1;
    } else if ((b & 0xE0) == 0xC0) {
        len = 2, c = b & 0x1F, min = 0x80;
    } else if ((b & 0xF0) == 0xE0) {
        len = 3, c = b & 0x0F, min = 0x800;
    } else if ((b & 0xF8) == 0xF0) {
        len = 4, c = b & 0x07, min = 0x10000;
    } else {
        *cp = UINT32_MAX; /* stray continuation byte or 0xF8..0xFF */
        return 1;
    }
    if (len > n) {
        *cp = UINT32_MAX;
        return 1;
    }
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *cp = UINT32_MAX;
            return 1;
        }
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) {
        *cp = UINT32_MAX;
        return 1;
    }
    *cp = c;
    return len;
}

size_t peft__utf8_encode(uint32_t cp, uint8_t *out)
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | (cp >> 6));
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | (cp >> 12));
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | (cp >> 18));
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}
