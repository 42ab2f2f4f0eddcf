/* batch: B packed rows of T tokens, the only input the model takes.
 * A row carries per-token positions and segment ids plus a segment
 * visibility table, so one mechanism serves plain LM rows and tree-packed
 * FSPO rows (see docs/model.md). Loss targets are an explicit list because
 * in a tree-packed row two answers are predicted from the same token. */
#ifndef FSPO_BATCH_H
#define FSPO_BATCH_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int32_t index;  /* flat token index b*T + t whose logits predict `token` */
    int32_t token;  /* target token id */
    float weight;   /* 0 in training (the losses hand the model dloss/dlogp per target,
                       src/loss.h); tests set it to build a weighted NLL */
} Target;

typedef struct {
    int cap_tokens, cap_segments, cap_rows, cap_targets; /* allocated sizes */
    int B, T, S;     /* rows, tokens per row, segment-table size in use */
    int n_targets;
    int32_t *tokens; /* [B,T] */
    int32_t *pos;    /* [B,T] RoPE positions */
    int32_t *seg;    /* [B,T] segment ids in [0,S) */
    uint8_t *vis;    /* [B,S,S] vis[b][si][sj]: segment si may attend to sj */
    Target *targets; /* [n_targets] */
} Batch;

/* Room for `rows` rows of up to `max_len` tokens, `max_segments` segments
 * per row and `max_targets` targets. */
void batch_alloc(Batch *b, int rows, int max_len, int max_segments, int max_targets);
void batch_free(Batch *b);

/* Sets the shape in use (B rows of T tokens, S segments), clears vis and
 * targets. Dies if it exceeds the capacity (a programming error). */
void batch_reset(Batch *b, int B, int T, int S);

/* Row r as one plain causal sequence: positions 0..T-1, one segment. */
void batch_set_causal_row(Batch *b, int r, const int32_t *tokens);

/* Checks every id, position, segment and target against a model with
 * `vocab` tokens and `max_seq` positions; 0 or -1 with a message. */
int batch_validate(const Batch *b, int vocab, int max_seq, char *err, size_t errlen);

#endif
