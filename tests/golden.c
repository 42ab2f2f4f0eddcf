#include "tests/golden.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GOLDEN_MAGIC "FSPOGOLD"
#define GOLDEN_VERSION 1u
/* Names are short ASCII keys; a huge length means a corrupt file, not a long name. */
#define GOLDEN_MAX_NAME 4096u

typedef struct {
    const unsigned char *bytes;
    size_t size;
    size_t at;
} Cursor;

static void set_error(char *err, size_t errlen, const char *path, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    int used = snprintf(err, errlen, "%s: ", path);
    if (used < 0 || (size_t)used >= errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + used, errlen - (size_t)used, fmt, ap);
    va_end(ap);
}

static int read_u32(Cursor *c, uint32_t *out)
{
    if (c->size - c->at < 4)
        return -1;
    const unsigned char *p = c->bytes + c->at;
    /* Decode byte by byte so the reader does not depend on host endianness or alignment. */
    *out = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    c->at += 4;
    return 0;
}

static int read_whole_file(const char *path, unsigned char **bytes, size_t *size, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        set_error(err, errlen, path, "cannot open: %s", strerror(errno));
        return -1;
    }
    size_t cap = 1 << 16, len = 0;
    unsigned char *buf = malloc(cap);
    /* Read in chunks rather than trusting ftell, which fails on pipes and >2 GiB files. */
    while (buf) {
        len += fread(buf + len, 1, cap - len, f);
        if (len < cap)
            break;
        unsigned char *bigger = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
        if (!bigger) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = bigger;
        cap *= 2;
    }
    int failed = ferror(f);
    fclose(f);
    if (!buf || failed) {
        free(buf);
        set_error(err, errlen, path, failed ? "read error" : "out of memory reading file");
        return -1;
    }
    *bytes = buf;
    *size = len;
    return 0;
}

void golden_free(Golden *g)
{
    if (!g)
        return;
    for (int i = 0; i < g->n; i++) {
        free(g->rec[i].name);
        free(g->rec[i].data);
    }
    free(g->rec);
    g->n = 0;
    g->rec = NULL;
}

const GoldenRecord *golden_find(const Golden *g, const char *name)
{
    for (int i = 0; g && i < g->n; i++)
        if (strcmp(g->rec[i].name, name) == 0)
            return &g->rec[i];
    return NULL;
}

static int reason(char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
    return -1;
}

/* Parses one record at c; on failure writes the reason into why (without the path). */
static int parse_record(Cursor *c, GoldenRecord *r, char *why, size_t whylen)
{
    uint32_t name_len, dtype, ndim;
    if (read_u32(c, &name_len) != 0)
        return reason(why, whylen, "truncated name length");
    if (name_len == 0 || name_len > GOLDEN_MAX_NAME)
        return reason(why, whylen, "bad name length %u", (unsigned)name_len);
    if (c->size - c->at < name_len)
        return reason(why, whylen, "truncated name");
    if (memchr(c->bytes + c->at, '\0', name_len))
        return reason(why, whylen, "NUL byte in name");
    r->name = malloc(name_len + 1);
    if (!r->name)
        return reason(why, whylen, "out of memory");
    memcpy(r->name, c->bytes + c->at, name_len);
    r->name[name_len] = '\0';
    c->at += name_len;

    if (read_u32(c, &dtype) != 0 || read_u32(c, &ndim) != 0)
        return reason(why, whylen, "'%s': truncated header", r->name);
    if (dtype != GOLDEN_F32 && dtype != GOLDEN_I32)
        return reason(why, whylen, "'%s': unknown dtype %u", r->name, (unsigned)dtype);
    if (ndim > GOLDEN_MAX_DIMS)
        return reason(why, whylen, "'%s': ndim %u exceeds %d", r->name, (unsigned)ndim, GOLDEN_MAX_DIMS);
    r->dtype = (int)dtype;
    r->ndim = (int)ndim;

    size_t count = 1;
    for (uint32_t d = 0; d < ndim; d++) {
        uint32_t dim;
        if (read_u32(c, &dim) != 0)
            return reason(why, whylen, "'%s': truncated dims", r->name);
        if (dim > INT_MAX)
            return reason(why, whylen, "'%s': dim %u too large", r->name, (unsigned)dim);
        r->dims[d] = (int)dim;
        /* The data must fit in the rest of the file, which also rules out overflow here. */
        if (dim != 0 && count > (c->size - c->at) / 4 / dim)
            return reason(why, whylen, "'%s': truncated data (shape larger than file)", r->name);
        count *= dim;
    }
    size_t nbytes = count * 4;
    if (c->size - c->at < nbytes)
        return reason(why, whylen, "'%s': truncated data", r->name);
    r->count = count;
    r->data = malloc(nbytes ? nbytes : 1);
    if (!r->data)
        return reason(why, whylen, "'%s': out of memory", r->name);
    /* Store through the element's real type so callers may read it as float/int32_t
       without breaking strict aliasing. */
    for (size_t i = 0; i < count; i++) {
        uint32_t word = 0; /* always read: the size was checked above */
        read_u32(c, &word);
        if (r->dtype == GOLDEN_F32) {
            float value;
            memcpy(&value, &word, sizeof value);
            ((float *)r->data)[i] = value;
        } else {
            int32_t value;
            memcpy(&value, &word, sizeof value);
            ((int32_t *)r->data)[i] = value;
        }
    }
    return 0;
}

