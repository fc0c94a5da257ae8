/* Tokenizers: the bytes tokenizer, GPT-2 byte-level BPE (known ids, all of
 * llama.cpp's GPT-2 test vectors, round trips over any bytes), llama2.c /
 * SentencePiece-style BPE (known ids, byte fallback, the U+2581 spelling of a
 * GGUF vocabulary), hand-built vocabularies for both, the Unicode classes of
 * the pre-tokenizer, and bad input. The model files come from tu_models_dir();
 * tests that need them print why they skip when they are absent. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../lib/data/tok_internal.h"
#include "util/testutil.h"

/* ---- helpers ---- */

static const char *model_path(const char *name, char *buf, size_t size)
{
    const char *dir = tu_models_dir();
    if (!dir) return NULL;
    snprintf(buf, size, "%s/%s", dir, name);
    return access(buf, R_OK) == 0 ? buf : NULL;
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    ck_assert_int_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    buf[n] = '\0';
    *len = (size_t)n;
    return buf;
}

/* A temporary file holding data; the caller unlinks it. */
static void write_tmp(char *path, size_t size, const void *data, size_t len)
{
    snprintf(path, size, "/tmp/peft_tok_XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static void expect_ids(peft_ctx *ctx, peft_tokenizer *tok, const char *text, size_t len, int bos,
                       const int32_t *want, size_t n_want)
{
    size_t n;
    int32_t *ids = tu_encode(ctx, tok, text, len, bos, 0, &n);
    char got[512] = "", exp[512] = "";
    for (size_t i = 0; i < n && strlen(got) < 480; i++) snprintf(got + strlen(got), 32, " %d", ids[i]);
    for (size_t i = 0; i < n_want && strlen(exp) < 480; i++) snprintf(exp + strlen(exp), 32, " %d", want[i]);
    ck_assert_msg(n == n_want && memcmp(ids, want, n * sizeof *ids) == 0, "'%.*s': got [%s ] want [%s ]", (int)len,
                  text, got, exp);
    free(ids);
}

static void expect_roundtrip(peft_ctx *ctx, peft_tokenizer *tok, const char *text, size_t len, int bos)
{
    size_t n, back;
    int32_t *ids = tu_encode(ctx, tok, text, len, bos, 0, &n);
    char *out = tu_decode(ctx, tok, ids, n, &back);
    ck_assert_msg(back == len && memcmp(out, text, len) == 0, "%s round trip of '%.*s' gave '%.*s'",
                  peft_tokenizer_name(tok), (int)len, text, (int)back, out);
    free(ids);
    free(out);
}

static const char *const k_texts[] = {
    "Hello world",
    "",
    " ",
    "   leading and trailing spaces   ",
    "tabs\tand\nnew\r\nlines\n\n\n",
    "Once upon a time, there was a little girl named Lily.",
    "I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL",
    "numbers 3 33 333 3333 3.14159 1,000,000 and ½ ⅔ ٣",
    "Français, Ελληνικά, Русский текст, العربية, עברית, हिन्दी",
    "日本語のテキストと中文文本, 한국어",
    "emoji 🦙🦙 👩‍👩‍👧 🚀 (multiple emojis concatenated) ✅",
    "symbols ~!@#$%^&*()_+`-=[]{}|;':\",./<>? «»“”‘’…—–",
    "combining: e\xCC\x81 n\xCC\x83 and ZWJ\xE2\x80\x8D, nbsp\xC2\xA0here, ideographic\xE3\x80\x80space",
    "code: for (int i = 0; i < n; i++) { x[i] += 1; }\n\treturn 0;",
};

/* ---- numerics: Unicode classes and the pre-tokenizer ---- */

START_TEST(numerics_unicode_classes)
{
    struct { uint32_t cp, cls; } cases[] = {
        {'a', PEFT__UC_L}, {'Z', PEFT__UC_L}, {'0', PEFT__UC_N}, {' ', PEFT__UC_WS}, {'\n', PEFT__UC_WS},
        {'\t', PEFT__UC_WS}, {0x0B, PEFT__UC_WS}, {0x1C, PEFT__UC_OTHER}, {'_', PEFT__UC_OTHER},
        {'\'', PEFT__UC_OTHER}, {0xE9, PEFT__UC_L} /* é */, {0xBD, PEFT__UC_N} /* ½ */,
        {0xB2, PEFT__UC_N} /* ² */, {0xAA, PEFT__UC_L} /* ª */, {0x85, PEFT__UC_WS}, {0xA0, PEFT__UC_WS},
        {0x0663, PEFT__UC_N} /* Arabic-Indic 3 */, {0x0301, PEFT__UC_OTHER} /* combining acute */,
        {0x1780, PEFT__UC_L} /* Khmer ka */, {0x17B6, PEFT__UC_OTHER} /* Khmer vowel sign (Mc) */,
        {0x2028, PEFT__UC_WS}, {0x2029, PEFT__UC_WS}, {0x3000, PEFT__UC_WS}, {0x200B, PEFT__UC_OTHER},
        {0x65E5, PEFT__UC_L} /* 日 */, {0x2160, PEFT__UC_N} /* Ⅰ (Nl) */, {0x1F999, PEFT__UC_OTHER} /* 🦙 */,
        {0x10FFFF, PEFT__UC_OTHER}, {0xE000, PEFT__UC_OTHER}, {0x20000, PEFT__UC_L} /* CJK ext B */,
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        ck_assert_msg(peft__unicode_class(cases[i].cp) == cases[i].cls, "U+%04X: class %u, want %u",
                      (unsigned)cases[i].cp, (unsigned)peft__unicode_class(cases[i].cp), (unsigned)cases[i].cls);
    /* the ASCII shortcut agrees with the generated table */
    for (uint32_t cp = 0; cp < 0x80; cp++) {
        uint32_t want = PEFT__UC_OTHER;
        for (size_t r = 0; r < peft__unicode_n_ranges; r++)
            if (peft__unicode_ranges[r].first <= cp && cp <= peft__unicode_ranges[r].last)
                want = peft__unicode_ranges[r].cls;
        ck_assert_uint_eq(peft__unicode_class(cp), want);
    }
    /* ranges are sorted and disjoint */
    for (size_t r = 1; r < peft__unicode_n_ranges; r++)
        ck_assert_uint_lt(peft__unicode_ranges[r - 1].last, peft__unicode_ranges[r].first);
}
END_TEST

START_TEST(numerics_utf8)
{
    uint32_t cp;
    ck_assert_uint_eq(peft__utf8_decode((const uint8_t *)"\xC3\xA9", 2, &cp), 2);
    ck_assert_uint_eq(cp, 0xE9);
    ck_assert_uint_eq(peft__utf8_decode((const uint8_t *)"\xF0\x9F\xA6\x99", 4, &cp), 4);
    ck_assert_uint_eq(cp, 0x1F999);
    const char *bad[] = {"\x80", "\xC3", "\xC0\xAF" /* overlong */, "\xED\xA0\x80" /* surrogate */,
                         "\xF4\x90\x80\x80" /* > U+10FFFF */, "\xFF", "\xE6\x97"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ck_assert_uint_eq(peft__utf8_decode((const uint8_t *)bad[i], strlen(bad[i]), &cp), 1);
        ck_assert_uint_eq(cp, UINT32_MAX);
    }
    uint8_t u[4];
    uint32_t cps[] = {0x41, 0xE9, 0x65E5, 0x1F999, 0x10FFFF};
    for (size_t i = 0; i < 5; i++) {
        size_t l = peft__utf8_encode(cps[i], u);
        ck_assert_uint_eq(peft__utf8_decode(u, l, &cp), l);
        ck_assert_uint_eq(cp, cps[i]);
    }
}
END_TEST

/* Pre-tokens of text joined by '|'. */
static void expect_pretokens(const char *text, const char *want)
{
    char got[512] = "";
    size_t n = strlen(text), o = 0;
    for (size_t i = 0; i < n;) {
        size_t e = peft__gpt2_pretoken_end((const uint8_t *)text, n, i);
        ck_assert_uint_gt(e, i);
        if (i) got[o++] = '|';
        memcpy(got + o, text + i, e - i);
        o += e - i;
        i = e;
    }
    got[o] = '\0';
    ck_assert_msg(strcmp(got, want) == 0, "pre-tokens of '%s': got '%s' want '%s'", text, got, want);
}

START_TEST(numerics_gpt2_pretokenizer)
{
    expect_pretokens("Hello world", "Hello| world");
    expect_pretokens("   Hello", "  | Hello");
    expect_pretokens("a  \n b", "a|  \n| b");
    expect_pretokens("a \n\nb", "a| \n|\n|b");
    expect_pretokens("x \n\n", "x| \n\n");
    expect_pretokens("he's 'sup 'RE we'll", "he|'s| '|sup| '|RE| we|'ll");
    expect_pretokens("!!'s", "!!'|s");
    expect_pretokens("abc123 45x", "abc|123| 45|x");
    expect_pretokens("3.14", "3|.|14");
    expect_pretokens("\t\tx", "\t|\t|x");
    expect_pretokens("a \xFF\xFE b", "a| \xFF\xFE| b");
    expect_pretokens("caf\xC3\xA9 na\xC3\xAFve", "caf\xC3\xA9| na\xC3\xAFve");
    expect_pretokens("e\xCC\x81t\xC3\xA9", "e|\xCC\x81|t\xC3\xA9");
}
END_TEST

/* ---- api: the bytes tokenizer, hand-built vocabularies, errors ---- */

START_TEST(api_bytes)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    peft_tokenizer *tok = NULL;
    TU_OK(ctx, peft_tokenizer_create_bytes(ctx, &tok));
    ck_assert_uint_eq(peft_tokenizer_n_vocab(tok), 256);
    ck_assert_int_eq(peft_tokenizer_bos(tok), -1);
    ck_assert_int_eq(peft_tokenizer_eos(tok), -1);
    ck_assert_int_eq(peft_tokenizer_get_kind(tok), PEFT_TOKENIZER_BYTES);
    ck_assert_str_eq(peft_tokenizer_name(tok), "bytes");
    const char text[] = "a\0\xFF\x80z";
    int32_t want[] = {'a', 0, 255, 128, 'z'};
    expect_ids(ctx, tok, text, 5, 0, want, 5);
    expect_roundtrip(ctx, tok, text, 5, 0);
    for (size_t i = 0; i < sizeof k_texts / sizeof *k_texts; i++)
        expect_roundtrip(ctx, tok, k_texts[i], strlen(k_texts[i]), 0);
    const char *p;
    size_t len;
    TU_OK(ctx, peft_tokenizer_piece(tok, 200, &p, &len));
    ck_assert_uint_eq(len, 1);
    ck_assert_uint_eq((uint8_t)p[0], 200);
    int32_t ids[8];
    size_t n;
    TU_EXPECT_FAIL(ctx, peft_tokenizer_encode(tok, "abc", 3, 1, 0, ids, 8, &n), PEFT_ERR_INVALID_ARG, "no BOS");
    TU_EXPECT_FAIL(ctx, peft_tokenizer_encode(tok, "abc", 3, 0, 1, ids, 8, &n), PEFT_ERR_INVALID_ARG, "no EOS");
    peft_tokenizer_destroy(tok);
    peft_tokenizer_destroy(NULL);
    ck_assert_uint_eq(peft_tokenizer_n_vocab(NULL), 0);
    ck_assert_int_eq(peft_tokenizer_get_kind(NULL), PEFT_TOKENIZER_KIND_COUNT);
    ck_assert_str_eq(peft_tokenizer_kind_name(PEFT_TOKENIZER_SPM), "spm");
    ck_assert_str_eq(peft_tokenizer_kind_name(PEFT_TOKENIZER_GPT2_BPE), "gpt2-bpe");
    ck_assert_str_eq(peft_tokenizer_kind_name((peft_tokenizer_kind)77), "?");
    TU_EXPECT_FAIL(ctx, peft_tokenizer_create_bytes(ctx, NULL), PEFT_ERR_INVALID_ARG, "out is NULL");
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(api_cap_and_range_errors)
{
    peft_ctx *ctx = tu_ctx(1, 2);
    peft_tokenizer *tok;
    TU_OK(ctx, peft_tokenizer_create_bytes(ctx, &tok));
    int32_t ids[4];
    size_t n = 0;
    /* cap too small: the needed count comes back */
    TU_EXPECT_FAIL(ctx, peft_tokenizer_encode(tok, "hello", 5, 0, 0, ids, 4, &n), PEFT_ERR_INVALID_ARG,
                   "needs 5 ids, cap is 4");
    ck_assert_uint_eq(n, 5);
    TU_EXPECT_FAIL(ctx, peft_tokenizer_encode(tok, "hello", 5, 0, 0, NULL, 0, &n), PEFT_ERR_INVALID_ARG, "needs 5");
    ck_assert_uint_eq(n, 5);
    TU_EXPECT_FAIL(ctx, peft_tokenizer_encode(tok, NULL, 3, 0, 0, ids, 4, &n), PEFT_ERR_INVALID_ARG, "text is NULL");
    TU_EXPECT_FAIL(ctx, peft_tokenizer_encode(tok, "a", 1, 0, 0, NULL, 4, &n), PEFT_ERR_INVALID_ARG, "ids is NULL");
    TU_EXPECT_FAIL(ctx, peft_tokenizer_encode(tok, "a", 1, 0, 0, ids, 4, NULL), PEFT_ERR_INVALID_ARG, "n_out");
    TU_OK(ctx, peft_tokenizer_encode(tok, NULL, 0, 0, 0, NULL, 0, &n));
    ck_assert_uint_eq(n, 0);
    /* decode: the NUL needs room too */
    int32_t hi[3] = {'h', 'i', '!'};
    char buf[4];
    size_t len = 0;
    TU_EXPECT_FAIL(ctx, peft_tokenizer_decode(tok, hi, 3, buf, 3, &len), PEFT_ERR_INVALID_ARG,
                   "needs 3 bytes and a NUL, cap is 3");
    ck_assert_uint_eq(len, 3);
    TU_OK(ctx, peft_tokenizer_decode(tok, hi, 3, buf, 4, &len));
    ck_assert_str_eq(buf, "hi!");
    int32_t bad[3] = {'a', 256, 'b'};
    TU_EXPECT_FAIL(ctx, peft_tokenizer_decode(tok, bad, 3, buf, 4, &len), PEFT_ERR_INVALID_ARG,
                   "ids[1] = 256 is outside [0, 256)");
    bad[1] = -1;
    TU_EXPECT_FAIL(ctx, peft_tokenizer_decode(tok, bad, 3, buf, 4, &len), PEFT_ERR_INVALID_ARG, "ids[1] = -1");
    const char *p;
    TU_EXPECT_FAIL(ctx, peft_tokenizer_piece(tok, 300, &p, &len), PEFT_ERR_INVALID_ARG, "id 300 is outside");
    int32_t id;
    TU_EXPECT_FAIL(ctx, peft_tokenizer_token_id(tok, "ab", 2, &id), PEFT_ERR_NOT_FOUND, "no token 'ab'");
    TU_OK(ctx, peft_tokenizer_token_id(tok, "a", 1, &id));
    ck_assert_int_eq(id, 'a');
    peft_tokenizer_destroy(tok);
    peft_ctx_destroy(ctx);
}
END_TEST

/* GPT-2's alphabet written independently of the library: the character of byte b. */
static uint32_t alphabet_cp(int b)
{
    int extra = 0;
    for (int x = 0; x < 256; x++) {
        int shown = (x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255);
        if (x == b) return shown ? (uint32_t)x : (uint32_t)(256 + extra);
        if (!shown) extra++;
    }
    return 0;
}

/* A byte-level vocabulary: the 256 byte characters (in byte order) then extra tokens. */
typedef struct tiny_vocab {
    char store[256 * 2 + 256];
    const char *tok[300];
    size_t len[300];
    size_t n;
} tiny_vocab;

static void tiny_vocab_init(tiny_vocab *v, const char *const *extra, size_t n_extra)
{
    size_t o = 0;
    for (int b = 0; b < 256; b++) {
        uint8_t u[4];
        size_t l = peft__utf8_encode(alphabet_cp(b), u);
        memcpy(v->store + o, u, l);
        v->tok[b] = v->store + o;
        v->len[b] = l;
        o += l;
    }
    for (size_t i = 0; i < n_extra; i++) {
        v->tok[256 + i] = extra[i];
        v->len[256 + i] = strlen(extra[i]);
    }
    v->n = 256 + n_extra;
}

static peft_tokenizer *tiny_bpe(peft_ctx *ctx, const char *const *extra, size_t n_extra, const char *const *merges,
                                size_t n_merges)
{
    tiny_vocab v;
    tiny_vocab_init(&v, extra, n_extra);
    size_t mlen[16];
    for (size_t i = 0; i < n_merges; i++) mlen[i] = strlen(merges[i]);
    peft_tokenizer *tok = NULL;
    TU_OK(ctx, peft_tokenizer_create_bpe(ctx, v.n, v.tok, v.len, n_merges, merges, mlen, -1, -1, &tok));
    return tok;
}

START_TEST(api_bpe_in_memory)
{
    peft_ctx *ctx = tu_ctx(1, 3);
    /* 256 + index */
    const char *extra[] = {"he", "ll", "hell", "hello", "\xC4\xA0w", "\xC4\xA0wo", "ab", "bc", "aa", "aaaa",
                           "<|endoftext|>"};
    const char *merges[] = {"h e", "l l", "he ll", "hell o", "\xC4\xA0 w", "\xC4\xA0w o", "a b", "b c", "a a",
                            "aa aa"};
    peft_tokenizer *tok = tiny_bpe(ctx, extra, 11, merges, 10);
    ck_assert_str_eq(peft_tokenizer_name(tok), "gpt2-bpe");
    ck_assert_uint_eq(peft_tokenizer_n_vocab(tok), 267);
    int32_t w1[] = {259};
    expect_ids(ctx, tok, "hello", 5, 0, w1, 1);
    int32_t w2[] = {259, 261, 'r', 'l', 'd'}; /* "hello", "Ġwo", r, l, d */
    expect_ids(ctx, tok, "hello world", 11, 0, w2, 5);
    int32_t w3[] = {262, 'c'}; /* "a b" outranks "b c" */
    expect_ids(ctx, tok, "abc", 3, 0, w3, 2);
    int32_t w4[] = {265}; /* a a, a a, then aa aa */
    expect_ids(ctx, tok, "aaaa", 4, 0, w4, 1);
    int32_t w5[] = {265, 264, 'a'}; /* aaaaaaa: pairs merge left to right */
    expect_ids(ctx, tok, "aaaaaaa", 7, 0, w5, 3);
    int32_t w7[] = {'h', 258}; /* "hhell": h, hell */
    expect_ids(ctx, tok, "hhell", 5, 0, w7, 2);
    /* the piece of a byte token is the byte, not its alphabet character */
    const char *p;
    size_t len;
    TU_OK(ctx, peft_tokenizer_piece(tok, 260, &p, &len));
    ck_assert_uint_eq(len, 2);
    ck_assert_int_eq(memcmp(p, " w", 2), 0);
    TU_OK(ctx, peft_tokenizer_piece(tok, 266, &p, &len));
    ck_assert_int_eq(memcmp(p, "<|endoftext|>", 13), 0);
    int32_t id;
    TU_OK(ctx, peft_tokenizer_token_id(tok, "\xC4\xA0wo", 4, &id));
    ck_assert_int_eq(id, 261);
    for (size_t i = 0; i < sizeof k_texts / sizeof *k_texts; i++)
        expect_roundtrip(ctx, tok, k_texts[i], strlen(k_texts[i]), 0);
    peft_tokenizer_destroy(tok);

    /* reversed priority: "b c" first */
    const char *merges2[] = {"b c", "a b"};
    tok = tiny_bpe(ctx, extra, 11, merges2, 2);
    int32_t w8[] = {'a', 263};
    expect_ids(ctx, tok, "abc", 3, 0, w8, 2);
    peft_tokenizer_destroy(tok);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(api_bpe_in_memory_errors)
{
    peft_ctx *ctx = tu_ctx(1, 4);
    size_t base = peft_ctx_bytes_allocated(ctx);
    tiny_vocab v;
    const char *extra[] = {"ab", "he"};
    tiny_vocab_init(&v, extra, 2);
    peft_tokenizer *tok = (peft_tokenizer *)&v; /* must come back NULL */
    const char *m1[] = {"a b", "x yz"};
    size_t l1[] = {3, 4};
    TU_EXPECT_FAIL(ctx, peft_tokenizer_create_bpe(ctx, v.n, v.tok, v.len, 2, m1, l1, -1, -1, &tok), PEFT_ERR_FORMAT,
                   "merges[1]: merge 'x yz': token 'yz' is not in the vocabulary");
    ck_assert_ptr_null(tok);
    const char *m2[] = {"b a"};
    size_t l2[] = {3};
    TU_EXPECT_FAIL(ctx, peft_tokenizer_create_bpe(ctx, v.n, v.tok, v.len, 1, m2, l2, -1, -1, &tok), PEFT_ERR_FORMAT,
                   "the result 'ba' is not in the vocabulary");
    const char *m3[] = {"ab"};
    size_t l3[] = {2};
    TU_EXPECT_FAIL(ctx, peft_tokenizer_create_bpe(ctx, v.n, v.tok, v.len, 1, m3, l3, -1, -1, &tok), PEFT_ERR_FORMAT,
                   "is not two tokens");
    TU_EXPECT_FAIL(ctx, peft_tokenizer_create_bpe(ctx, v.n, v.tok, v.len, 0, NULL, NULL, 258, -1, &tok),
                   PEFT_ERR_INVALID_ARG, "bos 258 / eos -1 outside [-1, 258)");
    /* a duplicate token */
    v.tok[257] = "ab";
    v.len[257] = 2;
    TU_EXPECT_FAIL(ctx, peft_tokenizer_create_bpe(ctx, v.n, v.tok, v.len, 0, NULL, NULL, -1, -1, &tok), PEFT_ERR_FORMAT,
                   "duplicate token 'ab' at ids 256 and 257");
    /* no token for byte 'A' */
    v.tok[257] = "he";
    v.tok['A'] = "zz";
    v.len['A'] = 2;
    TU_EXPECT_FAIL(ctx, peft_tokenizer_create_bpe(ctx, v.n, v.tok, v.len, 0, NULL, NULL, -1, -1, &tok), PEFT_ERR_FORMAT,
                   "no token for byte 0x41");
    TU_EXPECT_FAIL(ctx, peft_tokenizer_create_bpe(ctx, 0, v.tok, v.len, 0, NULL, NULL, -1, -1, &tok),
                   PEFT_ERR_INVALID_ARG, "empty");
    ck_assert_ptr_null(tok);
    ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), base); /* nothing leaked on the error paths */
    peft_ctx_destroy(ctx);
}
END_TEST

/* A tiny SentencePiece vocabulary: <unk> <s> </s>, 256 byte pieces, then pieces. */
typedef struct tiny_spm {
    char bytes[256][7];
    const char *piece[300];
    size_t len[300];
    float score[300];
    int32_t type[300];
    size_t n;
} tiny_spm;

static void tiny_spm_init(tiny_spm *v, const char *const *pieces, const float *scores, size_t n_pieces)
{
    const char *special[3] = {"<unk>", "<s>", "</s>"};
    for (int i = 0; i < 3; i++) {
        v->piece[i] = special[i];
        v->len[i] = strlen(special[i]);
        v->score[i] = 0;
        v->type[i] = i == 0 ? PEFT_TOKEN_UNKNOWN : PEFT_TOKEN_CONTROL;
    }
    for (int b = 0; b < 256; b++) {
        snprintf(v->bytes[b], sizeof v->bytes[b], "<0x%02X>", b);
        v->piece[3 + b] = v->bytes[b];
        v->len[3 + b] = 6;
        v->score[3 + b] = 0;
        v->type[3 + b] = PEFT_TOKEN_BYTE;
    }
    for (size_t i = 0; i < n_pieces; i++) {
        v->piece[259 + i] = pieces[i];
        v->len[259 + i] = strlen(pieces[i]);
        v->score[259 + i] = scores[i];
        v->type[259 + i] = PEFT_TOKEN_NORMAL;
    }
    v->n = 259 + n_pieces;
}

START_TEST(api_spm_in_memory)
{
    peft_ctx *ctx = tu_ctx(1, 5);
    /* ids 259.. */
    const char *pieces[] = {"\xE2\x96\x81", "a", "b", "c", "ab", "bc", "\xE2\x96\x81" "a", "\xE2\x96\x81" "ab",
                            "\xC3\xA9", "abc"};
    float scores[] = {-1, -2, -3, -4, -5, -6, -7, -8, -9, -10};
    tiny_spm v;
    tiny_spm_init(&v, pieces, scores, 10);
    peft_tokenizer *tok;
    TU_OK(ctx, peft_tokenizer_create_spm(ctx, v.n, v.piece, v.len, v.score, v.type, 1, 2, 0, 1, &tok));
    ck_assert_str_eq(peft_tokenizer_name(tok), "spm");
    ck_assert_int_eq(peft_tokenizer_bos(tok), 1);
    ck_assert_int_eq(peft_tokenizer_eos(tok), 2);
    /* " a b c" -> ▁ a b c; ab (-5) beats bc (-6) and ▁a (-7); then ▁ab (-8) */
    int32_t w1[] = {1, 266};
    expect_ids(ctx, tok, "ab", 2, 1, w1, 2);
    int32_t w2[] = {1, 266, 262};
    expect_ids(ctx, tok, "abc", 3, 1, w2, 3);
    /* a space inside: ▁ a ▁ b: ▁a first, then ▁ b stays (no ▁b) */
    int32_t w3[] = {1, 265, 259, 261};
    expect_ids(ctx, tok, "a b", 3, 1, w3, 4);
    /* byte fallback: "é" has a piece, "è" (C3 A8) does not; "日" is three bytes */
    int32_t w4[] = {1, 259, 267, 3 + 0xC3, 3 + 0xA8, 3 + 0xE6, 3 + 0x97, 3 + 0xA5};
    expect_ids(ctx, tok, "\xC3\xA9\xC3\xA8\xE6\x97\xA5", 7, 1, w4, 8);
    /* decoding: control tokens vanish, the space after BOS goes, bytes come back */
    int32_t ids[] = {1, 265, 259, 261, 3 + 0xC3, 3 + 0xA8, 2};
    size_t len;
    char *out = tu_decode(ctx, tok, ids, 7, &len);
    ck_assert_str_eq(out, "a b\xC3\xA8");
    free(out);
    const char *p;
    TU_OK(ctx, peft_tokenizer_piece(tok, 266, &p, &len));
    ck_assert_uint_eq(len, 3);
    ck_assert_int_eq(memcmp(p, " ab", 3), 0);
    TU_OK(ctx, peft_tokenizer_piece(tok, 1, &p, &len));
    ck_assert_uint_eq(len, 0);
    TU_OK(ctx, peft_tokenizer_piece(tok, 3 + 0x0A, &p, &len));
    ck_assert_uint_eq(len, 1);
    ck_assert_int_eq(p[0], '\n');
    for (size_t i = 0; i < sizeof k_texts / sizeof *k_texts; i++)
        expect_roundtrip(ctx, tok, k_texts[i], strlen(k_texts[i]), 1);
    const char bad[] = "bad \xFF\xC3 utf8 \x80";
    expect_roundtrip(ctx, tok, bad, sizeof bad - 1, 1);
    /* the same vocabulary with types inferred gives the same ids */
    peft_tokenizer *tok2;
    TU_OK(ctx, peft_tokenizer_create_spm(ctx, v.n, v.piece, v.len, v.score, NULL, 1, 2, 0, 1, &tok2));
    for (size_t i = 0; i < sizeof k_texts / sizeof *k_texts; i++) {
        size_t n1, n2;
        int32_t *a = tu_encode(ctx, tok, k_texts[i], strlen(k_texts[i]), 1, 1, &n1);
        int32_t *b = tu_encode(ctx, tok2, k_texts[i], strlen(k_texts[i]), 1, 1, &n2);
        ck_assert_uint_eq(n1, n2);
        ck_assert_int_eq(memcmp(a, b, n1 * sizeof *a), 0);
        free(a), free(b);
    }
    peft_tokenizer_destroy(tok2);
    peft_tokenizer_destroy(tok);

    /* no byte pieces and no unk: an unknown character cannot be encoded */
    const char *few[] = {"\xE2\x96\x81", "a"};
    float fs[] = {0, -1};
    size_t fl[] = {3, 1};
    TU_OK(ctx, peft_tokenizer_create_spm(ctx, 2, few, fl, fs, NULL, -1, -1, -1, 1, &tok));
    int32_t w5[] = {0, 1};
    expect_ids(ctx, tok, "a", 1, 0, w5, 2);
    size_t n;
    int32_t buf[8];
    TU_EXPECT_FAIL(ctx, peft_tokenizer_encode(tok, "ax", 2, 0, 0, buf, 8, &n), PEFT_ERR_INVALID_ARG, "byte 0x78");
    peft_tokenizer_destroy(tok);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(api_spm_in_memory_errors)
{
    peft_ctx *ctx = tu_ctx(1, 6);
    size_t base = peft_ctx_bytes_allocated(ctx);
    const char *pieces[] = {"a", "b"};
    float scores[] = {0, -1};
    tiny_spm v;
    tiny_spm_init(&v, pieces, scores, 2);
    peft_tokenizer *tok = NULL;
    v.score[260] = NAN;
    TU_EXPECT_FAIL(ctx, peft_tokenizer_create_spm(ctx, v.n, v.piece, v.len, v.score, v.type, 1, 2, 0, 1, &tok),
                   PEFT_ERR_FORMAT, "piece 260 has score nan");
    v.score[260] = -1;
    v.type[5] = 9;
    TU_EXPECT_FAIL(ctx, peft_tokenizer_create_spm(ctx, v.n, v.piece, v.len, v.score, v.type, 1, 2, 0, 1, &tok),
                   PEFT_ERR_FORMAT, "piece 5 has type 9");
    v.type[5] = PEFT_TOKEN_BYTE;
    v.type[259] = PEFT_TOKEN_BYTE;
    TU_EXPECT_FAIL(ctx, peft_tokenizer_create_spm(ctx, v.n, v.piece, v.len, v.score, v.type, 1, 2, 0, 1, &tok),
                   PEFT_ERR_FORMAT, "byte piece 259 is 'a'");
    v.type[259] = PEFT_TOKEN_NORMAL;
    v.piece[260] = "a";
    TU_EXPECT_FAIL(ctx, peft_tokenizer_create_spm(ctx, v.n, v.piece, v.len, v.score, v.type, 1, 2, 0, 1, &tok),
                   PEFT_ERR_FORMAT, "duplicate token 'a' at ids 259 and 260");
    TU_EXPECT_FAIL(ctx, peft_tokenizer_create_spm(ctx, v.n, v.piece, v.len, NULL, v.type, 1, 2, 0, 1, &tok),
                   PEFT_ERR_INVALID_ARG, "scores is NULL");
    TU_EXPECT_FAIL(ctx, peft_tokenizer_create_spm(ctx, v.n, v.piece, v.len, v.score, v.type, 1, 2, 999, 1, &tok),
                   PEFT_ERR_INVALID_ARG, "unk 999");
    ck_assert_ptr_null(tok);
    ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), base);
    peft_ctx_destroy(ctx);
}
END_TEST

