/* Datasets: every format (text with blank-line and "%" separators, JSONL text /
 * prompt-completion / classification, TSV), each also gzip-compressed; format
 * detection; packing modes; the prompt/completion loss mask (exact, and the
 * loss on the golden Llama equals the cross-entropy over completion tokens
 * only); truncate / refuse / drop; bad lines with file:line and
 * skip_bad_lines; invalid UTF-8; chunked reading equals unchunked reading on
 * several MB with bounded text memory; split and per-epoch shuffle
 * determinism. Most tests use a bytes tokenizer (id = byte) and need no
 * model files. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "../lib/data/dataset_internal.h"
#include "util/testutil.h"

#define GOLDEN "tests/golden/"
#define BOS 256 /* of bos_tok(): bytes plus one id that is both BOS and EOS */

/* ---- helpers ---- */

static peft_tokenizer *bytes_tok(peft_ctx *ctx)
{
    peft_tokenizer *tok;
    TU_OK(ctx, peft_tokenizer_create_bytes(ctx, &tok));
    return tok;
}

/* GPT-2 byte-level BPE without merges: id b is byte b, id 256 "<|endoftext|>"
 * is BOS and EOS. */
static peft_tokenizer *bos_tok(peft_ctx *ctx)
{
    uint32_t cp[256]; /* GPT-2's byte-to-unicode alphabet */
    uint32_t n = 0;
    for (int b = 0; b < 256; b++) cp[b] = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174 ? (uint32_t)b : 256 + n++;
    static char texts[257][16];
    const char *tokens[257];
    size_t lens[257];
    for (int b = 0; b < 256; b++) {
        uint32_t c = cp[b];
        if (c < 0x80) texts[b][0] = (char)c, lens[b] = 1;
        else texts[b][0] = (char)(0xC0 | (c >> 6)), texts[b][1] = (char)(0x80 | (c & 0x3F)), lens[b] = 2;
        tokens[b] = texts[b];
    }
    strcpy(texts[256], "<|endoftext|>");
    tokens[256] = texts[256];
    lens[256] = strlen(texts[256]);
    const char *merges[1] = {"a b"};
    size_t mlens[1] = {3};
    peft_tokenizer *tok;
    TU_OK(ctx, peft_tokenizer_create_bpe(ctx, 257, tokens, lens, 0, merges, mlens, BOS, BOS, &tok));
    return tok;
}

/* A temporary path ending in suffix (the file exists, empty). */
static void tmp_path(char *path, size_t size, const char *suffix)
{
    snprintf(path, size, "/tmp/peft_ds_XXXXXX%s", suffix);
    int fd = mkstemps(path, (int)strlen(suffix));
    ck_assert_int_ge(fd, 0);
    close(fd);
}

static void write_file(const char *path, const void *data, size_t len, int gz)
{
    if (gz) {
        gzFile f = gzopen(path, "wb");
        ck_assert_ptr_nonnull(f);
        ck_assert_int_eq(gzwrite(f, data, (unsigned)len), (int)len);
        ck_assert_int_eq(gzclose(f), Z_OK);
        return;
    }
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    fclose(f);
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Example i as a string: bytes as themselves, id 256 as '|'. */
static const char *ex_str(const peft_dataset *ds, size_t i)
{
    static char buf[4096];
    const int32_t *ids;
    int64_t len;
    ck_assert_int_eq(peft_dataset_example(ds, i, &ids, &len, NULL, NULL), PEFT_OK);
    ck_assert_int_lt(len, (int64_t)sizeof buf);
    for (int64_t t = 0; t < len; t++) buf[t] = ids[t] == BOS ? '|' : (char)ids[t];
    buf[len] = '\0';
    return buf;
}

/* The loss mask of example i as '0'/'1' ("" when the data has none). */
static const char *mask_str(const peft_dataset *ds, size_t i)
{
    static char buf[4096];
    const uint8_t *m;
    int64_t len;
    ck_assert_int_eq(peft_dataset_example(ds, i, NULL, &len, &m, NULL), PEFT_OK);
    if (!m) return "";
    for (int64_t t = 0; t < len; t++) buf[t] = m[t] ? '1' : '0';
    buf[len] = '\0';
    return buf;
}

static int32_t label_of(const peft_dataset *ds, size_t i)
{
    int32_t label;
    ck_assert_int_eq(peft_dataset_example(ds, i, NULL, NULL, NULL, &label), PEFT_OK);
    return label;
}

static void expect_examples(const peft_dataset *ds, const char *const *want, size_t n)
{
    ck_assert_uint_eq(peft_dataset_size(ds), n);
    for (size_t i = 0; i < n; i++) ck_assert_str_eq(ex_str(ds, i), want[i]);
}

/* Two stores hold the same examples bit for bit. */
static void ck_same(const peft_dataset *a, const peft_dataset *b)
{
    const peft__store *x = a->store, *y = b->store;
    ck_assert_uint_eq(x->n, y->n);
    ck_assert_mem_eq(x->offsets, y->offsets, (x->n + 1) * sizeof *x->offsets);
    ck_assert_mem_eq(x->tokens, y->tokens, (size_t)x->offsets[x->n] * sizeof *x->tokens);
    ck_assert_int_eq(!x->labels, !y->labels);
    if (x->labels) ck_assert_mem_eq(x->labels, y->labels, x->n * sizeof *x->labels);
    ck_assert_int_eq(!x->loss_mask, !y->loss_mask);
    if (x->loss_mask) ck_assert_mem_eq(x->loss_mask, y->loss_mask, (size_t)x->offsets[x->n]);
    ck_assert_int_eq(x->n_classes, y->n_classes);
    for (int c = 0; c < x->n_classes; c++) ck_assert_str_eq(x->class_names[c], y->class_names[c]);
    ck_assert_uint_eq(x->n_skipped, y->n_skipped);
    ck_assert_uint_eq(x->n_truncated, y->n_truncated);
    ck_assert_uint_eq(x->n_invalid_utf8, y->n_invalid_utf8);
}

/* Load from memory with opts (name gives the extension). */
static peft_dataset *from_mem(peft_ctx *ctx, peft_tokenizer *tok, const char *data, const char *name,
                              const peft_dataset_opts *o)
{
    peft_dataset *ds = NULL;
    TU_OK(ctx, peft_dataset_from_buffer(ctx, tok, data, strlen(data), name, o, &ds));
    return ds;
}

/* Write data to a temporary file (suffix, gzip or not), load it, check it
 * against the in-memory load, unlink. */
static peft_dataset *via_file(peft_ctx *ctx, peft_tokenizer *tok, const char *data, const char *suffix, int gz,
                              const peft_dataset_opts *o)
{
    char path[64];
    tmp_path(path, sizeof path, suffix);
    write_file(path, data, strlen(data), gz);
    peft_dataset *ds = NULL;
    peft_status st = peft_dataset_load(ctx, tok, path, o, &ds);
    ck_assert_msg(st == PEFT_OK, "%s: %s", path, peft_ctx_errmsg(ctx));
    unlink(path);
    return ds;
}

/* ---- api ---- */

START_TEST(api_options_and_arguments)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    peft_tokenizer *tok = bytes_tok(ctx);
    peft_dataset_opts o = peft_dataset_opts_default();
    ck_assert_uint_eq(o.struct_size, sizeof o);
    ck_assert_int_eq(o.format, PEFT_DATA_AUTO);
    ck_assert_int_eq(o.seq_len, 128);
    ck_assert_int_eq(o.add_bos, -1);
    ck_assert_int_eq(o.pack, PEFT_PACK_ACROSS);
    peft_dataset *ds = (peft_dataset *)&o;
    const char *text = "hello world";
    TU_EXPECT_FAIL(ctx, peft_dataset_load(ctx, tok, "x", &o, NULL), PEFT_ERR_INVALID_ARG, "out is NULL");
    TU_EXPECT_FAIL(ctx, peft_dataset_load(ctx, NULL, "x", &o, &ds), PEFT_ERR_INVALID_ARG, "tok is NULL");
    ck_assert_ptr_null(ds);
    TU_EXPECT_FAIL(ctx, peft_dataset_load(ctx, tok, NULL, &o, &ds), PEFT_ERR_INVALID_ARG, "input is NULL");
    TU_EXPECT_FAIL(ctx, peft_dataset_load(ctx, tok, "/nonexistent/peft.txt", &o, &ds), PEFT_ERR_IO, "/nonexistent/peft.txt");
    o.struct_size = 8;
    TU_EXPECT_FAIL(ctx, peft_dataset_from_buffer(ctx, tok, text, 11, NULL, &o, &ds), PEFT_ERR_INVALID_ARG, "struct_size is 8");
    o = peft_dataset_opts_default();
    o.seq_len = 1;
    TU_EXPECT_FAIL(ctx, peft_dataset_from_buffer(ctx, tok, text, 11, NULL, &o, &ds), PEFT_ERR_INVALID_ARG, "seq_len 1");
    o = peft_dataset_opts_default();
    o.format = (peft_data_format)7;
    TU_EXPECT_FAIL(ctx, peft_dataset_from_buffer(ctx, tok, text, 11, NULL, &o, &ds), PEFT_ERR_INVALID_ARG, "format 7");
    o = peft_dataset_opts_default();
    o.add_bos = 1;
    TU_EXPECT_FAIL(ctx, peft_dataset_from_buffer(ctx, tok, text, 11, NULL, &o, &ds), PEFT_ERR_INVALID_ARG, "has no BOS");
    o = peft_dataset_opts_default();
    const char *classes[] = {"a", "b", "a"};
    o.classes = classes;
    TU_EXPECT_FAIL(ctx, peft_dataset_from_buffer(ctx, tok, text, 11, NULL, &o, &ds), PEFT_ERR_INVALID_ARG, "go together");
    o.n_classes = 1;
    TU_EXPECT_FAIL(ctx, peft_dataset_from_buffer(ctx, tok, text, 11, NULL, &o, &ds), PEFT_ERR_INVALID_ARG, "at least 2");
    o.n_classes = 3;
    TU_EXPECT_FAIL(ctx, peft_dataset_from_buffer(ctx, tok, text, 11, NULL, &o, &ds), PEFT_ERR_INVALID_ARG,
                   "[0] and [2] are both \"a\"");
    o = peft_dataset_opts_default();
    o.task = PEFT_DATA_TASK_CLASSIFY;
    o.format = PEFT_DATA_TEXT;
    TU_EXPECT_FAIL(ctx, peft_dataset_from_buffer(ctx, tok, text, 11, NULL, &o, &ds), PEFT_ERR_INVALID_ARG, "no labels");
    o.task = PEFT_DATA_TASK_LM;
    o.format = PEFT_DATA_TSV;
    TU_EXPECT_FAIL(ctx, peft_dataset_from_buffer(ctx, tok, "a\tb\n", 4, NULL, &o, &ds), PEFT_ERR_INVALID_ARG,
                   "TSV is classification");
    ck_assert_ptr_null(ds);
    /* accessors on a real dataset; NULL is harmless */
    TU_OK(ctx, peft_dataset_from_text(ctx, tok, text, strlen(text), 4, &ds));
    TU_EXPECT_FAIL(ctx, peft_dataset_example(ds, 3, NULL, NULL, NULL, NULL), PEFT_ERR_INVALID_ARG, "index 3");
    ck_assert_int_eq(peft_dataset_format(ds), PEFT_DATA_TEXT);
    ck_assert_uint_eq(peft_dataset_n_skipped(NULL), 0);
    ck_assert_int_eq(peft_dataset_example(NULL, 0, NULL, NULL, NULL, NULL), PEFT_ERR_INVALID_ARG);
    peft_dataset *a, *b, *c;
    TU_EXPECT_FAIL(ctx, peft_dataset_split3(ds, 0.5, 0.5, 1, &a, &b, &c), PEFT_ERR_INVALID_ARG, "sum < 1");
    TU_EXPECT_FAIL(ctx, peft_dataset_split3(ds, 0.2, 0, 1, &a, &b, &c), PEFT_ERR_INVALID_ARG, "test_frac 0");
    TU_EXPECT_FAIL(ctx, peft_dataset_split3(ds, 0.2, 0.2, 1, &a, NULL, &c), PEFT_ERR_INVALID_ARG, "NULL output");
    peft_dataset_destroy(ds);
    TU_OK(ctx, peft_dataset_from_text(ctx, tok, "abcd", 4, 2, &ds));
    TU_EXPECT_FAIL(ctx, peft_dataset_split3(ds, 0.2, 0.2, 1, &a, &b, &c), PEFT_ERR_INVALID_ARG, "cannot be split in 3");
    peft_dataset_destroy(ds);
    peft_dataset_destroy(NULL);
    peft_tokenizer_destroy(tok);
    peft_ctx_destroy(ctx);
}
END_TEST

