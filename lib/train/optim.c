/* Optimizers over one flat gradient array: SGD and AdamW with PyTorch's update
 * rules, the global gradient norm and its clipping, and the state blob.
 *
 * Layout (llm.c style): after finalize, parameter i owns the range
 * [offset_i, offset_i + numel_i) of every flat array:
 *   grad [n]  the gradients (each tensor's grad points at its range)
 *   m    [n]  AdamW first moment, or the SGD momentum buffer
 *   v    [n]  AdamW second moment
 * The update is one pass over [0, n) cut into ranges for the threads; each
 * element is updated independently, so the thread count cannot change the
 * result. Reductions (the norm) use fixed blocks of NORM_BLOCK elements summed
 * in double and then added in block order, which does not depend on the
 * thread partition either.
 *
 * The arithmetic reproduces torch.optim's single-tensor code path
 * (torch/optim/adamw.py _single_tensor_adamw, torch/optim/sgd.py
 * _single_tensor_sgd): each tensor op rounds to f32 in the same order, and
 * the scalar coefficients are computed in double, as Python does, then
 * rounded to f32 where PyTorch hands them to a float kernel. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "../internal.h"

#define NORM_BLOCK ((size_t)16384) /* elements per partial sum of the norm */
#define STEP_GRAIN ((size_t)16384) /* elements per thread range, at least */

#define STATE_MAGIC "PEFTOPTS"
#define STATE_VERSION 1u
#define STATE_HEADER 48 /* bytes before the per-parameter table */
#define STATE_PARAM 16  /* u64 numel, u64 steps */

typedef struct opt_group {
    float lr_scale;
    float weight_decay;
} opt_group;

typedef struct opt_param {
    peft_tensor *t;
    size_t offset; /* into the flat arrays */
    size_t n;      /* numel */
    int group;
    int64_t steps; /* updates applied to this parameter (PyTorch's state['step']) */
    /* the current step, set before the update pass */
    bool active;    /* requires a gradient now: update it */
    bool first;     /* SGD: the momentum buffer starts as a copy of d_p */
    float decay;    /* AdamW: 1 - lr*wd */
    float neg_step; /* AdamW: -lr / (1 - beta1^t); SGD: -lr */
    float bc2_sqrt; /* AdamW: sqrt(1 - beta2^t) */
    float wd;       /* SGD: coupled weight decay */
} opt_param;

struct peft_opt {
    peft_ctx *ctx;
    peft_opt_opts o;
    float lr; /* base learning rate */
    int64_t step;
    opt_group *groups;
    int n_groups, cap_groups;
    opt_param *params;
    size_t n_params, cap_params;
    bool finalized;
    size_t n;         /* elements in each flat array */
    float *grad;      /* [n] */
    float *m;         /* [n] AdamW m / SGD momentum buffer; NULL for plain SGD */
    float *v;         /* [n] AdamW v; NULL for SGD */
    int n_moments;    /* flat moment arrays: 2 (AdamW), 1 (SGD+momentum), 0 */
    double *partial;  /* [n_blocks] per-block sums of g^2 */
    size_t n_blocks;
};

const char *peft_opt_kind_name(peft_opt_kind kind)
{
    switch (kind) {
    case PEFT_OPT_SGD: return "sgd";
    case PEFT_OPT_ADAMW: return "adamw";
    default: return "?";
    }
}

peft_opt_opts peft_opt_opts_default(peft_opt_kind kind)
{
    peft_opt_opts o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.kind = kind;
    /* torch.optim.AdamW defaults; SGD's lr has no PyTorch default */
    o.lr = kind == PEFT_OPT_SGD ? 1e-2f : 1e-3f;
    o.weight_decay = kind == PEFT_OPT_SGD ? 0.0f : 1e-2f;
    o.beta1 = 0.9;
    o.beta2 = 0.999;
    o.eps = 1e-8f;
    o.momentum = 0.0f;
    o.dampening = 0.0f;
    o.nesterov = 0;
    return o;
}

static bool finite_nonneg(double x) { return isfinite(x) && x >= 0.0; }

