/* pack: see pack.h for the layout. */
#include "src/pack.h"

#include <string.h>

#include "src/tokenizer.h"
#include "src/util.h"

/* ---- the token layout ---- */

/* Appends tokens to out, or only counts them when out is NULL. */
typedef struct {
    const Tokenizer *tok;
    int32_t *out;
    int n;
} Emit;

static void emit_id(Emit *e, int32_t id)
{
    if (e->out) e->out[e->n] = id;
    e->n++;
}

/* A structure token (TOK_BOS...) as tok numbers it. */
static void emit(Emit *e, int which) { emit_id(e, tok_id(e->tok, which)); }

static void emit_span(Emit *e, TokSpan s)
{
    if (e->out)
        for (size_t k = 0; k < s.n; k++) e->out[e->n + (int)k] = s.ids[k];
    e->n += (int)s.n;
}

static void emit_pairs(Emit *e, const PairSpans *shots, int count, ContextMarks *marks)
{
    emit(e, TOK_BOS);
    for (int i = 0; i < count; i++) {
        emit(e, TOK_EXAMPLE);
        emit(e, TOK_QUESTION);
        emit_span(e, shots[i].prompt);
        emit(e, TOK_PREFERRED);
        if (marks) marks->chosen[i] = e->n;
        emit_span(e, shots[i].chosen);
        emit(e, TOK_DISPREFERRED);
        emit_span(e, shots[i].rejected);
    }
}

int pack_render_context(const Tokenizer *tok, const PairSpans *shots, int count, const TokSpan *desc, int32_t *out,
                        ContextMarks *marks)
{
    Emit e = { tok, out, 0 };
    emit_pairs(&e, shots, count, marks);
    if (marks) marks->desc = -1;
    if (desc) {
        emit(&e, TOK_USER_DESC);
        if (marks) marks->desc = e.n;
        emit_span(&e, *desc);
        emit(&e, TOK_EOS);
    }
    return e.n;
}

int pack_render_desc_prompt(const Tokenizer *tok, const PairSpans *shots, int count, int32_t *out)
{
    Emit e = { tok, out, 0 };
    emit_pairs(&e, shots, count, NULL);
    emit(&e, TOK_USER_DESC);
    return e.n;
}

int pack_render_query(const Tokenizer *tok, TokSpan prompt, int32_t *out)
{
    Emit e = { tok, out, 0 };
    emit(&e, TOK_TASK);
    emit(&e, TOK_QUESTION);
    emit_span(&e, prompt);
    emit(&e, TOK_PREFERRED);
    return e.n;
}

/* ---- meta-examples ---- */

static int64_t span_len(const int64_t *span) { return span[1]; }
static TokSpan dspan(const Dataset *d, const int64_t *span) { return (TokSpan){ d->tokens + span[0], (size_t)span[1] }; }

/* The first n few-shot pairs of ex as spans; returns ex's description
 * (NULL without one), stored in *desc. */
static const TokSpan *example_spans(const Dataset *d, const MetaExample *ex, int n, PairSpans *shots, TokSpan *desc)
{
    for (int i = 0; i < n; i++) {
        int64_t p = ex->pairs[i];
        shots[i] = (PairSpans){ dspan(d, d->prompt + 2 * p), dspan(d, d->chosen + 2 * p), dspan(d, d->rejected + 2 * p) };
    }
    *desc = (TokSpan){ ex->desc, ex->desc ? (size_t)ex->desc_len : 0 };
    return ex->desc ? desc : NULL;
}

/* Tokens of C for the first n few-shot pairs (and ex's description). */
static int64_t context_len(const Dataset *d, const MetaExample *ex, int n)
{
    PairSpans shots[SAMPLER_MAX_FEWSHOT];
    TokSpan desc;
    const TokSpan *dp = example_spans(d, ex, n, shots, &desc);
    return pack_render_context(&d->tok, shots, n, dp, NULL, NULL);
}

static int64_t query_prompt_len(const Dataset *d, int64_t p)
{
    return pack_render_query(&d->tok, dspan(d, d->prompt + 2 * p), NULL);
}
static int64_t answer_len(const Dataset *d, int64_t p, int rejected)
{
    return 1 + span_len((rejected ? d->rejected : d->chosen) + 2 * p);
}

/* Longest row the example needs in a mode. */
static int64_t needed_len(const Dataset *d, const MetaExample *ex, PackMode mode)
{
    int64_t c = context_len(d, ex, ex->n_fewshot), total = c, longest = 0;
    for (int j = 0; j < ex->n_queries; j++) {
        int64_t p = ex->pairs[ex->n_fewshot + j], pl = query_prompt_len(d, p);
        int64_t w = answer_len(d, p, 0), l = answer_len(d, p, 1);
        total += pl + w + l;
        int64_t row = c + pl + (w > l ? w : l);
        if (row > longest) longest = row;
    }
    return mode == PACK_TREE ? total : longest;
}

