/* Helpers shared by the Check suites. */
#ifndef PEFT_TESTUTIL_H
#define PEFT_TESTUTIL_H

#include <check.h>
#include <stdint.h>

#include "peft/peft.h"

/* A context with a fixed seed and thread count (0 = all cores). */
peft_ctx *tu_ctx(int n_threads, uint64_t seed);

/* A long-lived f32 tensor filled from N(0, scale) (seeded by the context). */
peft_tensor *tu_randn(peft_ctx *ctx, int ndim, const int64_t *shape, float scale, int requires_grad);
/* An i32 tensor from values. */
peft_tensor *tu_ids(peft_ctx *ctx, int ndim, const int64_t *shape, const int32_t *values);

/* The forward of an op under test: build `out` from `in` (n inputs). */
typedef peft_status (*tu_forward_fn)(peft_ctx *ctx, peft_tensor **in, void *arg, peft_tensor **out);

typedef struct tu_gradcheck_opts {
    double h;          /* finite-difference step (default 1e-2) */
    double rtol, atol; /* |analytic - numeric| <= atol + rtol * max(|analytic|, |numeric|) */
    int max_checks;    /* elements checked per input (random subset when larger) */
} tu_gradcheck_opts;
tu_gradcheck_opts tu_gradcheck_defaults(void);

/* Compare the analytic gradient of L = sum(out * R) (R fixed random) with
 * respect to every input that requires a gradient against a 4-point central
 * finite difference evaluated in double. Fails the test with the worst element. */
void tu_gradcheck(peft_ctx *ctx, const char *label, tu_forward_fn f, peft_tensor **in, int n, void *arg,
                  const tu_gradcheck_opts *opts);

/* Relative error max |a-b| / max(1e-6, max|b|) over n floats. */
double tu_max_rel_err(const float *a, const float *b, size_t n);

/* Assert a call failed with `code` and left a message containing `needle`. */
#define TU_EXPECT_FAIL(ctx, call, code, needle)                                                          \
    do {                                                                                              \
        peft_status st_ = (call);                                                                     \
        ck_assert_msg(st_ == (code), "%s: expected %s, got %s (%s)", #call, peft_status_name(code),   \
                      peft_status_name(st_), peft_ctx_errmsg(ctx));                                   \
        ck_assert_msg(strstr(peft_ctx_errmsg(ctx), (needle)) != NULL, "message '%s' lacks '%s'",       \
                      peft_ctx_errmsg(ctx), (needle));                                                \
    } while (0)

#define TU_OK(ctx, call)                                                                              \
    do {                                                                                              \
        peft_status st_ = (call);                                                                     \
        ck_assert_msg(st_ == PEFT_OK, "%s failed: %s: %s", #call, peft_status_name(st_),             \
                      peft_ctx_errmsg(ctx));                                                          \
    } while (0)

/* Load a model (failing the test with the library's message); keep_dtype as in
 * peft_model_load_opts. */
peft_model *tu_load_model(peft_ctx *ctx, const char *path, int keep_dtype);
/* The logits of ids [B, T] (no gradients), copied into a malloc'd buffer of *n floats. */
float *tu_logits(peft_ctx *ctx, peft_model *m, const int32_t *ids, int64_t B, int64_t T, size_t *n);

/* Run a program with arguments (through the shell), capture its standard
 * output (malloc'd into *out) and its standard error (tu_stderr, until the
 * next run). Returns the exit status (-1 if it did not exit). */
int tu_run_prog(const char *prog, const char *args, char **out);
/* The same for the peft program: $PEFT_CLI, else build/bin/peft. */
int tu_run_peft(const char *args, char **out);
const char *tu_stderr(void);
/* Encode all of text with tok (malloc'd ids, *n of them), and decode ids
 * back (malloc'd, NUL-terminated, *len bytes); both check the size query
 * against the result. */
int32_t *tu_encode(peft_ctx *ctx, peft_tokenizer *tok, const char *text, size_t len, int bos, int eos, size_t *n);
char *tu_decode(peft_ctx *ctx, peft_tokenizer *tok, const int32_t *ids, size_t n, size_t *len);

/* Run `peft <args>`, require exit 0 and a JSON object on stdout; the caller
 * frees it with cJSON_Delete. */
struct cJSON *tu_peft_json(const char *args);
/* o[key], required to be a finite number. */
double tu_json_num(const struct cJSON *o, const char *key);

/* An allocator for out-of-memory tests: fails the allocation after
 * `countdown` successful ones (countdown < 0: never), and a one-thread
 * context that allocates through it. */
typedef struct tu_oom {
    long countdown;
} tu_oom;
peft_ctx *tu_oom_ctx(tu_oom *o);

/* Directory of the shared models (../shared/models), or NULL when absent. */
const char *tu_models_dir(void);

#endif
