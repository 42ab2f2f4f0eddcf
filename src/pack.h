/* pack: renders meta-examples into batch rows (docs/design.md, "Tree packing").
 *
 * Layout, FSPO's "example / question / preferred / dispreferred / task" with
 * one special token per header:
 *   C   = BOS, then per few-shot pair: EXAMPLE QUESTION prompt PREFERRED chosen DISPREFERRED rejected,
 *         then, if the example carries a user description d: USER_DESC d EOS
 *   P_j = TASK QUESTION prompt PREFERRED          (query j's prompt)
 *   W_j = chosen EOS,  L_j = rejected EOS         (its two answers)
 * PACK_TREE writes one row [C P_1 W_1 L_1 P_2 W_2 L_2 ...] whose segment
 * table lets P_j see C, W_j see C and P_j, L_j see C and P_j (not W_j), and
 * whose positions restart so every query continues right after C and both
 * answers right after their prompt: C is computed once instead of 2Q times,
 * and each answer is scored exactly as in its own linear sequence.
 * PACK_UNSHARED writes those 2Q linear sequences [C P_j W_j], [C P_j L_j] as
 * separate rows (the usual way, kept for comparison and tests).
 *
 * The description (data.user_desc: cot, docs/design.md "User-description
 * chain of thought") is the user's profile in words, written by the model
 * after reading the pairs and before answering: its tokens and its EOS
 * are targets, each predicted from the token before, so C teaches the
 * model to write it and every query is answered conditioned on it.
 *
 * The token layout of C and P lives in pack_render_context/_query alone:
 * pack_write's rows and src/generate.c's generation prompts both use them. */
#ifndef FSPO_PACK_H
#define FSPO_PACK_H

#include "io/dataset.h"
#include "src/batch.h"
#include "src/sampler.h"
#include "src/tokenizer.h"

/* data.user_desc: whether a training meta-example's context ends with the
 * user's description (cot). */
typedef enum { USER_DESC_NONE = 0, USER_DESC_COT } UserDesc;
static const char *const USER_DESC_NAMES[] = { "none", "cot", NULL };

typedef enum { PACK_TREE = 0, PACK_UNSHARED = 1 } PackMode;

/* A span of token ids (dataset slices or freshly encoded text). */
typedef struct {
    const int32_t *ids;
    size_t n;
} TokSpan;

typedef struct {
    TokSpan prompt, chosen, rejected;
} PairSpans;

/* Where the targets of C lie, as offsets into it. */
typedef struct {
    int chosen[SAMPLER_MAX_FEWSHOT]; /* pair i's chosen answer; its DISPREFERRED header follows it */
    int desc;                        /* the description's first token (after USER_DESC); -1 without one */
} ContextMarks;

/* Writes C for the pairs shots[0..n) and the description desc (NULL: no
 * description segment) into out (NULL: only counts); returns its length.
 * marks, if not NULL, receives where its targets lie. The structure
 * tokens are tok's (tok_id; NULL: the byte tokenizer's), here and below. */
int pack_render_context(const Tokenizer *tok, const PairSpans *shots, int n, const TokSpan *desc, int32_t *out,
                        ContextMarks *marks);
/* Writes a query's P = TASK QUESTION prompt PREFERRED into out (NULL:
 * only counts); returns its length. */
int pack_render_query(const Tokenizer *tok, TokSpan prompt, int32_t *out);
/* The prompt after which a model writes the user's description: C
 * without one, then USER_DESC. Writes into out (NULL: only counts);
 * returns its length. */
int pack_render_desc_prompt(const Tokenizer *tok, const PairSpans *shots, int n, int32_t *out);

/* Where a meta-example's answers landed: answer a (2j = chosen of query j,
 * 2j+1 = rejected) owns batch targets [first[a], first[a+1]). */
typedef struct {
    int n_answers;
    int first[2 * SAMPLER_MAX_QUERIES + 1];
    int ctx_first, ctx_end; /* targets on the context's chosen answers (pack_write_context_targets), else empty */
    int desc_first, desc_end; /* targets on the description and its EOS (ex->desc), else empty */
} PackedAnswers;

/* Fits ex to rows of max_len tokens: drops trailing few-shot pairs first,
 * then trailing queries, never cutting an answer. Returns the length of the
 * longest row it needs, or -1 if not even one query fits (the example must
 * be skipped). *dropped_fewshot / *dropped_queries count what was removed. */
int pack_plan(const Dataset *d, MetaExample *ex, PackMode mode, int max_len, int *dropped_fewshot,
              int *dropped_queries);

/* Tokens of the whole row of a meta-example of n_fewshot context pairs and
 * n_queries queries whose pairs add up to text_tokens tokens of prompts
 * and answers (PACK_TREE): a lower bound for every example of that shape
 * with text_tokens 0, the exact length with the texts' sum. */
int64_t pack_len(int n_fewshot, int n_queries, int64_t text_tokens);

/* Rows and segments a planned example needs in a batch. */
int pack_rows(const MetaExample *ex, PackMode mode);
int pack_segments(const MetaExample *ex, PackMode mode);

/* Writes ex into rows row.. of b (reset with T >= its planned length and
 * S >= its segments), pads each row to T, appends one target per answer
 * token (weight 0: the losses give dloss/dlogp per target instead) and
 * records them in *out.
 * With a description (ex->desc), also one target per description token
 * and its EOS, once (out->desc_first..desc_end): losses that do not want
 * them leave their gradient 0. */
void pack_write(const Dataset *d, const MetaExample *ex, PackMode mode, Batch *b, int row, PackedAnswers *out);

/* pack_write, plus one target per token of each few-shot pair's chosen
 * answer and its closing DISPREFERRED header, each predicted from the token
 * before it: the SFT stage's dense supervision (train.sft_context), where
 * pair i's chosen answer is learned from pairs 0..i-1 at no extra forward
 * cost. Recorded in out->ctx_first..ctx_end. */
void pack_write_context_targets(const Dataset *d, const MetaExample *ex, PackMode mode, Batch *b, int row,
                                PackedAnswers *out);

/* Target tokens pack_write_context_targets adds for ex. */
int pack_context_targets(const Dataset *d, const MetaExample *ex);

/* Target tokens of ex's description (its tokens and EOS); 0 without one. */
int pack_desc_targets(const MetaExample *ex);

#endif
