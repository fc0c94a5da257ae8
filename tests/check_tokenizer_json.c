/* Hugging Face tokenizer.json. No such file ships here, so the tests write
 * them with cJSON from the shared vocabularies and compare with the loaders
 * of the original files: GPT-2's encoder.json + vocab.bpe as a byte-level
 * tokenizer.json (plain ByteLevel, or Split by GPT-2's regex + ByteLevel,
 * merges as "a b" strings or as pairs) against peft_tokenizer_load_gpt2, and
 * llama2.c's tok512.bin as a SentencePiece-style tokenizer.json (merges ranked
 * by score) against peft_tokenizer_load_llama2c. Small hand-made files cover
 * added tokens, the pre-tokenizer options and bad input. Tests that need
 * ../shared/models print why they skip when it is absent. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../lib/data/tok_internal.h"
#include "util/testutil.h"

#define U2581 "\xE2\x96\x81"
#define FORTUNES "/usr/share/games/fortunes/fortunes"

static const char GPT2_RE[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

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

/* A fresh temporary directory. */
static void tmp_dir(char *dir, size_t size)
{
    snprintf(dir, size, "/tmp/peft_tokjson_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(text, 1, strlen(text), f), strlen(text));
    fclose(f);
}

/* Write root (then delete it) as dir/name; path gets the file's path. */
static void write_json(cJSON *root, const char *dir, const char *name, char *path, size_t size)
{
    snprintf(path, size, "%s/%s", dir, name);
    char *s = cJSON_PrintUnformatted(root);
    ck_assert_ptr_nonnull(s);
    write_text(path, s);
    free(s);
    cJSON_Delete(root);
}

static void ids_str(const int32_t *ids, size_t n, char *buf, size_t size)
{
    buf[0] = '\0';
    for (size_t i = 0; i < n && strlen(buf) + 16 < size; i++) snprintf(buf + strlen(buf), 16, " %d", ids[i]);
}

static void expect_ids(peft_ctx *ctx, peft_tokenizer *tok, const char *text, int bos, const int32_t *want,
                       size_t n_want)
{
    size_t n;
    int32_t *ids = tu_encode(ctx, tok, text, strlen(text), bos, 0, &n);
    char got[512], exp[512];
    ids_str(ids, n, got, sizeof got);
    ids_str(want, n_want, exp, sizeof exp);
    ck_assert_msg(n == n_want && memcmp(ids, want, n * sizeof *ids) == 0, "'%s': got [%s ] want [%s ]", text, got,
                  exp);
    free(ids);
}

/* Both tokenizers give the same ids for text[0..len) (and the same decoding). */
static void expect_same(peft_ctx *ctx, peft_tokenizer *a, peft_tokenizer *b, const char *text, size_t len, int bos,
                        const char *label)
{
    size_t na, nb, la, lb;
    int32_t *ia = tu_encode(ctx, a, text, len, bos, 0, &na), *ib = tu_encode(ctx, b, text, len, bos, 0, &nb);
    size_t k = 0;
    while (k < na && k < nb && ia[k] == ib[k]) k++;
    ck_assert_msg(na == nb && k == na, "%s: '%.*s': %zu vs %zu ids, first difference at %zu (%d vs %d)", label,
                  (int)(len < 80 ? len : 80), text, na, nb, k, k < na ? ia[k] : -1, k < nb ? ib[k] : -1);
    if (bos) { /* after a BOS both decoders drop the dummy prefix */
        char *da = tu_decode(ctx, a, ia, na, &la), *db = tu_decode(ctx, b, ib, nb, &lb);
        ck_assert_msg(la == lb && memcmp(da, db, la) == 0, "%s: '%.*s' decodes differently", label,
                      (int)(len < 80 ? len : 80), text);
        free(da), free(db);
    }
    free(ia), free(ib);
}

static const char *const k_texts[] = {
    "Hello world",
    " ",
    "   leading and trailing spaces   ",
    "tabs\tand\nnew\r\nlines\n\n\n",
    "Once upon a time, there was a little girl named Lily.",
    "I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL",
    "numbers 3 33 333 3333 3.14159 1,000,000 and \xC2\xBD \xE2\x85\x94",
    "Fran\xC3\xA7" "ais, \xCE\x95\xCE\xBB\xCE\xBB\xCE\xB7\xCE\xBD\xCE\xB9\xCE\xBA\xCE\xAC, \xD0\xA0\xD1\x83\xD1\x81",
    "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4",
    "emoji \xF0\x9F\xA6\x99\xF0\x9F\xA6\x99 \xE2\x9C\x85",
    "symbols ~!@#$%^&*()_+`-=[]{}|;':\",./<>? \xC2\xAB\xC2\xBB",
    "code: for (int i = 0; i < n; i++) { x[i] += 1; }\n\treturn 0;",
    "bad \xFF\xC3 utf8 \x80\x80 \xE6\x97",
};

/* ---- GPT-2 as a byte-level tokenizer.json ---- */

enum { PRE_BYTELEVEL, PRE_SPLIT_BYTELEVEL };

static cJSON *bytelevel(bool use_regex)
{
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "type", "ByteLevel");
    cJSON_AddFalseToObject(b, "add_prefix_space");
    cJSON_AddTrueToObject(b, "trim_offsets");
    cJSON_AddBoolToObject(b, "use_regex", use_regex);
    return b;
}

static cJSON *added_token(int id, const char *content, bool special)
{
    cJSON *t = cJSON_CreateObject();
    cJSON_AddNumberToObject(t, "id", id);
    cJSON_AddStringToObject(t, "content", content);
    cJSON_AddFalseToObject(t, "single_word");
    cJSON_AddFalseToObject(t, "lstrip");
    cJSON_AddFalseToObject(t, "rstrip");
    cJSON_AddBoolToObject(t, "normalized", !special);
    cJSON_AddBoolToObject(t, "special", special);
    return t;
}

/* A merge "a b" as a string or as the pair ["a", "b"]. */
static void add_merge(cJSON *merges, const char *a, size_t la, const char *b, size_t lb, bool pairs)
{
    char *m = malloc(la + lb + 2);
    if (pairs) {
        cJSON *p = cJSON_CreateArray();
        memcpy(m, a, la), m[la] = '\0';
        cJSON_AddItemToArray(p, cJSON_CreateString(m));
        memcpy(m, b, lb), m[lb] = '\0';
        cJSON_AddItemToArray(p, cJSON_CreateString(m));
        cJSON_AddItemToArray(merges, p);
    } else {
        memcpy(m, a, la);
        m[la] = ' ';
        memcpy(m + la + 1, b, lb);
        m[la + 1 + lb] = '\0';
        cJSON_AddItemToArray(merges, cJSON_CreateString(m));
    }
    free(m);
}

