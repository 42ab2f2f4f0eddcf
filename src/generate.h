/* generate: personalized generation, shared by `fspo sample` and the win
 * rate of `fspo eval`.
 *
 * The prompt is rendered by src/pack.c's layout functions, so the model
 * sees at generation time what it saw in training:
 *   BOS, then per few-shot pair: EXAMPLE QUESTION prompt PREFERRED chosen DISPREFERRED rejected,
 *   then (with a user description d) USER_DESC d EOS, then TASK QUESTION query-prompt PREFERRED
 * and the answer is generated after it with the KV cache (model_decode)
 * until EOS, any other structure token, max_new_tokens, or a full context.
 * Everything random comes from one counter-based stream seeded by the
 * caller: the same seed, model and prompt give the same tokens. */
#ifndef FSPO_GENERATE_H
#define FSPO_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "src/model.h"
#include "src/pack.h" /* TokSpan, PairSpans and the layout */
#include "src/rng.h"

/* Tokens the rendered prompt needs (BOS, the pairs, the description if
 * desc is not NULL, the query header). */
size_t sample_prompt_len(const Tokenizer *tok, const PairSpans *shots, int n_shots, const TokSpan *desc,
                         TokSpan query);
/* Writes the rendered prompt into out[0..cap); returns its length, or -1
 * (writing nothing) if it needs more than cap tokens. */
int sample_render_prompt(const Tokenizer *tok, const PairSpans *shots, int n_shots, const TokSpan *desc,
                         TokSpan query, int32_t *out, int cap);
/* The same for the prompt after which the model writes the user's
 * description (BOS, the pairs, USER_DESC): data.user_desc: cot models. */
int sample_render_desc_prompt(const Tokenizer *tok, const PairSpans *shots, int n_shots, int32_t *out, int cap);

typedef struct {
    double temperature; /* 0 = greedy (argmax, lowest id on a tie) */
    double top_p;       /* nucleus mass in (0, 1]; 1 = the whole distribution */
    int max_new_tokens;
} SampleConfig;

/* Draws one token id from next-token logits[V]: softmax(logits / T),
 * restricted to the smallest set of most likely tokens whose mass reaches
 * top_p (ties broken by lower id), renormalized. scratch holds 2V floats'
 * worth of room (probabilities and an index order). */
int sample_token(const float *logits, int V, double temperature, double top_p, Rng *rng, void *scratch);

enum { SAMPLE_STOP_EOS, SAMPLE_STOP_MAX_TOKENS, SAMPLE_STOP_CONTEXT_FULL };

typedef struct {
    int n_tokens;   /* generated, the stop token excluded */
    int stop;       /* SAMPLE_STOP_* */
    double seconds; /* wall time, prompt processing included */
} SampleResult;

/* A model plus its KV cache and scratch: make one per model, reuse it.
 * tok (NULL: the byte tokenizer) tells which ids end an answer. */
typedef struct Generator Generator;
Generator *generator_create(Model *m, const Tokenizer *tok);
void generator_free(Generator *g);

/* Generates after prompt[0..n_prompt) into out[0..cap_out), text tokens
 * only (the stop token, any tok_is_special id, is not written). Returns 0, or -1 if the prompt
 * leaves no room to generate (n_prompt >= model.max_seq). */
int generate(Generator *g, const int32_t *prompt, int n_prompt, const SampleConfig *c, uint64_t seed, int32_t *out,
             int cap_out, SampleResult *res);

/* "eos", "max tokens", "context full". */
const char *sample_stop_name(int stop);

#endif
