/* Core: status strings, context options, allocator hooks and out-of-memory
 * behaviour, the arena, the PRNG, the thread pool, and two contexts used from
 * two threads at once. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "util/testutil.h"

/* ---- a test allocator that counts and can fail the N-th allocation ---- */
typedef struct test_alloc {
    int calls;
    int fail_at; /* 1-based call number to fail; 0 = never */
    int live;
} test_alloc;

static void *ta_alloc(void *user, size_t size, size_t align)
{
    test_alloc *t = user;
    t->calls++;
    if (t->fail_at && t->calls == t->fail_at) return NULL;
    void *p = NULL;
    if (posix_memalign(&p, align, size) != 0) return NULL;
    t->live++;
    return p;
}

static void ta_free(void *user, void *ptr)
{
    test_alloc *t = user;
    if (ptr) t->live--;
    free(ptr);
}

static peft_ctx_opts ta_opts(test_alloc *t, int n_threads)
{
    peft_ctx_opts o = peft_ctx_opts_default();
    o.alloc = ta_alloc;
    o.free = ta_free;
    o.alloc_user = t;
    o.n_threads = n_threads;
    return o;
}

START_TEST(api_status_strings)
{
    for (int s = 0; s < PEFT_STATUS_COUNT; s++) {
        ck_assert_ptr_nonnull(peft_status_str((peft_status)s));
        ck_assert_int_gt((int)strlen(peft_status_str((peft_status)s)), 0);
        ck_assert_str_ne(peft_status_str((peft_status)s), "unknown status");
        ck_assert(strncmp(peft_status_name((peft_status)s), "PEFT_", 5) == 0);
        for (int t = 0; t < s; t++) ck_assert_str_ne(peft_status_str((peft_status)s), peft_status_str((peft_status)t));
    }
    ck_assert_str_eq(peft_status_str((peft_status)999), "unknown status");
    ck_assert_str_eq(peft_status_str(PEFT_OK), "ok");
    ck_assert_str_eq(peft_status_name(PEFT_ERR_SHAPE), "PEFT_ERR_SHAPE");
    ck_assert_int_eq(peft_version_number(), PEFT_VERSION_NUMBER);
    ck_assert_str_eq(peft_version_string(), PEFT_VERSION_STRING);
}
END_TEST

START_TEST(api_ctx_options)
{
    peft_ctx *ctx = NULL;
    ck_assert_int_eq(peft_ctx_create(NULL, NULL), PEFT_ERR_INVALID_ARG);
    ck_assert_int_eq(peft_ctx_create(NULL, &ctx), PEFT_OK);
    ck_assert_int_ge(peft_ctx_n_threads(ctx), 1);
    ck_assert_str_eq(peft_ctx_errmsg(ctx), "");
    peft_ctx_destroy(ctx);
    peft_ctx_destroy(NULL); /* no-op */

    peft_ctx_opts o = peft_ctx_opts_default();
    o.n_threads = -1;
    ck_assert_int_eq(peft_ctx_create(&o, &ctx), PEFT_ERR_INVALID_ARG);
    ck_assert_ptr_null(ctx);
    o = peft_ctx_opts_default();
    o.alloc = ta_alloc; /* alloc without free */
    ck_assert_int_eq(peft_ctx_create(&o, &ctx), PEFT_ERR_INVALID_ARG);
    o = peft_ctx_opts_default();
    o.struct_size = 3;
    ck_assert_int_eq(peft_ctx_create(&o, &ctx), PEFT_ERR_INVALID_ARG);
    /* an older, shorter options struct is accepted: take only its fields */
    o = peft_ctx_opts_default();
    o.struct_size = offsetof(peft_ctx_opts, n_threads) + sizeof(int);
    o.n_threads = 1;
    ck_assert_int_eq(peft_ctx_create(&o, &ctx), PEFT_OK);
    ck_assert_int_eq(peft_ctx_n_threads(ctx), 1);
    peft_ctx_destroy(ctx);

    ck_assert_str_eq(peft_ctx_errmsg(NULL), "no context (NULL)");
}
END_TEST