/* Out of memory at every allocation of a load: PEFT_ERR_NOMEM, nothing leaks,
 * and the context stays usable. */

START_TEST(api_out_of_memory)
{
    tu_oom o = {-1};
    peft_ctx *ctx = tu_oom_ctx(&o);
    peft_tokenizer *tok = bos_tok(ctx);
    char path[64];
    tmp_path(path, sizeof path, ".gz");
    const char *cls = "{\"text\": \"good\", \"label\": \"pos\"}\n{\"text\": \"bad\", \"label\": \"neg\"}\n";
    write_file(path, cls, strlen(cls), 1);
    size_t gz_len;
    char *gz = read_all(path, &gz_len);
    unlink(path);
    const char *classes[] = {"neg", "pos"};
    struct {
        const char *data;
        size_t len;
        int variant;
    } cases[] = {
        {cls, strlen(cls), 0},
        {gz, gz_len, 0},
        {cls, strlen(cls), 1}, /* with a class list */
        {"{\"prompt\": \"a\xff\", \"completion\": \"b\"}\n", 0, 2},
        {"one\n\ntwo three four five\n%\n", 0, 3},
    };
    const size_t base = peft_ctx_bytes_allocated(ctx);
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        peft_dataset_opts d = peft_dataset_opts_default();
        d.seq_len = 4;
        if (cases[c].variant == 1) d.classes = classes, d.n_classes = 2;
        if (cases[c].variant == 2) d.utf8 = PEFT_UTF8_REPLACE, d.add_eos = 1;
        if (cases[c].variant == 3) d.pack = PEFT_PACK_WITHIN_DOC;
        bool done = false;
        for (long n = 0; !done && n < 500; n++) {
            peft_dataset *ds = NULL;
            o.countdown = n;
            size_t len = cases[c].len ? cases[c].len : strlen(cases[c].data);
            peft_status st = peft_dataset_from_buffer(ctx, tok, cases[c].data, len, NULL, &d, &ds);
            o.countdown = -1;
            if (st == PEFT_OK) {
                ck_assert_uint_gt(peft_dataset_size(ds), 0);
                peft_dataset_destroy(ds);
                done = true;
            } else {
                ck_assert_msg(st == PEFT_ERR_NOMEM, "case %zu, failing allocation %ld: %s", c, n, peft_ctx_errmsg(ctx));
                ck_assert_ptr_null(ds);
            }
            ck_assert_uint_eq(peft_ctx_bytes_allocated(ctx), base);
        }
        ck_assert_msg(done, "case %zu never succeeded", c);
    }
    free(gz);
    peft_tokenizer_destroy(tok);
    peft_ctx_destroy(ctx);
}
END_TEST

/* ---- io: formats ---- */