/* ---- io: the real tokenizer files ---- */

static peft_tokenizer *load_gpt2(peft_ctx *ctx)
{
    char vj[512], mg[512];
    if (!model_path("gpt2/encoder.json", vj, sizeof vj) || !model_path("gpt2/vocab.bpe", mg, sizeof mg)) {
        printf("tokenizer: skipping GPT-2 tests: gpt2/encoder.json or vocab.bpe not found (PEFT_MODELS_DIR)\n");
        return NULL;
    }
    peft_tokenizer *tok = NULL;
    TU_OK(ctx, peft_tokenizer_load_gpt2(ctx, vj, mg, &tok));
    return tok;
}

START_TEST(io_gpt2_known_ids)
{
    peft_ctx *ctx = tu_ctx(1, 7);
    size_t base = peft_ctx_bytes_allocated(ctx);
    peft_tokenizer *tok = load_gpt2(ctx);
    if (!tok) {
        peft_ctx_destroy(ctx);
        return;
    }
    ck_assert_uint_eq(peft_tokenizer_n_vocab(tok), 50257);
    ck_assert_int_eq(peft_tokenizer_bos(tok), 50256);
    ck_assert_int_eq(peft_tokenizer_eos(tok), 50256);
    int32_t hw[] = {15496, 995};
    expect_ids(ctx, tok, "Hello world", 11, 0, hw, 2);
    int32_t hwb[] = {50256, 15496, 995, 50256};
    size_t n;
    int32_t *ids = tu_encode(ctx, tok, "Hello world", 11, 1, 1, &n);
    ck_assert_uint_eq(n, 4);
    ck_assert_int_eq(memcmp(ids, hwb, sizeof hwb), 0);
    free(ids);
    const char *p;
    size_t len;
    TU_OK(ctx, peft_tokenizer_piece(tok, 995, &p, &len));
    ck_assert_uint_eq(len, 6);
    ck_assert_int_eq(memcmp(p, " world", 6), 0);
    TU_OK(ctx, peft_tokenizer_piece(tok, 50256, &p, &len));
    ck_assert_int_eq(memcmp(p, "<|endoftext|>", 13), 0);
    int32_t id;
    TU_OK(ctx, peft_tokenizer_token_id(tok, "\xC4\xA0world", 7, &id));
    ck_assert_int_eq(id, 995);
    peft_tokenizer_destroy(tok);
    ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), base);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(io_gpt2_llama_cpp_vectors)
{
    char inp[512], outp[512];
    if (!model_path("ggml-vocab-gpt-2.gguf.inp", inp, sizeof inp) ||
        !model_path("ggml-vocab-gpt-2.gguf.out", outp, sizeof outp)) {
        printf("tokenizer: skipping llama.cpp GPT-2 vectors: ggml-vocab-gpt-2.gguf.inp/.out not found\n");
        return;
    }
    peft_ctx *ctx = tu_ctx(1, 8);
    peft_tokenizer *tok = load_gpt2(ctx);
    if (!tok) {
        peft_ctx_destroy(ctx);
        return;
    }
    size_t il, ol;
    char *in = read_all(inp, &il), *out = read_all(outp, &ol);
    /* inputs end with "\n__ggml_vocab_test__\n"; .out has one line of ids per input */
    const char *sep = "\n__ggml_vocab_test__\n";
    size_t seplen = strlen(sep), n_cases = 0;
    char *ip = in, *op = out;
    for (;;) {
        char *e = strstr(ip, sep);
        if (!e) break;
        char *eol = strchr(op, '\n');
        ck_assert_msg(eol != NULL, "fewer output lines than inputs");
        *eol = '\0';
        int32_t want[1024];
        size_t nw = 0;
        for (char *t = strtok(op, " "); t; t = strtok(NULL, " ")) want[nw++] = (int32_t)atoi(t);
        expect_ids(ctx, tok, ip, (size_t)(e - ip), 0, want, nw);
        expect_roundtrip(ctx, tok, ip, (size_t)(e - ip), 0);
        n_cases++;
        ip = e + seplen;
        op = eol + 1;
    }
    ck_assert_uint_eq(n_cases, 46);
    ck_assert_uint_eq((size_t)(ip - in), il); /* nothing left over */
    free(in);
    free(out);
    peft_tokenizer_destroy(tok);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(io_gpt2_roundtrip)
{
    peft_ctx *ctx = tu_ctx(1, 9);
    peft_tokenizer *tok = load_gpt2(ctx);
    if (!tok) {
        peft_ctx_destroy(ctx);
        return;
    }
    for (size_t i = 0; i < sizeof k_texts / sizeof *k_texts; i++)
        expect_roundtrip(ctx, tok, k_texts[i], strlen(k_texts[i]), 0);
    /* invalid UTF-8 and every byte value */
    const char bad[] = "ok \xFF\xFE\x80 caf\xC3 \xE6\x97 \xED\xA0\x80 \xF4\x90\x80\x80 end\x00z";
    expect_roundtrip(ctx, tok, bad, sizeof bad - 1, 0);
    char all[512];
    for (int i = 0; i < 512; i++) all[i] = (char)((i * 37 + 11) & 0xFF);
    expect_roundtrip(ctx, tok, all, sizeof all, 0);
    /* a pseudo-random byte soup, and a long text (a few hundred KB) */
    uint64_t r = 42;
    size_t big_n = 300000;
    char *big = malloc(big_n);
    for (size_t i = 0; i < big_n; i++) {
        r = r * 6364136223846793005ULL + 1442695040888963407ULL;
        big[i] = (char)(r >> 56);
    }
    expect_roundtrip(ctx, tok, big, 4096, 0);
    size_t o = 0;
    for (size_t k = 0; o < big_n; k++) {
        const char *t = k_texts[k % (sizeof k_texts / sizeof *k_texts)];
        size_t l = strlen(t);
        if (o + l + 1 > big_n) break;
        memcpy(big + o, t, l);
        o += l;
        big[o++] = k % 3 ? ' ' : '\n';
    }
    expect_roundtrip(ctx, tok, big, o, 0);
    /* a long single pre-token exercises the heap merge */
    memset(big, 'a', 20000);
    expect_roundtrip(ctx, tok, big, 20000, 0);
    free(big);
    peft_tokenizer_destroy(tok);
    peft_ctx_destroy(ctx);
}
END_TEST

/* A vocab.json over the 256 byte characters plus `extra`; the caller unlinks. */
static void write_vocab_json(char *path, size_t size, const char *extra_json)
{
    char *json = malloc(16384);
    size_t o = 0;
    o += (size_t)snprintf(json + o, 16384 - o, "{");
    for (int b = 0; b < 256; b++) o += (size_t)snprintf(json + o, 16384 - o, "\"\\u%04x\": %d, ", alphabet_cp(b), b);
    o += (size_t)snprintf(json + o, 16384 - o, "%s}", extra_json);
    write_tmp(path, size, json, o);
    free(json);
}

START_TEST(io_gpt2_bad_files)
{
    peft_ctx *ctx = tu_ctx(1, 10);
    size_t base = peft_ctx_bytes_allocated(ctx);
    peft_tokenizer *tok = NULL;
    char vj[64], mg[64], tmp[64];
    write_vocab_json(vj, sizeof vj, "\"he\": 256, \"hel\": 257");
    /* good: header, \r\n line ends, an empty line */
    const char good[] = "#version: 0.2\r\nh e\r\n\nhe l\n";
    write_tmp(mg, sizeof mg, good, sizeof good - 1);
    TU_OK(ctx, peft_tokenizer_load_gpt2(ctx, vj, mg, &tok));
    int32_t w[] = {257};
    expect_ids(ctx, tok, "hel", 3, 0, w, 1);
    ck_assert_int_eq(peft_tokenizer_bos(tok), -1); /* no <|endoftext|> */
    peft_tokenizer_destroy(tok);
    tok = NULL;
    unlink(mg);
    /* a merge with an unknown token: the file and line are named */
    const char unknown[] = "#version: 0.2\nh e\nx yy\n";
    write_tmp(mg, sizeof mg, unknown, sizeof unknown - 1);
    char needle[128];
    snprintf(needle, sizeof needle, "%s:3: merge 'x yy': token 'yy' is not in the vocabulary", mg);
    TU_EXPECT_FAIL(ctx, peft_tokenizer_load_gpt2(ctx, vj, mg, &tok), PEFT_ERR_FORMAT, needle);
    ck_assert_ptr_null(tok);
    unlink(mg);
    const char result[] = "h e\nhe l\nl l\n";
    write_tmp(mg, sizeof mg, result, sizeof result - 1);
    snprintf(needle, sizeof needle, "%s:3: merge 'l l': the result 'll'", mg);
    TU_EXPECT_FAIL(ctx, peft_tokenizer_load_gpt2(ctx, vj, mg, &tok), PEFT_ERR_FORMAT, needle);
    unlink(vj);

    /* malformed vocab JSON (merges file is fine) */
    struct { const char *json, *needle; } bad[] = {
        {"{\"a\": 0, \"b\": }", "invalid JSON at byte 14 (line 1)"},
        {"{\"a\": 0,\n\"b\" 1}", "invalid JSON at byte"},
        {"[0, 1]", "not a JSON object"},
        {"{}", "no tokens"},
        {"{\"a\": 0, \"b\": 2}", "token 'b' has id 2, not an integer in [0, 2)"},
        {"{\"a\": 0, \"b\": -1}", "token 'b' has id -1"},
        {"{\"a\": 0, \"b\": 1.5}", "token 'b' has id 1.5"},
        {"{\"a\": 0, \"b\": \"1\"}", "token 'b' has id a non-number"},
        {"{\"a\": 1, \"b\": 1}", "id 1 is given to both 'a' and 'b'"},
        {"{\"a\": 0, \"a\": 1}", "duplicate token 'a' at ids 0 and 1"},
        {"{\"a\": 0, \"b\": 1}", "no token for byte 0x00"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        write_tmp(tmp, sizeof tmp, bad[i].json, strlen(bad[i].json));
        TU_EXPECT_FAIL(ctx, peft_tokenizer_load_gpt2(ctx, tmp, mg, &tok), PEFT_ERR_FORMAT, bad[i].needle);
        ck_assert_msg(strstr(peft_ctx_errmsg(ctx), tmp) != NULL, "message names the file: %s", peft_ctx_errmsg(ctx));
        ck_assert_ptr_null(tok);
        unlink(tmp);
    }
    unlink(mg);
    TU_EXPECT_FAIL(ctx, peft_tokenizer_load_gpt2(ctx, "/nonexistent/vocab.json", "/nonexistent/merges.txt", &tok),
                   PEFT_ERR_IO, "cannot open '/nonexistent/vocab.json'");
    TU_EXPECT_FAIL(ctx, peft_tokenizer_load_gpt2(ctx, NULL, "x", &tok), PEFT_ERR_INVALID_ARG, "is NULL");
    ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), base);
    peft_ctx_destroy(ctx);
}
END_TEST

