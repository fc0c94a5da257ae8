/* libpeft — optimizers (SGD, AdamW), gradient clipping, learning-rate schedules.
 *
 * Intended usage:
 *
 *     peft_opt_opts o = peft_opt_opts_default(PEFT_OPT_ADAMW);
 *     o.lr = 2e-4f;
 *     peft_opt *opt;
 *     peft_opt_create(ctx, &o, &opt);
 *     int no_decay;
 *     peft_opt_add_group(opt, 1.0f, 0.0f, &no_decay);    // e.g. biases, norms
 *     peft_opt_add_param(opt, lora_a, 0);
 *     peft_opt_add_param(opt, lora_b, 0);
 *     peft_opt_add_param(opt, bias, no_decay);
 *     peft_opt_finalize(opt);                             // one flat grad buffer
 *     peft_schedule s = peft_schedule_default(PEFT_SCHED_COSINE);
 *     s.warmup_steps = 100; s.total_steps = 1000;
 *     for (int64_t k = 0; k < 1000; k++) {
 *         peft_opt_zero_grad(opt);
 *         ... forward, peft_backward (gradients land in the flat buffer) ...
 *         peft_opt_clip_grad_norm(opt, 1.0f, &norm);
 *         peft_opt_set_lr(opt, 2e-4f * peft_schedule_factor(&s, k));
 *         peft_opt_step(opt);
 *     }
 *     peft_opt_destroy(opt);
 *
 * Memory: peft_opt_finalize lays out ONE flat f32 gradient array holding every
 * parameter's gradient back to back (in the order the parameters were added)
 * and one flat array per optimizer moment (AdamW: m and v; SGD with momentum:
 * the momentum buffer), all allocated once through the context's hooks. Each
 * parameter's tensor gradient becomes a slice of the flat gradient, so
 * backward accumulates straight into it, zeroing is one memset, the global
 * gradient norm is one loop and a shard of the optimizer state is a range of
 * these arrays. peft_opt_step never allocates.
 *
 * The update rules follow PyTorch exactly (torch.optim.AdamW and
 * torch.optim.SGD, single-tensor code path, f32 arithmetic with the scalar
 * coefficients computed in double): tests compare against PyTorch to a
 * relative 1e-6. Results never depend on the thread count.
 *
 * An optimizer belongs to the context it was created with and, like the
 * context, is not thread-safe.
 */
#ifndef PEFT_OPTIM_H
#define PEFT_OPTIM_H

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Optimizer kinds. Values are fixed; new ones are only appended. */
typedef enum peft_opt_kind {
    PEFT_OPT_SGD = 0,
    PEFT_OPT_ADAMW = 1,
    PEFT_OPT_KIND_COUNT
} peft_opt_kind;

/* "sgd", "adamw"; "?" for an unknown value. */
PEFT_API const char *peft_opt_kind_name(peft_opt_kind kind);

/* Optimizer options. Always start from peft_opt_opts_default(kind); fields a
 * kind does not use are ignored. */
typedef struct peft_opt_opts {
    size_t struct_size;
    peft_opt_kind kind;
    /* Base learning rate (finite, >= 0). Defaults: AdamW 1e-3, SGD 1e-2. */
    float lr;
    /* Weight decay of group 0 (finite, >= 0). AdamW: decoupled,
     * p -= lr * wd * p before the update (default 0.01). SGD: coupled as in
     * torch.optim.SGD, g += wd * p (default 0). */
    float weight_decay;
    /* AdamW: betas in [0, 1) (0.9, 0.999) and eps > 0 (1e-8), added after the
     * square root of the bias-corrected second moment. The betas are doubles
     * because the bias corrections 1 - beta^t are computed in double, as
     * PyTorch does (0.999f is not 0.999). */
    double beta1;
    double beta2;
    float eps;
    /* SGD: momentum >= 0 (default 0), dampening in [0, 1] (default 0),
     * nesterov 0/1 (needs momentum > 0 and dampening 0, as in PyTorch). */
    float momentum;
    float dampening;
    int nesterov;
} peft_opt_opts;

/* The defaults for `kind` (see the fields). */
PEFT_API peft_opt_opts peft_opt_opts_default(peft_opt_kind kind);

typedef struct peft_opt peft_opt;

/* Create an optimizer (no parameters yet; group 0 exists with lr_scale 1 and
 * opts->weight_decay). opts is copied. PEFT_ERR_INVALID_ARG names a bad
 * field. On failure *out is NULL. */
PEFT_API peft_status peft_opt_create(peft_ctx *ctx, const peft_opt_opts *opts, peft_opt **out);