static peft_status check_opts(peft_ctx *ctx, const peft_opt_opts *o)
{
    const char *fn = "peft_opt_create";
    if (o->struct_size != sizeof *o)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: opts.struct_size %zu, expected %zu (use peft_opt_opts_default)",
                          fn, o->struct_size, sizeof *o);
    if ((int)o->kind < 0 || o->kind >= PEFT_OPT_KIND_COUNT)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: opts.kind %d is not an optimizer kind", fn, (int)o->kind);
    if (!finite_nonneg(o->lr))
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: opts.lr %g must be finite and >= 0", fn, (double)o->lr);
    if (!finite_nonneg(o->weight_decay))
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: opts.weight_decay %g must be finite and >= 0", fn,
                          (double)o->weight_decay);
    if (o->kind == PEFT_OPT_ADAMW) {
        if (!(o->beta1 >= 0.0 && o->beta1 < 1.0))
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: opts.beta1 %g must be in [0, 1)", fn, o->beta1);
        if (!(o->beta2 >= 0.0 && o->beta2 < 1.0))
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: opts.beta2 %g must be in [0, 1)", fn, o->beta2);
        if (!(isfinite(o->eps) && o->eps > 0.0f))
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: opts.eps %g must be finite and > 0", fn, (double)o->eps);
    } else {
        if (!finite_nonneg(o->momentum))
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: opts.momentum %g must be finite and >= 0", fn,
                              (double)o->momentum);
        if (!(o->dampening >= 0.0f && o->dampening <= 1.0f))
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: opts.dampening %g must be in [0, 1]", fn,
                              (double)o->dampening);
        if (o->nesterov != 0 && o->nesterov != 1)
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: opts.nesterov %d must be 0 or 1", fn, o->nesterov);
        if (o->nesterov && (o->momentum <= 0.0f || o->dampening != 0.0f))
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG,
                              "%s: nesterov needs momentum > 0 and dampening 0 (have momentum %g, dampening %g)", fn,
                              (double)o->momentum, (double)o->dampening);
    }
    return PEFT_OK;
}

peft_status peft_opt_create(peft_ctx *ctx, const peft_opt_opts *opts, peft_opt **out)
{
    if (!out) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_opt_create: out is NULL");
    *out = NULL;
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    if (!opts) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_opt_create: opts is NULL");
    peft_status st = check_opts(ctx, opts);
    if (st != PEFT_OK) return st;
    peft_opt *opt = peft__calloc(ctx, 1, sizeof *opt);
    if (!opt) return peft__fail(ctx, PEFT_ERR_NOMEM, "peft_opt_create: out of memory");
    opt->ctx = ctx;
    opt->o = *opts;
    opt->lr = opts->lr;
    opt->cap_groups = 4;
    opt->groups = peft__calloc(ctx, (size_t)opt->cap_groups, sizeof *opt->groups);
    if (!opt->groups) {
        peft__free(ctx, opt);
        return peft__fail(ctx, PEFT_ERR_NOMEM, "peft_opt_create: out of memory");
    }
    opt->groups[0].lr_scale = 1.0f;
    opt->groups[0].weight_decay = opts->weight_decay;
    opt->n_groups = 1;
    *out = opt;
    return PEFT_OK;
}

/* Give the parameter back a gradient of its own (see the header). */
static void detach_param(peft_opt *opt, const opt_param *P)
{
    peft_tensor *t = P->t;
    float *slice = opt->grad + P->offset;
    if (t->grad != slice) return; /* the caller re-pointed it */
    bool trainable = peft__needs_grad(t);
    peft_tensor_set_grad_buffer(t, NULL);
    if (trainable && peft_tensor_set_requires_grad(t, 1) == PEFT_OK) memcpy(t->grad, slice, P->n * sizeof(float));
}

void peft_opt_destroy(peft_opt *opt)
{
    if (!opt) return;
    peft_ctx *ctx = opt->ctx;
    /* the moments go first: detaching copies every gradient out of the flat
     * buffer, and that copy should not stack on top of the whole state */
    peft__free(ctx, opt->m);
    peft__free(ctx, opt->v);
    peft__free(ctx, opt->partial);
    if (opt->finalized)
        for (size_t i = 0; i < opt->n_params; i++) detach_param(opt, &opt->params[i]);
    peft__free(ctx, opt->grad);
    peft__free(ctx, opt->params);
    peft__free(ctx, opt->groups);
    peft__free(ctx, opt);
}

/* Grow an array of `size`-byte items to hold at least `need` (no realloc in the hooks). */
static bool grow(peft_ctx *ctx, void **items, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap) return true;
    size_t ncap = *cap ? *cap : 8;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2) return false;
        ncap *= 2;
    }
    void *p = peft__calloc(ctx, ncap, size);
    if (!p) return false;
    if (*items) memcpy(p, *items, *cap * size);
    peft__free(ctx, *items);
    *items = p;
    *cap = ncap;
    return true;
}