static peft_tokenizer *load_tok512(peft_ctx *ctx, char *path, size_t size)
{
    if (!model_path("tok512.bin", path, size)) {
        printf("tokenizer: skipping llama2.c tests: tok512.bin not found (PEFT_MODELS_DIR)\n");
        return NULL;
    }
    peft_tokenizer *tok = NULL;
    TU_OK(ctx, peft_tokenizer_load_llama2c(ctx, path, 512, &tok));
    return tok;
}

START_TEST(io_llama2c_known_ids)
{
    peft_ctx *ctx = tu_ctx(1, 11);
    size_t base = peft_ctx_bytes_allocated(ctx);
    char path[512];
    peft_tokenizer *tok = load_tok512(ctx, path, sizeof path);
    if (!tok) {
        peft_ctx_destroy(ctx);
        return;
    }
    ck_assert_str_eq(peft_tokenizer_name(tok), "spm");
    ck_assert_uint_eq(peft_tokenizer_n_vocab(tok), 512);
    ck_assert_int_eq(peft_tokenizer_bos(tok), 1);
    ck_assert_int_eq(peft_tokenizer_eos(tok), 2);
    int32_t want[] = {1, 403, 407, 261, 378};
    expect_ids(ctx, tok, "Once upon a time", 16, 1, want, 5);
    size_t n, len;
    int32_t *ids = tu_encode(ctx, tok, "Once upon a time", 16, 1, 1, &n);
    ck_assert_uint_eq(n, 6);
    ck_assert_int_eq(ids[5], 2);
    char *text = tu_decode(ctx, tok, ids, n, &len);
    ck_assert_str_eq(text, "Once upon a time");
    free(text);
    free(ids);
    /* without BOS the dummy-prefix space stays in the decoded text */
    ids = tu_encode(ctx, tok, "Once", 4, 0, 0, &n);
    text = tu_decode(ctx, tok, ids, n, &len);
    ck_assert_str_eq(text, " Once");
    free(text);
    free(ids);
    /* empty text: no dummy prefix */
    int32_t bos_only[] = {1};
    expect_ids(ctx, tok, "", 0, 1, bos_only, 1);
    /* "é" is a piece of tok512 (485); "è" and "日本" are not: byte fallback,
     * <0xXX> is id byte + 3 */
    int32_t sp;
    TU_OK(ctx, peft_tokenizer_token_id(tok, " ", 1, &sp));
    ck_assert_int_eq(sp, 410);
    int32_t e_acute[] = {1, sp, 485};
    expect_ids(ctx, tok, "\xC3\xA9", 2, 1, e_acute, 3);
    int32_t e_grave[] = {1, sp, 0xC3 + 3, 0xA8 + 3};
    expect_ids(ctx, tok, "\xC3\xA8", 2, 1, e_grave, 4);
    int32_t nihon[] = {1, sp, 0xE6 + 3, 0x97 + 3, 0xA5 + 3, 0xE6 + 3, 0x9C + 3, 0xAC + 3};
    expect_ids(ctx, tok, "\xE6\x97\xA5\xE6\x9C\xAC", 6, 1, nihon, 8);
    const char *p;
    TU_OK(ctx, peft_tokenizer_piece(tok, 0xC3 + 3, &p, &len));
    ck_assert_uint_eq(len, 1);
    ck_assert_uint_eq((uint8_t)p[0], 0xC3);
    TU_OK(ctx, peft_tokenizer_piece(tok, 403, &p, &len));
    ck_assert_uint_eq(len, 5);
    ck_assert_int_eq(memcmp(p, " Once", 5), 0);
    for (size_t i = 0; i < sizeof k_texts / sizeof *k_texts; i++)
        expect_roundtrip(ctx, tok, k_texts[i], strlen(k_texts[i]), 1);
    const char bad[] = "bad \xFF\xC3 utf8 \x80\x80\x80\x80\x80 \xE6\x97";
    expect_roundtrip(ctx, tok, bad, sizeof bad - 1, 1);
    peft_tokenizer_destroy(tok);
    ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), base);
    peft_ctx_destroy(ctx);
}
END_TEST