/* Free the optimizer and its flat arrays; NULL is a no-op. The parameter
 * tensors must still be alive (destroy the optimizer before them): each one
 * whose gradient is still a slice of the flat array gets a gradient buffer of
 * its own again, holding the current values (if that allocation fails the
 * tensor is left frozen with no gradient). */
PEFT_API void peft_opt_destroy(peft_opt *opt);

/* Add a parameter group (before finalize): its learning rate is
 * base lr * lr_scale (lr_scale finite, >= 0) and its weight decay replaces the
 * options' (finite, >= 0). *group receives its index (1, 2, ...). */
PEFT_API peft_status peft_opt_add_group(peft_opt *opt, float lr_scale, float weight_decay, int *group);

/* Add a parameter to a group (before finalize). t must be a long-lived f32
 * contiguous tensor of the optimizer's context that requires a gradient, and
 * must not be added twice (or share its data with another parameter). The
 * tensor is borrowed: it must outlive the optimizer. */
PEFT_API peft_status peft_opt_add_param(peft_opt *opt, peft_tensor *t, int group);

/* Allocate the flat gradient and moment arrays (moments zeroed) and point
 * every parameter's gradient at its slice of the flat gradient, copying the
 * gradient it had. After this, no more groups or parameters can be added
 * (PEFT_ERR_STATE), and the calls below become valid. PEFT_ERR_STATE when no
 * parameter was added or when called twice; PEFT_ERR_NOMEM. */
PEFT_API peft_status peft_opt_finalize(peft_opt *opt);

/* Elements in the flat arrays (the total numel of the parameters); 0 before
 * finalize or for NULL. */
PEFT_API size_t peft_opt_n_elems(const peft_opt *opt);
/* Number of parameters added. */
PEFT_API size_t peft_opt_n_params(const peft_opt *opt);
/* The flat gradient array (peft_opt_n_elems floats, parameters in the order
 * they were added). Borrowed, valid until destroy; NULL before finalize. */
PEFT_API float *peft_opt_grad(peft_opt *opt);

/* Set every gradient to zero (one memset). PEFT_ERR_STATE before finalize. */
PEFT_API peft_status peft_opt_zero_grad(peft_opt *opt);

/* The 2-norm of all gradients together, accumulated in double (independent
 * of the thread count). norm_out must not be NULL. A non-finite gradient
 * gives a non-finite norm (PEFT_OK). */
PEFT_API peft_status peft_opt_grad_norm(peft_opt *opt, float *norm_out);

/* torch.nn.utils.clip_grad_norm_ over all gradients: total = the 2-norm,
 * coef = min(1, max_norm / (total + 1e-6)), every gradient multiplied by coef.
 * max_norm finite > 0. *norm_out (may be NULL) receives the norm before
 * clipping. When the norm is not finite the gradients are left untouched (the
 * next peft_opt_step refuses them and names the element). */
PEFT_API peft_status peft_opt_clip_grad_norm(peft_opt *opt, float max_norm, float *norm_out);

/* One update of every parameter that currently requires a gradient
 * (parameters frozen with peft_tensor_set_requires_grad(t, 0) are skipped, as
 * PyTorch skips parameters without a gradient, and their step counts do not
 * advance). First the whole flat gradient is checked: any NaN or Inf returns
 * PEFT_ERR_NUMERIC ("non-finite gradient in parameter <name or #index>,
 * element N") with the weights, moments and step counts untouched. Then the
 * step count increments and the group learning rates base lr * lr_scale
 * apply. PEFT_ERR_STATE before finalize. */
PEFT_API peft_status peft_opt_step(peft_opt *opt);

/* Set the base learning rate (finite, >= 0; else PEFT_ERR_INVALID_ARG and the
 * rate is unchanged). Valid at any time. */
PEFT_API peft_status peft_opt_set_lr(peft_opt *opt, float lr);
/* The base learning rate (NaN for NULL). */
PEFT_API float peft_opt_get_lr(const peft_opt *opt);
/* Successful peft_opt_step calls so far (0 for NULL). */
PEFT_API int64_t peft_opt_step_count(const peft_opt *opt);

/* ---- checkpointing ----
 *
 * The state blob is little-endian and self-describing:
 *   magic "PEFTOPTS", u32 version (1), u32 kind, u64 step count,
 *   u64 n_elems, u64 n_params, u32 n_moments, f32 base lr,
 *   n_params x (u64 numel, u64 step count of the parameter),
 *   n_moments x n_elems f32 (AdamW: m then v; SGD with momentum: the buffer),
 *   u32 crc32 (zlib) of all the bytes before it.
 * Loading it into an optimizer built the same way (same kind, parameters of
 * the same sizes in the same order) restores the step counts, the moments and
 * the base lr, so a resumed run continues bit-identically. Hyper-parameters
 * and groups come from the code, not the blob. */