peft_status peft_opt_add_group(peft_opt *opt, float lr_scale, float weight_decay, int *group)
{
    if (!opt) return PEFT_ERR_INVALID_ARG;
    peft_ctx *ctx = opt->ctx;
    const char *fn = "peft_opt_add_group";
    if (!group) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: group is NULL", fn);
    if (opt->finalized) return peft__fail(ctx, PEFT_ERR_STATE, "%s: the optimizer is already finalized", fn);
    if (!finite_nonneg(lr_scale))
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: lr_scale %g must be finite and >= 0", fn, (double)lr_scale);
    if (!finite_nonneg(weight_decay))
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: weight_decay %g must be finite and >= 0", fn,
                          (double)weight_decay);
    if (opt->n_groups == INT32_MAX) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: too many groups", fn);
    size_t cap = (size_t)opt->cap_groups;
    if (!grow(ctx, (void **)&opt->groups, &cap, (size_t)opt->n_groups + 1, sizeof *opt->groups))
        return peft__fail(ctx, PEFT_ERR_NOMEM, "%s: out of memory", fn);
    opt->cap_groups = cap > INT32_MAX ? INT32_MAX : (int)cap;
    opt->groups[opt->n_groups].lr_scale = lr_scale;
    opt->groups[opt->n_groups].weight_decay = weight_decay;
    *group = opt->n_groups++;
    return PEFT_OK;
}

/* "'name' (#i)" or "#i" for messages. */
static const char *param_label(const opt_param *P, size_t i, char *buf, size_t size)
{
    const char *name = peft_tensor_name(P->t);
    if (name[0]) snprintf(buf, size, "'%s' (#%zu)", name, i);
    else snprintf(buf, size, "#%zu", i);
    return buf;
}

peft_status peft_opt_add_param(peft_opt *opt, peft_tensor *t, int group)
{
    if (!opt) return PEFT_ERR_INVALID_ARG;
    peft_ctx *ctx = opt->ctx;
    const char *fn = "peft_opt_add_param";
    if (opt->finalized)
        return peft__fail(ctx, PEFT_ERR_STATE, "%s: the optimizer is already finalized (add every parameter first)", fn);
    if (!t) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: tensor is NULL", fn);
    const char *name = peft_tensor_name(t);
    if (t->ctx != ctx) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: tensor '%s' belongs to another context", fn, name);
    if (group < 0 || group >= opt->n_groups)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: group %d out of range (have %d)", fn, group, opt->n_groups);
    if (t->flags & PEFT__T_SCRATCH)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: tensor '%s' is an op output or view, not a parameter", fn, name);
    if (t->dtype != PEFT_DTYPE_F32)
        return peft__fail(ctx, PEFT_ERR_DTYPE, "%s: tensor '%s' is %s; parameters must be f32", fn, name,
                          peft_dtype_name(t->dtype));
    if (!peft__is_contiguous(t))
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: tensor '%s' is not contiguous", fn, name);
    if (!peft__needs_grad(t))
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG,
                          "%s: tensor '%s' does not require a gradient (peft_tensor_set_requires_grad first)", fn, name);
    for (size_t i = 0; i < opt->n_params; i++) {
        char lb[160];
        if (opt->params[i].t == t)
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: tensor '%s' was already added as parameter %s", fn, name,
                              param_label(&opt->params[i], i, lb, sizeof lb));
        if (opt->params[i].t->data == t->data)
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: tensor '%s' shares its data with parameter %s", fn, name,
                              param_label(&opt->params[i], i, lb, sizeof lb));
    }
    if (!grow(ctx, (void **)&opt->params, &opt->cap_params, opt->n_params + 1, sizeof *opt->params))
        return peft__fail(ctx, PEFT_ERR_NOMEM, "%s: out of memory", fn);
    opt_param *P = &opt->params[opt->n_params++];
    memset(P, 0, sizeof *P);
    P->t = t;
    P->n = (size_t)peft_tensor_numel(t);
    P->group = group;
    return PEFT_OK;
}