/* tok512 as a GGUF "llama" vocabulary spells it: U+2581 for spaces, "<s>" and
 * "</s>", token types. It must encode exactly like tokenizer.bin. */
START_TEST(io_llama2c_vs_u2581_arrays)
{
    peft_ctx *ctx = tu_ctx(1, 12);
    char path[512];
    peft_tokenizer *bin = load_tok512(ctx, path, sizeof path);
    if (!bin) {
        peft_ctx_destroy(ctx);
        return;
    }
    size_t size;
    unsigned char *d = (unsigned char *)read_all(path, &size);
    char *store = malloc(512 * 7 * 3);
    const char *pieces[512];
    size_t lens[512], so = 0, o = 4;
    float scores[512];
    int32_t types[512];
    for (int i = 0; i < 512; i++) {
        int32_t len;
        memcpy(&scores[i], d + o, 4);
        memcpy(&len, d + o + 4, 4);
        o += 8;
        pieces[i] = store + so;
        if (i == 1 || i == 2) {
            const char *s = i == 1 ? "<s>" : "</s>";
            memcpy(store + so, s, strlen(s));
            so += strlen(s);
        } else {
            for (int32_t k = 0; k < len; k++) {
                if (d[o + k] == ' ') {
                    memcpy(store + so, "\xE2\x96\x81", 3);
                    so += 3;
                } else {
                    store[so++] = (char)d[o + k];
                }
            }
        }
        lens[i] = (size_t)(store + so - pieces[i]);
        types[i] = i == 0    ? PEFT_TOKEN_UNKNOWN
                   : i < 3   ? PEFT_TOKEN_CONTROL
                   : i < 259 ? PEFT_TOKEN_BYTE
                             : PEFT_TOKEN_NORMAL;
        o += (size_t)len;
    }
    peft_tokenizer *gg;
    TU_OK(ctx, peft_tokenizer_create_spm(ctx, 512, pieces, lens, scores, types, 1, 2, 0, 1, &gg));
    int32_t want[] = {1, 403, 407, 261, 378};
    expect_ids(ctx, gg, "Once upon a time", 16, 1, want, 5);
    const char *extra[] = {"  two  spaces  ", " x", "x ", "\xC3\xA9t\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC",
                           "bad \xFF\xC3 utf8 \x80\x80\x80\x80\x80 \xE6\x97", " \x80 "};
    for (size_t t = 0; t < sizeof k_texts / sizeof *k_texts + sizeof extra / sizeof *extra; t++) {
        const char *text =
            t < sizeof k_texts / sizeof *k_texts ? k_texts[t] : extra[t - sizeof k_texts / sizeof *k_texts];
        size_t n1, n2, l1, l2;
        int32_t *a = tu_encode(ctx, bin, text, strlen(text), 1, 1, &n1);
        int32_t *b = tu_encode(ctx, gg, text, strlen(text), 1, 1, &n2);
        ck_assert_msg(n1 == n2 && memcmp(a, b, n1 * sizeof *a) == 0, "'%s': tokenizer.bin and U+2581 ids differ", text);
        char *ta = tu_decode(ctx, bin, a, n1, &l1), *tb = tu_decode(ctx, gg, b, n2, &l2);
        ck_assert_uint_eq(l1, l2);
        ck_assert_int_eq(memcmp(ta, tb, l1), 0);
        ck_assert_int_eq(memcmp(ta, text, l1), 0);
        ck_assert_uint_eq(l1, strlen(text));
        free(a), free(b), free(ta), free(tb);
    }
    const char *p;
    size_t len;
    TU_OK(ctx, peft_tokenizer_piece(gg, 403, &p, &len));
    ck_assert_uint_eq(len, 5);
    ck_assert_int_eq(memcmp(p, " Once", 5), 0);
    int32_t id;
    TU_OK(ctx, peft_tokenizer_token_id(gg, "\xE2\x96\x81Once", 7, &id));
    ck_assert_int_eq(id, 403);
    free(store);
    free(d);
    peft_tokenizer_destroy(gg);
    peft_tokenizer_destroy(bin);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(io_llama2c_bad_files)
{
    peft_ctx *ctx = tu_ctx(1, 13);
    size_t base = peft_ctx_bytes_allocated(ctx);
    char path[512], tmp[64];
    peft_tokenizer *tok = load_tok512(ctx, path, sizeof path);
    if (!tok) {
        peft_ctx_destroy(ctx);
        return;
    }
    peft_tokenizer_destroy(tok);
    tok = NULL;
    size_t size;
    char *d = read_all(path, &size);
    /* every truncation is caught */
    const size_t cuts[] = {0, 2, 4, 7, 11, 12, 13, 100, 3000, size - 1};
    for (size_t c = 0; c < sizeof cuts / sizeof *cuts; c++) {
        write_tmp(tmp, sizeof tmp, d, cuts[c]);
        TU_EXPECT_FAIL(ctx, peft_tokenizer_load_llama2c(ctx, tmp, 512, &tok), PEFT_ERR_FORMAT, tmp);
        ck_assert_ptr_null(tok);
        unlink(tmp);
    }
    TU_EXPECT_FAIL(ctx, peft_tokenizer_load_llama2c(ctx, path, 513, &tok), PEFT_ERR_FORMAT,
                   "truncated: token 512 of 513");
    /* a negative and a huge length */
    int32_t neg = -5, huge = 0x7FFFFFF0, zero = 0;
    char *c = malloc(size);
    memcpy(c, d, size);
    memcpy(c + 4 + 4, &neg, 4); /* token 0's length */
    write_tmp(tmp, sizeof tmp, c, size);
    TU_EXPECT_FAIL(ctx, peft_tokenizer_load_llama2c(ctx, tmp, 512, &tok), PEFT_ERR_FORMAT, "token 0 has length -5");
    unlink(tmp);
    memcpy(c + 4 + 4, &huge, 4);
    write_tmp(tmp, sizeof tmp, c, size);
    TU_EXPECT_FAIL(ctx, peft_tokenizer_load_llama2c(ctx, tmp, 512, &tok), PEFT_ERR_FORMAT,
                   "token 0 has length 2147483632");
    unlink(tmp);
    memcpy(c, &zero, 4);
    write_tmp(tmp, sizeof tmp, c, size);
    TU_EXPECT_FAIL(ctx, peft_tokenizer_load_llama2c(ctx, tmp, 512, &tok), PEFT_ERR_FORMAT, "max_token_length is 0");
    unlink(tmp);
    /* a NaN score */
    memcpy(c, d, size);
    float nan_score = NAN;
    memcpy(c + 4, &nan_score, 4);
    write_tmp(tmp, sizeof tmp, c, size);
    TU_EXPECT_FAIL(ctx, peft_tokenizer_load_llama2c(ctx, tmp, 512, &tok), PEFT_ERR_FORMAT, "token 0 has score nan");
    unlink(tmp);
    free(c);
    free(d);
    TU_EXPECT_FAIL(ctx, peft_tokenizer_load_llama2c(ctx, "/nonexistent/tok.bin", 512, &tok), PEFT_ERR_IO,
                   "cannot open");
    TU_EXPECT_FAIL(ctx, peft_tokenizer_load_llama2c(ctx, path, 0, &tok), PEFT_ERR_INVALID_ARG, "vocab_size 0");
    ck_assert_ptr_null(tok);
    ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), base);
    peft_ctx_destroy(ctx);
}
END_TEST

