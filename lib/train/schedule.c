/* Learning-rate schedules: pure functions of the update index.
 *
 * The warm-up / cosine / linear formulas are Hugging Face's
 * (transformers/optimization.py: get_constant_schedule_with_warmup,
 * get_linear_schedule_with_warmup, get_cosine_schedule_with_warmup and
 * get_cosine_with_min_lr_schedule_with_warmup), used as LambdaLR multipliers:
 * update k uses lambda(k). The slanted triangular rate is ULMFiT's eq. 3 with
 * AllenNLP's decay denominator (T - cut). Everything is computed in double. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../internal.h"

const char *peft_schedule_kind_name(peft_schedule_kind kind)
{
    switch (kind) {
    case PEFT_SCHED_CONSTANT: return "constant";
    case PEFT_SCHED_COSINE: return "cosine";
    case PEFT_SCHED_LINEAR: return "linear";
    case PEFT_SCHED_SLANTED_TRIANGULAR: return "slanted_triangular";
    default: return "?";
    }
}

peft_schedule peft_schedule_default(peft_schedule_kind kind)
{
    peft_schedule s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    s.kind = kind;
    s.warmup_steps = 0;
    s.total_steps = 0;
    s.min_lr_ratio = 0.0f;
    s.cut_frac = 0.1f; /* ULMFiT paper and AllenNLP defaults */
    s.ratio = 32.0f;
    return s;
}

/* What is wrong with s, or NULL. Shared by check (which reports it) and
 * factor (which returns NaN). */
static const char *schedule_problem(const peft_schedule *s, char *buf, size_t size)
{
    if (s->struct_size != sizeof *s) {
        snprintf(buf, size, "struct_size %zu, expected %zu (use peft_schedule_default)", s->struct_size, sizeof *s);
        return buf;
    }
    if ((int)s->kind < 0 || s->kind >= PEFT_SCHED_KIND_COUNT) {
        snprintf(buf, size, "kind %d is not a schedule kind", (int)s->kind);
        return buf;
    }
    const char *kn = peft_schedule_kind_name(s->kind);
    if (s->warmup_steps < 0) {
        snprintf(buf, size, "%s: warmup_steps %lld must be >= 0", kn, (long long)s->warmup_steps);
        return buf;
    }
    if (s->total_steps < 0) {
        snprintf(buf, size, "%s: total_steps %lld must be >= 0", kn, (long long)s->total_steps);
        return buf;
    }
    if (!(s->min_lr_ratio >= 0.0f && s->min_lr_ratio <= 1.0f)) {
        snprintf(buf, size, "%s: min_lr_ratio %g must be in [0, 1]", kn, (double)s->min_lr_ratio);
        return buf;
    }
    if (!(s->cut_frac > 0.0f && s->cut_frac < 1.0f)) {
        snprintf(buf, size, "%s: cut_frac %g must be in (0, 1)", kn, (double)s->cut_frac);
        return buf;
    }
    if (!(isfinite(s->ratio) && s->ratio >= 1.0f)) {
        snprintf(buf, size, "%s: ratio %g must be finite and >= 1", kn, (double)s->ratio);
        return buf;
    }
    if (s->kind != PEFT_SCHED_CONSTANT && s->total_steps < 1) {
        snprintf(buf, size, "%s: total_steps %lld must be >= 1", kn, (long long)s->total_steps);
        return buf;
    }
    if ((s->kind == PEFT_SCHED_COSINE || s->kind == PEFT_SCHED_LINEAR) && s->warmup_steps > s->total_steps) {
        snprintf(buf, size, "%s: warmup_steps %lld > total_steps %lld", kn, (long long)s->warmup_steps,
                 (long long)s->total_steps);
        return buf;
    }
    if (s->kind == PEFT_SCHED_SLANTED_TRIANGULAR && s->warmup_steps != 0) {
        snprintf(buf, size, "%s: warmup_steps %lld must be 0 (the warm-up is cut_frac * total_steps)", kn,
                 (long long)s->warmup_steps);
        return buf;
    }
    return NULL;
}

peft_status peft_schedule_check(peft_ctx *ctx, const peft_schedule *s)
{
    if (!s) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_schedule_check: schedule is NULL");
    char buf[256];
    const char *why = schedule_problem(s, buf, sizeof buf);
    if (why) return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_schedule_check: %s", why);
    return PEFT_OK;
}

/* floor(T * cut_frac), where a product within f32 rounding of an integer
 * counts as that integer (0.7f is 0.69999999: 10 * 0.7f must give 7). */
static int64_t stlr_cut(int64_t T, float cut_frac)
{
    double x = (double)T * (double)cut_frac, r = nearbyint(x);
    int64_t cut = (int64_t)(fabs(x - r) <= 1e-6 * x ? r : floor(x));
    return cut < T ? cut : T - 1; /* keeps the decay denominator T - cut >= 1 */
}

float peft_schedule_factor(const peft_schedule *s, int64_t step)
{
    char buf[256];
    if (!s || step < 0 || schedule_problem(s, buf, sizeof buf)) return NAN;
    const double k = (double)step, W = (double)s->warmup_steps, T = (double)s->total_steps;
    const double r = (double)s->min_lr_ratio;
    if (s->kind != PEFT_SCHED_SLANTED_TRIANGULAR && step < s->warmup_steps) return (float)(k / fmax(1.0, W));
    switch (s->kind) {
    case PEFT_SCHED_CONSTANT: return 1.0f;
    case PEFT_SCHED_LINEAR: {
        double lam = fmax(0.0, (T - k) / fmax(1.0, T - W));
        return (float)(r + (1.0 - r) * lam);
    }
    case PEFT_SCHED_COSINE: {
        double progress = fmin(1.0, (k - W) / fmax(1.0, T - W));
        double lam = fmax(0.0, 0.5 * (1.0 + cos(M_PI * progress)));
        return (float)(r + (1.0 - r) * lam);
    }
    case PEFT_SCHED_SLANTED_TRIANGULAR: {
        int64_t t = step < s->total_steps ? step : s->total_steps;
        int64_t cut = stlr_cut(s->total_steps, s->cut_frac);
        double p = t < cut ? (double)t / (double)cut : 1.0 - (double)(t - cut) / (double)(s->total_steps - cut);
        double ratio = (double)s->ratio;
        return (float)((1.0 + p * (ratio - 1.0)) / ratio);
    }
    default: return NAN;
    }
}