peft_status peft_opt_finalize(peft_opt *opt)
{
    if (!opt) return PEFT_ERR_INVALID_ARG;
    peft_ctx *ctx = opt->ctx;
    const char *fn = "peft_opt_finalize";
    if (opt->finalized) return peft__fail(ctx, PEFT_ERR_STATE, "%s: already finalized", fn);
    if (opt->n_params == 0) return peft__fail(ctx, PEFT_ERR_STATE, "%s: no parameters were added", fn);
    size_t n = 0, bytes;
    for (size_t i = 0; i < opt->n_params; i++) {
        opt->params[i].offset = n;
        if (!peft__add_ok(n, opt->params[i].n, &n))
            return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: total parameter count overflows", fn);
    }
    if (!peft__mul_ok(n, sizeof(float), &bytes))
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: total parameter count %zu too large", fn, n);
    int n_moments = opt->o.kind == PEFT_OPT_ADAMW ? 2 : opt->o.momentum != 0.0f ? 1 : 0;
    size_t n_blocks = (n + NORM_BLOCK - 1) / NORM_BLOCK;
    float *grad = peft__malloc(ctx, bytes);
    /* the moments are zeroed only after the parameters' own gradients are
     * freed below, so their pages are not touched while those still exist */
    float *m = n_moments >= 1 ? peft__malloc(ctx, bytes) : NULL;
    float *v = n_moments >= 2 ? peft__malloc(ctx, bytes) : NULL;
    double *partial = peft__calloc(ctx, n_blocks, sizeof(double));
    if (!grad || (n_moments >= 1 && !m) || (n_moments >= 2 && !v) || !partial) {
        peft__free(ctx, grad);
        peft__free(ctx, m);
        peft__free(ctx, v);
        peft__free(ctx, partial);
        return peft__fail(ctx, PEFT_ERR_NOMEM, "%s: cannot allocate %d flat arrays of %zu floats", fn, 1 + n_moments, n);
    }
    /* Carry over gradients already accumulated, then point each tensor at its slice. */
    for (size_t i = 0; i < opt->n_params; i++) {
        opt_param *P = &opt->params[i];
        float *slice = grad + P->offset;
        if (P->t->grad) memcpy(slice, P->t->grad, P->n * sizeof(float));
        else memset(slice, 0, P->n * sizeof(float));
        peft_status st = peft_tensor_set_grad_buffer(P->t, slice);
        PEFT_ASSERT(st == PEFT_OK); /* add_param refused scratch tensors, the only failure */
        (void)st;
    }
    if (m) memset(m, 0, bytes);
    if (v) memset(v, 0, bytes);
    opt->n = n;
    opt->grad = grad;
    opt->m = m;
    opt->v = v;
    opt->n_moments = n_moments;
    opt->partial = partial;
    opt->n_blocks = n_blocks;
    opt->finalized = true;
    return PEFT_OK;
}

size_t peft_opt_n_elems(const peft_opt *opt) { return opt && opt->finalized ? opt->n : 0; }
size_t peft_opt_n_params(const peft_opt *opt) { return opt ? opt->n_params : 0; }
float *peft_opt_grad(peft_opt *opt) { return opt && opt->finalized ? opt->grad : NULL; }

static peft_status need_finalized(const peft_opt *opt, const char *fn)
{
    if (!opt->finalized)
        return peft__fail(opt->ctx, PEFT_ERR_STATE, "%s: call peft_opt_finalize first", fn);
    return PEFT_OK;
}

peft_status peft_opt_zero_grad(peft_opt *opt)
{
    if (!opt) return PEFT_ERR_INVALID_ARG;
    peft_status st = need_finalized(opt, "peft_opt_zero_grad");
    if (st != PEFT_OK) return st;
    memset(opt->grad, 0, opt->n * sizeof(float));
    return PEFT_OK;
}

/* ---- the norm: fixed blocks, each summed in double ---- */

static void norm_range(void *arg, size_t begin, size_t end)
{
    peft_opt *opt = arg;
    for (size_t b = begin; b < end; b++) {
        size_t lo = b * NORM_BLOCK, hi = lo + NORM_BLOCK < opt->n ? lo + NORM_BLOCK : opt->n;
        const float *g = opt->grad;
        /* PEFT__VEC lane sums (vectorised at -O2), added in lane order: the
         * block's value depends only on the block */
        double lane[PEFT__VEC] = {0};
        size_t i = lo;
        for (; i + PEFT__VEC <= hi; i += PEFT__VEC)
            for (size_t j = 0; j < PEFT__VEC; j++) lane[j] += (double)g[i + j] * (double)g[i + j];
        double s = 0.0;
        for (size_t j = 0; j < PEFT__VEC; j++) s += lane[j];
        for (; i < hi; i++) s += (double)g[i] * (double)g[i];
        opt->partial[b] = s;
    }
}

/* Sum of squares of the flat gradient; non-finite iff some gradient is (a
 * block of finite floats cannot overflow in double). */
static double grad_sumsq(peft_opt *opt)
{
    peft__parallel_for(opt->ctx, opt->n_blocks, 1, norm_range, opt);
    double s = 0.0;
    for (size_t b = 0; b < opt->n_blocks; b++) s += opt->partial[b];
    return s;
}