/* Bytes of the state blob (0 before finalize or for NULL). */
PEFT_API size_t peft_opt_state_size(const peft_opt *opt);
/* Write the blob into buf (size >= peft_opt_state_size, else
 * PEFT_ERR_INVALID_ARG). PEFT_ERR_STATE before finalize. */
PEFT_API peft_status peft_opt_save_state(const peft_opt *opt, void *buf, size_t size);
/* Restore from a blob of exactly `size` bytes. Everything is checked before
 * anything changes: PEFT_ERR_FORMAT names a bad magic, version, kind, element
 * or parameter count, parameter size, truncation or trailing bytes;
 * PEFT_ERR_CHECKSUM a crc mismatch. PEFT_ERR_STATE before finalize. */
PEFT_API peft_status peft_opt_load_state(peft_opt *opt, const void *buf, size_t size);

/* ======================================================================
 * Learning-rate schedules: pure functions of the step, no state.
 *
 * peft_schedule_factor(s, k) is the multiplier of the base learning rate for
 * the k-th update (0-based), with Hugging Face LambdaLR semantics: the k-th
 * optimizer step uses lambda(k), so with a warm-up the first update has
 * learning rate 0. W = warmup_steps, T = total_steps, r = min_lr_ratio:
 *
 *  CONSTANT   k < W: k / max(1, W); else 1.              (T, r unused)
 *  LINEAR     k < W: k / max(1, W); else
 *             r + (1 - r) * max(0, (T - k) / max(1, T - W)).
 *  COSINE     k < W: k / max(1, W); else, with
 *             progress = min(1, (k - W) / max(1, T - W)),
 *             r + (1 - r) * 0.5 * (1 + cos(pi * progress))   (half a cycle;
 *             r = 0 is get_cosine_schedule_with_warmup, r > 0 is
 *             get_cosine_with_min_lr_schedule_with_warmup; steps past T keep
 *             the final value r).
 *  SLANTED_TRIANGULAR  (ULMFiT eq. 3) cut = floor(T * cut_frac),
 *             p = k / cut for k < cut, else 1 - (k - cut) / (T - cut)
 *             (AllenNLP's denominator, the paper's cut * (1/cut_frac - 1)
 *             without its rounding), k clamped to T;
 *             factor (1 + p * (ratio - 1)) / ratio: peak 1 at k = cut, lowest
 *             1/ratio at k = T.                         (W must be 0, r unused)
 * Factors are computed in double and returned as float.
 * ====================================================================== */

typedef enum peft_schedule_kind {
    PEFT_SCHED_CONSTANT = 0,
    PEFT_SCHED_COSINE = 1,
    PEFT_SCHED_LINEAR = 2,
    PEFT_SCHED_SLANTED_TRIANGULAR = 3,
    PEFT_SCHED_KIND_COUNT
} peft_schedule_kind;

/* "constant", "cosine", "linear", "slanted_triangular"; "?" otherwise. */
PEFT_API const char *peft_schedule_kind_name(peft_schedule_kind kind);

/* Always start from peft_schedule_default(kind). */
typedef struct peft_schedule {
    size_t struct_size;
    peft_schedule_kind kind;
    int64_t warmup_steps; /* >= 0, <= total_steps for COSINE / LINEAR (default 0) */
    int64_t total_steps;  /* >= 1 for COSINE / LINEAR / SLANTED_TRIANGULAR (default 0: set it) */
    float min_lr_ratio;   /* in [0, 1] (default 0) */
    float cut_frac;       /* in (0, 1) (default 0.1) */
    float ratio;          /* >= 1 (default 32) */
} peft_schedule;

PEFT_API peft_schedule peft_schedule_default(peft_schedule_kind kind);

/* Check a schedule: PEFT_ERR_INVALID_ARG naming the field and its value. */
PEFT_API peft_status peft_schedule_check(peft_ctx *ctx, const peft_schedule *s);

/* The learning-rate multiplier for update `step` (0-based, >= 0). NaN for
 * NULL, a schedule that fails peft_schedule_check or a negative step (and
 * peft_opt_set_lr refuses NaN). Thread-safe. */
PEFT_API float peft_schedule_factor(const peft_schedule *s, int64_t step);

#ifdef __cplusplus
}
#endif
#endif /* PEFT_OPTIM_H */