/* tokenizer.json of GPT-2 as Hugging Face writes it, from encoder.json + vocab.bpe. */
static cJSON *gpt2_json(const char *vocab_path, const char *merges_path, int pre, bool pairs)
{
    size_t len;
    char *vj = read_all(vocab_path, &len), *mg = read_all(merges_path, &len);
    cJSON *vocab = cJSON_Parse(vj);
    ck_assert_ptr_nonnull(vocab);
    cJSON *merges = cJSON_CreateArray();
    for (char *line = mg, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        size_t l = strlen(line);
        if (l && line[l - 1] == '\r') line[--l] = '\0';
        if (!l || !strncmp(line, "#version", 8)) continue;
        char *sp = strchr(line + 1, ' ');
        ck_assert_ptr_nonnull(sp);
        add_merge(merges, line, (size_t)(sp - line), sp + 1, strlen(sp + 1), pairs);
    }
    free(vj), free(mg);

    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    cJSON_AddItemToArray(added, added_token(50256, "<|endoftext|>", true));
    cJSON_AddNullToObject(root, "normalizer");
    if (pre == PRE_BYTELEVEL) {
        cJSON_AddItemToObject(root, "pre_tokenizer", bytelevel(true));
    } else {
        cJSON *seq = cJSON_AddObjectToObject(root, "pre_tokenizer");
        cJSON_AddStringToObject(seq, "type", "Sequence");
        cJSON *list = cJSON_AddArrayToObject(seq, "pretokenizers");
        cJSON *split = cJSON_CreateObject();
        cJSON_AddStringToObject(split, "type", "Split");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(split, "pattern"), "Regex", GPT2_RE);
        cJSON_AddStringToObject(split, "behavior", "Isolated");
        cJSON_AddFalseToObject(split, "invert");
        cJSON_AddItemToArray(list, split);
        cJSON_AddItemToArray(list, bytelevel(false));
    }
    cJSON_AddItemToObject(root, "post_processor", bytelevel(true));
    cJSON_AddItemToObject(root, "decoder", bytelevel(true));
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddStringToObject(model, "continuing_subword_prefix", "");
    cJSON_AddStringToObject(model, "end_of_word_suffix", "");
    cJSON_AddFalseToObject(model, "fuse_unk");
    cJSON_AddFalseToObject(model, "byte_fallback");
    cJSON_AddItemToObject(model, "vocab", vocab);
    cJSON_AddItemToObject(model, "merges", merges);
    return root;
}

/* llama.cpp's GPT-2 test inputs, split into cases (pointers into *buf). */
static size_t vocab_test_inputs(const char *path, char **buf, char **cases, size_t *lens, size_t max)
{
    size_t len, n = 0;
    *buf = read_all(path, &len);
    const char *sep = "\n__ggml_vocab_test__\n";
    for (char *p = *buf, *e; (e = strstr(p, sep)) && n < max; p = e + strlen(sep)) {
        cases[n] = p;
        lens[n++] = (size_t)(e - p);
    }
    return n;
}

/* Every text of the comparison: the llama.cpp inputs, k_texts, fortunes. */
static void compare_gpt2(peft_ctx *ctx, peft_tokenizer *ref, peft_tokenizer *js, const char *label)
{
    char inp[512];
    if (model_path("ggml-vocab-gpt-2.gguf.inp", inp, sizeof inp)) {
        char *buf, *cases[64];
        size_t lens[64];
        size_t n = vocab_test_inputs(inp, &buf, cases, lens, 64);
        ck_assert_uint_eq(n, 46);
        for (size_t i = 0; i < n; i++) expect_same(ctx, ref, js, cases[i], lens[i], 0, label);
        free(buf);
    } else {
        printf("tokenizer_json: ggml-vocab-gpt-2.gguf.inp not found, comparing without llama.cpp's inputs\n");
    }
    for (size_t i = 0; i < sizeof k_texts / sizeof *k_texts; i++)
        expect_same(ctx, ref, js, k_texts[i], strlen(k_texts[i]), 1, label);
    if (access(FORTUNES, R_OK) == 0) {
        size_t len;
        char *f = read_all(FORTUNES, &len);
        expect_same(ctx, ref, js, f, len, 1, label);
        free(f);
    } else {
        printf("tokenizer_json: %s not found, comparing without it\n", FORTUNES);
    }
}

static bool gpt2_files(char *vj, char *mg, size_t size)
{
    if (model_path("gpt2/encoder.json", vj, size) && model_path("gpt2/vocab.bpe", mg, size)) return true;
    printf("tokenizer_json: skipping GPT-2 tests: gpt2/encoder.json or vocab.bpe not found under "
           "../shared/models (PEFT_MODELS_DIR)\n");
    return false;
}

START_TEST(io_gpt2_bytelevel)
{
    char vj[512], mg[512], dir[64], path[128];
    if (!gpt2_files(vj, mg, sizeof vj)) return;
    peft_ctx *ctx = tu_ctx(1, 1);
    size_t base = peft_ctx_bytes_allocated(ctx);
    peft_tokenizer *ref = NULL, *js = NULL;
    TU_OK(ctx, peft_tokenizer_load_gpt2(ctx, vj, mg, &ref));
    tmp_dir(dir, sizeof dir);
    write_json(gpt2_json(vj, mg, PRE_BYTELEVEL, false), dir, "tokenizer.json", path, sizeof path);
    TU_OK(ctx, peft_tokenizer_load_json(ctx, path, &js));
    ck_assert_str_eq(peft_tokenizer_name(js), "gpt2-bpe");
    ck_assert_uint_eq(peft_tokenizer_n_vocab(js), 50257);
    ck_assert_int_eq(peft_tokenizer_bos(js), 50256); /* no template: the <|endoftext|> added token */
    ck_assert_int_eq(peft_tokenizer_eos(js), 50256);
    int32_t hw[] = {15496, 995};
    expect_ids(ctx, js, "Hello world", 0, hw, 2);
    compare_gpt2(ctx, ref, js, "ByteLevel");

    /* the added token inside text: matched before the model runs */
    const char *parts[][2] = {{"Hello", " world"}, {"", "x"}, {"a ", " b"}, {"end.\n", ""}, {"<|endoftext", "|>"}};
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
        char text[128];
        snprintf(text, sizeof text, "%s<|endoftext|>%s", parts[i][0], parts[i][1]);
        size_t n1, n2, n;
        int32_t *a = tu_encode(ctx, ref, parts[i][0], strlen(parts[i][0]), 0, 0, &n1);
        int32_t *b = tu_encode(ctx, ref, parts[i][1], strlen(parts[i][1]), 0, 0, &n2);
        int32_t *want = malloc((n1 + n2 + 1) * sizeof *want);
        memcpy(want, a, n1 * sizeof *a);
        want[n1] = 50256;
        memcpy(want + n1 + 1, b, n2 * sizeof *b);
        expect_ids(ctx, js, text, 0, want, n1 + n2 + 1);
        /* the gpt2 loader has no added tokens: it spells the text out */
        int32_t *r = tu_encode(ctx, ref, text, strlen(text), 0, 0, &n);
        ck_assert_uint_gt(n, n1 + n2 + 1);
        free(a), free(b), free(want), free(r);
    }
    int32_t two[] = {50256, 50256};
    expect_ids(ctx, js, "<|endoftext|><|endoftext|>", 0, two, 2);
    /* and decodes to its text, as with the gpt2 loader */
    size_t len;
    char *t = tu_decode(ctx, js, two, 2, &len);
    ck_assert_str_eq(t, "<|endoftext|><|endoftext|>");
    free(t);
    peft_tokenizer_destroy(js);
    peft_tokenizer_destroy(ref);
    ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), base);
    unlink(path);
    rmdir(dir);
    peft_ctx_destroy(ctx);
}
END_TEST