START_TEST(api_errors_are_kept)
{
    peft_ctx *ctx = tu_ctx(1, 1);
    peft_tensor *t = NULL;
    int64_t shape[2] = {2, 0};
    ck_assert_int_eq(peft_tensor_create(ctx, PEFT_DTYPE_F32, 2, shape, &t), PEFT_ERR_INVALID_ARG);
    ck_assert_ptr_null(t);
    ck_assert_int_eq(peft_ctx_errcode(ctx), PEFT_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(peft_ctx_errmsg(ctx), "dim 1 is 0"));
    peft_ctx_clear_error(ctx);
    ck_assert_str_eq(peft_ctx_errmsg(ctx), "");
    ck_assert_int_eq(peft_ctx_errcode(ctx), PEFT_OK);
    peft_ctx_destroy(ctx);
}
END_TEST

static void log_collect(void *user, peft_log_level level, const char *msg)
{
    if (level == PEFT_LOG_ERROR) strncpy(user, msg, 255);
}

START_TEST(api_log_hook)
{
    char got[256] = "";
    peft_ctx_opts o = peft_ctx_opts_default();
    o.log = log_collect;
    o.log_user = got;
    peft_ctx *ctx = NULL;
    ck_assert_int_eq(peft_ctx_create(&o, &ctx), PEFT_OK);
    ck_assert_int_eq(peft_tensor_set_requires_grad(NULL, 1), PEFT_ERR_INVALID_ARG);
    int64_t shape[1] = {-3};
    peft_tensor *t;
    ck_assert_int_eq(peft_tensor_create(ctx, PEFT_DTYPE_F32, 1, shape, &t), PEFT_ERR_INVALID_ARG);
    ck_assert_str_eq(got, peft_ctx_errmsg(ctx));
    peft_ctx_destroy(ctx);
}
END_TEST

/* Fail the N-th allocation for N = 1.. until creation succeeds: every failure
 * must report NOMEM (or the pool's INTERNAL never happens here) and leak nothing. */
START_TEST(api_oom_ctx_create)
{
    int succeeded_at = 0;
    for (int n = 1; n < 50 && !succeeded_at; n++) {
        test_alloc t = {0, n, 0};
        peft_ctx_opts o = ta_opts(&t, 2);
        peft_ctx *ctx = NULL;
        peft_status st = peft_ctx_create(&o, &ctx);
        if (st == PEFT_OK) {
            succeeded_at = n;
            peft_ctx_destroy(ctx);
        } else {
            ck_assert_int_eq(st, PEFT_ERR_NOMEM);
            ck_assert_ptr_null(ctx);
        }
        ck_assert_int_eq(t.live, 0);
    }
    ck_assert_int_gt(succeeded_at, 1);
}
END_TEST

/* After the context exists, fail each later allocation of a small training
 * step in turn: the call reports NOMEM, nothing leaks, and the context still works. */
START_TEST(api_oom_step)
{
    for (int n = 1; n < 40; n++) {
        test_alloc t = {0, 0, 0};
        peft_ctx_opts o = ta_opts(&t, 1);
        peft_ctx *ctx = NULL;
        ck_assert_int_eq(peft_ctx_create(&o, &ctx), PEFT_OK);
        t.fail_at = t.calls + n;
        int64_t sx[2] = {3, 4}, sw[2] = {5, 4};
        peft_tensor *x = NULL, *w = NULL, *y = NULL, *loss = NULL;
        peft_status st = peft_tensor_create(ctx, PEFT_DTYPE_F32, 2, sx, &x);
        if (st == PEFT_OK) st = peft_tensor_create(ctx, PEFT_DTYPE_F32, 2, sw, &w);
        if (st == PEFT_OK) st = peft_tensor_set_requires_grad(w, 1);
        if (st == PEFT_OK) st = peft_linear(ctx, x, w, NULL, &y);
        if (st == PEFT_OK) st = peft_sum(ctx, y, &loss);
        if (st == PEFT_OK) st = peft_backward(ctx, loss, NULL);
        ck_assert_msg(st == PEFT_OK || st == PEFT_ERR_NOMEM, "n=%d: %s", n, peft_status_name(st));
        if (st == PEFT_ERR_NOMEM) ck_assert_int_gt((int)strlen(peft_ctx_errmsg(ctx)), 0);
        peft_graph_release(ctx);
        /* still usable once the allocator works again */
        t.fail_at = 0;
        peft_tensor *z = NULL;
        ck_assert_int_eq(peft_tensor_create(ctx, PEFT_DTYPE_F32, 2, sx, &z), PEFT_OK);
        peft_tensor_destroy(z);
        peft_tensor_destroy(x);
        peft_tensor_destroy(w);
        peft_ctx_destroy(ctx);
        ck_assert_int_eq(t.live, 0);
    }
}
END_TEST

