/* dataset: the prepared preference dataset, one HDF5 file (docs/formats.md).
 *
 * All text is tokenized once by `fspo prep` into one int32 token stream;
 * pairs and users are spans into it, so a meta-example is a few slices and
 * the sampler never re-tokenizes. Users are stored contiguously: user u
 * owns pairs [first, first + count). The train/validation/test split is
 * part of the file, so every rank and every later eval agree on it. */
#ifndef FSPO_DATASET_H
#define FSPO_DATASET_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "src/tokenizer.h"

/* 3: 32-bit token ids, and a BPE tokenizer's tokenizer.json in the file.
 * 2: /users/split (train/validation/test), uint16 ids of the byte tokenizer.
 * Versions 1 and 2 are still read (ids widened to int32); a version-1 file's
 * held-out users (/users/heldout) become test users. */
#define DATASET_FORMAT_VERSION 3

/* A user's split, as stored in /users/split. Training samples only
 * SPLIT_TRAIN; evaluation settings are chosen on SPLIT_VALIDATION, and
 * SPLIT_TEST is scored once per finished design. */
typedef enum { SPLIT_TRAIN = 0, SPLIT_VALIDATION = 1, SPLIT_TEST = 2 } Split;
#define SPLIT_COUNT 3

typedef struct {
    int64_t n_users, n_pairs, n_tokens;
    int32_t *tokens;        /* [n_tokens] */
    int64_t *prompt;        /* [n_pairs][2]: offset into tokens, length */
    int64_t *chosen;        /* [n_pairs][2] */
    int64_t *rejected;      /* [n_pairs][2] */
    int64_t *user_pairs;    /* [n_users][2]: first pair, count */
    int64_t *user_desc;     /* [n_users][2]: description span, length 0 if none */
    uint8_t *user_split;    /* [n_users]: a Split; only SPLIT_TRAIN users are trained on */
    char **user_ids;        /* [n_users] */
    Tokenizer tok;          /* the tokenizer that made the stream (zeroed: the byte tokenizer) */
    int64_t vocab;          /* tok_n_ids(&tok) */
    char source[512];       /* input file it was prepared from */
    double val_frac, test_frac; /* the fractions prep assigned by hash (all-test: 0, 1) */
    int64_t seed;
    int64_t format_version; /* of the file read (1: held-out flags read as SPLIT_TEST; 1, 2: uint16 ids) */
    uint64_t checksum;      /* dataset_checksum(), set by write, verified by read */
} Dataset;

/* Content checksum over every array and the user ids (byte-tokenizer ids
 * as uint16, as format versions 1 and 2 stored them: the same data has the
 * same checksum in every version). */
uint64_t dataset_checksum(const Dataset *d);

/* "train", "validation", "test"; "?" for a code outside Split. */
const char *dataset_split_name(int split);
/* The Split named s, or -1. */
int dataset_split_parse(const char *s);

/* Checks spans, user ranges, token ids and split codes; -1 with the first problem. */
int dataset_validate(const Dataset *d, char *err, size_t errlen);

/* Validates, sets d->format_version and d->checksum, writes <path>.tmp,
 * fsyncs, renames. A BPE tokenizer's text (d->tok.json) is stored too. */
int dataset_write(const char *path, Dataset *d, char *err, size_t errlen);

/* Reads the whole file into d (allocating), validating it and its checksum,
 * and builds its tokenizer (d->tok). A version-1 file is read too, its
 * held-out users as SPLIT_TEST. */
int dataset_read(const char *path, Dataset *d, char *err, size_t errlen);
void dataset_free(Dataset *d);
/* Only the tokenizer of a dataset file (fspo prep --tokenizer OTHER.h5). */
int dataset_read_tokenizer(const char *path, Tokenizer *t, char *err, size_t errlen);

/* `fspo inspect` for datasets: counts, users and pairs of each split, pairs per user, checksum. */
int dataset_print(const char *path, FILE *out, char *err, size_t errlen);

#endif
