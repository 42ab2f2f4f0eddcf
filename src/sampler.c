/* sampler: see sampler.h. */
#include "src/sampler.h"

#include <stdlib.h>
#include <string.h>

#include "src/rng.h"
#include "src/util.h"

int sampler_init(Sampler *s, const Dataset *d, Split split, uint64_t seed, int n_fewshot, int n_fewshot_min,
                 int n_queries, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    if (n_fewshot < 0 || n_fewshot > SAMPLER_MAX_FEWSHOT)
        return set_err(err, errlen, "data.n_fewshot = %d outside [0, %d]", n_fewshot, SAMPLER_MAX_FEWSHOT);
    if (n_queries < 1 || n_queries > SAMPLER_MAX_QUERIES)
        return set_err(err, errlen, "data.n_queries = %d outside [1, %d]", n_queries, SAMPLER_MAX_QUERIES);
    if (n_fewshot_min > n_fewshot)
        return set_err(err, errlen, "data.n_fewshot_min = %d exceeds data.n_fewshot = %d", n_fewshot_min, n_fewshot);
    s->data = d;
    s->seed = seed;
    s->n_fewshot = n_fewshot;
    s->n_fewshot_min = n_fewshot_min;
    s->n_queries = n_queries;
    s->users = malloc(sizeof(int64_t) * (d->n_users ? d->n_users : 1));
    if (!s->users) return set_err(err, errlen, "out of memory for the sampler");
    int need = n_fewshot + n_queries;
    for (int64_t u = 0; u < d->n_users; u++) {
        if (d->user_split[u] != split) continue;
        if (d->user_pairs[2 * u + 1] >= need) s->users[s->n_users++] = u;
        else s->n_skipped_small++;
    }
    if (s->n_users == 0) {
        free(s->users);
        s->users = NULL;
        if (s->n_skipped_small == 0)
            return set_err(err, errlen, "the dataset has no %s users (fspo prep's --val-frac, --test-frac, "
                                        "--all-test and a row's \"split\" choose them%s)",
                           dataset_split_name(split),
                           split == SPLIT_TRAIN ? "" : "; fspo eval --split chooses the split evaluated");
        return set_err(err, errlen, "no %s user has the %d pairs a meta-example needs (data.n_fewshot %d + "
                                    "data.n_queries %d; %lld users have fewer)",
                       split == SPLIT_TRAIN ? "training" : dataset_split_name(split), need, n_fewshot, n_queries,
                       (long long)s->n_skipped_small);
    }
    return 0;
}

void sampler_free(Sampler *s)
{
    free(s->users);
    memset(s, 0, sizeof *s);
}

void sampler_draw(const Sampler *s, uint64_t g, MetaExample *out)
{
    Rng r = rng_seed(s->seed, g);
    int64_t u = s->users[rng_below(&r, (uint32_t)s->n_users)];
    int n = s->n_fewshot;
    if (s->n_fewshot_min >= 0) n = s->n_fewshot_min + (int)rng_below(&r, (uint32_t)(s->n_fewshot - s->n_fewshot_min + 1));
    int k = n + s->n_queries;
    int64_t first = s->data->user_pairs[2 * u], count = s->data->user_pairs[2 * u + 1];
    /* Floyd's algorithm: k distinct indices of [0, count) in O(k^2) with k <= 96, whatever count is */
    int64_t *pick = out->pairs;
    for (int64_t j = count - k, m = 0; j < count; j++, m++) {
        int64_t t = (int64_t)rng_below(&r, (uint32_t)(j + 1));
        int seen = 0;
        for (int64_t i = 0; i < m; i++) seen |= pick[i] == t;
        pick[m] = seen ? j : t;
    }
    /* Floyd's set is not uniformly ordered: shuffle so any pair may be context or query */
    for (int i = k - 1; i > 0; i--) {
        int j = (int)rng_below(&r, (uint32_t)(i + 1));
        int64_t tmp = pick[i];
        pick[i] = pick[j];
        pick[j] = tmp;
    }
    for (int i = 0; i < k; i++) pick[i] += first;
    out->user = u;
    out->n_fewshot = n;
    out->n_queries = s->n_queries;
    out->desc = NULL;
    out->desc_len = 0;
}
