/* jsonl: preference data as JSON lines (jansson), the only JSONL I/O.
 *
 * Input rows follow TRL's preference columns plus a user id:
 *   {"user_id": "...", "prompt": "...", "chosen": "...", "rejected": "...",
 *    "user_description": "...", "split": "test"}
 * (the description and the split are optional; split, one of "train",
 * "validation", "test", puts the row's user in that split, see src/prep.h)
 * Readers report a bad line as "FILE:LINE: reason" and let the caller
 * decide whether to skip it (fspo prep) or stop (--strict). Writers write
 * FILE.tmp and rename on close, so a reader never sees a partial file. */
#ifndef FSPO_JSONL_H
#define FSPO_JSONL_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *user_id, *prompt, *chosen, *rejected;
    const char *user_description; /* NULL when absent */
    const char *split;            /* NULL when absent, else "train", "validation" or "test" (fspo synth:
                                     "test" on the rows of r4's interpolated users) */
    size_t prompt_len, chosen_len, rejected_len, user_description_len; /* bytes (strings may hold NUL) */
} PrefRow;

/* Ground truth of one synthetic user (fspo synth), for scoring. */
typedef struct {
    const char *user_id, *flavor, *description;
    int n_attrs;
    const double *weights; /* [n_attrs]: r_u(y) = weights . a(y) */
    const char *const *attr_names;
    double temperature;    /* Bradley-Terry temperature of the labels */
    int scorer_version;
    const char *population; /* fspo synth --population's rung, written when not NULL (not read back) */
    int has_split;          /* the population has an interpolated split: write "interpolated" */
    int interpolated;       /* this user is one of its test users */
} UserTruth;

/* ---- reading (io/jsonl_read.c) ---- */
typedef struct JsonlReader JsonlReader;

/* Other field names for the columns (fspo prep --prompt-key ...); NULL
 * keeps a column's own name. With `label`, a row holds two responses, in
 * the fields `chosen` and `rejected` name, and its field `label` says
 * which one the user preferred: 1, true or the first field's name: the
 * first; 0, false or the second field's name: the second (FSPO's
 * response_x / response_y / label). */
typedef struct {
    const char *user_id, *prompt, *chosen, *rejected, *label;
} JsonlKeys;

/* Lines longer than max_line_bytes are reported as bad lines, not read whole. */
JsonlReader *jsonl_reader_open(const char *path, size_t max_line_bytes, char *err, size_t errlen);
/* Reads the columns under these names from now on (k is copied; its
 * strings must outlive r). */
void jsonl_reader_set_keys(JsonlReader *r, const JsonlKeys *k);
/* 1: *row filled (pointers valid until the next call); 0: end of file;
 * -1: bad line, err = "FILE:LINE: reason", call again for the next line;
 * -2: I/O error, err says what. *line_no is the line just read (1-based). */
int jsonl_next_row(JsonlReader *r, PrefRow *row, long *line_no, char *err, size_t errlen);
/* Bytes consumed so far and the file size, for a progress line. */
void jsonl_progress(const JsonlReader *r, uint64_t *done, uint64_t *total);
void jsonl_reader_close(JsonlReader *r);

/* ---- writing (io/jsonl_write.c) ---- */
typedef struct JsonlWriter JsonlWriter;

JsonlWriter *jsonl_writer_open(const char *path, char *err, size_t errlen);
int jsonl_write_row(JsonlWriter *w, const PrefRow *row);
int jsonl_write_truth(JsonlWriter *w, const UserTruth *t);
/* Flushes, fsyncs and renames FILE.tmp to FILE; 0 or -1 with a message.
 * Frees w either way. */
int jsonl_writer_close(JsonlWriter *w, char *err, size_t errlen);
/* Discards the temporary file (error paths). */
void jsonl_writer_abort(JsonlWriter *w);

/* ---- ground truth of synthetic users (io/jsonl_truth.c) ----
 * Reads the file jsonl_write_truth writes (fspo synth's OUT.truth.jsonl)
 * into memory, for [eval]'s oracle columns. Every line must be a valid
 * truth record: a scorer must never run on half-understood weights. */
typedef struct TruthSet TruthSet;

/* NULL with err = "FILE:LINE: reason" on the first bad line or I/O error. */
TruthSet *truth_read(const char *path, char *err, size_t errlen);
int64_t truth_count(const TruthSet *t);
/* The user's record, NULL if the file has none. Valid until truth_free. */
const UserTruth *truth_find(const TruthSet *t, const char *user_id);
void truth_free(TruthSet *t);

#endif
