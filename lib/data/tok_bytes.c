/* The bytes tokenizer: 256 ids, id = byte value, no BOS/EOS. */
#include "tok_internal.h"

peft_status peft_tokenizer_create_bytes(peft_ctx *ctx, peft_tokenizer **out)
{
    const char *who = "peft_tokenizer_create_bytes";
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: out is NULL", who);
    *out = NULL;
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    char bytes[256];
    const char *texts[256];
    size_t lens[256];
    for (int b = 0; b < 256; b++) {
        bytes[b] = (char)b;
        texts[b] = &bytes[b];
        lens[b] = 1;
    }
    peft_tokenizer *tok;
    peft_status st = peft__tok_new(ctx, who, PEFT_TOKENIZER_BYTES, 256, texts, lens, &tok);
    if (st != PEFT_OK) return st;
    st = peft__tok_alloc_pieces(tok, who, 256);
    if (st != PEFT_OK) {
        peft_tokenizer_destroy(tok);
        return st;
    }
    for (int b = 0; b < 256; b++) {
        tok->piece[b] = (char)b;
        tok->piece_off[b + 1] = (size_t)b + 1;
        tok->byte_id[b] = b;
    }
    *out = tok;
    return PEFT_OK;
}

peft_status peft__tok_bytes_encode(peft_tokenizer *tok, const uint8_t *s, size_t n, peft__tok_out *o)
{
    (void)tok;
    for (size_t i = 0; i < n; i++) peft__tok_emit(o, s[i]);
    return PEFT_OK;
}