START_TEST(numerics_arena)
{
    test_alloc t = {0, 0, 0};
    peft_ctx_opts o = ta_opts(&t, 1);
    peft_ctx *ctx = NULL;
    ck_assert_int_eq(peft_ctx_create(&o, &ctx), PEFT_OK);
    peft_arena *a = NULL;
    ck_assert_int_eq(peft_arena_create(ctx, 0, &a), PEFT_OK);
    void *p[64];
    size_t m0 = peft_arena_mark(a);
    ck_assert_uint_eq(m0, 0);
    for (int i = 0; i < 64; i++) {
        ck_assert_int_eq(peft_arena_alloc(a, (size_t)(i * 50000 + 1), &p[i]), PEFT_OK);
        ck_assert_uint_eq((uintptr_t)p[i] % 64, 0);
        memset(p[i], i, (size_t)(i * 50000 + 1)); /* ASan would catch an overlap or overrun */
    }
    for (int i = 0; i < 64; i++) ck_assert_int_eq(((unsigned char *)p[i])[0], i);
    size_t peak = peft_arena_peak(a);
    ck_assert_uint_ge(peak, 64 * 31 * 50000);
    /* rewind to a middle mark, allocate again */
    peft_arena_reset(a);
    ck_assert_uint_eq(peft_arena_used(a), 0);
    ck_assert_uint_ge(peft_arena_reserved(a), peak); /* merged into one chunk */
    int calls = t.calls;
    for (int i = 0; i < 64; i++) ck_assert_int_eq(peft_arena_alloc(a, (size_t)(i * 50000 + 1), &p[i]), PEFT_OK);
    ck_assert_int_eq(t.calls, calls); /* the second identical step allocates nothing */
    size_t mark = peft_arena_mark(a);
    void *q;
    ck_assert_int_eq(peft_arena_alloc(a, 1000, &q), PEFT_OK);
    ck_assert_int_eq(peft_arena_rewind(a, mark), PEFT_OK);
    ck_assert_uint_eq(peft_arena_used(a), mark);
    void *q2;
    ck_assert_int_eq(peft_arena_alloc(a, 1000, &q2), PEFT_OK);
    ck_assert_ptr_eq(q, q2);
    ck_assert_int_eq(peft_arena_rewind(a, peft_arena_used(a) + 64), PEFT_ERR_INVALID_ARG);
    peft_arena_destroy(a);

    /* a limited arena reports what it needed */
    ck_assert_int_eq(peft_arena_create(ctx, 4096, &a), PEFT_OK);
    ck_assert_int_eq(peft_arena_alloc(a, 4000, &q), PEFT_OK);
    ck_assert_int_eq(peft_arena_alloc(a, 200, &q), PEFT_ERR_NOMEM);
    ck_assert_ptr_nonnull(strstr(peft_ctx_errmsg(ctx), "needed 256 bytes, have 64"));
    peft_arena_destroy(a);
    peft_ctx_destroy(ctx);
    ck_assert_int_eq(t.live, 0);
}
END_TEST

START_TEST(numerics_ctx_arena_limit)
{
    peft_ctx_opts o = peft_ctx_opts_default();
    o.arena_limit = 1024;
    o.n_threads = 1;
    peft_ctx *ctx = NULL;
    ck_assert_int_eq(peft_ctx_create(&o, &ctx), PEFT_OK);
    int64_t s[2] = {32, 32};
    peft_tensor *x = tu_randn(ctx, 2, s, 1.0f, 0), *y = NULL;
    TU_EXPECT_FAIL(ctx, peft_scale(ctx, x, 2.0f, &y), PEFT_ERR_NOMEM, "peft_scale: arena: needed");
    ck_assert_ptr_null(y);
    peft_tensor_destroy(x);
    peft_ctx_destroy(ctx);
}
END_TEST