/* Split by GPT-2's regex + ByteLevel(use_regex false), and merges as pairs
 * (the newer format), through peft_tokenizer_load on the directory. */
START_TEST(io_gpt2_split_pairs)
{
    char vj[512], mg[512], dir[64], path[128];
    if (!gpt2_files(vj, mg, sizeof vj)) return;
    peft_ctx *ctx = tu_ctx(1, 2);
    peft_tokenizer *ref = NULL, *js = NULL;
    TU_OK(ctx, peft_tokenizer_load_gpt2(ctx, vj, mg, &ref));
    tmp_dir(dir, sizeof dir);
    write_json(gpt2_json(vj, mg, PRE_SPLIT_BYTELEVEL, true), dir, "tokenizer.json", path, sizeof path);
    TU_OK(ctx, peft_tokenizer_load(ctx, dir, &js));
    ck_assert_str_eq(peft_tokenizer_name(js), "gpt2-bpe");
    compare_gpt2(ctx, ref, js, "Split+ByteLevel, pairs");
    peft_tokenizer_destroy(js);
    peft_tokenizer_destroy(ref);
    unlink(path);
    rmdir(dir);
    peft_ctx_destroy(ctx);
}
END_TEST

/* ---- tok512 as a SentencePiece-style tokenizer.json ---- */

typedef struct spm_vocab {
    char *store;
    const char *piece[512]; /* "▁" for spaces, "<s>" / "</s>" for ids 1, 2 */
    size_t len[512];
    float score[512];
} spm_vocab;

static bool read_tok512(spm_vocab *v, char *path, size_t size)
{
    if (!model_path("tok512.bin", path, size)) {
        printf("tokenizer_json: skipping SentencePiece tests: tok512.bin not found under ../shared/models "
               "(PEFT_MODELS_DIR)\n");
        return false;
    }
    size_t n;
    unsigned char *d = (unsigned char *)read_all(path, &n);
    v->store = malloc(512 * 7 * 3);
    size_t so = 0, o = 4;
    for (int i = 0; i < 512; i++) {
        int32_t len;
        memcpy(&v->score[i], d + o, 4);
        memcpy(&len, d + o + 4, 4);
        o += 8;
        v->piece[i] = v->store + so;
        if (i == 1 || i == 2) {
            const char *s = i == 1 ? "<s>" : "</s>";
            memcpy(v->store + so, s, strlen(s));
            so += strlen(s);
        } else {
            for (int32_t k = 0; k < len; k++) {
                if (d[o + k] == ' ')
                    memcpy(v->store + so, U2581, 3), so += 3;
                else
                    v->store[so++] = (char)d[o + k];
            }
        }
        v->len[i] = (size_t)(v->store + so - v->piece[i]);
        v->store[so++] = '\0';
        o += (size_t)len;
    }
    ck_assert_uint_eq(o, n);
    free(d);
    return true;
}

static int piece_id(const spm_vocab *v, const char *s, size_t len)
{
    for (int i = 259; i < 512; i++) /* merges join normal pieces only */
        if (v->len[i] == len && memcmp(v->piece[i], s, len) == 0) return i;
    return -1;
}

typedef struct merge_c {
    int id, split;
} merge_c;

static const spm_vocab *g_sort_vocab;

/* By score of the result, highest first; then id; then split point. */
static int merge_cmp(const void *a, const void *b)
{
    const merge_c *x = a, *y = b;
    float sx = g_sort_vocab->score[x->id], sy = g_sort_vocab->score[y->id];
    if (sx != sy) return sx > sy ? -1 : 1;
    if (x->id != y->id) return x->id - y->id;
    return x->split - y->split;
}

/* The merges that make rank order reproduce llama2.c's score order: every
 * split of every normal piece into two normal pieces (llama2.c merges any
 * adjacent pair whose concatenation is a piece, whichever split the symbols
 * happen to form), ranked by the score of the result. Scores are distinct
 * in tok512, so rank order and score order agree on every pair. (One split
 * per piece is not enough: llama2.c reaches 13 pieces of tok512 by two
 * splits, and with only the split of the best-scored parts 142 of the 917
 * fortunes lines encode differently.) */
static cJSON *spm_merges(const spm_vocab *v, bool pairs, size_t *n_out)
{
    merge_c *m = malloc(512 * 8 * sizeof *m);
    size_t n = 0;
    for (int id = 259; id < 512; id++) {
        const char *p = v->piece[id];
        size_t n0 = n, n_cp = 1;
        for (size_t k = 1; k < v->len[id]; k++) {
            if (((uint8_t)p[k] & 0xC0) == 0x80) continue; /* inside a code point */
            n_cp++;
            if (piece_id(v, p, k) >= 0 && piece_id(v, p + k, v->len[id] - k) >= 0) m[n++] = (merge_c){id, (int)k};
        }
        /* a piece of two or more code points is the merge of two pieces */
        ck_assert_msg(n_cp == 1 || n > n0, "piece %d '%s' has no split into two pieces", id, p);
    }
    g_sort_vocab = v;
    qsort(m, n, sizeof *m, merge_cmp);
    cJSON *merges = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) {
        const char *p = v->piece[m[i].id];
        add_merge(merges, p, (size_t)m[i].split, p + m[i].split, v->len[m[i].id] - (size_t)m[i].split, pairs);
    }
    free(m);
    *n_out = n;
    return merges;
}

enum { SPM_NORMALIZER, SPM_METASPACE_FIRST, SPM_METASPACE_NEVER, SPM_METASPACE_SPLIT };

static cJSON *typed(const char *type)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", type);
    return o;
}

static cJSON *metaspace(const char *scheme, bool split)
{
    cJSON *m = typed("Metaspace");
    cJSON_AddStringToObject(m, "replacement", U2581);
    cJSON_AddStringToObject(m, "prepend_scheme", scheme);
    cJSON_AddBoolToObject(m, "split", split);
    return m;
}

static cJSON *replace(const char *from, const char *to)
{
    cJSON *r = typed("Replace");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(r, "pattern"), "String", from);
    cJSON_AddStringToObject(r, "content", to);
    return r;
}

