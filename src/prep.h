/* prep: JSONL preference rows -> the HDF5 dataset container (`fspo prep`).
 *
 * Rows are grouped by user in order of first appearance, each user's pairs
 * in input order. A row is a bad line, reported "FILE:LINE: reason" and
 * skipped (or, strict, fatal), when the reader rejects it (io/jsonl.h),
 * when chosen == rejected, or when it repeats an earlier kept row's
 * (user, prompt, chosen, rejected) ("duplicate of line K"). Users with
 * fewer than min_pairs pairs are dropped and counted, not reported per
 * line.
 *
 * Each kept user is in one of three splits (io/dataset.h: train,
 * validation, test). A row's "split" field puts its user in that split;
 * a user whose rows name two different splits is an error for the whole
 * file (exit 2, nothing written): which row is right cannot be told, and
 * picking by file order would make the split depend on it. Otherwise one
 * hash of (seed, user id), u in [0, 1), decides: u < test_frac is test,
 * u < test_frac + val_frac is validation, else train. So a user's split
 * depends on nothing but the seed, the id and its own rows: not on file
 * order, not on which other users exist; and the test users for T are
 * exactly the held-out users of version-1 datasets made with
 * --heldout-frac T and the same seed. all_test puts every user in the
 * test split whatever the hash or a row says (users of a new seed,
 * evaluated by a model trained elsewhere).
 *
 * The text is tokenized after the split is known, so a tokenizer learned
 * by prep (bpe:V) sees only the training users' text. */
#ifndef FSPO_PREP_H
#define FSPO_PREP_H

#include <stddef.h>
#include <stdint.h>

#include "io/dataset.h"
#include "io/jsonl.h"

typedef struct {
    const char *in_path, *out_path;
    /* NULL or "bytes": the byte tokenizer; "bpe:V": a byte-level BPE of V
     * ids learned from the training users' text alone (descriptions,
     * prompts, answers; deterministic: it depends on nothing but that
     * text); FILE.h5: the tokenizer of that dataset or checkpoint; else
     * the path of a tokenizer.json, which must hold fspo's eight structure
     * tokens as special added tokens (refused otherwise, unless
     * add_structure_tokens). */
    const char *tokenizer;
    /* with a tokenizer.json: append the structure tokens it lacks as
     * special added tokens after its ids (tok_add_structure), e.g. for a
     * pretrained Llama's own tokenizer; the dataset stores the result */
    int add_structure_tokens;
    JsonlKeys keys;         /* field names of the input (jsonl_keys_default) */
    int strict;             /* the first bad line is an error, nothing is written */
    double val_frac, test_frac; /* each in [0, 1), val_frac + test_frac < 1 */
    int all_test;           /* every user is a test user; the fractions are ignored */
    uint64_t seed;
    int64_t min_pairs;      /* users with fewer pairs are dropped */
    size_t max_line_bytes;  /* longer lines are bad lines */
    /* Optional observers: every bad line (msg = "FILE:LINE: reason"), and
     * progress every few thousand rows and once at the end. */
    void (*on_bad_line)(void *ctx, long line_no, const char *msg);
    void (*on_progress)(void *ctx, uint64_t bytes_done, uint64_t bytes_total, int64_t rows);
    void *ctx;
} PrepOptions;

/* Bad lines of one kind: the reason with its details (jansson's text,
 * columns) cut and numbers shown as N, e.g. "duplicate of line N". */
#define PREP_MAX_KINDS 32
typedef struct {
    char kind[96];
    int64_t count;
    long first_line;
} PrepBadKind;

typedef struct {
    long lines;                              /* lines read, blank ones included */
    int64_t rows_ok, bad_lines;
    int64_t users, split_users[SPLIT_COUNT];   /* users kept, and per Split */
    int64_t pairs, split_pairs[SPLIT_COUNT], tokens; /* of kept users */
    int64_t text_bytes;                        /* their text, which the tokens encode */
    char tokenizer[64];                        /* tok_name of the dataset's tokenizer */
    char structure_added[400];                 /* add_structure_tokens: "<|bos|> 300, ..." ("" if none was missing) */
    int64_t vocab;                             /* its ids: the model.vocab to train with */
    int64_t tokenizer_bytes;                   /* bpe:V: text learned from (the training users') */
    double tokenizer_seconds;                  /* learning or loading it */
    int64_t forced_users;                      /* kept users whose split a row's "split" field chose */
    int64_t dropped_users, dropped_pairs;      /* below min_pairs */
    int64_t pairs_min, pairs_median, pairs_max; /* per kept user; median as in `fspo inspect` */
    int64_t users_with_description, description_conflicts; /* conflicts: later rows that differ; first wins */
    uint64_t bytes_read;
    double seconds;
    int n_kinds;                             /* bad-line kinds, most frequent first */
    PrepBadKind kinds[PREP_MAX_KINDS];
    char dropped_example[160];               /* a few dropped user ids, for the message */
} PrepStats;

/* Reads in_path and writes out_path atomically (nothing appears there on
 * any error). Returns 0, or an exit code (2: bad input or usage, 1: I/O
 * or memory failure) with the reason in err. */
int prep_run(const PrepOptions *o, PrepStats *s, char *err, size_t errlen);

/* The summary key of a bad-line reason (exposed for tests). */
void prep_reason_kind(const char *reason, char *kind, size_t cap);

/* The split the hash gives a user id: SPLIT_TEST, SPLIT_VALIDATION or
 * SPLIT_TRAIN (exposed for tests). */
Split prep_split_of(uint64_t seed, const char *user_id, size_t len, double val_frac, double test_frac);

#endif