START_TEST(io_text_documents_and_packing)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    peft_tokenizer *tok = bos_tok(ctx);
    const char *text = "one\ntwo\n\n\nthree\n  \t\r\nfour\n";
    peft_dataset_opts o = peft_dataset_opts_default();
    o.seq_len = 64;
    o.pack = PEFT_PACK_WITHIN_DOC;
    peft_dataset *ds = from_mem(ctx, tok, text, NULL, &o);
    const char *docs[] = {"|one\ntwo", "|three", "|four"};
    expect_examples(ds, docs, 3);
    ck_assert_int_eq(peft_dataset_format(ds), PEFT_DATA_TEXT);
    ck_assert_str_eq(mask_str(ds, 0), "");
    peft_dataset_destroy(ds);
    /* within documents, seq_len 4: a long document fills several sequences, a 1-token tail is dropped */
    o.seq_len = 4;
    ds = from_mem(ctx, tok, text, NULL, &o);
    const char *within[] = {"|one", "\ntwo", "|thr", "ee", "|fou"};
    expect_examples(ds, within, 5);
    peft_dataset_destroy(ds);
    /* across documents: one stream with BOS boundaries, cut every 4 */
    o.pack = PEFT_PACK_ACROSS;
    ds = from_mem(ctx, tok, text, NULL, &o);
    const char *across[] = {"|one", "\ntwo", "|thr", "ee|f", "our"};
    expect_examples(ds, across, 5);
    peft_dataset_destroy(ds);
    /* EOS at each end; no BOS */
    o.pack = PEFT_PACK_WITHIN_DOC;
    o.seq_len = 64;
    o.add_bos = 0;
    o.add_eos = 1;
    ds = from_mem(ctx, tok, text, NULL, &o);
    const char *eos[] = {"one\ntwo|", "three|", "four|"};
    expect_examples(ds, eos, 3);
    peft_dataset_destroy(ds);
    /* the bytes tokenizer has no BOS: the default adds none */
    peft_tokenizer *bt = bytes_tok(ctx);
    TU_OK(ctx, peft_dataset_from_text(ctx, bt, text, strlen(text), 5, &ds));
    const char *plain[] = {"one\nt", "wothr", "eefou", "r"};
    expect_examples(ds, plain, 3); /* "r" alone has nothing to predict */
    peft_dataset_destroy(ds);
    /* the shorthand reads files the same way, gzip too */
    char path[64];
    tmp_path(path, sizeof path, ".txt.gz");
    write_file(path, text, strlen(text), 1);
    TU_OK(ctx, peft_dataset_load_text(ctx, bt, path, 5, &ds));
    expect_examples(ds, plain, 3);
    peft_dataset_destroy(ds);
    unlink(path);
    peft_tokenizer_destroy(bt);
    peft_tokenizer_destroy(tok);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(io_fortune_separators)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    peft_tokenizer *tok = bos_tok(ctx);
    const char *text = "A\n%\nB poem\n\nline2\n%\r\n\nC\n%\n";
    peft_dataset_opts o = peft_dataset_opts_default();
    o.pack = PEFT_PACK_WITHIN_DOC;
    /* auto: a "%" line makes it a fortune file; blank lines stay inside a fortune */
    for (int gz = 0; gz < 2; gz++) {
        peft_dataset *ds = via_file(ctx, tok, text, "", gz, &o);
        const char *fortunes[] = {"|A", "|B poem\n\nline2", "|C"};
        expect_examples(ds, fortunes, 3);
        peft_dataset_destroy(ds);
    }
    o.sep = PEFT_SEP_BLANK;
    peft_dataset *ds = from_mem(ctx, tok, text, NULL, &o);
    const char *blank[] = {"|A\n%\nB poem", "|line2\n%", "|C\n%"};
    expect_examples(ds, blank, 3);
    peft_dataset_destroy(ds);
    o.sep = PEFT_SEP_ANY;
    ds = from_mem(ctx, tok, text, NULL, &o);
    const char *any[] = {"|A", "|B poem", "|line2", "|C"};
    expect_examples(ds, any, 4);
    peft_dataset_destroy(ds);
    /* a text without "%" lines splits on blank lines in auto */
    o.sep = PEFT_SEP_AUTO;
    ds = from_mem(ctx, tok, "x 5%\n\ny\n", NULL, &o);
    const char *noperc[] = {"|x 5%", "|y"};
    expect_examples(ds, noperc, 2);
    peft_dataset_destroy(ds);
    /* the Debian fortunes file, when installed: one document per fortune */
    const char *real = "/usr/share/games/fortunes/fortunes";
    if (access(real, R_OK) == 0) {
        size_t len;
        char *all = read_all(real, &len);
        size_t seps = 0;
        for (size_t i = 0; i + 1 < len; i++) seps += (i == 0 || all[i - 1] == '\n') && all[i] == '%' && all[i + 1] == '\n';
        free(all);
        o.seq_len = 1 << 14;
        TU_OK(ctx, peft_dataset_load(ctx, tok, real, &o, &ds));
        ck_assert_uint_ge(peft_dataset_size(ds), seps - 1);
        ck_assert_uint_le(peft_dataset_size(ds), seps + 1);
        for (size_t i = 0; i < peft_dataset_size(ds); i++) { /* BOS only at the start */
            const int32_t *ids;
            int64_t n;
            TU_OK(ctx, peft_dataset_example(ds, i, &ids, &n, NULL, NULL));
            for (int64_t t = 1; t < n; t++) ck_assert_int_ne(ids[t], BOS);
        }
        peft_dataset_destroy(ds);
    }
    peft_tokenizer_destroy(tok);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(io_jsonl_prompt_completion_mask)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    peft_tokenizer *tok = bos_tok(ctx);
    const char *jl = "{\"prompt\": \"Q: 2+2?\", \"completion\": \" 4\"}\n"
                     "\n"
                     "{\"completion\": \"yes\", \"prompt\": \"\\u00e9?\", \"extra\": [1, 2]}\n";
    peft_dataset_opts o = peft_dataset_opts_default();
    o.add_eos = 1;
    for (int gz = 0; gz < 2; gz++) {
        peft_dataset *ds = via_file(ctx, tok, jl, ".jsonl", gz, &o);
        ck_assert_int_eq(peft_dataset_format(ds), PEFT_DATA_JSONL);
        ck_assert_int_eq(peft_dataset_n_classes(ds), 0);
        const char *ex[] = {"|Q: 2+2? 4|", "|\xC3\xA9?yes|"};
        expect_examples(ds, ex, 2);
        /* exactly the completion tokens (and EOS) are targets */
        ck_assert_str_eq(mask_str(ds, 0), "00000000111");
        ck_assert_str_eq(mask_str(ds, 1), "00001111");
        /* batches carry it, padded with zeros */
        peft__batch_buf buf = {0};
        peft_batch b;
        int64_t pos[2] = {1, 0};
        TU_OK(ctx, peft__dataset_batch(ds, pos, 2, &buf, &b));
        ck_assert_int_eq(b.T, 11);
        ck_assert_ptr_nonnull(b.loss_mask);
        const int32_t want_lm[22] = {0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1};
        const int32_t want_mask[22] = {1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
        ck_assert_mem_eq(b.loss_mask, want_lm, sizeof want_lm);
        ck_assert_mem_eq(b.mask, want_mask, sizeof want_mask);
        ck_assert_ptr_null(b.labels);
        peft__batch_buf_free(ctx, &buf);
        peft_dataset_destroy(ds);
    }
    /* a LM text dataset has no loss mask */
    peft_dataset *ds = from_mem(ctx, tok, "{\"text\": \"hi\", \"label\": 3}\n{\"text\": \"yo\"}\n", "a.jsonl",
                                &(peft_dataset_opts){.struct_size = sizeof(peft_dataset_opts), .seq_len = 64,
                                                     .add_bos = 1, .task = PEFT_DATA_TASK_LM});
    const char *lm[] = {"|hi|yo"};
    expect_examples(ds, lm, 1);
    ck_assert_str_eq(mask_str(ds, 0), "");
    peft__batch_buf buf = {0};
    peft_batch b;
    int64_t pos[1] = {0};
    TU_OK(ctx, peft__dataset_batch(ds, pos, 1, &buf, &b));
    ck_assert_ptr_null(b.loss_mask);
    peft__batch_buf_free(ctx, &buf);
    peft_dataset_destroy(ds);
    peft_tokenizer_destroy(tok);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(io_classification_formats)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    peft_tokenizer *tok = bytes_tok(ctx);
    peft_dataset_opts o = peft_dataset_opts_default();
    /* string labels: sorted classes */
    const char *jl = "{\"text\": \"good\", \"label\": \"pos\"}\n{\"text\": \"bad\", \"label\": \"neg\"}\n"
                     "{\"label\": \"pos\", \"text\": \"fine\"}\n";
    const char *tsv = "pos\tgood\nneg\tbad\r\n\npos\tfine\n";
    for (int gz = 0; gz < 2; gz++) {
        peft_dataset *a = via_file(ctx, tok, jl, ".jsonl", gz, &o), *b = via_file(ctx, tok, tsv, ".tsv", gz, &o);
        ck_assert_int_eq(peft_dataset_format(b), PEFT_DATA_TSV);
        ck_same(a, b);
        ck_assert_int_eq(peft_dataset_n_classes(a), 2);
        ck_assert_str_eq(peft_dataset_class_name(a, 0), "neg");
        ck_assert_str_eq(peft_dataset_class_name(a, 1), "pos");
        const char *ex[] = {"good", "bad", "fine"};
        expect_examples(a, ex, 3);
        ck_assert_int_eq(label_of(a, 0), 1);
        ck_assert_int_eq(label_of(a, 1), 0);
        ck_assert_int_eq(label_of(a, 2), 1);
        peft_dataset_destroy(a), peft_dataset_destroy(b);
    }
    /* labels that are all numbers sort numerically */
    peft_dataset *ds = from_mem(ctx, tok, "10\ta\n9\tb\n2\tc\n", "x.tsv", &o);
    ck_assert_str_eq(peft_dataset_class_name(ds, 0), "2");
    ck_assert_str_eq(peft_dataset_class_name(ds, 2), "10");
    ck_assert_int_eq(label_of(ds, 0), 2);
    peft_dataset_destroy(ds);
    /* JSON integer labels are the class ids */
    ds = from_mem(ctx, tok, "{\"text\": \"a\", \"label\": 0}\n{\"text\": \"b\", \"label\": 2}\n", NULL, &o);
    ck_assert_int_eq(peft_dataset_n_classes(ds), 3);
    ck_assert_str_eq(peft_dataset_class_name(ds, 1), "1");
    ck_assert_int_eq(label_of(ds, 1), 2);
    peft_dataset_destroy(ds);
    /* an explicit class list: names and indices */
    const char *classes[] = {"neg", "pos", "neutral"};
    o.classes = classes;
    o.n_classes = 3;
    ds = from_mem(ctx, tok, "{\"text\": \"a\", \"label\": \"neutral\"}\n{\"text\": \"b\", \"label\": 1}\n", NULL, &o);
    ck_assert_int_eq(peft_dataset_n_classes(ds), 3);
    ck_assert_str_eq(peft_dataset_class_name(ds, 2), "neutral");
    ck_assert_int_eq(label_of(ds, 0), 2);
    ck_assert_int_eq(label_of(ds, 1), 1);
    peft_dataset_destroy(ds);
    /* classification batches carry labels and no loss mask */
    o = peft_dataset_opts_default();
    ds = from_mem(ctx, tok, tsv, "c.tsv", &o);
    peft__batch_buf buf = {0};
    peft_batch b;
    int64_t pos[3] = {0, 1, 2};
    TU_OK(ctx, peft__dataset_batch(ds, pos, 3, &buf, &b));
    ck_assert_int_eq(b.T, 4);
    ck_assert_ptr_null(b.loss_mask);
    ck_assert_int_eq(b.labels[0], 1);
    ck_assert_int_eq(b.labels[1], 0);
    ck_assert_int_eq(b.mask[1 * 4 + 3], 0);
    peft__batch_buf_free(ctx, &buf);
    peft_dataset_destroy(ds);
    /* the TSV shorthand (max_len truncates) */
    char path[64];
    tmp_path(path, sizeof path, ".data");
    write_file(path, tsv, strlen(tsv), 0);
    TU_OK(ctx, peft_dataset_load_tsv(ctx, tok, path, 3, &ds));
    const char *cut[] = {"goo", "bad", "fin"};
    expect_examples(ds, cut, 3);
    ck_assert_uint_eq(peft_dataset_n_truncated(ds), 2);
    peft_dataset_destroy(ds);
    unlink(path);
    peft_tokenizer_destroy(tok);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(io_format_detection)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    peft_tokenizer *tok = bytes_tok(ctx);
    peft_dataset_opts o = peft_dataset_opts_default();
    struct {
        const char *data, *suffix;
        peft_data_format want;
    } cases[] = {
        {"  {\"text\": \"a b\"}\n", "", PEFT_DATA_JSONL},  /* content */
        {"pos\ta b\nneg\tc\n", ".dat", PEFT_DATA_TSV},     /* content */
        {"\xEF\xBB\xBFpos\ta\nneg\tb\n", "", PEFT_DATA_TSV}, /* a byte-order mark is skipped */
        {"a\tb c d\n\tindented\n", "", PEFT_DATA_TEXT},    /* not every line is label<TAB>text */
        {"{not json at all}\n", "", PEFT_DATA_TEXT},       /* a brace alone is not JSONL */
        {"{\"text\": \"a\"}\n", ".txt", PEFT_DATA_TEXT},   /* the extension wins */
        {"pos\ta\nneg\tb\n", ".TXT.gz", PEFT_DATA_TEXT},
        {"{\"text\": \"x y\"}\n", ".jsonl.gz", PEFT_DATA_JSONL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        for (int gz = 0; gz < 2; gz++) {
            peft_dataset *ds = via_file(ctx, tok, cases[i].data, cases[i].suffix, gz, &o);
            ck_assert_msg(peft_dataset_format(ds) == cases[i].want, "case %zu gz %d: format %d", i, gz,
                          (int)peft_dataset_format(ds));
            peft_dataset_destroy(ds);
        }
    /* gzip in memory */
    char path[64];
    tmp_path(path, sizeof path, ".gz");
    const char *jl = "{\"text\": \"good\", \"label\": \"pos\"}\n{\"text\": \"bad\", \"label\": \"neg\"}\n";
    write_file(path, jl, strlen(jl), 1);
    size_t len;
    char *gz = read_all(path, &len);
    ck_assert_int_eq((unsigned char)gz[0], 0x1f);
    peft_dataset *a, *b;
    TU_OK(ctx, peft_dataset_from_buffer(ctx, tok, gz, len, NULL, &o, &a));
    b = from_mem(ctx, tok, jl, NULL, &o);
    ck_same(a, b);
    ck_assert_int_eq(peft_dataset_n_classes(a), 2);
    peft_dataset_destroy(a), peft_dataset_destroy(b);
    /* damaged gzip: truncated in memory and on disk */
    TU_EXPECT_FAIL(ctx, peft_dataset_from_buffer(ctx, tok, gz, len - 12, "m.gz", &o, &a), PEFT_ERR_FORMAT, "m.gz");
    write_file(path, gz, len - 12, 0);
    TU_EXPECT_FAIL(ctx, peft_dataset_load(ctx, tok, path, &o, &a), PEFT_ERR_FORMAT, "gzip");
    ck_assert_ptr_null(a);
    free(gz);
    unlink(path);
    peft_tokenizer_destroy(tok);
    peft_ctx_destroy(ctx);
}
END_TEST

/* ---- io: bad input ---- */

/* Load `data` from a file named <tmp><suffix> and expect failure with a message
 * holding "<path>:<needle>". */
static void expect_bad(peft_ctx *ctx, peft_tokenizer *tok, const char *data, const char *suffix,
                       const peft_dataset_opts *o, peft_status code, const char *needle)
{
    char path[64], want[256];
    tmp_path(path, sizeof path, suffix);
    write_file(path, data, strlen(data), 0);
    snprintf(want, sizeof want, "%s%s", path, needle);
    peft_dataset *ds = NULL;
    TU_EXPECT_FAIL(ctx, peft_dataset_load(ctx, tok, path, o, &ds), code, want);
    ck_assert_ptr_null(ds);
    unlink(path);
}

START_TEST(io_bad_lines)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    peft_tokenizer *tok = bytes_tok(ctx);
    peft_dataset_opts o = peft_dataset_opts_default();
    const char *jl = "{\"text\": \"ok one\"}\n"
                     "this is not json\n"
                     "{\"text\": 5}\n"
                     "{\"txt\": \"typo\"}\n"
                     "[\"an array\"]\n"
                     "{\"text\": \"two\"} trailing\n"
                     "{\"text\": \"ok three\"}\n";
    expect_bad(ctx, tok, jl, ".jsonl", &o, PEFT_ERR_FORMAT, ":2: not valid JSON (at column 1)");
    o.skip_bad_lines = 1;
    for (int gz = 0; gz < 2; gz++) {
        peft_dataset *ds = via_file(ctx, tok, jl, ".jsonl", gz, &o);
        ck_assert_uint_eq(peft_dataset_n_skipped(ds), 5);
        const char *ex[] = {"ok oneok three"};
        expect_examples(ds, ex, 1);
        peft_dataset_destroy(ds);
    }
    o.skip_bad_lines = 0;
    expect_bad(ctx, tok, "{\"text\": \"a\"}\n{\"text\": 5}\n", ".jsonl", &o, PEFT_ERR_FORMAT, ":2: \"text\" is not a string");
    expect_bad(ctx, tok, "{\"text\": \"a\"}\n{\"txt\": \"b\"}\n", ".jsonl", &o, PEFT_ERR_FORMAT, ":2: missing \"text\"");
    expect_bad(ctx, tok, "{\"prompt\": \"a\", \"completion\": \"b\"}\n\n{\"prompt\": \"a\"}\n", ".jsonl", &o,
               PEFT_ERR_FORMAT, ":3: missing \"completion\"");
    expect_bad(ctx, tok, "{\"prompt\": \"a\", \"completion\": \"\"}\n", ".jsonl", &o, PEFT_ERR_FORMAT,
               ":1: the completion is empty");
    expect_bad(ctx, tok, "{\"text\": \"a\"} x\n", ".jsonl", &o, PEFT_ERR_FORMAT, ":1: text after the JSON value (at column 15)");
    expect_bad(ctx, tok, "{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": \"b\", \"label\": true}\n", ".jsonl", &o,
               PEFT_ERR_FORMAT, ":2: \"label\" is neither");
    expect_bad(ctx, tok, "{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": \"b\", \"label\": 1}\n", ".jsonl", &o,
               PEFT_ERR_FORMAT, ":2: integer label 1 after string labels");
    expect_bad(ctx, tok, "{\"text\": \"a\", \"label\": 1.5}\n", ".jsonl", &o, PEFT_ERR_FORMAT, ":1: label 1.5 is not an integer");
    expect_bad(ctx, tok, "{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": \"b\", \"label\": \"x\"}\n", ".jsonl", &o,
               PEFT_ERR_FORMAT, ": 1 distinct label(s)");
    expect_bad(ctx, tok, "pos\tgood\nno tab here\n", ".tsv", &o, PEFT_ERR_FORMAT, ":2: expected \"label<TAB>text\"");
    expect_bad(ctx, tok, "pos\tgood\nneg\t\n", ".tsv", &o, PEFT_ERR_FORMAT, ":2: expected");
    /* labels outside the class list */
    const char *classes[] = {"neg", "pos"};
    o.classes = classes;
    o.n_classes = 2;
    expect_bad(ctx, tok, "pos\tgood\n\nmaybe\tso so\n", ".tsv", &o, PEFT_ERR_FORMAT, ":3: label 'maybe' is not one of the 2 classes");
    expect_bad(ctx, tok, "{\"text\": \"a\", \"label\": 2}\n", ".jsonl", &o, PEFT_ERR_FORMAT, ":1: label 2 is outside the 2 classes");
    o.skip_bad_lines = 1;
    peft_dataset *ds = from_mem(ctx, tok, "pos\tgood\nmaybe\tso so\nneg\tbad\n", "x.tsv", &o);
    ck_assert_uint_eq(peft_dataset_size(ds), 2);
    ck_assert_uint_eq(peft_dataset_n_skipped(ds), 1);
    ck_assert_int_eq(label_of(ds, 1), 0);
    peft_dataset_destroy(ds);
    /* skipped lines leave no empty classes behind */
    o.classes = NULL;
    o.n_classes = 0;
    ds = from_mem(ctx, tok, "{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": 3, \"label\": \"ghost\"}\n"
                            "{\"text\": \"b\", \"label\": \"y\"}\n", NULL, &o);
    ck_assert_int_eq(peft_dataset_n_classes(ds), 2);
    ck_assert_uint_eq(peft_dataset_n_skipped(ds), 1);
    peft_dataset_destroy(ds);
    /* empty datasets */
    o.skip_bad_lines = 0;
    expect_bad(ctx, tok, "", ".txt", &o, PEFT_ERR_FORMAT, ": no examples");
    expect_bad(ctx, tok, "\n\n  \n%\n", ".txt", &o, PEFT_ERR_FORMAT, ": no examples");
    expect_bad(ctx, tok, "\n\n", ".jsonl", &o, PEFT_ERR_FORMAT, ": no examples (2 line(s) read, 0 skipped)");
    expect_bad(ctx, tok, "", ".tsv", &o, PEFT_ERR_FORMAT, ": no examples");
    o.skip_bad_lines = 1;
    expect_bad(ctx, tok, "nope\n{\n", ".jsonl", &o, PEFT_ERR_FORMAT, ": no examples (2 line(s) read, 2 skipped)");
    peft_tokenizer_destroy(tok);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(io_invalid_utf8)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    peft_tokenizer *tok = bytes_tok(ctx);
    const char *text = "caf\xC3\xA9\n\nbad \xFF byte\n\ntrunc \xE2\x82\n";
    peft_dataset_opts o = peft_dataset_opts_default();
    o.pack = PEFT_PACK_WITHIN_DOC;
    peft_dataset *ds = from_mem(ctx, tok, text, NULL, &o);
    const char *keep[] = {"caf\xC3\xA9", "bad \xFF byte", "trunc \xE2\x82"};
    expect_examples(ds, keep, 3);
    ck_assert_uint_eq(peft_dataset_n_invalid_utf8(ds), 2);
    peft_dataset_destroy(ds);
    o.utf8 = PEFT_UTF8_REPLACE;
    ds = from_mem(ctx, tok, text, NULL, &o);
    const char *fixed[] = {"caf\xC3\xA9", "bad \xEF\xBF\xBD byte", "trunc \xEF\xBF\xBD\xEF\xBF\xBD"};
    expect_examples(ds, fixed, 3);
    ck_assert_uint_eq(peft_dataset_n_invalid_utf8(ds), 2);
    peft_dataset_destroy(ds);
    o.utf8 = PEFT_UTF8_REJECT;
    expect_bad(ctx, tok, text, ".txt", &o, PEFT_ERR_FORMAT, ":3: invalid UTF-8 at byte 4");
    o.skip_bad_lines = 1;
    ds = from_mem(ctx, tok, text, NULL, &o);
    const char *rejected[] = {"caf\xC3\xA9"};
    expect_examples(ds, rejected, 1);
    ck_assert_uint_eq(peft_dataset_n_skipped(ds), 2);
    peft_dataset_destroy(ds);
    /* in JSONL strings too (raw bytes pass through the JSON parser) */
    o.utf8 = PEFT_UTF8_REPLACE;
    ds = from_mem(ctx, tok, "{\"prompt\": \"\xFF\", \"completion\": \"\xC0\"}\n", NULL, &o);
    const char *pc[] = {"\xEF\xBF\xBD\xEF\xBF\xBD"};
    expect_examples(ds, pc, 1);
    ck_assert_str_eq(mask_str(ds, 0), "000111");
    ck_assert_uint_eq(peft_dataset_n_invalid_utf8(ds), 1);
    peft_dataset_destroy(ds);
    peft_tokenizer_destroy(tok);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(io_overflow_truncate_refuse_drop)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    peft_tokenizer *tok = bos_tok(ctx);
    const char *tsv = "a\tshort\nb\tmuch too long\nc\tok\n";
    peft_dataset_opts o = peft_dataset_opts_default();
    o.seq_len = 8;
    o.add_eos = 1;
    peft_dataset *ds = from_mem(ctx, tok, tsv, "x.tsv", &o);
    const char *cut[] = {"|short|", "|much t|", "|ok|"}; /* the start is kept, BOS and EOS too */
    expect_examples(ds, cut, 3);
    ck_assert_uint_eq(peft_dataset_n_truncated(ds), 1);
    peft_dataset_destroy(ds);
    o.overflow = PEFT_OVERFLOW_REFUSE;
    expect_bad(ctx, tok, tsv, ".tsv", &o, PEFT_ERR_FORMAT, ":2: 15 tokens exceed seq_len 8 (overflow: refuse)");
    o.overflow = PEFT_OVERFLOW_DROP;
    ds = from_mem(ctx, tok, tsv, "x.tsv", &o);
    const char *dropped[] = {"|short|", "|ok|"};
    expect_examples(ds, dropped, 2);
    ck_assert_uint_eq(peft_dataset_n_skipped(ds), 1);
    ck_assert_uint_eq(peft_dataset_n_truncated(ds), 0);
    peft_dataset_destroy(ds);
    /* prompt/completion: the oldest prompt tokens go first */
    o.overflow = PEFT_OVERFLOW_TRUNCATE;
    o.seq_len = 6;
    const char *pc = "{\"prompt\": \"abcdefgh\", \"completion\": \"XY\"}\n"
                     "{\"prompt\": \"ab\", \"completion\": \"0123456789\"}\n"
                     "{\"prompt\": \"p\", \"completion\": \"c\"}\n";
    ds = from_mem(ctx, tok, pc, NULL, &o);
    const char *pcs[] = {"|ghXY|", "|01234", "|pc|"};
    expect_examples(ds, pcs, 3);
    ck_assert_str_eq(mask_str(ds, 0), "000111");
    ck_assert_str_eq(mask_str(ds, 1), "011111"); /* the completion alone was too long: its end and EOS go */
    ck_assert_str_eq(mask_str(ds, 2), "0011");
    ck_assert_uint_eq(peft_dataset_n_truncated(ds), 2);
    peft_dataset_destroy(ds);
    /* without BOS the last prompt token stays as context */
    peft_tokenizer *bt = bytes_tok(ctx);
    o.add_eos = 0;
    ds = from_mem(ctx, bt, pc, NULL, &o);
    const char *nobos[] = {"efghXY", "b01234", "pc"};
    expect_examples(ds, nobos, 3);
    ck_assert_str_eq(mask_str(ds, 1), "011111");
    peft_dataset_destroy(ds);
    o.overflow = PEFT_OVERFLOW_REFUSE;
    expect_bad(ctx, bt, pc, ".jsonl", &o, PEFT_ERR_FORMAT, ":1: 10 tokens exceed seq_len 6");
    /* never more than seq_len tokens in a row, whatever the text */
    o.overflow = PEFT_OVERFLOW_TRUNCATE;
    o.seq_len = 3;
    ds = from_mem(ctx, bt, "lab\tsome words\nx\ty\n", "t.tsv", &o);
    ck_assert_int_eq(peft_dataset_max_len(ds), 3);
    peft_dataset_destroy(ds);
    peft_tokenizer_destroy(bt);
    peft_tokenizer_destroy(tok);
    peft_ctx_destroy(ctx);
}
END_TEST

/* ---- numerics ---- */

/* peft_adapter_loss over a prompt/completion batch equals the mean
 * cross-entropy over the completion tokens only, computed here from the
 * model's logits in double. */
START_TEST(numerics_loss_counts_completion_tokens_only)
{
    peft_ctx *ctx = tu_ctx(1, 3);
    peft_model *m;
    TU_OK(ctx, peft_model_load(ctx, GOLDEN "llama", NULL, &m));
    peft_tokenizer *tok = bytes_tok(ctx); /* upper-case ASCII and spaces stay below the vocabulary of 96 */
    const char *jl = "{\"prompt\": \"ABC \", \"completion\": \"DEFG\"}\n"
                     "{\"prompt\": \"HELLO THERE \", \"completion\": \"WORLD\"}\n"
                     "{\"prompt\": \"\", \"completion\": \"XYZ\"}\n";
    peft_dataset_opts o = peft_dataset_opts_default();
    o.seq_len = 32;
    peft_dataset *ds = from_mem(ctx, tok, jl, NULL, &o);
    ck_assert_uint_eq(peft_dataset_size(ds), 3);
    /* reference: each row alone through the base model */
    double ce_sum = 0;
    int64_t n_targets = 0;
    for (size_t i = 0; i < 3; i++) {
        const int32_t *ids;
        const uint8_t *lm;
        int64_t T;
        TU_OK(ctx, peft_dataset_example(ds, i, &ids, &T, &lm, NULL));
        int64_t shape[2] = {1, T};
        peft_tensor *x = tu_ids(ctx, 2, shape, ids), *logits;
        TU_OK(ctx, peft_model_forward(m, x, &logits, NULL));
        const float *lg = peft_tensor_data(logits);
        const int64_t V = peft_tensor_dim(logits, 2);
        for (int64_t t = 0; t + 1 < T; t++) {
            if (!lm[t + 1]) continue;
            double mx = -INFINITY, se = 0;
            for (int64_t v = 0; v < V; v++) mx = fmax(mx, lg[t * V + v]);
            for (int64_t v = 0; v < V; v++) se += exp(lg[t * V + v] - mx);
            ce_sum += log(se) + mx - lg[t * V + ids[t + 1]];
            n_targets++;
        }
        peft_graph_release(ctx);
        peft_tensor_destroy(x);
    }
    ck_assert_int_eq(n_targets, 4 + 5 + 2); /* "X" of the last row has no context: not a target */
    peft_adapter *ad;
    TU_OK(ctx, peft_adapter_attach(m, "lora", NULL, NULL, &ad)); /* B = 0: the base model's loss */
    peft__batch_buf buf = {0};
    peft_batch b;
    int64_t pos[3] = {0, 1, 2};
    TU_OK(ctx, peft__dataset_batch(ds, pos, 3, &buf, &b));
    peft_tensor *loss;
    TU_OK(ctx, peft_adapter_loss(ad, &b, 0, &loss));
    float got = *(const float *)peft_tensor_data(loss);
    peft_graph_release(ctx);
    ck_assert_double_eq_tol(got, ce_sum / (double)n_targets, 2e-5);
    double lsum;
    int64_t count, correct;
    TU_OK(ctx, peft_adapter_eval(ad, &b, &lsum, &count, &correct));
    peft_graph_release(ctx);
    ck_assert_int_eq(count, n_targets);
    ck_assert_double_eq_tol(lsum, ce_sum, 1e-3);
    /* without the mask every next token would count: a different loss */
    b.loss_mask = NULL;
    TU_OK(ctx, peft_adapter_loss(ad, &b, 0, &loss));
    ck_assert(fabs(*(const float *)peft_tensor_data(loss) - got) > 1e-4);
    peft_graph_release(ctx);
    peft__batch_buf_free(ctx, &buf);
    peft_adapter_destroy(ad);
    peft_dataset_destroy(ds);
    peft_tokenizer_destroy(tok);
    peft_model_destroy(m);
    peft_ctx_destroy(ctx);
}
END_TEST

/* A few MB of text with multi-byte UTF-8, CRLF, "%" separators, blank lines
 * inside fortunes and one very long line (longer than any chunk). */
static char *big_text(size_t target, size_t *len)
{
    static const char *words[] = {"caf\xC3\xA9", "\xE4\xB8\xAD\xE6\x96\x87", "\xF0\x9F\x98\x80", "plain", "tab\there",
                                  "x", "longerword", "\xCE\xB1\xCE\xB2\xCE\xB3"};
    char *s = malloc(target + 70000);
    size_t n = 0;
    uint64_t r = 12345;
    int doc = 0;
    while (n < target) {
        int lines = 1 + (int)((r = r * 6364136223846793005ULL + 1442695040888963407ULL) >> 61);
        for (int l = 0; l < lines; l++) {
            int nw = 1 + (int)((r = r * 6364136223846793005ULL + 1) >> 59);
            if (doc == 7 && l == 0) nw = 6000; /* ~50 KB on one line */
            for (int w = 0; w < nw; w++) {
                const char *word = words[(r = r * 6364136223846793005ULL + 1) >> 61];
                size_t k = strlen(word);
                memcpy(s + n, word, k);
                n += k;
                s[n++] = ' ';
            }
            if (l % 3 == 2) s[n++] = '\r';
            s[n++] = '\n';
            if (l == 1) s[n++] = '\n'; /* a blank line inside the fortune */
        }
        memcpy(s + n, "%\n", 2);
        n += 2;
        doc++;
    }
    *len = n;
    return s;
}

static char *big_jsonl(size_t target, size_t *len, size_t *n_bad)
{
    *n_bad = 0;
    char *s = malloc(target + 1000);
    size_t n = 0;
    for (int i = 0; n < target; i++) {
        if (i % 1000 == 999) n += (size_t)sprintf(s + n, "not json %d\n", i), ++*n_bad;
        else
            n += (size_t)sprintf(s + n, "{\"prompt\": \"Q%d \\u00e9 \\ud83d\\ude00 what?\", \"completion\": \" answer %d\"}\n", i,
                                 i * 7);
    }
    *len = n;
    return s;
}

static void load_chunked(peft_ctx *ctx, peft_tokenizer *tok, const char *path, const peft_dataset_opts *o, size_t chunk,
                         peft_dataset **out)
{
    peft_status st = peft__dataset_load_chunked(ctx, tok, path, o, chunk, out);
    ck_assert_msg(st == PEFT_OK, "chunk %zu: %s", chunk, peft_ctx_errmsg(ctx));
}

START_TEST(numerics_chunked_equals_unchunked)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    peft_tokenizer *tok = bos_tok(ctx);
    struct {
        const char *suffix;
        bool jsonl;
        peft_data_pack pack;
    } kinds[] = {{".txt", false, PEFT_PACK_ACROSS}, {".txt", false, PEFT_PACK_WITHIN_DOC}, {".jsonl", true, PEFT_PACK_ACROSS}};
    for (size_t k = 0; k < 3; k++) {
        size_t len, n_bad = 0;
        char *data = kinds[k].jsonl ? big_jsonl(1 << 20, &len, &n_bad) : big_text(3 << 20, &len);
        peft_dataset_opts o = peft_dataset_opts_default();
        o.seq_len = 256;
        o.pack = kinds[k].pack;
        o.skip_bad_lines = 1;
        o.add_eos = 1;
        peft_dataset *whole;
        TU_OK(ctx, peft_dataset_from_buffer(ctx, tok, data, len, kinds[k].suffix, &o, &whole));
        ck_assert_uint_gt(peft_dataset_size(whole), 1000);
        ck_assert_uint_eq(peft_dataset_n_skipped(whole), n_bad);
        ck_assert_uint_gt(peft_dataset_n_skipped(whole) + !kinds[k].jsonl, 0);
        for (int gz = 0; gz < 2; gz++) {
            char path[64];
            tmp_path(path, sizeof path, kinds[k].suffix);
            write_file(path, data, len, gz);
            const size_t chunks[] = {777, 4096, (size_t)16 << 20};
            for (size_t c = 0; c < 3; c++) {
                peft_dataset *ds;
                load_chunked(ctx, tok, path, &o, chunks[c], &ds);
                ck_same(ds, whole);
                /* the text held at once: the read buffer (grown once for the ~50 KB line), the
                 * document and the sniffed head, never the file */
                if (chunks[c] < len) ck_assert_uint_lt(ds->store->text_peak, 400000);
                ck_assert_uint_lt(ds->store->text_peak, len / 4 + chunks[c] * 2 + 400000);
                peft_dataset_destroy(ds);
            }
            unlink(path);
        }
        /* tiny chunks on a smaller piece, cut at a line end */
        size_t small = 70000;
        while (data[small - 1] != '\n') small++;
        peft_dataset *ref, *ds;
        TU_OK(ctx, peft_dataset_from_buffer(ctx, tok, data, small, kinds[k].suffix, &o, &ref));
        char path[64];
        tmp_path(path, sizeof path, kinds[k].suffix);
        write_file(path, data, small, 1);
        load_chunked(ctx, tok, path, &o, 7, &ds);
        ck_same(ds, ref);
        peft_dataset_destroy(ds), peft_dataset_destroy(ref);
        unlink(path);
        peft_dataset_destroy(whole);
        free(data);
    }
    peft_tokenizer_destroy(tok);
    peft_ctx_destroy(ctx);
}
END_TEST

