/* Tokenizers from files: a GGUF's tokenizer.ggml.* metadata ("llama" =
 * SentencePiece-style BPE, "gpt2" = byte-level BPE), a Hugging Face
 * tokenizer.json, a llama2.c tokenizer.bin, or a directory with
 * tokenizer.json or vocab.json + merges.txt (or the original encoder.json +
 * vocab.bpe). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../internal.h"

static peft_status gguf_strings(peft_ctx *ctx, const peft_gguf *g, const char *key, size_t *n, const char ***strs,
                                size_t **lens)
{
    peft_gguf_type et;
    *strs = NULL;
    *lens = NULL;
    peft_status st = peft_gguf_get_arr(g, key, &et, n);
    if (st != PEFT_OK) return st;
    if (et != PEFT_GGUF_STRING) return peft__fail(ctx, PEFT_ERR_FORMAT, "GGUF: %s is not a string array", key);
    *strs = peft__calloc(ctx, *n + 1, sizeof **strs);
    *lens = peft__calloc(ctx, *n + 1, sizeof **lens);
    if (!*strs || !*lens) return peft__fail(ctx, PEFT_ERR_NOMEM, "GGUF: %s: out of memory", key);
    for (size_t i = 0; i < *n; i++)
        if ((st = peft_gguf_get_arr_str(g, key, i, &(*strs)[i], &(*lens)[i])) != PEFT_OK) return st;
    return PEFT_OK;
}

peft_status peft_tokenizer_from_gguf(peft_ctx *ctx, const peft_gguf *g, peft_tokenizer **out)
{
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_tokenizer_from_gguf: out is NULL");
    *out = NULL;
    if (!ctx || !g) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_tokenizer_from_gguf: NULL argument");
    const char *model = NULL;
    if (peft_gguf_get_str(g, "tokenizer.ggml.model", &model, NULL) != PEFT_OK)
        return peft__fail(ctx, PEFT_ERR_NOT_FOUND, "GGUF has no tokenizer (tokenizer.ggml.model)");
    int64_t v;
    int32_t bos = -1, eos = -1, unk = -1;
    if (peft_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &v) == PEFT_OK) bos = (int32_t)v;
    if (peft_gguf_get_int(g, "tokenizer.ggml.eos_token_id", &v) == PEFT_OK) eos = (int32_t)v;
    if (peft_gguf_get_int(g, "tokenizer.ggml.unknown_token_id", &v) == PEFT_OK) unk = (int32_t)v;
    size_t n = 0, n_merges = 0;
    const char **toks = NULL, **merges = NULL;
    size_t *lens = NULL, *mlens = NULL;
    float *scores = NULL;
    int32_t *types = NULL;
    peft_status st = gguf_strings(ctx, g, "tokenizer.ggml.tokens", &n, &toks, &lens);
    if (st == PEFT_OK && !strcmp(model, "llama")) {
        scores = peft__calloc(ctx, n + 1, sizeof *scores);
        types = peft__calloc(ctx, n + 1, sizeof *types);
        if (!scores || !types) st = peft__fail(ctx, PEFT_ERR_NOMEM, "GGUF tokenizer: out of memory");
        peft_gguf_type et;
        size_t cnt;
        bool has_scores = st == PEFT_OK && peft_gguf_get_arr(g, "tokenizer.ggml.scores", &et, &cnt) == PEFT_OK;
        if (has_scores && cnt != n)
            st = peft__fail(ctx, PEFT_ERR_FORMAT, "GGUF: %zu scores for %zu tokens", cnt, n);
        bool has_types = st == PEFT_OK && peft_gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &cnt) == PEFT_OK;
        if (has_types && cnt != n)
            st = peft__fail(ctx, PEFT_ERR_FORMAT, "GGUF: %zu token types for %zu tokens", cnt, n);
        for (size_t i = 0; st == PEFT_OK && i < n; i++) {
            if (has_scores) st = peft_gguf_get_arr_f32(g, "tokenizer.ggml.scores", i, &scores[i]);
            int64_t t = 1;
            if (st == PEFT_OK && has_types) st = peft_gguf_get_arr_int(g, "tokenizer.ggml.token_type", i, &t);
            types[i] = (int32_t)t;
        }
        if (st == PEFT_OK)
            st = peft_tokenizer_create_spm(ctx, n, toks, lens, scores, has_types ? types : NULL, bos, eos, unk, 1, out);
    } else if (st == PEFT_OK && !strcmp(model, "gpt2")) {
        st = gguf_strings(ctx, g, "tokenizer.ggml.merges", &n_merges, &merges, &mlens);
        if (st == PEFT_OK) st = peft_tokenizer_create_bpe(ctx, n, toks, lens, n_merges, merges, mlens, bos, eos, out);
    } else if (st == PEFT_OK) {
        st = peft__fail(ctx, PEFT_ERR_UNSUPPORTED, "GGUF tokenizer model \"%s\" is not supported (llama, gpt2)", model);
    }
    peft__free(ctx, toks), peft__free(ctx, lens), peft__free(ctx, merges), peft__free(ctx, mlens);
    peft__free(ctx, scores), peft__free(ctx, types);
    return st;
}

static bool readable(const char *dir, const char *name, char *out, size_t size)
{
    snprintf(out, size, "%s/%s", dir, name);
    return access(out, R_OK) == 0;
}

/* llama2.c tokenizer.bin does not store its size: count the records. */
static peft_status llama2c_count(peft_ctx *ctx, const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return peft__fail(ctx, PEFT_ERR_IO, "%s: %s", path, strerror(errno));
    int32_t maxlen;
    *n = 0;
    peft_status st = PEFT_OK;
    if (fread(&maxlen, 4, 1, f) != 1) st = peft__fail(ctx, PEFT_ERR_FORMAT, "%s: too short for a tokenizer", path);
    for (;;) {
        unsigned char rec[8];
        if (st != PEFT_OK || fread(rec, 1, 8, f) != 8) break;
        int32_t len;
        memcpy(&len, rec + 4, 4);
        if (len < 0 || len > 4096 || fseek(f, len, SEEK_CUR) != 0) {
            st = peft__fail(ctx, PEFT_ERR_FORMAT, "%s: token %zu has length %d", path, *n, len);
            break;
        }
        (*n)++;
    }
    fclose(f);
    return st;
}