peft_status peft_opt_grad_norm(peft_opt *opt, float *norm_out)
{
    if (!opt) return PEFT_ERR_INVALID_ARG;
    if (!norm_out) return peft__fail(opt->ctx, PEFT_ERR_INVALID_ARG, "peft_opt_grad_norm: norm_out is NULL");
    peft_status st = need_finalized(opt, "peft_opt_grad_norm");
    if (st != PEFT_OK) return st;
    *norm_out = (float)sqrt(grad_sumsq(opt));
    return PEFT_OK;
}

typedef struct scale_arg {
    float *g;
    float coef;
} scale_arg;

static void scale_range(void *arg, size_t begin, size_t end)
{
    const scale_arg *a = arg;
    for (size_t i = begin; i < end; i++) a->g[i] *= a->coef;
}

peft_status peft_opt_clip_grad_norm(peft_opt *opt, float max_norm, float *norm_out)
{
    if (!opt) return PEFT_ERR_INVALID_ARG;
    const char *fn = "peft_opt_clip_grad_norm";
    if (!(isfinite(max_norm) && max_norm > 0.0f))
        return peft__fail(opt->ctx, PEFT_ERR_INVALID_ARG, "%s: max_norm %g must be finite and > 0", fn, (double)max_norm);
    peft_status st = need_finalized(opt, fn);
    if (st != PEFT_OK) return st;
    double norm = sqrt(grad_sumsq(opt));
    if (norm_out) *norm_out = (float)norm;
    if (!isfinite(norm)) return PEFT_OK;
    /* torch: clip_coef = max_norm / (total_norm + 1e-6), clamped to 1, applied always */
    float total = (float)norm;
    float coef = max_norm / (total + 1e-6f);
    if (coef > 1.0f) coef = 1.0f;
    scale_arg a = {opt->grad, coef};
    peft__parallel_for(opt->ctx, opt->n, STEP_GRAIN, scale_range, &a);
    return PEFT_OK;
}

/* ---- the update ---- */

/* AdamW on one parameter's elements, in torch's op order:
 *   p *= 1 - lr*wd; m = m*b1 + (1-b1)*g; v = v*b2 + ((1-b2)*g)*g;
 *   denom = sqrt(v)/sqrt(1-b2^t) + eps; p += (-lr/(1-b1^t))*m / denom. */
static void adamw_kernel(const opt_param *P, float b1, float omb1, float b2, float omb2, float eps,
                         float *restrict p, const float *restrict g, float *restrict m, float *restrict v, size_t n)
{
    const float decay = P->decay, neg_step = P->neg_step, bc2_sqrt = P->bc2_sqrt;
    size_t i = 0;
#ifdef __AVX512F__
    /* the scalar loop below 16 lanes at a time, op for op (separate multiply
     * and add, correctly rounded sqrt and divide), so the bits are the same;
     * the scalar loop does not vectorise because sqrtf may set errno */
    const __m512 vdecay = _mm512_set1_ps(decay), vstep = _mm512_set1_ps(neg_step);
    const __m512 vbc2 = _mm512_set1_ps(bc2_sqrt), veps = _mm512_set1_ps(eps);
    const __m512 vb1 = _mm512_set1_ps(b1), vomb1 = _mm512_set1_ps(omb1);
    const __m512 vb2 = _mm512_set1_ps(b2), vomb2 = _mm512_set1_ps(omb2);
    for (; i + 16 <= n; i += 16) {
        const __m512 gi = _mm512_loadu_ps(g + i);
        const __m512 pi = _mm512_mul_ps(_mm512_loadu_ps(p + i), vdecay);
        const __m512 mi = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(m + i), vb1), _mm512_mul_ps(vomb1, gi));
        const __m512 vi =
            _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(v + i), vb2), _mm512_mul_ps(_mm512_mul_ps(vomb2, gi), gi));
        const __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), vbc2), veps);
        _mm512_storeu_ps(m + i, mi);
        _mm512_storeu_ps(v + i, vi);
        _mm512_storeu_ps(p + i, _mm512_add_ps(pi, _mm512_div_ps(_mm512_mul_ps(vstep, mi), denom)));
    }
#endif
    for (; i < n; i++) {
        float pi = p[i] * decay;
        float mi = m[i] * b1 + omb1 * g[i];
        float vi = v[i] * b2 + omb2 * g[i] * g[i];
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi + neg_step * mi / denom;
    }
}

/* SGD (torch.optim.SGD): d = g + wd*p; buf = first ? d : buf*mom + (1-damp)*d;
 * d = nesterov ? d + mom*buf : buf; p += -lr*d. buf is NULL without momentum. */
