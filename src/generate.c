/* generate: see generate.h. */
#include "src/generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "src/pool.h"
#include "src/threads.h"
#include "src/tokenizer.h"
#include "src/util.h"

/* Prompt processing feeds the cache this many tokens per model_decode:
 * large enough for sgemm to pay off, small enough for little scratch. */
#define PREFILL_CHUNK 64

size_t sample_prompt_len(const Tokenizer *tok, const PairSpans *shots, int n_shots, const TokSpan *desc,
                         TokSpan query)
{
    return (size_t)pack_render_context(tok, shots, n_shots, desc, NULL, NULL) +
           (size_t)pack_render_query(tok, query, NULL);
}

int sample_render_prompt(const Tokenizer *tok, const PairSpans *shots, int n_shots, const TokSpan *desc,
                         TokSpan query, int32_t *out, int cap)
{
    if (sample_prompt_len(tok, shots, n_shots, desc, query) > (size_t)cap) return -1;
    int n = pack_render_context(tok, shots, n_shots, desc, out, NULL);
    return n + pack_render_query(tok, query, out + n);
}

int sample_render_desc_prompt(const Tokenizer *tok, const PairSpans *shots, int n_shots, int32_t *out, int cap)
{
    if (pack_render_desc_prompt(tok, shots, n_shots, NULL) > cap) return -1;
    return pack_render_desc_prompt(tok, shots, n_shots, out);
}

typedef struct {
    float p;
    int id;
} Candidate;

/* Most likely first; equal probabilities by lower id, so the order (and
 * hence the draw) never depends on qsort's instability. */
static int by_prob_desc(const void *a, const void *b)
{
    const Candidate *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return x->id - y->id;
}

int sample_token(const float *logits, int V, double temperature, double top_p, Rng *rng, void *scratch)
{
    int best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    if (temperature <= 0) return best;
    Candidate *c = scratch;
    double sum = 0, inv_t = 1.0 / temperature;
    for (int i = 0; i < V; i++) {
        c[i].p = (float)exp((logits[i] - logits[best]) * inv_t);
        c[i].id = i;
        sum += c[i].p;
    }
    qsort(c, (size_t)V, sizeof *c, by_prob_desc);
    /* the nucleus: the shortest prefix whose mass reaches top_p (at least one token) */
    int keep = 0;
    double mass = 0, target = (top_p < 1 ? top_p : 1) * sum;
    while (keep < V && (keep == 0 || mass < target)) mass += c[keep++].p;
    double u = rng_uniform(rng) * mass, acc = 0;
    for (int i = 0; i < keep; i++) {
        acc += c[i].p;
        if (u < acc) return c[i].id;
    }
    return c[keep - 1].id; /* u landed on the rounding edge */
}

struct Generator {
    Model *m;
    const Tokenizer *tok;
    KVCache *kv;
    float *logits;  /* [PREFILL_CHUNK, V] */
    void *scratch;  /* sample_token's candidates */
};

Generator *generator_create(Model *m, const Tokenizer *tok)
{
    Generator *g = calloc(1, sizeof *g);
    if (!g) fatal(EXIT_RUNTIME, "out of memory for the generator");
    g->m = m;
    g->tok = tok;
    g->kv = kv_create(m, PREFILL_CHUNK);
    g->logits = xmalloc_aligned(sizeof(float) * PREFILL_CHUNK * (size_t)m->cfg.vocab, "generation logits");
    g->scratch = xmalloc_aligned(sizeof(Candidate) * (size_t)m->cfg.vocab, "sampling scratch");
    return g;
}

void generator_free(Generator *g)
{
    if (!g) return;
    kv_free(g->kv);
    xfree_aligned(g->logits);
    xfree_aligned(g->scratch);
    free(g);
}

const char *sample_stop_name(int stop)
{
    return stop == SAMPLE_STOP_EOS ? "eos" : stop == SAMPLE_STOP_MAX_TOKENS ? "max tokens" : "context full";
}

int generate(Generator *g, const int32_t *prompt, int n_prompt, const SampleConfig *c, uint64_t seed, int32_t *out,
             int cap_out, SampleResult *res)
{
    Model *m = g->m;
    int V = m->cfg.vocab;
    memset(res, 0, sizeof *res);
    if (n_prompt < 1 || n_prompt >= m->cfg.max_seq) return -1;
    double t0 = now_seconds();
    /* on one thread: a decoding step is one token of one sequence, too little
     * work per op to split over the pool (fspo eval's sampling took 1.3x as
     * long on 2 threads) */
    int threads = pool_threads();
    threads_use(1);
    kv_reset(g->kv);
    int last = 0; /* row of g->logits holding the newest token's prediction */
    for (int at = 0; at < n_prompt; at += PREFILL_CHUNK) {
        int n = n_prompt - at < PREFILL_CHUNK ? n_prompt - at : PREFILL_CHUNK;
        model_decode(m, g->kv, prompt + at, n, g->logits);
        last = n - 1;
    }
    Rng rng = rng_seed(seed, 0x5a4d91e); /* a stream of its own: never shared with the data sampler's */
    int limit = c->max_new_tokens < cap_out ? c->max_new_tokens : cap_out;
    res->stop = SAMPLE_STOP_MAX_TOKENS;
    for (;;) {
        if (res->n_tokens >= limit) break;
        int32_t tok = sample_token(g->logits + (size_t)last * V, V, c->temperature, c->top_p, &rng, g->scratch);
        if (tok_is_special(g->tok, tok)) { /* EOS, or a structure token: the answer is over either way */
            res->stop = SAMPLE_STOP_EOS;
            break;
        }
        out[res->n_tokens++] = tok;
        if (res->n_tokens >= limit) break;
        if (model_decode(m, g->kv, &tok, 1, g->logits) != 0) {
            res->stop = SAMPLE_STOP_CONTEXT_FULL;
            break;
        }
        last = 0;
    }
    threads_use(threads);
    res->seconds = now_seconds() - t0;
    return 0;
}