/* A Llama-2-style tokenizer.json of tok512 as Hugging Face's converter writes it. */
static cJSON *spm_json(const spm_vocab *v, int shape, bool pairs)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    for (int i = 0; i < 3; i++) cJSON_AddItemToArray(added, added_token(i, v->piece[i], true));
    if (shape == SPM_NORMALIZER) {
        cJSON *nz = typed("Sequence");
        cJSON *list = cJSON_AddArrayToObject(nz, "normalizers");
        cJSON *pre = typed("Prepend");
        cJSON_AddStringToObject(pre, "prepend", U2581);
        cJSON_AddItemToArray(list, pre);
        cJSON_AddItemToArray(list, replace(" ", U2581));
        cJSON_AddItemToObject(root, "normalizer", nz);
        cJSON_AddNullToObject(root, "pre_tokenizer");
    } else {
        cJSON_AddNullToObject(root, "normalizer");
        const char *scheme = shape == SPM_METASPACE_NEVER ? "never" : "first";
        cJSON_AddItemToObject(root, "pre_tokenizer", metaspace(scheme, shape == SPM_METASPACE_SPLIT));
    }
    /* post_processor: BOS before $A */
    cJSON *pp = typed("TemplateProcessing");
    cJSON *single = cJSON_AddArrayToObject(pp, "single");
    cJSON *st = cJSON_CreateObject(), *seq = cJSON_CreateObject();
    cJSON *sti = cJSON_AddObjectToObject(st, "SpecialToken");
    cJSON_AddStringToObject(sti, "id", "<s>");
    cJSON_AddNumberToObject(sti, "type_id", 0);
    cJSON *seqi = cJSON_AddObjectToObject(seq, "Sequence");
    cJSON_AddStringToObject(seqi, "id", "A");
    cJSON_AddNumberToObject(seqi, "type_id", 0);
    cJSON_AddItemToArray(single, st);
    cJSON_AddItemToArray(single, seq);
    cJSON *specials = cJSON_AddObjectToObject(pp, "special_tokens");
    cJSON *s_bos = cJSON_AddObjectToObject(specials, "<s>");
    cJSON_AddStringToObject(s_bos, "id", "<s>");
    int one = 1;
    cJSON_AddItemToObject(s_bos, "ids", cJSON_CreateIntArray(&one, 1));
    cJSON_AddItemToObject(root, "post_processor", pp);
    if (shape == SPM_METASPACE_NEVER) {
        cJSON_AddItemToObject(root, "decoder", metaspace("never", false));
    } else {
        cJSON *dec = typed("Sequence");
        cJSON *list = cJSON_AddArrayToObject(dec, "decoders");
        cJSON_AddItemToArray(list, replace(U2581, " "));
        cJSON_AddItemToArray(list, typed("ByteFallback"));
        cJSON_AddItemToArray(list, typed("Fuse"));
        cJSON *strip = typed("Strip");
        cJSON_AddStringToObject(strip, "content", " ");
        cJSON_AddNumberToObject(strip, "start", 1);
        cJSON_AddNumberToObject(strip, "stop", 0);
        cJSON_AddItemToArray(list, strip);
        cJSON_AddItemToObject(root, "decoder", dec);
    }
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddStringToObject(model, "unk_token", "<unk>");
    cJSON_AddNullToObject(model, "continuing_subword_prefix");
    cJSON_AddNullToObject(model, "end_of_word_suffix");
    cJSON_AddTrueToObject(model, "fuse_unk");
    cJSON_AddTrueToObject(model, "byte_fallback");
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    for (int i = 0; i < 512; i++) cJSON_AddNumberToObject(vocab, v->piece[i], i);
    size_t n_merges;
    cJSON_AddItemToObject(model, "merges", spm_merges(v, pairs, &n_merges));
    ck_assert_uint_ge(n_merges, 151); /* tok512 has 151 pieces of two or more code points */
    return root;
}

static peft_tokenizer *load_spm_json(peft_ctx *ctx, const spm_vocab *v, int shape, bool pairs)
{
    char dir[64], path[128];
    tmp_dir(dir, sizeof dir);
    write_json(spm_json(v, shape, pairs), dir, "tokenizer.json", path, sizeof path);
    peft_tokenizer *tok = NULL;
    TU_OK(ctx, peft_tokenizer_load_json(ctx, path, &tok));
    unlink(path);
    rmdir(dir);
    return tok;
}

START_TEST(io_spm_matches_llama2c)
{
    spm_vocab v;
    char path[512];
    if (!read_tok512(&v, path, sizeof path)) return;
    peft_ctx *ctx = tu_ctx(1, 3);
    size_t base = peft_ctx_bytes_allocated(ctx);
    peft_tokenizer *ref = NULL;
    TU_OK(ctx, peft_tokenizer_load_llama2c(ctx, path, 512, &ref));
    for (int pairs = 0; pairs < 2; pairs++) {
        peft_tokenizer *js = load_spm_json(ctx, &v, SPM_NORMALIZER, pairs);
        ck_assert_str_eq(peft_tokenizer_name(js), "spm");
        ck_assert_uint_eq(peft_tokenizer_n_vocab(js), 512);
        ck_assert_int_eq(peft_tokenizer_bos(js), 1); /* the template */
        ck_assert_int_eq(peft_tokenizer_eos(js), 2); /* the added token "</s>" */
        int32_t want[] = {1, 403, 407, 261, 378};
        expect_ids(ctx, js, "Once upon a time", 1, want, 5);
        for (size_t i = 0; i < sizeof k_texts / sizeof *k_texts; i++)
            expect_same(ctx, ref, js, k_texts[i], strlen(k_texts[i]), 1, "tok512 json");
        if (access(FORTUNES, R_OK) == 0) {
            size_t len;
            char *f = read_all(FORTUNES, &len);
            expect_same(ctx, ref, js, f, len, 1, "tok512 json, fortunes");
            /* and every line on its own: many short texts */
            for (char *line = f, *e; *line; line = e + 1) {
                e = strchr(line, '\n');
                if (!e) break;
                expect_same(ctx, ref, js, line, (size_t)(e - line), 0, "tok512 json, a fortunes line");
            }
            free(f);
        } else {
            printf("tokenizer_json: %s not found, comparing without it\n", FORTUNES);
        }
        /* decoding follows the decoder: Strip drops the one leading space,
         * with or without BOS; so the text comes back */
        size_t n, len;
        int32_t *ids = tu_encode(ctx, js, "Once upon a time", 16, 1, 1, &n);
        ck_assert_int_eq(ids[n - 1], 2);
        char *t = tu_decode(ctx, js, ids, n, &len);
        ck_assert_str_eq(t, "Once upon a time");
        free(t);
        t = tu_decode(ctx, js, ids + 1, 2, &len);
        ck_assert_str_eq(t, "Once upon");
        free(t);
        free(ids);
        for (size_t i = 0; i < sizeof k_texts / sizeof *k_texts; i++) {
            ids = tu_encode(ctx, js, k_texts[i], strlen(k_texts[i]), 0, 0, &n);
            t = tu_decode(ctx, js, ids, n, &len);
            ck_assert_msg(len == strlen(k_texts[i]) && !memcmp(t, k_texts[i], len), "round trip of '%s': '%s'",
                          k_texts[i], t);
            free(t), free(ids);
        }
        /* "<s>" in the text is the added token; the Prepend normalizer gives
         * each piece of text around it its own "▁" */
        size_t na, nb;
        int32_t *a = tu_encode(ctx, ref, "Hello", 5, 0, 0, &na), *b = tu_encode(ctx, ref, "world", 5, 0, 0, &nb);
        int32_t want2[32];
        memcpy(want2, a, na * sizeof *a);
        want2[na] = 1;
        memcpy(want2 + na + 1, b, nb * sizeof *b);
        expect_ids(ctx, js, "Hello<s>world", 0, want2, na + nb + 1);
        free(a), free(b);
        peft_tokenizer_destroy(js);
    }
    peft_tokenizer_destroy(ref);
    free(v.store);
    ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), base);
    peft_ctx_destroy(ctx);
}
END_TEST