Suite *tokenizer_suite(void)
{
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("numerics");
    tcase_add_test(tc, numerics_unicode_classes);
    tcase_add_test(tc, numerics_utf8);
    tcase_add_test(tc, numerics_gpt2_pretokenizer);
    suite_add_tcase(s, tc);
    tc = tcase_create("api");
    tcase_add_test(tc, api_bytes);
    tcase_add_test(tc, api_cap_and_range_errors);
    tcase_add_test(tc, api_bpe_in_memory);
    tcase_add_test(tc, api_bpe_in_memory_errors);
    tcase_add_test(tc, api_spm_in_memory);
    tcase_add_test(tc, api_spm_in_memory_errors);
    suite_add_tcase(s, tc);
    tc = tcase_create("io");
    tcase_add_test(tc, io_gpt2_known_ids);
    tcase_add_test(tc, io_gpt2_llama_cpp_vectors);
    tcase_add_test(tc, io_gpt2_roundtrip);
    tcase_add_test(tc, io_gpt2_bad_files);
    tcase_add_test(tc, io_llama2c_known_ids);
    tcase_add_test(tc, io_llama2c_vs_u2581_arrays);
    tcase_add_test(tc, io_llama2c_bad_files);
    suite_add_tcase(s, tc);
    return s;
}