/* Loading a file several times larger than what the library allocates at
 * peak: the text is streamed, only (here, truncated) tokens are kept. */
START_TEST(numerics_text_is_streamed)
{
    char path[64];
    tmp_path(path, sizeof path, ".tsv.gz");
    gzFile f = gzopen(path, "wb1");
    ck_assert_ptr_nonnull(f);
    char line[4200];
    size_t total = 0;
    for (int i = 0; i < 1200; i++) {
        int n = snprintf(line, sizeof line, "%s\t", i % 3 ? "yes" : "no");
        for (int k = 0; k < 4000; k++) line[n++] = (char)('a' + (i + k) % 26);
        line[n++] = '\n';
        ck_assert_int_eq(gzwrite(f, line, (unsigned)n), n);
        total += (size_t)n;
    }
    gzclose(f);
    peft_ctx *ctx = tu_ctx(1, 1);
    peft_tokenizer *tok = bytes_tok(ctx);
    size_t before = peft_ctx_bytes_allocated(ctx);
    peft_dataset_opts o = peft_dataset_opts_default();
    o.seq_len = 16;
    peft_dataset *ds;
    load_chunked(ctx, tok, path, &o, 8192, &ds);
    size_t peak = peft_ctx_bytes_peak(ctx) - before;
    ck_assert_uint_eq(peft_dataset_size(ds), 1200);
    ck_assert_uint_eq(peft_dataset_n_truncated(ds), 1200);
    ck_assert_uint_gt(total, 4800000);
    ck_assert_msg(peak < total / 8, "peak %zu bytes for a %zu-byte file", peak, total);
    peft_dataset_destroy(ds);
    /* the public entry (256 KiB reads) stays far below the file too */
    TU_OK(ctx, peft_dataset_load(ctx, tok, path, &o, &ds));
    ck_assert_uint_lt(peft_ctx_bytes_peak(ctx) - before, total / 4);
    peft_dataset_destroy(ds);
    unlink(path);
    peft_tokenizer_destroy(tok);
    peft_ctx_destroy(ctx);
}
END_TEST