/* Metaspace pre-tokenizers: prepend_scheme "first" (legacy = false Llama),
 * "never", and split. */
START_TEST(io_spm_metaspace)
{
    spm_vocab v;
    char path[512];
    if (!read_tok512(&v, path, sizeof path)) return;
    peft_ctx *ctx = tu_ctx(1, 4);
    peft_tokenizer *ref = NULL;
    TU_OK(ctx, peft_tokenizer_load_llama2c(ctx, path, 512, &ref));
    peft_tokenizer *first = load_spm_json(ctx, &v, SPM_METASPACE_FIRST, false);
    peft_tokenizer *never = load_spm_json(ctx, &v, SPM_METASPACE_NEVER, false);
    peft_tokenizer *split = load_spm_json(ctx, &v, SPM_METASPACE_SPLIT, true);
    /* at the start of the text "first" adds the prefix like llama2.c... */
    for (size_t i = 0; i < sizeof k_texts / sizeof *k_texts; i++) {
        const char *t = k_texts[i];
        if (t[0] == ' ') continue; /* ...unless a space is already there */
        expect_same(ctx, ref, first, t, strlen(t), 1, "Metaspace first");
    }
    int32_t want[] = {1, 403, 407, 261, 378};
    expect_ids(ctx, first, "Once upon a time", 1, want, 5);
    expect_ids(ctx, first, " Once upon a time", 1, want, 5); /* "▁Once", not "▁▁Once" */
    expect_ids(ctx, split, "Once upon a time", 1, want, 5);
    /* "never": no prefix; "Once" without "▁" is another piece sequence */
    size_t n1, n2;
    int32_t *a = tu_encode(ctx, never, "Once", 4, 0, 0, &n1);
    ck_assert_int_ne(a[0], 403);
    int32_t *b = tu_encode(ctx, never, " Once", 5, 0, 0, &n2);
    ck_assert_uint_eq(n2, 1);
    ck_assert_int_eq(b[0], 403);
    /* "first": the text after an added token gets no prefix */
    int32_t want2[8] = {1};
    memcpy(want2 + 1, a, n1 * sizeof *a);
    expect_ids(ctx, first, "<s>Once", 0, want2, n1 + 1);
    int32_t want3[] = {403, 1, 403};
    expect_ids(ctx, first, "Once<s> Once", 0, want3, 3);
    /* split: merges stay inside each "▁word": "▁▁" never forms; each run of
     * spaces ends in the space that starts the next word */
    size_t n;
    int32_t *c = tu_encode(ctx, split, "a  b", 4, 0, 0, &n);
    for (size_t i = 0; i < n; i++) {
        const char *p;
        size_t len;
        TU_OK(ctx, peft_tokenizer_piece(split, c[i], &p, &len));
        ck_assert_msg(len == 0 || memchr(p + 1, ' ', len - 1) == NULL, "split: piece '%.*s' spans a word start",
                      (int)len, p);
    }
    free(a), free(b), free(c);
    /* the Metaspace decoder with "never" keeps the leading space */
    int32_t once[] = {403};
    size_t len;
    char *t = tu_decode(ctx, never, once, 1, &len);
    ck_assert_str_eq(t, " Once");
    free(t);
    t = tu_decode(ctx, first, once, 1, &len);
    ck_assert_str_eq(t, "Once");
    free(t);
    peft_tokenizer_destroy(first);
    peft_tokenizer_destroy(never);
    peft_tokenizer_destroy(split);
    peft_tokenizer_destroy(ref);
    free(v.store);
    peft_ctx_destroy(ctx);
}
END_TEST

/* peft_tokenizer_load: a tokenizer.json file, and a directory where it wins
 * over vocab.json + merges.txt. */
START_TEST(io_load_detects_json)
{
    spm_vocab v;
    char path[512], vj[512], mg[512];
    if (!read_tok512(&v, path, sizeof path)) return;
    if (!gpt2_files(vj, mg, sizeof vj)) {
        free(v.store);
        return;
    }
    peft_ctx *ctx = tu_ctx(1, 5);
    char dir[64], js[128], link1[128], link2[128];
    tmp_dir(dir, sizeof dir);
    write_json(spm_json(&v, SPM_NORMALIZER, false), dir, "tokenizer.json", js, sizeof js);
    snprintf(link1, sizeof link1, "%s/vocab.json", dir);
    snprintf(link2, sizeof link2, "%s/merges.txt", dir);
    char abs1[1024], abs2[1024];
    ck_assert_ptr_nonnull(realpath(vj, abs1));
    ck_assert_ptr_nonnull(realpath(mg, abs2));
    ck_assert_int_eq(symlink(abs1, link1), 0);
    ck_assert_int_eq(symlink(abs2, link2), 0);
    peft_tokenizer *tok = NULL;
    TU_OK(ctx, peft_tokenizer_load(ctx, dir, &tok));
    ck_assert_str_eq(peft_tokenizer_name(tok), "spm");
    peft_tokenizer_destroy(tok);
    TU_OK(ctx, peft_tokenizer_load(ctx, js, &tok));
    ck_assert_str_eq(peft_tokenizer_name(tok), "spm");
    int32_t want[] = {1, 403, 407, 261, 378};
    expect_ids(ctx, tok, "Once upon a time", 1, want, 5);
    peft_tokenizer_destroy(tok);
    unlink(js);
    TU_OK(ctx, peft_tokenizer_load(ctx, dir, &tok));
    ck_assert_str_eq(peft_tokenizer_name(tok), "gpt2-bpe");
    peft_tokenizer_destroy(tok);
    unlink(link1), unlink(link2), rmdir(dir);
    free(v.store);
    peft_ctx_destroy(ctx);
}
END_TEST

/* ---- hand-made files: added tokens, pre-tokenizer options ---- */

/* A SentencePiece-style file: <unk> <s> </s>, the 256 byte pieces, then
 * `pieces`; merges and added tokens as JSON text. */
static void small_spm(const char *path, const char *const *pieces, size_t n_pieces, const char *merges_json,
                      const char *added_json, const char *extra)
{
    cJSON *vocab = cJSON_CreateObject();
    cJSON_AddNumberToObject(vocab, "<unk>", 0);
    cJSON_AddNumberToObject(vocab, "<s>", 1);
    cJSON_AddNumberToObject(vocab, "</s>", 2);
    for (int b = 0; b < 256; b++) {
        char t[8];
        snprintf(t, sizeof t, "<0x%02X>", b);
        cJSON_AddNumberToObject(vocab, t, 3 + b);
    }
    for (size_t i = 0; i < n_pieces; i++) cJSON_AddNumberToObject(vocab, pieces[i], (double)(259 + i));
    char *vs = cJSON_PrintUnformatted(vocab);
    cJSON_Delete(vocab);
    size_t size = strlen(vs) + strlen(merges_json) + strlen(added_json) + strlen(extra) + 1024;
    char *s = malloc(size);
    snprintf(s, size,
             "{\"added_tokens\": %s,"
             " \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": \"" U2581
             "\"}, {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"" U2581 "\"}]},"
             " \"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\","
             " \"pattern\": {\"String\": \"" U2581 "\"}, \"content\": \" \"},"
             " {\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"},"
             " {\"type\": \"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 0}]}%s,"
             " \"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"byte_fallback\": true, \"vocab\": %s,"
             " \"merges\": %s}}",
             added_json, extra, vs, merges_json);
    write_text(path, s);
    free(s);
    free(vs);
}