START_TEST(numerics_rng)
{
    peft_ctx *a = tu_ctx(1, 42), *b = tu_ctx(1, 42), *c = tu_ctx(1, 43);
    for (int i = 0; i < 100; i++) {
        uint64_t x = peft_ctx_rand_u64(a);
        ck_assert_uint_eq(x, peft_ctx_rand_u64(b));
        ck_assert_uint_ne(x, peft_ctx_rand_u64(c));
    }
    uint64_t st[4];
    ck_assert_int_eq(peft_ctx_rng_state(a, st), PEFT_OK);
    double u1 = peft_ctx_rand_uniform(a), n1 = peft_ctx_rand_normal(a);
    ck_assert_int_eq(peft_ctx_set_rng_state(c, st), PEFT_OK);
    ck_assert(u1 == peft_ctx_rand_uniform(c));
    ck_assert(n1 == peft_ctx_rand_normal(c));
    uint64_t zero[4] = {0, 0, 0, 0};
    ck_assert_int_eq(peft_ctx_set_rng_state(c, zero), PEFT_ERR_INVALID_ARG);
    /* moments */
    double s = 0, s2 = 0, umin = 1, umax = 0;
    const int N = 200000;
    for (int i = 0; i < N; i++) {
        double u = peft_ctx_rand_uniform(a);
        umin = fmin(umin, u), umax = fmax(umax, u);
        double z = peft_ctx_rand_normal(a);
        s += z, s2 += z * z;
    }
    ck_assert(umin >= 0.0 && umax < 1.0);
    ck_assert_double_lt(fabs(s / N), 0.01);
    ck_assert_double_lt(fabs(s2 / N - 1.0), 0.02);
    peft_ctx_destroy(a), peft_ctx_destroy(b), peft_ctx_destroy(c);
}
END_TEST

typedef struct cover_arg {
    int *hits;
} cover_arg;

static void cover_range(void *p, size_t begin, size_t end)
{
    cover_arg *a = p;
    for (size_t i = begin; i < end; i++) a->hits[i]++;
}

START_TEST(numerics_parallel_for_covers)
{
    peft_ctx *ctx = tu_ctx(4, 1);
    const size_t ns[] = {1, 2, 3, 7, 64, 1000, 4097};
    const size_t grains[] = {1, 3, 64, 5000};
    for (size_t i = 0; i < sizeof ns / sizeof *ns; i++)
        for (size_t g = 0; g < sizeof grains / sizeof *grains; g++)
            for (int rep = 0; rep < 20; rep++) {
                int *hits = calloc(ns[i], sizeof *hits);
                cover_arg a = {hits};
                peft__parallel_for(ctx, ns[i], grains[g], cover_range, &a);
                for (size_t k = 0; k < ns[i]; k++) ck_assert_int_eq(hits[k], 1);
                free(hits);
            }
    peft_ctx_destroy(ctx);
}
END_TEST

/* A kernel that runs a parallel loop from inside a parallel loop: the inner
 * one runs inline on the calling thread (no deadlock), and covers its range. */
typedef struct nested_arg {
    peft_ctx *ctx;
    int *hits; /* [8 * 64] */
} nested_arg;

static void inner_range(void *p, size_t begin, size_t end)
{
    int *row = p;
    for (size_t i = begin; i < end; i++) row[i]++;
}

static void outer_range(void *p, size_t begin, size_t end)
{
    nested_arg *a = p;
    for (size_t r = begin; r < end; r++) peft__parallel_for(a->ctx, 64, 1, inner_range, a->hits + r * 64);
}