int64_t pack_len(int n_fewshot, int n_queries, int64_t text_tokens)
{
    /* needed_len of examples with empty texts, which grows by a fixed
     * amount per context pair and per query */
    int64_t empty[2] = { 0, 0 };
    Dataset d = { .prompt = empty, .chosen = empty, .rejected = empty };
    MetaExample none = { 0 }, pair = { .n_fewshot = 1 }, query = { .n_queries = 1 };
    int64_t base = needed_len(&d, &none, PACK_TREE);
    return base + (int64_t)n_fewshot * (needed_len(&d, &pair, PACK_TREE) - base) +
           (int64_t)n_queries * (needed_len(&d, &query, PACK_TREE) - base) + text_tokens;
}

int pack_plan(const Dataset *d, MetaExample *ex, PackMode mode, int max_len, int *dropped_fewshot,
              int *dropped_queries)
{
    *dropped_fewshot = *dropped_queries = 0;
    int64_t len;
    while ((len = needed_len(d, ex, mode)) > max_len && ex->n_fewshot > 0) {
        /* the queries sit after the context in ex->pairs: shift them down */
        memmove(ex->pairs + ex->n_fewshot - 1, ex->pairs + ex->n_fewshot, sizeof(int64_t) * ex->n_queries);
        ex->n_fewshot--;
        (*dropped_fewshot)++;
    }
    while ((len = needed_len(d, ex, mode)) > max_len && ex->n_queries > 1) {
        ex->n_queries--;
        (*dropped_queries)++;
    }
    return len > max_len ? -1 : (int)len;
}

int pack_rows(const MetaExample *ex, PackMode mode) { return mode == PACK_TREE ? 1 : 2 * ex->n_queries; }
int pack_segments(const MetaExample *ex, PackMode mode) { return mode == PACK_TREE ? 1 + 3 * ex->n_queries : 1; }

typedef struct {
    Batch *b;
    size_t base; /* flat index of the row's first token */
    int t;       /* tokens written in the row */
} RowWriter;

static void put(RowWriter *w, int token, int pos, int seg)
{
    size_t i = w->base + (size_t)w->t++;
    w->b->tokens[i] = token;
    w->b->pos[i] = pos;
    w->b->seg[i] = seg;
}

/* Positions and segment of the n tokens just rendered at the row's end. */
static void place(RowWriter *w, int n, int *pos, int seg)
{
    for (int k = 0; k < n; k++) {
        size_t i = w->base + (size_t)w->t++;
        w->b->pos[i] = (*pos)++;
        w->b->seg[i] = seg;
    }
}

/* Tokens [at, at + n) of the batch become targets, each predicted from the token before it. */
static void add_targets(Batch *b, size_t at, size_t n)
{
    for (size_t k = at; k < at + n; k++) b->targets[b->n_targets++] = (Target){ (int32_t)(k - 1), b->tokens[k], 0.0f };
}

/* Writes C. With `out`, the description's tokens and EOS become targets
 * (out->desc_first..desc_end), and with `context_targets` also each
 * chosen answer token and the DISPREFERRED header after it
 * (out->ctx_first..ctx_end), each predicted from the token before it. */
static void write_context(RowWriter *w, const Dataset *d, const MetaExample *ex, int *pos, PackedAnswers *out,
                          int context_targets)
{
    Batch *b = w->b;
    PairSpans shots[SAMPLER_MAX_FEWSHOT];
    TokSpan desc;
    const TokSpan *dp = example_spans(d, ex, ex->n_fewshot, shots, &desc);
    ContextMarks mk;
    size_t first = w->base + (size_t)w->t;
    place(w, pack_render_context(&d->tok, shots, ex->n_fewshot, dp, b->tokens + first, &mk), pos, 0);
    if (!out) return;
    out->ctx_first = b->n_targets;
    if (context_targets)
        for (int i = 0; i < ex->n_fewshot; i++) add_targets(b, first + (size_t)mk.chosen[i], shots[i].chosen.n + 1);
    out->ctx_end = out->desc_first = b->n_targets;
    if (dp) add_targets(b, first + (size_t)mk.desc, dp->n + 1);
    out->desc_end = b->n_targets;
}

static void write_query_prompt(RowWriter *w, const Dataset *d, int64_t p, int *pos, int seg)
{
    place(w, pack_render_query(&d->tok, dspan(d, d->prompt + 2 * p), w->b->tokens + w->base + w->t), pos, seg);
}