static bool same_view(const peft_dataset *a, const peft_dataset *b)
{
    return a->n == b->n && !memcmp(a->index, b->index, a->n * sizeof *a->index);
}

START_TEST(numerics_split_determinism)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    int32_t tok[1] = {5};
    const int32_t *ids[100];
    int64_t lens[100];
    for (int i = 0; i < 100; i++) ids[i] = tok, lens[i] = 1;
    peft_dataset *ds;
    TU_OK(ctx, peft_dataset_from_ids(ctx, 100, ids, lens, NULL, 0, &ds));
    peft_dataset *tr1, *va1, *te1, *tr2, *va2, *te2, *tr3, *va3, *te3;
    TU_OK(ctx, peft_dataset_split3(ds, 0.1, 0.2, 42, &tr1, &va1, &te1));
    TU_OK(ctx, peft_dataset_split3(ds, 0.1, 0.2, 42, &tr2, &va2, &te2));
    TU_OK(ctx, peft_dataset_split3(ds, 0.1, 0.2, 43, &tr3, &va3, &te3));
    ck_assert_uint_eq(peft_dataset_size(va1), 10);
    ck_assert_uint_eq(peft_dataset_size(te1), 20);
    ck_assert_uint_eq(peft_dataset_size(tr1), 70);
    ck_assert(same_view(tr1, tr2) && same_view(va1, va2) && same_view(te1, te2));
    ck_assert(!same_view(tr1, tr3) && !same_view(va1, va3));
    /* a partition: every example exactly once */
    int seen[100] = {0};
    const peft_dataset *parts[3] = {tr1, va1, te1};
    for (int p = 0; p < 3; p++)
        for (size_t i = 0; i < parts[p]->n; i++) seen[parts[p]->index[i]]++;
    for (int i = 0; i < 100; i++) ck_assert_int_eq(seen[i], 1);
    /* the validation part agrees with the two-way split of the same seed */
    peft_dataset *tr, *va;
    TU_OK(ctx, peft_dataset_split(ds, 0.1, 42, &tr, &va));
    ck_assert(same_view(va, va1));
    /* splitting a split works (indices stay in the parent's store) */
    peft_dataset *a, *b;
    TU_OK(ctx, peft_dataset_split(tr1, 0.5, 1, &a, &b));
    ck_assert_uint_eq(peft_dataset_size(a) + peft_dataset_size(b), 70);
    peft_dataset_destroy(a), peft_dataset_destroy(b);
    peft_dataset_destroy(tr), peft_dataset_destroy(va);
    peft_dataset_destroy(tr1), peft_dataset_destroy(va1), peft_dataset_destroy(te1);
    peft_dataset_destroy(tr2), peft_dataset_destroy(va2), peft_dataset_destroy(te2);
    peft_dataset_destroy(tr3), peft_dataset_destroy(va3), peft_dataset_destroy(te3);
    peft_dataset_destroy(ds);
    peft_ctx_destroy(ctx);
}
END_TEST