static void sgd_kernel(const opt_param *P, float mom, float omd, int nesterov, float *restrict p,
                       const float *restrict g, float *restrict buf, size_t n)
{
    const float wd = P->wd, neg_lr = P->neg_step;
    for (size_t i = 0; i < n; i++) {
        float d = g[i];
        if (wd != 0.0f) d = d + wd * p[i];
        if (buf) {
            float b = P->first ? d : buf[i] * mom + omd * d;
            buf[i] = b;
            d = nesterov ? d + mom * b : b;
        }
        p[i] = p[i] + neg_lr * d;
    }
}

/* The parameter whose slice holds flat element i (offsets strictly increase). */
static size_t param_at(const peft_opt *opt, size_t i)
{
    size_t lo = 0, hi = opt->n_params; /* answer in [lo, hi) */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (opt->params[mid].offset <= i) lo = mid;
        else hi = mid;
    }
    return lo;
}

static void step_range(void *arg, size_t begin, size_t end)
{
    const peft_opt *opt = arg;
    const peft_opt_opts *o = &opt->o;
    const float b1 = (float)o->beta1, omb1 = (float)(1.0 - o->beta1);
    const float b2 = (float)o->beta2, omb2 = (float)(1.0 - o->beta2);
    const float omd = (float)(1.0 - (double)o->dampening);
    for (size_t k = param_at(opt, begin); k < opt->n_params && opt->params[k].offset < end; k++) {
        const opt_param *P = &opt->params[k];
        if (!P->active) continue;
        size_t lo = begin > P->offset ? begin : P->offset;
        size_t hi = end < P->offset + P->n ? end : P->offset + P->n;
        float *p = (float *)P->t->data + (lo - P->offset);
        const float *g = opt->grad + lo;
        if (o->kind == PEFT_OPT_ADAMW)
            adamw_kernel(P, b1, omb1, b2, omb2, o->eps, p, g, opt->m + lo, opt->v + lo, hi - lo);
        else
            sgd_kernel(P, o->momentum, omd, o->nesterov, p, g, opt->m ? opt->m + lo : NULL, hi - lo);
    }
}

peft_status peft_opt_step(peft_opt *opt)
{
    if (!opt) return PEFT_ERR_INVALID_ARG;
    peft_ctx *ctx = opt->ctx;
    const char *fn = "peft_opt_step";
    peft_status st = need_finalized(opt, fn);
    if (st != PEFT_OK) return st;
    char lb[160];
    for (size_t k = 0; k < opt->n_params; k++)
        if (opt->params[k].t->grad != opt->grad + opt->params[k].offset)
            return peft__fail(ctx, PEFT_ERR_STATE,
                              "%s: the gradient of parameter %s no longer points into the optimizer's flat buffer", fn,
                              param_label(&opt->params[k], k, lb, sizeof lb));
    /* Refuse non-finite gradients before touching anything. */
    if (!isfinite(grad_sumsq(opt))) {
        size_t b = 0;
        while (b + 1 < opt->n_blocks && isfinite(opt->partial[b])) b++;
        size_t i = b * NORM_BLOCK;
        while (i + 1 < opt->n && isfinite(opt->grad[i])) i++;
        size_t k = param_at(opt, i);
        const opt_param *P = &opt->params[k];
        return peft__fail(ctx, PEFT_ERR_NUMERIC,
                          "%s: non-finite gradient in parameter %s, element %zu (%g); nothing was updated", fn,
                          param_label(P, k, lb, sizeof lb), i - P->offset, (double)opt->grad[i]);
    }
    for (size_t k = 0; k < opt->n_params; k++) {
        opt_param *P = &opt->params[k];
        const opt_group *G = &opt->groups[P->group];
        double lr = (double)opt->lr * (double)G->lr_scale;
        if (!isfinite(lr))
            return peft__fail(ctx, PEFT_ERR_NUMERIC, "%s: learning rate %g of group %d is not finite", fn, lr, P->group);
        P->active = peft__needs_grad(P->t);
        if (!P->active) continue;
        double t = (double)(P->steps + 1);
        if (opt->o.kind == PEFT_OPT_ADAMW) {
            double bc1 = 1.0 - pow(opt->o.beta1, t), bc2 = 1.0 - pow(opt->o.beta2, t);
            P->decay = (float)(1.0 - lr * (double)G->weight_decay);
            P->neg_step = (float)(-(lr / bc1));
            P->bc2_sqrt = (float)sqrt(bc2);
        } else {
            P->neg_step = (float)(-lr);
            P->wd = G->weight_decay;
            P->first = P->steps == 0;
        }
    }
    peft__parallel_for(ctx, opt->n, STEP_GRAIN, step_range, opt);
    for (size_t k = 0; k < opt->n_params; k++)
        if (opt->params[k].active) opt->params[k].steps++;
    opt->step++;
    return PEFT_OK;
}

