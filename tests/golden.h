/* Reader for the golden files written by tests/torch_ref.py (format: docs/model.md). */
#ifndef FSPO_TESTS_GOLDEN_H
#define FSPO_TESTS_GOLDEN_H

#include <stddef.h>

enum { GOLDEN_F32 = 0, GOLDEN_I32 = 1, GOLDEN_MAX_DIMS = 8 };

typedef struct {
    char *name;                  /* NUL-terminated */
    int dtype;                   /* GOLDEN_F32 (data is float *) or GOLDEN_I32 (data is int32_t *) */
    int ndim;
    int dims[GOLDEN_MAX_DIMS];
    size_t count;                /* product of dims */
    void *data;                  /* own aligned copy, row-major, host byte order */
} GoldenRecord;

typedef struct {
    int n;
    GoldenRecord *rec;
} Golden;

/* 0 on success; -1 with a message naming the file and the reason, and *g left empty. */
int golden_load(const char *path, Golden *g, char *err, size_t errlen);
/* NULL if absent. */
const GoldenRecord *golden_find(const Golden *g, const char *name);
void golden_free(Golden *g);

#endif
