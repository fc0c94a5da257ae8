/* The context PRNG: xoshiro256** (Blackman & Vigna), seeded through
 * splitmix64. Portable and identical on every platform; normals by the
 * Box-Muller transform in double. */
#include <math.h>

#include "../internal.h"

uint64_t peft__splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

peft_status peft_ctx_seed(peft_ctx *ctx, uint64_t seed)
{
    if (!ctx) return PEFT_ERR_INVALID_ARG;
    uint64_t s = seed;
    for (int i = 0; i < 4; i++) ctx->rng[i] = peft__splitmix64(&s);
    return PEFT_OK;
}

peft_status peft_ctx_rng_state(const peft_ctx *ctx, uint64_t state[4])
{
    if (!ctx || !state) return PEFT_ERR_INVALID_ARG;
    for (int i = 0; i < 4; i++) state[i] = ctx->rng[i];
    return PEFT_OK;
}

peft_status peft_ctx_set_rng_state(peft_ctx *ctx, const uint64_t state[4])
{
    if (!ctx || !state) return PEFT_ERR_INVALID_ARG;
    if ((state[0] | state[1] | state[2] | state[3]) == 0)
        return peft__fail(ctx, PEFT_ERR_INVALID_ARG, "peft_ctx_set_rng_state: the all-zero state is invalid");
    for (int i = 0; i < 4; i++) ctx->rng[i] = state[i];
    return PEFT_OK;
}

uint64_t peft_ctx_rand_u64(peft_ctx *ctx)
{
    if (!ctx) return 0;
    uint64_t *s = ctx->rng;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double peft_ctx_rand_uniform(peft_ctx *ctx)
{
    /* top 53 bits -> [0, 1) */
    return (double)(peft_ctx_rand_u64(ctx) >> 11) * 0x1.0p-53;
}

double peft_ctx_rand_normal(peft_ctx *ctx)
{
    /* one normal per call (no cached second value, so the state alone fully
     * describes the stream for checkpoints) */
    double u1 = peft_ctx_rand_uniform(ctx);
    double u2 = peft_ctx_rand_uniform(ctx);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586476925 * u2);
}
