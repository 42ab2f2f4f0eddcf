/* batch: allocation and validation of packed rows. */
#include "src/batch.h"

#include <stdlib.h>
#include <string.h>

#include "src/util.h"

void batch_alloc(Batch *b, int rows, int max_len, int max_segments, int max_targets)
{
    memset(b, 0, sizeof *b);
    b->cap_rows = rows;
    b->cap_tokens = rows * max_len;
    b->cap_segments = max_segments;
    b->cap_targets = max_targets;
    b->tokens = xcalloc_aligned(sizeof(int32_t) * b->cap_tokens, "batch tokens");
    b->pos = xcalloc_aligned(sizeof(int32_t) * b->cap_tokens, "batch positions");
    b->seg = xcalloc_aligned(sizeof(int32_t) * b->cap_tokens, "batch segments");
    b->vis = xcalloc_aligned((size_t)rows * max_segments * max_segments, "batch visibility");
    b->targets = xcalloc_aligned(sizeof(Target) * (max_targets > 0 ? max_targets : 1), "batch targets");
}

void batch_free(Batch *b)
{
    xfree_aligned(b->tokens);
    xfree_aligned(b->pos);
    xfree_aligned(b->seg);
    xfree_aligned(b->vis);
    xfree_aligned(b->targets);
    memset(b, 0, sizeof *b);
}

void batch_reset(Batch *b, int B, int T, int S)
{
    if (B < 1 || T < 1 || S < 1 || B > b->cap_rows || B * T > b->cap_tokens || S > b->cap_segments)
        fatal(EXIT_RUNTIME, "internal: batch shape %dx%d (%d segments) exceeds its capacity", B, T, S);
    b->B = B;
    b->T = T;
    b->S = S;
    b->n_targets = 0;
    memset(b->vis, 0, (size_t)B * S * S);
}

void batch_set_causal_row(Batch *b, int r, const int32_t *tokens)
{
    size_t o = (size_t)r * b->T;
    for (int t = 0; t < b->T; t++) {
        b->tokens[o + t] = tokens[t];
        b->pos[o + t] = t;
        b->seg[o + t] = 0;
    }
    b->vis[(size_t)r * b->S * b->S] = 1;
}

int batch_validate(const Batch *b, int vocab, int max_seq, char *err, size_t errlen)
{
    if (b->T > max_seq) return set_err(err, errlen, "row length %d exceeds model.max_seq %d", b->T, max_seq);
    for (int i = 0; i < b->B * b->T; i++) {
        int r = i / b->T, t = i % b->T;
        if (b->tokens[i] < 0 || b->tokens[i] >= vocab)
            return set_err(err, errlen, "row %d token %d: id %d outside vocab [0,%d)", r, t, b->tokens[i], vocab);
        if (b->pos[i] < 0 || b->pos[i] >= max_seq)
            return set_err(err, errlen, "row %d token %d: position %d outside [0,%d)", r, t, b->pos[i], max_seq);
        if (b->seg[i] < 0 || b->seg[i] >= b->S)
            return set_err(err, errlen, "row %d token %d: segment %d outside [0,%d)", r, t, b->seg[i], b->S);
    }
    for (int k = 0; k < b->n_targets; k++) {
        const Target *tg = &b->targets[k];
        if (tg->index < 0 || tg->index >= b->B * b->T)
            return set_err(err, errlen, "target %d: index %d outside the batch's %d tokens", k, tg->index,
                           b->B * b->T);
        if (tg->token < 0 || tg->token >= vocab)
            return set_err(err, errlen, "target %d: token %d outside vocab [0,%d)", k, tg->token, vocab);
    }
    return 0;
}
