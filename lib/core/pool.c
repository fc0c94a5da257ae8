/* The context's worker threads for the library's own kernels.
 *
 * parallel_for cuts [0, n) into at most n_threads contiguous ranges; the
 * calling thread runs range 0. Idle workers spin only briefly and then sleep
 * on a condition variable: long spinning would steal the cores that OpenBLAS's
 * own threads need for the GEMMs in between. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#include "../internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

#define SPIN_ROUNDS 2000

typedef struct worker {
    peft__pool *pool;
    int index; /* 1..n_workers: range index it runs */
    pthread_t thread;
} worker;

struct peft__pool {
    int n_workers;
    worker *workers;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint_fast64_t gen;
    atomic_int pending;
    atomic_bool in_region; /* a parallel_for is running: nested calls run inline */
    atomic_bool stop;
    /* the job of the current generation */
    peft__range_fn fn;
    void *arg;
    size_t n;
    size_t parts;
};

static void run_part(peft__pool *p, size_t part)
{
    if (part >= p->parts) return;
    size_t begin = p->n * part / p->parts, end = p->n * (part + 1) / p->parts;
    if (begin < end) p->fn(p->arg, begin, end);
}

/* Which range of a parallel_for this thread runs: 0 on the calling thread,
 * i on worker i. Kernels index per-thread workspaces with it. */
static _Thread_local int thread_slot;

int peft__pool_thread_slot(void) { return thread_slot; }

static void *worker_main(void *arg)
{
    worker *w = arg;
    thread_slot = w->index;
    peft__pool *p = w->pool;
    uint64_t seen = 0;
    for (;;) {
        uint64_t g = atomic_load_explicit(&p->gen, memory_order_acquire);
        for (int i = 0; i < SPIN_ROUNDS && g == seen && !atomic_load(&p->stop); i++) {
            CPU_RELAX();
            g = atomic_load_explicit(&p->gen, memory_order_acquire);
        }
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            while ((g = atomic_load(&p->gen)) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->cv, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) break;
        seen = g;
        run_part(p, (size_t)w->index);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_release);
    }
    return NULL;
}

peft_status peft__pool_create(peft_ctx *ctx, int n_threads, peft__pool **out)
{
    *out = NULL;
    peft__pool *p = peft__calloc(ctx, 1, sizeof *p);
    if (!p) return peft__fail(ctx, PEFT_ERR_NOMEM, "thread pool: out of memory");
    p->workers = peft__calloc(ctx, (size_t)n_threads, sizeof *p->workers);
    if (!p->workers) {
        peft__free(ctx, p);
        return peft__fail(ctx, PEFT_ERR_NOMEM, "thread pool: out of memory");
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    atomic_init(&p->gen, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->stop, false);
    atomic_init(&p->in_region, false);
    for (int i = 0; i < n_threads - 1; i++) {
        worker *w = &p->workers[i];
        w->pool = p;
        w->index = i + 1;
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            peft__pool_destroy(ctx, p);
            return peft__fail(ctx, PEFT_ERR_INTERNAL, "thread pool: cannot start thread %d", i + 1);
        }
        p->n_workers++;
    }
    *out = p;
    return PEFT_OK;
}

void peft__pool_destroy(peft_ctx *ctx, peft__pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_workers; i++) pthread_join(p->workers[i].thread, NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    peft__free(ctx, p->workers);
    peft__free(ctx, p);
}

void peft__parallel_for(peft_ctx *ctx, size_t n, size_t grain, peft__range_fn fn, void *arg)
{
    if (n == 0) return;
    if (grain == 0) grain = 1;
    size_t parts = (n + grain - 1) / grain;
    peft__pool *p = ctx->pool;
    /* nested (a kernel running on a worker calls into another parallel kernel,
     * e.g. a sgemm inside attention's per-head loop): run inline */
    if (!p || parts <= 1 || atomic_load_explicit(&p->in_region, memory_order_acquire)) {
        fn(arg, 0, n);
        return;
    }
    atomic_store_explicit(&p->in_region, true, memory_order_release);
    size_t max_parts = (size_t)p->n_workers + 1;
    if (parts > max_parts) parts = max_parts;
    p->fn = fn;
    p->arg = arg;
    p->n = n;
    p->parts = parts;
    atomic_store_explicit(&p->pending, p->n_workers, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    run_part(p, 0);
    int spins = 0;
    while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0) {
        if (++spins < SPIN_ROUNDS) CPU_RELAX();
        else sched_yield();
    }
    atomic_store_explicit(&p->in_region, false, memory_order_release);
}