peft_status peft_opt_set_lr(peft_opt *opt, float lr)
{
    if (!opt) return PEFT_ERR_INVALID_ARG;
    if (!finite_nonneg(lr))
        return peft__fail(opt->ctx, PEFT_ERR_INVALID_ARG, "peft_opt_set_lr: lr %g must be finite and >= 0", (double)lr);
    opt->lr = lr;
    return PEFT_OK;
}

float peft_opt_get_lr(const peft_opt *opt) { return opt ? opt->lr : NAN; }
int64_t peft_opt_step_count(const peft_opt *opt) { return opt ? opt->step : 0; }

/* ---- state blob ---- */

static void put_u32(uint8_t *p, uint32_t x)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(x >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t x)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(x >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p)
{
    uint32_t x = 0;
    for (int i = 0; i < 4; i++) x |= (uint32_t)p[i] << (8 * i);
    return x;
}
static uint64_t get_u64(const uint8_t *p)
{
    uint64_t x = 0;
    for (int i = 0; i < 8; i++) x |= (uint64_t)p[i] << (8 * i);
    return x;
}
static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static bool host_is_le(void)
{
    const uint16_t one = 1;
    uint8_t b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* n floats to/from little-endian bytes. */
static void put_f32s(uint8_t *dst, const float *src, size_t n)
{
    if (host_is_le()) {
        memcpy(dst, src, n * sizeof(float));
        return;
    }
    for (size_t i = 0; i < n; i++) put_u32(dst + 4 * i, f32_bits(src[i]));
}
static void get_f32s(float *dst, const uint8_t *src, size_t n)
{
    if (host_is_le()) {
        memcpy(dst, src, n * sizeof(float));
        return;
    }
    for (size_t i = 0; i < n; i++) dst[i] = bits_f32(get_u32(src + 4 * i));
}

static uint32_t crc_of(const uint8_t *p, size_t n)
{
    uLong crc = crc32(0L, Z_NULL, 0);
    while (n > 0) {
        uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
        crc = crc32(crc, p, chunk);
        p += chunk;
        n -= chunk;
    }
    return (uint32_t)crc;
}

/* Blob size for a layout; false on overflow. */
static bool blob_size(size_t n_params, size_t n_moments, size_t n, size_t *out)
{
    size_t table, moments, s;
    return peft__mul_ok(n_params, STATE_PARAM, &table) && peft__mul_ok(n, sizeof(float), &moments) &&
           peft__mul_ok(moments, n_moments, &moments) && peft__add_ok(STATE_HEADER, table, &s) &&
           peft__add_ok(s, moments, &s) && peft__add_ok(s, 4, &s) && (*out = s, true);
}

size_t peft_opt_state_size(const peft_opt *opt)
{
    size_t s;
    if (!opt || !opt->finalized || !blob_size(opt->n_params, (size_t)opt->n_moments, opt->n, &s)) return 0;
    return s;
}

peft_status peft_opt_save_state(const peft_opt *opt, void *buf, size_t size)
{
    if (!opt) return PEFT_ERR_INVALID_ARG;
    peft_ctx *ctx = opt->ctx;
    const char *fn = "peft_opt_save_state";
    if (!opt->finalized) return peft__fail(ctx, PEFT_ERR_STATE, "%s: call peft_opt_finalize first", fn);
    if (!buf) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: buf is NULL", fn);
    size_t need = peft_opt_state_size(opt);
    if (need == 0) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: state size overflows", fn);
    if (size < need)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: buffer of %zu bytes, need %zu (peft_opt_state_size)", fn,
                          size, need);
    uint8_t *p = buf;
    memcpy(p, STATE_MAGIC, 8);
    put_u32(p + 8, STATE_VERSION);
    put_u32(p + 12, (uint32_t)opt->o.kind);
    put_u64(p + 16, (uint64_t)opt->step);
    put_u64(p + 24, (uint64_t)opt->n);
    put_u64(p + 32, (uint64_t)opt->n_params);
    put_u32(p + 40, (uint32_t)opt->n_moments);
    put_u32(p + 44, f32_bits(opt->lr));
    uint8_t *q = p + STATE_HEADER;
    for (size_t k = 0; k < opt->n_params; k++, q += STATE_PARAM) {
        put_u64(q, (uint64_t)opt->params[k].n);
        put_u64(q + 8, (uint64_t)opt->params[k].steps);
    }
    const float *moments[2] = {opt->m, opt->v};
    for (int j = 0; j < opt->n_moments; j++, q += opt->n * sizeof(float)) put_f32s(q, moments[j], opt->n);
    put_u32(q, crc_of(p, (size_t)(q - p)));
    return PEFT_OK;
}