int golden_load(const char *path, Golden *g, char *err, size_t errlen)
{
    g->n = 0;
    g->rec = NULL;
    unsigned char *bytes;
    size_t size;
    if (read_whole_file(path, &bytes, &size, err, errlen) != 0)
        return -1;

    Cursor c = {bytes, size, 0};
    uint32_t version, n_records;
    char why[256] = "";
    if (size < 8 || memcmp(bytes, GOLDEN_MAGIC, 8) != 0) {
        snprintf(why, sizeof why, "bad magic (not an FSPOGOLD file)");
        goto fail;
    }
    c.at = 8;
    if (read_u32(&c, &version) != 0 || read_u32(&c, &n_records) != 0) {
        snprintf(why, sizeof why, "truncated file header");
        goto fail;
    }
    if (version != GOLDEN_VERSION) {
        snprintf(why, sizeof why, "unsupported version %u (expected %u)", (unsigned)version, GOLDEN_VERSION);
        goto fail;
    }
    /* Every record takes at least 12 bytes, so a larger count is corruption, not a big file. */
    if (n_records > INT_MAX || n_records > (size - c.at) / 12) {
        snprintf(why, sizeof why, "record count %u does not fit in %zu bytes", (unsigned)n_records, size);
        goto fail;
    }
    g->rec = calloc(n_records ? n_records : 1, sizeof *g->rec);
    if (!g->rec) {
        snprintf(why, sizeof why, "out of memory");
        goto fail;
    }
    for (uint32_t i = 0; i < n_records; i++) {
        size_t record_start = c.at;
        g->n = (int)i + 1; /* count the partial record so golden_free releases it */
        char reason[200];
        if (parse_record(&c, &g->rec[i], reason, sizeof reason) != 0) {
            snprintf(why, sizeof why, "record %u at byte %zu: %s", (unsigned)i, record_start, reason);
            goto fail;
        }
        for (uint32_t j = 0; j < i; j++) {
            if (strcmp(g->rec[j].name, g->rec[i].name) == 0) {
                snprintf(why, sizeof why, "record %u: duplicate name '%s'", (unsigned)i, g->rec[i].name);
                goto fail;
            }
        }
    }
    if (c.at != size) {
        snprintf(why, sizeof why, "%zu trailing bytes after %u records", size - c.at, (unsigned)n_records);
        goto fail;
    }
    free(bytes);
    return 0;

fail:
    set_error(err, errlen, path, "%s", why);
    golden_free(g);
    free(bytes);
    return -1;
}