/* Writes an answer (span + EOS) whose first token is predicted from the
 * token at flat index `from`, adding one target per answer token. */
static void write_answer(RowWriter *w, const Dataset *d, const int64_t *span, int pos, int seg, size_t from)
{
    Batch *b = w->b;
    for (int64_t k = 0; k <= span[1]; k++) {
        int tok = k < span[1] ? d->tokens[span[0] + k] : tok_id(&d->tok, TOK_EOS);
        b->targets[b->n_targets++] = (Target){ (int32_t)from, tok, 0.0f };
        from = w->base + (size_t)w->t;
        put(w, tok, pos++, seg);
    }
}

static void pad_row(RowWriter *w, const Tokenizer *tok)
{
    while (w->t < w->b->T) put(w, tok_id(tok, TOK_PAD), 0, 0);
}

static void need_targets(const Batch *b, int more)
{
    if (b->n_targets + more > b->cap_targets)
        fatal(EXIT_RUNTIME, "internal: batch has room for %d targets, packing needs %d", b->cap_targets,
              b->n_targets + more);
}

int pack_context_targets(const Dataset *d, const MetaExample *ex)
{
    int n = 0;
    for (int i = 0; i < ex->n_fewshot; i++) n += (int)answer_len(d, ex->pairs[i], 0);
    return n;
}

int pack_desc_targets(const MetaExample *ex) { return ex->desc ? ex->desc_len + 1 : 0; }

static void write_meta_example(const Dataset *d, const MetaExample *ex, PackMode mode, Batch *b, int row,
                               PackedAnswers *out, int context_targets)
{
    int Q = ex->n_queries, S = b->S;
    int answer_tokens = (context_targets ? pack_context_targets(d, ex) : 0) + pack_desc_targets(ex);
    for (int j = 0; j < Q; j++)
        answer_tokens += (int)(answer_len(d, ex->pairs[ex->n_fewshot + j], 0) +
                               answer_len(d, ex->pairs[ex->n_fewshot + j], 1));
    need_targets(b, answer_tokens);
    out->n_answers = 2 * Q;
    if (mode == PACK_TREE) {
        RowWriter w = { b, (size_t)row * b->T, 0 };
        uint8_t *vis = b->vis + (size_t)row * S * S;
        int pos = 0;
        write_context(&w, d, ex, &pos, out, context_targets);
        vis[0] = 1;
        int c_len = pos;
        for (int j = 0; j < Q; j++) {
            int64_t p = ex->pairs[ex->n_fewshot + j];
            int sp = 1 + 3 * j, sw = sp + 1, sl = sp + 2;
            int qpos = c_len;
            write_query_prompt(&w, d, p, &qpos, sp);
            size_t last_prompt = w.base + (size_t)w.t - 1;
            vis[sp * S + 0] = vis[sp * S + sp] = 1;
            vis[sw * S + 0] = vis[sw * S + sp] = vis[sw * S + sw] = 1;
            vis[sl * S + 0] = vis[sl * S + sp] = vis[sl * S + sl] = 1;
            out->first[2 * j] = b->n_targets;
            write_answer(&w, d, d->chosen + 2 * p, qpos, sw, last_prompt);
            out->first[2 * j + 1] = b->n_targets;
            write_answer(&w, d, d->rejected + 2 * p, qpos, sl, last_prompt);
        }
        pad_row(&w, &d->tok);
    } else {
        for (int a = 0; a < 2 * Q; a++) {
            int64_t p = ex->pairs[ex->n_fewshot + a / 2];
            RowWriter w = { b, (size_t)(row + a) * b->T, 0 };
            b->vis[(size_t)(row + a) * S * S] = 1;
            int pos = 0;
            write_context(&w, d, ex, &pos, a == 0 ? out : NULL, context_targets); /* the context's targets once */
            write_query_prompt(&w, d, p, &pos, 0);
            out->first[a] = b->n_targets;
            write_answer(&w, d, (a % 2 ? d->rejected : d->chosen) + 2 * p, pos, 0, w.base + (size_t)w.t - 1);
            pad_row(&w, &d->tok);
        }
    }
    out->first[2 * Q] = b->n_targets;
}

void pack_write(const Dataset *d, const MetaExample *ex, PackMode mode, Batch *b, int row, PackedAnswers *out)
{
    write_meta_example(d, ex, mode, b, row, out, 0);
}

void pack_write_context_targets(const Dataset *d, const MetaExample *ex, PackMode mode, Batch *b, int row,
                                PackedAnswers *out)
{
    write_meta_example(d, ex, mode, b, row, out, 1);
}