peft_status peft_opt_load_state(peft_opt *opt, const void *buf, size_t size)
{
    if (!opt) return PEFT_ERR_INVALID_ARG;
    peft_ctx *ctx = opt->ctx;
    const char *fn = "peft_opt_load_state";
    if (!opt->finalized) return peft__fail(ctx, PEFT_ERR_STATE, "%s: call peft_opt_finalize first", fn);
    if (!buf) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "%s: buf is NULL", fn);
    const uint8_t *p = buf;
    if (size < STATE_HEADER)
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: truncated: %zu bytes, the header alone is %d", fn, size,
                          STATE_HEADER);
    if (memcmp(p, STATE_MAGIC, 8) != 0)
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: bad magic (not an optimizer state from peft_opt_save_state)", fn);
    uint32_t version = get_u32(p + 8), kind = get_u32(p + 12), n_moments = get_u32(p + 40);
    uint64_t step = get_u64(p + 16), n = get_u64(p + 24), n_params = get_u64(p + 32);
    float lr = bits_f32(get_u32(p + 44));
    if (version != STATE_VERSION)
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: version %u (this library reads %u)", fn, version, STATE_VERSION);
    if (kind != (uint32_t)opt->o.kind)
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: kind mismatch: the state is for %s (%u), this optimizer is %s", fn,
                          peft_opt_kind_name((peft_opt_kind)kind), kind, peft_opt_kind_name(opt->o.kind));
    if (n != (uint64_t)opt->n)
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: element count mismatch: the state has %llu, this optimizer %zu", fn,
                          (unsigned long long)n, opt->n);
    if (n_params != (uint64_t)opt->n_params)
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: parameter count mismatch: the state has %llu, this optimizer %zu",
                          fn, (unsigned long long)n_params, opt->n_params);
    if (n_moments != (uint32_t)opt->n_moments)
        return peft__fail(ctx, PEFT_ERR_FORMAT,
                          "%s: moment array count mismatch: the state has %u, this optimizer %d (momentum differs?)",
                          fn, n_moments, opt->n_moments);
    if (step > (uint64_t)INT64_MAX)
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: step count %llu out of range", fn, (unsigned long long)step);
    if (!finite_nonneg(lr))
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: learning rate %g is not finite and >= 0", fn, (double)lr);
    size_t need;
    if (!blob_size(opt->n_params, (size_t)opt->n_moments, opt->n, &need))
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: state size overflows", fn);
    if (size < need)
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: truncated: %zu bytes, expected %zu", fn, size, need);
    if (size > need)
        return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: %zu trailing bytes after the state", fn, size - need);
    const uint8_t *q = p + STATE_HEADER;
    char lb[160];
    for (size_t k = 0; k < opt->n_params; k++, q += STATE_PARAM) {
        uint64_t numel = get_u64(q), steps = get_u64(q + 8);
        if (numel != (uint64_t)opt->params[k].n)
            return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: parameter %s has %llu elements in the state, %zu here", fn,
                              param_label(&opt->params[k], k, lb, sizeof lb), (unsigned long long)numel,
                              opt->params[k].n);
        if (steps > step)
            return peft__fail(ctx, PEFT_ERR_FORMAT, "%s: parameter %s has step count %llu > the optimizer's %llu", fn,
                              param_label(&opt->params[k], k, lb, sizeof lb), (unsigned long long)steps,
                              (unsigned long long)step);
    }
    uint32_t crc = get_u32(p + need - 4);
    if (crc != crc_of(p, need - 4))
        return peft__fail(ctx, PEFT_ERR_CHECKSUM, "%s: crc32 mismatch (stored %08x, computed %08x)", fn, crc,
                          crc_of(p, need - 4));
    /* All checked: apply. */
    q = p + STATE_HEADER;
    for (size_t k = 0; k < opt->n_params; k++, q += STATE_PARAM) opt->params[k].steps = (int64_t)get_u64(q + 8);
    float *moments[2] = {opt->m, opt->v};
    for (int j = 0; j < opt->n_moments; j++, q += opt->n * sizeof(float)) get_f32s(moments[j], q, opt->n);
    opt->step = (int64_t)step;
    opt->lr = lr;
    return PEFT_OK;
}