START_TEST(api_added_tokens)
{
    peft_ctx *ctx = tu_ctx(1, 6);
    size_t base = peft_ctx_bytes_allocated(ctx);
    char dir[64], path[128];
    tmp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/t.json", dir);
    /* 259 ▁, 260 a, 261 b, 262 ▁a, 263 ▁b, 264 ab; added 265.. */
    const char *pieces[] = {U2581, "a", "b", U2581 "a", U2581 "b", "ab"};
    const char *added =
        "[{\"id\": 0, \"content\": \"<unk>\", \"special\": true}, {\"id\": 1, \"content\": \"<s>\", \"special\": true},"
        " {\"id\": 2, \"content\": \"</s>\", \"special\": true},"
        " {\"id\": 265, \"content\": \"<mask>\", \"lstrip\": true, \"special\": true},"
        " {\"id\": 266, \"content\": \"<r>\", \"rstrip\": true, \"special\": false},"
        " {\"id\": 267, \"content\": \"[X]\", \"single_word\": true, \"special\": false},"
        " {\"id\": 268, \"content\": \"<x>\", \"special\": false}, {\"id\": 269, \"content\": \"<x>y\"},"
        " {\"id\": 270, \"content\": \"\xE2\x9C\x85\"}]";
    small_spm(path, pieces, 6, "[\"a b\", \"" U2581 " a\", \"" U2581 " b\"]", added, "");
    peft_tokenizer *tok = NULL;
    TU_OK(ctx, peft_tokenizer_load_json(ctx, path, &tok));
    ck_assert_uint_eq(peft_tokenizer_n_vocab(tok), 271);
    ck_assert_int_eq(peft_tokenizer_bos(tok), 1); /* no template: the names "<s>", "</s>" */
    ck_assert_int_eq(peft_tokenizer_eos(tok), 2);
    /* "a b": ▁ a ▁ b; "a b" (rank 0) cannot form, ▁a (1) then ▁b (2) */
    int32_t w1[] = {262, 263};
    expect_ids(ctx, tok, "a b", 0, w1, 2);
    int32_t w1b[] = {1, 259, 264}; /* ▁ a b: "a b" first, then no "▁ ab" */
    expect_ids(ctx, tok, "ab", 1, w1b, 3);
    /* lstrip: the spaces before <mask> go with it */
    int32_t w2[] = {262, 265, 259, 263}; /* " b" reads "▁▁b" */
    expect_ids(ctx, tok, "a   <mask> b", 0, w2, 4);
    /* rstrip: the spaces after <r> go with it; each side gets its own ▁ */
    int32_t w3[] = {262, 266, 263};
    expect_ids(ctx, tok, "a<r>  \t b", 0, w3, 3);
    /* single_word: not inside a word */
    int32_t w4[] = {262, 259, 267, 259, 263};
    expect_ids(ctx, tok, "a [X] b", 0, w4, 5);
    size_t n;
    int32_t *ids = tu_encode(ctx, tok, "a[X]b", 5, 0, 0, &n);
    for (size_t i = 0; i < n; i++) ck_assert_int_ne(ids[i], 267);
    free(ids);
    int32_t w4b[] = {267};
    expect_ids(ctx, tok, "[X]", 0, w4b, 1);
    /* the longest added token wins; then the leftmost */
    int32_t w5[] = {269, 262};
    expect_ids(ctx, tok, "<x>ya", 0, w5, 2);
    int32_t w6[] = {268, 268, 270};
    expect_ids(ctx, tok, "<x><x>\xE2\x9C\x85", 0, w6, 3);
    /* a special token of this shape decodes to nothing; the others to their text */
    int32_t d1[] = {1, 262, 265, 266, 263, 2};
    size_t len;
    char *t = tu_decode(ctx, tok, d1, 6, &len);
    ck_assert_str_eq(t, "a<r> b");
    free(t);
    peft_tokenizer_destroy(tok);
    ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), base);
    unlink(path);
    rmdir(dir);
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

/* A byte-level file: the 256 alphabet characters, then `extra`; the
 * pre-tokenizer and model options as JSON text. */
static void small_bytelevel(const char *path, const char *const *extra, size_t n_extra, const char *merges_json,
                            const char *pre_json, const char *model_extra)
{
    cJSON *vocab = cJSON_CreateObject();
    for (int b = 0; b < 256; b++) {
        uint8_t u[5] = {0};
        peft__utf8_encode(alphabet_cp(b), u);
        cJSON_AddNumberToObject(vocab, (const char *)u, b);
    }
    for (size_t i = 0; i < n_extra; i++) cJSON_AddNumberToObject(vocab, extra[i], (double)(256 + i));
    char *vs = cJSON_PrintUnformatted(vocab);
    cJSON_Delete(vocab);
    size_t size = strlen(vs) + strlen(merges_json) + strlen(pre_json) + strlen(model_extra) + 512;
    char *s = malloc(size);
    snprintf(s, size,
             "{\"added_tokens\": [], \"normalizer\": null, \"pre_tokenizer\": %s,"
             " \"decoder\": {\"type\": \"ByteLevel\"},"
             " \"model\": {\"type\": \"BPE\"%s, \"vocab\": %s, \"merges\": %s}}",
             pre_json, model_extra, vs, merges_json);
    write_text(path, s);
    free(s);
    free(vs);
}

