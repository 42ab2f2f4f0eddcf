/* dataset: the prepared preference dataset, one HDF5 file (docs/formats.md).
 *
 * All text is tokenized once by `fspo prep` into one uint16 token stream;
 * pairs and users are spans into it, so a meta-example is a few slices and
 * the sampler never re-tokenizes. Users are stored contiguously: user u
 * owns pairs [first, first + count). The train/held-out split is part of
 * the file, so every rank and every later eval agree on it. */
#ifndef FSPO_DATASET_H
#define FSPO_DATASET_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define DATASET_FORMAT_VERSION 1

typedef struct {
    int64_t n_users, n_pairs, n_tokens;
    uint16_t *tokens;       /* [n_tokens] */
    int64_t *prompt;        /* [n_pairs][2]: offset into tokens, length */
    int64_t *chosen;        /* [n_pairs][2] */
    int64_t *rejected;      /* [n_pairs][2] */
    int64_t *user_pairs;    /* [n_users][2]: first pair, count */
    int64_t *user_desc;     /* [n_users][2]: description span, length 0 if none */
    uint8_t *user_heldout;  /* [n_users]: 1 = evaluation only, never trained on */
    char **user_ids;        /* [n_users] */
    char tokenizer[32];     /* TOKENIZER_ID of the tokenizer that made the stream */
    int64_t vocab;
    char source[512];       /* input file it was prepared from */
    double heldout_frac;
    int64_t seed;
    uint64_t checksum;      /* dataset_checksum(), set by write, verified by read */
} Dataset;

/* Content checksum over every array and the user ids. */
uint64_t dataset_checksum(const Dataset *d);

/* Checks spans, user ranges, token ids and flags; -1 with the first problem. */
int dataset_validate(const Dataset *d, char *err, size_t errlen);

/* Validates, sets d->checksum, writes <path>.tmp, fsyncs, renames. */
int dataset_write(const char *path, Dataset *d, char *err, size_t errlen);

/* Reads the whole file into d (allocating), validating it and its checksum. */
int dataset_read(const char *path, Dataset *d, char *err, size_t errlen);
void dataset_free(Dataset *d);

/* `fspo inspect` for datasets: counts, split, pairs per user, checksum. */
int dataset_print(const char *path, FILE *out, char *err, size_t errlen);

#endif
