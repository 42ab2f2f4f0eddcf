/* rng: counter-friendly deterministic randomness.
 * splitmix64 is a bijective mixer, so (seed, counter) -> state is a pure
 * function: the sampler can derive any meta-example's randomness without
 * replaying history, which is what makes resume and world-size changes exact. */
#ifndef FSPO_RNG_H
#define FSPO_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct { uint64_t state; } Rng;

static inline uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline Rng rng_seed(uint64_t seed, uint64_t stream)
{
    Rng r = { seed ^ (0xD1B54A32D192ED03ull * (stream + 1)) };
    splitmix64(&r.state);
    return r;
}

static inline uint64_t rng_u64(Rng *r) { return splitmix64(&r->state); }

/* Uniform in [0, 1) with 53 random bits. */
static inline double rng_uniform(Rng *r) { return (double)(rng_u64(r) >> 11) * 0x1.0p-53; }

/* Uniform integer in [0, n), n > 0 (Lemire's multiply-shift; bias < 2^-32 for our n). */
static inline uint32_t rng_below(Rng *r, uint32_t n) { return (uint32_t)(((rng_u64(r) >> 32) * (uint64_t)n) >> 32); }

/* Standard normal by Box-Muller (one value per call; simplicity over speed:
 * only initialization uses it). */
static inline double rng_normal(Rng *r)
{
    double u1 = rng_uniform(r), u2 = rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#endif