START_TEST(numerics_nested_parallel_for)
{
    peft_ctx *ctx = tu_ctx(2, 1);
    int hits[8 * 64] = {0};
    nested_arg a = {ctx, hits};
    for (int rep = 0; rep < 50; rep++) peft__parallel_for(ctx, 8, 1, outer_range, &a);
    for (int i = 0; i < 8 * 64; i++) ck_assert_int_eq(hits[i], 50);
    peft_ctx_destroy(ctx);
}
END_TEST

/* ---- two contexts from two threads ---- */

typedef struct job {
    uint64_t seed;
    float out[64];
    float grad[48];
    peft_status st;
} job;

static void run_job(job *j)
{
    peft_ctx_opts o = peft_ctx_opts_default();
    o.seed = j->seed;
    o.n_threads = 2;
    peft_ctx *ctx = NULL;
    j->st = peft_ctx_create(&o, &ctx);
    if (j->st != PEFT_OK) return;
    int64_t sx[2] = {16, 12}, sw[2] = {4, 12};
    peft_tensor *x = NULL, *w = NULL, *y = NULL, *z = NULL, *loss = NULL;
    for (int rep = 0; rep < 50 && j->st == PEFT_OK; rep++) {
        peft_tensor_destroy(x), peft_tensor_destroy(w);
        x = w = NULL;
        peft_ctx_seed(ctx, j->seed);
        if ((j->st = peft_tensor_create(ctx, PEFT_DTYPE_F32, 2, sx, &x)) != PEFT_OK) break;
        if ((j->st = peft_tensor_create(ctx, PEFT_DTYPE_F32, 2, sw, &w)) != PEFT_OK) break;
        peft_tensor_init_normal(x, 0, 1);
        peft_tensor_init_kaiming_uniform(w, sqrtf(5.0f), 0);
        peft_tensor_set_requires_grad(w, 1);
        if ((j->st = peft_linear(ctx, x, w, NULL, &y)) != PEFT_OK) break;
        if ((j->st = peft_mul(ctx, y, y, &z)) != PEFT_OK) break;
        peft_tensor_get_f32(z, j->out, 64);
        if ((j->st = peft_mean(ctx, z, &loss)) != PEFT_OK) break;
        j->st = peft_backward(ctx, loss, NULL);
        memcpy(j->grad, peft_tensor_grad(w), sizeof j->grad);
    }
    peft_tensor_destroy(x), peft_tensor_destroy(w);
    peft_ctx_destroy(ctx);
}

static void *thread_main(void *p)
{
    run_job(p);
    return NULL;
}

START_TEST(numerics_two_contexts_two_threads)
{
    job alone[2] = {{.seed = 7}, {.seed = 8}}, together[2] = {{.seed = 7}, {.seed = 8}};
    run_job(&alone[0]);
    run_job(&alone[1]);
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, thread_main, &together[i]);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(alone[i].st, PEFT_OK);
        ck_assert_int_eq(together[i].st, PEFT_OK);
        ck_assert(memcmp(alone[i].out, together[i].out, sizeof alone[i].out) == 0);
        ck_assert(memcmp(alone[i].grad, together[i].grad, sizeof alone[i].grad) == 0);
    }
    ck_assert(memcmp(alone[0].out, alone[1].out, sizeof alone[0].out) != 0); /* different seeds differ */
}
END_TEST

Suite *core_suite(void)
{
    Suite *s = suite_create("core");
    TCase *tc = tcase_create("api");
    tcase_add_test(tc, api_status_strings);
    tcase_add_test(tc, api_ctx_options);
    tcase_add_test(tc, api_errors_are_kept);
    tcase_add_test(tc, api_log_hook);
    tcase_add_test(tc, api_oom_ctx_create);
    tcase_add_test(tc, api_oom_step);
    suite_add_tcase(s, tc);
    tc = tcase_create("numerics");
    tcase_add_test(tc, numerics_arena);
    tcase_add_test(tc, numerics_ctx_arena_limit);
    tcase_add_test(tc, numerics_rng);
    tcase_add_test(tc, numerics_parallel_for_covers);
    tcase_add_test(tc, numerics_nested_parallel_for);
    tcase_add_test(tc, numerics_two_contexts_two_threads);
    suite_add_tcase(s, tc);
    return s;
}
