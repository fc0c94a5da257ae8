/* Pointwise activations: GELU (tanh approximation), SiLU, ReLU.
 *
 * Each element is independent, so forward and backward split the flat index
 * range across threads; every element is computed by the same code whatever
 * the partition, so results are identical for any thread count. Backward
 * recomputes the derivative from the saved input x (nothing extra is stored). */
#include <math.h>

#include "../internal.h"

typedef enum { ACT_GELU, ACT_SILU, ACT_RELU } act_kind;

/* Elements per thread chunk: below this the pool costs more than the loop. */
#define ACT_GRAIN 4096

static const char *act_name(act_kind k)
{
    return k == ACT_GELU ? "peft_gelu" : k == ACT_SILU ? "peft_silu" : "peft_relu";
}

/* GPT-2's gelu_new (Hendrycks & Gimpel 2016, eq. for the tanh approximation):
 * 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_A 0.044715f

static inline float gelu_f(float x)
{
    float u = GELU_K * (x + GELU_A * x * x * x);
    return 0.5f * x * (1.0f + peft__tanhf(u));
}

/* d/dx: 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2), t = tanh(u).
 * the exp-based tanh saturates cleanly for large |u|, unlike a cosh-based form. */
static inline float gelu_df(float x)
{
    float u = GELU_K * (x + GELU_A * x * x * x);
    float t = peft__tanhf(u);
    float du = GELU_K * (1.0f + 3.0f * GELU_A * x * x);
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du;
}

/* sigmoid via exp(-x); below -87 (where exp(-x) leaves the float range) the limit 0, no NaN. */
static inline float sigmoid_f(float x) { return x < -87.0f ? 0.0f : 1.0f / (1.0f + peft__expf(-x)); }

static inline float silu_f(float x) { return x * sigmoid_f(x); }

/* d/dx x s(x) = s (1 + x (1 - s)). */
static inline float silu_df(float x)
{
    float s = sigmoid_f(x);
    return s * (1.0f + x * (1.0f - s));
}

typedef struct act_arg {
    act_kind kind;
    const float *x;   /* (n) */
    const float *dout; /* (n), backward only */
    float *out;       /* (n) forward: y; backward: dx (accumulated, or written when fresh) */
    bool fresh;       /* backward: dx is a new uninitialised buffer */
} act_arg;

/* y[i] = f(x[i]) over [begin, end): blocks of PEFT__VEC so gcc vectorises the
 * (branch-free) function at -O2, then the same code on the tail. The output
 * never overlaps the input (a new arena tensor). */
#define ACT_FWD_LOOP(F)                                                       \
    do {                                                                      \
        size_t i_ = begin;                                                    \
        for (; i_ + PEFT__VEC <= end; i_ += PEFT__VEC)                        \
            PEFT__IVDEP                                                       \
            for (size_t j_ = 0; j_ < PEFT__VEC; j_++) y[i_ + j_] = F(x[i_ + j_]); \
        for (; i_ < end; i_++) y[i_] = F(x[i_]);                              \
    } while (0)

/* dx[i] (+)= f'(x[i]) dout[i] (OP is += or =), blocked the same way. dx is
 * x's gradient buffer, never x's data or dout. */
#define ACT_BWD_LOOP(DF, OP)                                                                     \
    do {                                                                                         \
        size_t i_ = begin;                                                                       \
        for (; i_ + PEFT__VEC <= end; i_ += PEFT__VEC)                                           \
            PEFT__IVDEP                                                                          \
            for (size_t j_ = 0; j_ < PEFT__VEC; j_++) dx[i_ + j_] OP DF(x[i_ + j_]) * dout[i_ + j_]; \
        for (; i_ < end; i_++) dx[i_] OP DF(x[i_]) * dout[i_];                                   \
    } while (0)

static inline float relu_f(float x) { return x > 0.0f ? x : 0.0f; }
/* the subgradient at 0 is taken as 0, like PyTorch */
static inline float relu_df(float x) { return x > 0.0f ? 1.0f : 0.0f; }

static void act_fwd_range(void *p, size_t begin, size_t end)
{
    const act_arg *a = p;
    const float *x = a->x;
    float *y = a->out;
    switch (a->kind) {
    case ACT_GELU: ACT_FWD_LOOP(gelu_f); break;
    case ACT_SILU: ACT_FWD_LOOP(silu_f); break;
    case ACT_RELU: ACT_FWD_LOOP(relu_f); break;
    }
}

static void act_bwd_range(void *p, size_t begin, size_t end)
{
    const act_arg *a = p;
    const float *x = a->x, *dout = a->dout;
    float *dx = a->out;
    if (a->fresh) {
        switch (a->kind) {
        case ACT_GELU: ACT_BWD_LOOP(gelu_df, =); break;
        case ACT_SILU: ACT_BWD_LOOP(silu_df, =); break;
        case ACT_RELU: ACT_BWD_LOOP(relu_df, =); break;
        }
        return;
    }
    switch (a->kind) {
    case ACT_GELU: ACT_BWD_LOOP(gelu_df, +=); break;
    case ACT_SILU: ACT_BWD_LOOP(silu_df, +=); break;
    case ACT_RELU: ACT_BWD_LOOP(relu_df, +=); break;
    }
}

static peft_status act_backward(peft_ctx *ctx, peft__node *node)
{
    peft_tensor *x = node->in[0];
    float *dx;
    bool fresh;
    peft_status st = peft__grad_buffer_fresh(ctx, x, &dx, &fresh);
    if (st != PEFT_OK) return st;
    act_arg a = {*(const act_kind *)node->saved, x->data, node->out->grad, dx, fresh};
    peft__parallel_for(ctx, (size_t)peft_tensor_numel(x), ACT_GRAIN, act_bwd_range, &a);
    return PEFT_OK;
}

static peft_status activation(peft_ctx *ctx, act_kind kind, peft_tensor *x, peft_tensor **out)
{
    const char *op = act_name(kind);
    peft_tensor *y;
    peft_status st = peft__unary_begin(ctx, op, x, out, &y);
    if (st != PEFT_OK) return st;
    act_arg a = {kind, x->data, NULL, y->data, false};
    peft__parallel_for(ctx, (size_t)peft_tensor_numel(x), ACT_GRAIN, act_fwd_range, &a);
    if (peft__should_record(ctx, &x, 1)) {
        act_kind *saved = peft__scratch(ctx, sizeof *saved, op);
        if (!saved) return PEFT_ERR_NOMEM;
        *saved = kind;
        if ((st = peft__record(ctx, op, act_backward, y, &x, 1, saved)) != PEFT_OK) return st;
    }
    *out = y;
    return PEFT_OK;
}

peft_status peft_gelu(peft_ctx *ctx, peft_tensor *x, peft_tensor **out)
{
    return activation(ctx, ACT_GELU, x, out);
}

peft_status peft_silu(peft_ctx *ctx, peft_tensor *x, peft_tensor **out)
{
    return activation(ctx, ACT_SILU, x, out);
}

peft_status peft_relu(peft_ctx *ctx, peft_tensor *x, peft_tensor **out)
{
    return activation(ctx, ACT_RELU, x, out);
}
