/* sampler: meta-examples as a pure function of (seed, global index g).
 *
 * Meta-example g picks one user of the split, then N few-shot and Q query
 * pairs of that user, distinct and in random order, all from a counter-based
 * RNG seeded by (seed, g). Nothing depends on the world size or on what was
 * drawn before, so step s of any run uses g in [s*B, (s+1)*B) and a resume
 * is "set s": exact at any world size. A sampler draws from one split
 * (io/dataset.h's Split): training uses SPLIT_TRAIN, whose users are never
 * validation or test users; evaluation uses one of the other two. */
#ifndef FSPO_SAMPLER_H
#define FSPO_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "io/dataset.h"

#define SAMPLER_MAX_FEWSHOT 64
#define SAMPLER_MAX_QUERIES 32

typedef struct {
    int64_t user;      /* dataset user index */
    int n_fewshot;     /* N: pairs[0..N) are the in-context examples */
    int n_queries;     /* Q: pairs[N..N+Q) are scored */
    int64_t pairs[SAMPLER_MAX_FEWSHOT + SAMPLER_MAX_QUERIES]; /* dataset pair indices */
    /* the user's description, written into the context after the pairs
     * (src/pack.h); NULL = none. The sampler never sets it: the caller
     * decides (train: data.user_desc, eval: eval.user_desc) */
    const int32_t *desc;
    int desc_len;
} MetaExample;

typedef struct {
    const Dataset *data;
    uint64_t seed;
    int n_fewshot, n_fewshot_min, n_queries; /* n_fewshot_min < 0: N is always n_fewshot */
    int64_t *users; /* eligible users of the split: at least n_fewshot + n_queries pairs */
    int64_t n_users;
    int64_t n_skipped_small; /* users of the split with too few pairs */
} Sampler;

/* 0, or -1 with a message (no eligible user, N or Q out of range). */
int sampler_init(Sampler *s, const Dataset *d, Split split, uint64_t seed, int n_fewshot, int n_fewshot_min,
                 int n_queries, char *err, size_t errlen);
void sampler_free(Sampler *s);

/* Meta-example number g. */
void sampler_draw(const Sampler *s, uint64_t g, MetaExample *out);

#endif