START_TEST(api_bytelevel_options)
{
    peft_ctx *ctx = tu_ctx(1, 7);
    char dir[64], path[128];
    tmp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/t.json", dir);
    /* 256 hi, 257 Ġh, 258 oĠ, 259 abc, 260 ab */
    const char *extra[] = {"hi", "\xC4\xA0h", "o\xC4\xA0", "abc", "ab"};
    const char *merges = "[[\"o\", \"\xC4\xA0\"], [\"\xC4\xA0\", \"h\"], [\"h\", \"i\"], [\"a\", \"b\"]]";
    peft_tokenizer *tok = NULL;
    /* plain GPT-2 pre-tokenizer */
    small_bytelevel(path, extra, 5, merges, "{\"type\": \"ByteLevel\", \"add_prefix_space\": false}", "");
    TU_OK(ctx, peft_tokenizer_load_json(ctx, path, &tok));
    ck_assert_int_eq(peft_tokenizer_bos(tok), -1);
    int32_t w1[] = {256};
    expect_ids(ctx, tok, "hi", 0, w1, 1);
    int32_t w2[] = {'o', 257, 'i'}; /* "o" | " hi": "oĠ" (rank 0) cannot form across pre-tokens */
    expect_ids(ctx, tok, "o hi", 0, w2, 3);
    int32_t w3[] = {260, 'c'};
    expect_ids(ctx, tok, "abc", 0, w3, 2);
    peft_tokenizer_destroy(tok);
    /* add_prefix_space: "hi" reads " hi" */
    small_bytelevel(path, extra, 5, merges, "{\"type\": \"ByteLevel\", \"add_prefix_space\": true}", "");
    TU_OK(ctx, peft_tokenizer_load_json(ctx, path, &tok));
    int32_t w4[] = {257, 'i'};
    expect_ids(ctx, tok, "hi", 0, w4, 2);
    expect_ids(ctx, tok, " hi", 0, w4, 2);
    peft_tokenizer_destroy(tok);
    /* use_regex false: the text is one pre-token, so "oĠ" forms first */
    small_bytelevel(path, extra, 5, merges, "{\"type\": \"ByteLevel\", \"use_regex\": false}", "");
    TU_OK(ctx, peft_tokenizer_load_json(ctx, path, &tok));
    int32_t w5[] = {258, 256};
    expect_ids(ctx, tok, "o hi", 0, w5, 2);
    peft_tokenizer_destroy(tok);
    /* ignore_merges: a pre-token that is a token is that token */
    small_bytelevel(path, extra, 5, merges, "{\"type\": \"ByteLevel\"}", ", \"ignore_merges\": true");
    TU_OK(ctx, peft_tokenizer_load_json(ctx, path, &tok));
    int32_t w6[] = {259};
    expect_ids(ctx, tok, "abc", 0, w6, 1);
    int32_t w7[] = {260, 'c', 'd'};
    expect_ids(ctx, tok, "abcd", 0, w7, 3);
    peft_tokenizer_destroy(tok);
    unlink(path);
    rmdir(dir);
    peft_ctx_destroy(ctx);
}
END_TEST

/* ---- bad input ---- */

/* Write text to the file and expect the load to fail with code and needle
 * (and the file name) in the message. */
static void expect_bad(peft_ctx *ctx, const char *path, const char *text, peft_status code, const char *needle)
{
    write_text(path, text);
    peft_tokenizer *tok = (peft_tokenizer *)&tok;
    peft_status st = peft_tokenizer_load_json(ctx, path, &tok);
    ck_assert_msg(st == code, "'%s': expected %s, got %s (%s)", text, peft_status_name(code), peft_status_name(st),
                  peft_ctx_errmsg(ctx));
    ck_assert_msg(strstr(peft_ctx_errmsg(ctx), needle) != NULL, "message '%s' lacks '%s'", peft_ctx_errmsg(ctx),
                  needle);
    ck_assert_msg(strstr(peft_ctx_errmsg(ctx), path) != NULL, "message '%s' does not name the file",
                  peft_ctx_errmsg(ctx));
    ck_assert_ptr_null(tok);
}

/* The model part of a file (the rest of the object after other keys), and a whole file. */
#define MODEL_TAIL(vocab, merges)                                                                                    \
    "\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"vocab\": " vocab ", \"merges\": " merges "}}"
#define MODEL(vocab, merges) "{" MODEL_TAIL(vocab, merges)
#define VOCAB "{\"<unk>\": 0, \"a\": 1, \"b\": 2, \"ab\": 3}"