/* The trainer's per-epoch order, seen through the per-step losses of a model
 * that does not change (lr 0, one example per step): each epoch visits every
 * example once, the order depends only on the seed, and epochs differ. */
typedef struct loss_log {
    float loss[64];
    int n;
} loss_log;

static int log_loss(const peft_progress *p, void *user)
{
    loss_log *l = user;
    if (isnan(p->val_loss) && l->n < 64) l->loss[l->n++] = p->loss;
    return 0;
}

static void epoch_losses(uint64_t seed, loss_log *out)
{
    peft_ctx *ctx = tu_ctx(1, 7);
    peft_model *m;
    TU_OK(ctx, peft_model_load(ctx, GOLDEN "llama", NULL, &m));
    int32_t rows[12][6];
    const int32_t *ptrs[12];
    int64_t lens[12];
    for (int i = 0; i < 12; i++) {
        for (int t = 0; t < 6; t++) rows[i][t] = (int32_t)((i * 7 + t * 13 + i * t) % 96);
        ptrs[i] = rows[i];
        lens[i] = 6;
    }
    peft_dataset *ds;
    TU_OK(ctx, peft_dataset_from_ids(ctx, 12, ptrs, lens, NULL, 0, &ds));
    peft_adapter *ad;
    TU_OK(ctx, peft_adapter_attach(m, "lora", NULL, NULL, &ad));
    peft_train_opts o = peft_train_opts_default();
    o.lr = 0;
    o.batch_size = 1;
    o.epochs = 2;
    o.seed = seed;
    o.progress = log_loss;
    o.progress_user = out;
    out->n = 0;
    peft_trainer *tr;
    TU_OK(ctx, peft_trainer_create(ad, &o, &tr));
    peft_fit_result r;
    TU_OK(ctx, peft_trainer_fit(tr, ds, NULL, &r));
    ck_assert_int_eq(out->n, 24);
    /* each epoch: the losses of the 12 examples, each once */
    float ref[12];
    peft__batch_buf buf = {0};
    for (int i = 0; i < 12; i++) {
        peft_batch b;
        int64_t pos = i;
        TU_OK(ctx, peft__dataset_batch(ds, &pos, 1, &buf, &b));
        peft_tensor *l;
        TU_OK(ctx, peft_adapter_loss(ad, &b, 0, &l));
        ref[i] = *(const float *)peft_tensor_data(l);
        peft_graph_release(ctx);
    }
    peft__batch_buf_free(ctx, &buf);
    for (int e = 0; e < 2; e++) {
        int used[12] = {0};
        for (int s = 0; s < 12; s++) {
            int hit = -1;
            for (int i = 0; i < 12 && hit < 0; i++)
                if (!used[i] && fabsf(ref[i] - out->loss[e * 12 + s]) <= 1e-6f * fabsf(ref[i])) hit = i;
            ck_assert_msg(hit >= 0, "epoch %d step %d: loss %g is no unused example's", e, s, out->loss[e * 12 + s]);
            used[hit] = 1;
        }
    }
    peft_trainer_destroy(tr);
    peft_adapter_destroy(ad);
    peft_dataset_destroy(ds);
    peft_model_destroy(m);
    peft_ctx_destroy(ctx);
}