/* A JSON object: '{' after optional whitespace (and a UTF-8 byte order mark).
 * A llama2.c tokenizer.bin starts with a small int32, so NULs follow. */
static bool looks_like_json(const char *b, size_t n)
{
    size_t i = n >= 3 && !memcmp(b, "\xEF\xBB\xBF", 3) ? 3 : 0;
    while (i < n && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r')) i++;
    if (i >= n || b[i] != '{') return false;
    return memchr(b, '\0', n) == NULL;
}

peft_status peft_tokenizer_load(peft_ctx *ctx, const char *path, peft_tokenizer **out)
{
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_tokenizer_load: out is NULL");
    *out = NULL;
    if (!ctx || !path) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_tokenizer_load: NULL argument");
    struct stat sb;
    if (stat(path, &sb) != 0) return peft__fail(ctx, PEFT_ERR_IO, "%s: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) {
        char v[4096], mg[4096];
        if (readable(path, "tokenizer.json", v, sizeof v)) return peft_tokenizer_load_json(ctx, v, out);
        if ((readable(path, "vocab.json", v, sizeof v) && readable(path, "merges.txt", mg, sizeof mg)) ||
            (readable(path, "encoder.json", v, sizeof v) && readable(path, "vocab.bpe", mg, sizeof mg)))
            return peft_tokenizer_load_gpt2(ctx, v, mg, out);
        return peft__fail(ctx, PEFT_ERR_NOT_FOUND,
                          "%s: no tokenizer.json, vocab.json + merges.txt or encoder.json + vocab.bpe in this "
                          "directory",
                          path);
    }
    FILE *f = fopen(path, "rb");
    if (!f) return peft__fail(ctx, PEFT_ERR_IO, "%s: %s", path, strerror(errno));
    char magic[64] = {0};
    size_t got = fread(magic, 1, sizeof magic, f);
    fclose(f);
    if (looks_like_json(magic, got)) return peft_tokenizer_load_json(ctx, path, out);
    if (got >= 4 && !memcmp(magic, "GGUF", 4)) {
        peft_gguf *g = NULL;
        peft_status st = peft_gguf_open(ctx, path, &g);
        if (st == PEFT_OK) st = peft_tokenizer_from_gguf(ctx, g, out);
        peft_gguf_close(g);
        return st;
    }
    size_t n = 0;
    peft_status st = llama2c_count(ctx, path, &n);
    if (st != PEFT_OK) return st;
    return peft_tokenizer_load_llama2c(ctx, path, n, out);
}