START_TEST(api_bad_files)
{
    peft_ctx *ctx = tu_ctx(1, 8);
    size_t base = peft_ctx_bytes_allocated(ctx);
    char dir[64], path[128];
    tmp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    /* the minimal valid file */
    write_text(path, MODEL(VOCAB, "[\"a b\"]"));
    peft_tokenizer *tok = NULL;
    TU_OK(ctx, peft_tokenizer_load_json(ctx, path, &tok));
    int32_t w[] = {3, 1}; /* no normalizer: no prefix */
    expect_ids(ctx, tok, "aba", 0, w, 2);
    peft_tokenizer_destroy(tok);

    expect_bad(ctx, path, "{\"model\": {\"type\": \"BPE\",\n \"vocab\": {\"a\": 1,", PEFT_ERR_FORMAT,
               "invalid JSON at byte");
    expect_bad(ctx, path, "", PEFT_ERR_FORMAT, "invalid JSON");
    expect_bad(ctx, path, "[1, 2]", PEFT_ERR_FORMAT, "not a JSON object");
    expect_bad(ctx, path, "{\"vocab\": {}}", PEFT_ERR_FORMAT, "no \"model\" object");
    expect_bad(ctx, path, "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}", PEFT_ERR_UNSUPPORTED,
               "model.type \"WordPiece\" is not supported");
    expect_bad(ctx, path, "{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]]}}", PEFT_ERR_UNSUPPORTED,
               "\"Unigram\"");
    /* merges */
    expect_bad(ctx, path, MODEL(VOCAB, "[\"a b\", \"a c\"]"), PEFT_ERR_FORMAT,
               "model.merges[1]: merge 'a c': token 'c' is not in the vocabulary");
    expect_bad(ctx, path, MODEL(VOCAB, "[[\"a\", \"b\"], [\"zz\", \"a\"]]"), PEFT_ERR_FORMAT,
               "model.merges[1]: merge 'zz a': token 'zz' is not in the vocabulary");
    expect_bad(ctx, path, MODEL(VOCAB, "[\"b a\"]"), PEFT_ERR_FORMAT,
               "model.merges[0]: merge 'b a': the result 'ba' is not in the vocabulary");
    expect_bad(ctx, path, MODEL(VOCAB, "[\"a b\", \"ab\"]"), PEFT_ERR_FORMAT,
               "model.merges[1]: merge 'ab' is not two tokens");
    expect_bad(ctx, path, MODEL(VOCAB, "[[\"a\"]]"), PEFT_ERR_FORMAT, "model.merges[0] is neither");
    expect_bad(ctx, path, MODEL(VOCAB, "[\"a b\", 7]"), PEFT_ERR_FORMAT, "model.merges[1] is neither");
    expect_bad(ctx, path, MODEL(VOCAB, "{}"), PEFT_ERR_FORMAT, "model.merges is not an array");
    /* ids */
    expect_bad(ctx, path, MODEL("{\"<unk>\": 0, \"a\": 1, \"b\": 1}", "[]"), PEFT_ERR_FORMAT,
               "model.vocab: id 1 is given to both 'a' and 'b'");
    expect_bad(ctx, path, MODEL("{\"<unk>\": 0, \"a\": 1, \"b\": 99}", "[]"), PEFT_ERR_FORMAT,
               "model.vocab: token 'b' has id 99, not an integer in [0, 3)");
    expect_bad(ctx, path, MODEL("{\"<unk>\": 0, \"a\": -1}", "[]"), PEFT_ERR_FORMAT, "token 'a' has id -1");
    expect_bad(ctx, path, MODEL("{\"<unk>\": 0, \"a\": 1.5}", "[]"), PEFT_ERR_FORMAT, "token 'a' has id 1.5");
    expect_bad(ctx, path, MODEL("{\"<unk>\": 0, \"a\": \"1\"}", "[]"), PEFT_ERR_FORMAT,
               "token 'a' has id a non-number");
    expect_bad(ctx, path, MODEL("{\"<unk>\": 0, \"a\": 1, \"a\": 2}", "[]"), PEFT_ERR_FORMAT,
               "duplicate token 'a' at ids 1 and 2");
    expect_bad(ctx, path, MODEL("[\"a\"]", "[]"), PEFT_ERR_FORMAT, "model.vocab is not an object");
    expect_bad(ctx, path, MODEL("{}", "[]"), PEFT_ERR_FORMAT, "no tokens");
    /* added tokens against the vocabulary */
    expect_bad(ctx, path,
               "{\"added_tokens\": [{\"id\": 2, \"content\": \"a\"}], " MODEL_TAIL("{\"<unk>\": 0, \"a\": 2}", "[]"),
               PEFT_ERR_FORMAT, "no token has id 1");
    expect_bad(ctx, path, "{\"added_tokens\": [{\"id\": 1, \"content\": \"zz\"}], " MODEL_TAIL(VOCAB, "[]"),
               PEFT_ERR_FORMAT, "added_tokens[0]: id 1 is 'zz' here but 'a' in model.vocab");
    expect_bad(ctx, path, "{\"added_tokens\": [{\"id\": 9, \"content\": \"zz\"}], " MODEL_TAIL(VOCAB, "[]"),
               PEFT_ERR_FORMAT, "added_tokens[0]: token 'zz' has id 9, not an integer in [0, 5)");
    expect_bad(ctx, path, "{\"added_tokens\": [{\"id\": 4}], " MODEL_TAIL(VOCAB, "[]"), PEFT_ERR_FORMAT,
               "added_tokens[0] has no content");
    expect_bad(ctx, path, "{\"added_tokens\": {}, " MODEL_TAIL(VOCAB, "[]"), PEFT_ERR_FORMAT,
               "added_tokens is not an array");
    /* unsupported pipelines, named */
    expect_bad(ctx, path,
               "{\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": "
               "{\"Regex\": \"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}\"}, "
               "\"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", \"use_regex\": false}]}, "
               MODEL_TAIL(VOCAB, "[]"),
               PEFT_ERR_UNSUPPORTED, "pre_tokenizer.pretokenizers[0]: Split by regex \"(?i:'s|'t|");
    expect_bad(ctx, path,
               "{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"'s|'t|'re|'ve|'m|'ll|'d| "
               "?\\\\p{L}+| ?\\\\p{N}+| ?[^\\\\s\\\\p{L}\\\\p{N}]+|\\\\s+(?!\\\\S)|\\\\s+\"}, \"behavior\": "
               "\"Removed\"}, " MODEL_TAIL(VOCAB, "[]"),
               PEFT_ERR_UNSUPPORTED, "behavior 'Removed'");
    expect_bad(ctx, path, "{\"normalizer\": {\"type\": \"NFC\"}, " MODEL_TAIL(VOCAB, "[]"), PEFT_ERR_UNSUPPORTED,
               "normalizer type \"NFC\" is not supported");
    expect_bad(ctx, path,
               "{\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Replace\", \"pattern\": "
               "{\"Regex\": \" +\"}, \"content\": \"x\"}]}, " MODEL_TAIL(VOCAB, "[]"),
               PEFT_ERR_UNSUPPORTED, "normalizer.normalizers[0]: Replace");
    expect_bad(ctx, path, "{\"pre_tokenizer\": {\"type\": \"Whitespace\"}, " MODEL_TAIL(VOCAB, "[]"),
               PEFT_ERR_UNSUPPORTED, "pre_tokenizer type \"Whitespace\"");
    expect_bad(ctx, path, "{\"decoder\": {\"type\": \"WordPiece\"}, " MODEL_TAIL(VOCAB, "[]"), PEFT_ERR_UNSUPPORTED,
               "decoder type \"WordPiece\"");
    expect_bad(ctx, path, "{\"decoder\": {\"type\": \"ByteLevel\"}, " MODEL_TAIL(VOCAB, "[]"), PEFT_ERR_UNSUPPORTED,
               "a ByteLevel decoder with a non-ByteLevel pre-tokenizer");
    expect_bad(ctx, path, "{\"model\": {\"type\": \"BPE\", \"vocab\": " VOCAB ", \"merges\": []}}",
               PEFT_ERR_UNSUPPORTED, "model.byte_fallback true");
    expect_bad(ctx, path,
               "{\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"continuing_subword_prefix\": \"##\", "
               "\"vocab\": " VOCAB "}}",
               PEFT_ERR_UNSUPPORTED, "continuing_subword_prefix '##'");
    expect_bad(ctx, path, "{\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"unk_token\": \"<?>\", "
                          "\"vocab\": " VOCAB "}}",
               PEFT_ERR_FORMAT, "model.unk_token '<?>' is not in the vocabulary");
    /* a ByteLevel file whose vocabulary lacks the alphabet */
    expect_bad(ctx, path, "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, " MODEL_TAIL(VOCAB, "[]"), PEFT_ERR_FORMAT,
               "no token for byte 0x00");
    expect_bad(ctx, path,
               "{\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": "
               "\"<bos>\"}}, {\"Sequence\": {\"id\": \"A\"}}]}, " MODEL_TAIL(VOCAB, "[]"),
               PEFT_ERR_FORMAT, "special token '<bos>' is not in the vocabulary");
    unlink(path);
    /* no file, NULL arguments */
    peft_tokenizer *t2 = NULL;
    TU_EXPECT_FAIL(ctx, peft_tokenizer_load_json(ctx, path, &t2), PEFT_ERR_IO, path);
    TU_EXPECT_FAIL(ctx, peft_tokenizer_load_json(ctx, NULL, &t2), PEFT_ERR_INVALID_ARG, "path is NULL");
    TU_EXPECT_FAIL(ctx, peft_tokenizer_load_json(ctx, path, NULL), PEFT_ERR_INVALID_ARG, "out is NULL");
    ck_assert_int_eq(peft_tokenizer_load_json(NULL, path, &t2), PEFT_ERR_INVALID_ARG);
    ck_assert_ptr_null(t2);
    ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), base); /* nothing leaked on the error paths */
    rmdir(dir);
    peft_ctx_destroy(ctx);
}
END_TEST

Suite *tokenizer_json_suite(void)
{
    Suite *s = suite_create("tokenizer_json");
    TCase *tc = tcase_create("api");
    tcase_add_test(tc, api_added_tokens);
    tcase_add_test(tc, api_bytelevel_options);
    tcase_add_test(tc, api_bad_files);
    suite_add_tcase(s, tc);
    tc = tcase_create("io");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, io_gpt2_bytelevel);
    tcase_add_test(tc, io_gpt2_split_pairs);
    tcase_add_test(tc, io_spm_matches_llama2c);
    tcase_add_test(tc, io_spm_metaspace);
    tcase_add_test(tc, io_load_detects_json);
    suite_add_tcase(s, tc);
    return s;
}