START_TEST(numerics_epoch_shuffle_determinism)
{
    loss_log a, b, c;
    epoch_losses(5, &a);
    epoch_losses(5, &b);
    epoch_losses(6, &c);
    ck_assert_mem_eq(a.loss, b.loss, sizeof(float) * 24);
    ck_assert(memcmp(a.loss, c.loss, sizeof(float) * 24) != 0);
    ck_assert(memcmp(a.loss, a.loss + 12, sizeof(float) * 12) != 0); /* reshuffled every epoch */
}
END_TEST

Suite *dataset_suite(void)
{
    Suite *s = suite_create("dataset");
    TCase *tc = tcase_create("api");
    tcase_add_test(tc, api_options_and_arguments);
    tcase_add_test(tc, api_out_of_memory);
    suite_add_tcase(s, tc);
    tc = tcase_create("io");
    tcase_add_test(tc, io_text_documents_and_packing);
    tcase_add_test(tc, io_fortune_separators);
    tcase_add_test(tc, io_jsonl_prompt_completion_mask);
    tcase_add_test(tc, io_classification_formats);
    tcase_add_test(tc, io_format_detection);
    tcase_add_test(tc, io_bad_lines);
    tcase_add_test(tc, io_invalid_utf8);
    tcase_add_test(tc, io_overflow_truncate_refuse_drop);
    suite_add_tcase(s, tc);
    tc = tcase_create("numerics");
    tcase_add_test(tc, numerics_loss_counts_completion_tokens_only);
    tcase_add_test(tc, numerics_chunked_equals_unchunked);
    tcase_add_test(tc, numerics_text_is_streamed);
    tcase_add_test(tc, numerics_split_determinism);
    tcase_add_test(tc, numerics_epoch_shuffle_determinism);
    suite_add_tcase(s, tc);
    return s;
}
