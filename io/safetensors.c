/* safetensors: reader and writer; see safetensors.h for what is checked. */
#include "io/safetensors.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "src/util.h"

#define ST_MAX_HEADER (100u << 20) /* the safetensors library's limit */

static const char *dtype_name(StDtype d) { return d == ST_F32 ? "F32" : d == ST_F16 ? "F16" : "BF16"; }
static size_t dtype_size(StDtype d) { return d == ST_F32 ? 4 : 2; }

uint64_t st_numel(const StTensor *t)
{
    uint64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (uint64_t)t->shape[i];
    return n;
}

const StTensor *st_find(const StSet *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->t[i].name, name)) return &s->t[i];
    return NULL;
}

void st_close(StSet *s)
{
    for (int i = 0; i < s->n; i++) free(s->t[i].name);
    for (int i = 0; i < s->n_files; i++) free(s->paths[i]);
    free(s->t), free(s->paths), free(s->data_off);
    memset(s, 0, sizeof *s);
}

/* One header entry: name -> {"dtype", "shape", "data_offsets"}. */
static int parse_entry(const char *path, const char *name, json_t *v, uint64_t data_len, StTensor *t, char *err,
                       size_t errlen)
{
    if (!json_is_object(v)) return set_err(err, errlen, "%s: tensor %s: not a JSON object", path, name);
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val) if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets"))
        return set_err(err, errlen, "%s: tensor %s: unknown key '%s'", path, name, key);
    json_t *dt = json_object_get(v, "dtype"), *sh = json_object_get(v, "shape"), *off = json_object_get(v, "data_offsets");
    if (!json_is_string(dt)) return set_err(err, errlen, "%s: tensor %s: dtype missing or not a string", path, name);
    const char *d = json_string_value(dt);
    if (!strcmp(d, "F32")) t->dtype = ST_F32;
    else if (!strcmp(d, "F16")) t->dtype = ST_F16;
    else if (!strcmp(d, "BF16")) t->dtype = ST_BF16;
    else {
        static const char *known[] = { "F64", "F8_E4M3", "F8_E5M2", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8",
                                       "BOOL" };
        int is_known = 0;
        for (size_t i = 0; i < sizeof known / sizeof *known; i++) is_known |= !strcmp(d, known[i]);
        char shown[40];
        snprintf(shown, sizeof shown, "%s", d);
        return set_err(err, errlen, "%s: tensor %s: dtype '%s' %s (fspo reads F32, F16 and BF16)", path, name, shown,
                       is_known ? "is not supported" : "is not a safetensors dtype");
    }
    if (!json_is_array(sh) || json_array_size(sh) > ST_MAX_DIMS)
        return set_err(err, errlen, "%s: tensor %s: shape missing, not a list, or more than %d dims", path, name,
                       ST_MAX_DIMS);
    t->ndim = (int)json_array_size(sh);
    double numel = 1;
    for (int i = 0; i < t->ndim; i++) {
        json_t *x = json_array_get(sh, (size_t)i);
        if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > (1LL << 40))
            return set_err(err, errlen, "%s: tensor %s: shape[%d] is not a dimension", path, name, i);
        t->shape[i] = json_integer_value(x);
        numel *= (double)t->shape[i];
    }
    if (!json_is_array(off) || json_array_size(off) != 2 || !json_is_integer(json_array_get(off, 0)) ||
        !json_is_integer(json_array_get(off, 1)))
        return set_err(err, errlen, "%s: tensor %s: data_offsets must be [begin, end]", path, name);
    json_int_t b = json_integer_value(json_array_get(off, 0)), e = json_integer_value(json_array_get(off, 1));
    if (b < 0 || e < b) return set_err(err, errlen, "%s: tensor %s: data_offsets [%lld, %lld] are not a range", path,
                                       name, (long long)b, (long long)e);
    if ((uint64_t)e > data_len)
        return set_err(err, errlen, "%s: tensor %s: data_offsets [%lld, %lld] run past the data (%llu bytes)", path,
                       name, (long long)b, (long long)e, (unsigned long long)data_len);
    t->begin = (uint64_t)b, t->end = (uint64_t)e;
    if (numel * (double)dtype_size(t->dtype) != (double)(t->end - t->begin))
        return set_err(err, errlen, "%s: tensor %s: dtype %s and shape (%.0f elements) need %.0f bytes; data_offsets "
                                    "give %llu", path, name, dtype_name(t->dtype), numel,
                       numel * (double)dtype_size(t->dtype), (unsigned long long)(t->end - t->begin));
    return 0;
}

static int by_begin(const void *a, const void *b)
{
    const StTensor *x = *(const StTensor *const *)a, *y = *(const StTensor *const *)b;
    return x->begin != y->begin ? (x->begin > y->begin) - (x->begin < y->begin) : (x->end > y->end) - (x->end < y->end);
}

static int add_file(StSet *s, const char *path, uint64_t data_off)
{
    char **p = realloc(s->paths, sizeof *p * (size_t)(s->n_files + 1));
    if (p) s->paths = p;
    uint64_t *d = realloc(s->data_off, sizeof *d * (size_t)(s->n_files + 1));
    if (d) s->data_off = d;
    if (!p || !d || !(s->paths[s->n_files] = strdup(path))) return -1;
    s->data_off[s->n_files] = data_off;
    return s->n_files++;
}

int st_open_file(StSet *s, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) return set_err(err, errlen, "%s: %s", path, strerror(errno));
    struct stat st;
    unsigned char lenb[8];
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return set_err(err, errlen, "%s: not a regular file", path);
    }
    uint64_t size = (uint64_t)st.st_size, hlen = 0;
    if (size < 8 || fread(lenb, 1, 8, f) != 8) {
        fclose(f);
        return set_err(err, errlen, "%s: truncated header: %llu bytes, the 8-byte header length does not fit", path,
                       (unsigned long long)size);
    }
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | lenb[i];
    if (hlen > size - 8 || hlen > ST_MAX_HEADER) {
        fclose(f);
        return set_err(err, errlen, "%s: header length %llu is beyond the file (%llu bytes)%s", path,
                       (unsigned long long)hlen, (unsigned long long)size,
                       hlen > ST_MAX_HEADER ? " or the 100 MiB limit" : "");
    }
    char *h = malloc(hlen + 1);
    if (!h || fread(h, 1, hlen, f) != hlen) {
        free(h);
        fclose(f);
        return set_err(err, errlen, "%s: cannot read the %llu-byte header", path, (unsigned long long)hlen);
    }
    fclose(f);
    json_error_t je;
    json_t *root = json_loadb(h, hlen, JSON_REJECT_DUPLICATES, &je);
    free(h);
    if (!root) return set_err(err, errlen, "%s: header JSON: line %d column %d: %s", path, je.line, je.column, je.text);
    uint64_t data_len = size - 8 - hlen;
    int rc = 0, first = s->n, fi = -1;
    if (!json_is_object(root)) rc = set_err(err, errlen, "%s: header JSON is not an object", path);
    if (rc == 0 && (fi = add_file(s, path, 8 + hlen)) < 0) rc = set_err(err, errlen, "%s: out of memory", path);
    const char *key;
    json_t *val;
    if (rc == 0) json_object_foreach(root, key, val)
    {
        if (!strcmp(key, "__metadata__")) {
            const char *mk;
            json_t *mv;
            if (!json_is_object(val)) rc = set_err(err, errlen, "%s: __metadata__ is not an object", path);
            else json_object_foreach(val, mk, mv) if (rc == 0 && !json_is_string(mv)) rc =
                set_err(err, errlen, "%s: __metadata__.%s is not a string", path, mk);
            if (rc) break;
            continue;
        }
        if (st_find(s, key)) {
            rc = set_err(err, errlen, "%s: tensor %s: a second tensor of that name", path, key);
            break;
        }
        if (s->n == s->cap) {
            int cap = s->cap ? 2 * s->cap : 64;
            StTensor *t = realloc(s->t, sizeof *t * (size_t)cap);
            if (!t) {
                rc = set_err(err, errlen, "%s: out of memory", path);
                break;
            }
            s->t = t, s->cap = cap;
        }
        StTensor *t = &s->t[s->n];
        memset(t, 0, sizeof *t);
        if ((rc = parse_entry(path, key, val, data_len, t, err, errlen)) != 0) break;
        if (!(t->name = strdup(key))) {
            rc = set_err(err, errlen, "%s: out of memory", path);
            break;
        }
        t->file = fi;
        s->n++;
    }
    json_decref(root);
    /* the tensors must tile the data: sorted by offset, each starts where the last ended */
    int nt = s->n - first;
    StTensor **order = rc == 0 ? malloc(sizeof *order * (size_t)(nt ? nt : 1)) : NULL;
    if (rc == 0 && !order) rc = set_err(err, errlen, "%s: out of memory", path);
    if (rc == 0) {
        for (int i = 0; i < nt; i++) order[i] = &s->t[first + i];
        qsort(order, (size_t)nt, sizeof *order, by_begin);
        uint64_t at = 0;
        for (int i = 0; i < nt && rc == 0; i++) {
            if (order[i]->begin < at)
                rc = set_err(err, errlen, "%s: tensor %s: data_offsets [%llu, %llu] overlap tensor %s's [%llu, %llu]",
                             path, order[i]->name, (unsigned long long)order[i]->begin,
                             (unsigned long long)order[i]->end, order[i - 1]->name,
                             (unsigned long long)order[i - 1]->begin, (unsigned long long)order[i - 1]->end);
            else if (order[i]->begin > at)
                rc = set_err(err, errlen, "%s: tensor %s: data_offsets start at %llu, leaving bytes %llu..%llu of the "
                                          "data unused", path, order[i]->name, (unsigned long long)order[i]->begin,
                             (unsigned long long)at, (unsigned long long)order[i]->begin);
            at = order[i]->end;
        }
        if (rc == 0 && at != data_len)
            rc = set_err(err, errlen, "%s: the tensors cover %llu bytes of data; the file holds %llu after the header",
                         path, (unsigned long long)at, (unsigned long long)data_len);
    }
    free(order);
    return rc;
}

/* A shard name from the index: a plain file name in the directory. */
static int plain_name(const char *s) { return s[0] && s[0] != '.' && !strchr(s, '/') && strlen(s) < 256; }

int st_open_dir(StSet *s, const char *dir, char *err, size_t errlen)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        if (stat(path, &st) != 0)
            return set_err(err, errlen, "%s: neither model.safetensors nor model.safetensors.index.json", dir);
        return st_open_file(s, path, err, errlen);
    }
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root) return set_err(err, errlen, "%s: line %d column %d: %s", path, je.line, je.column, je.text);
    json_t *map = json_object_get(root, "weight_map");
    int rc = 0;
    if (!json_is_object(map) || json_object_size(map) == 0)
        rc = set_err(err, errlen, "%s: weight_map missing, not an object, or empty", path);
    const char *key;
    json_t *val;
    /* each shard once, in order of first mention */
    if (rc == 0) json_object_foreach(map, key, val)
    {
        if (!json_is_string(val) || !plain_name(json_string_value(val))) {
            rc = set_err(err, errlen, "%s: weight_map.%s: not a file name in the directory", path, key);
            break;
        }
        char shard[4200];
        snprintf(shard, sizeof shard, "%s/%s", dir, json_string_value(val));
        int seen = 0;
        for (int i = 0; i < s->n_files; i++) seen |= !strcmp(s->paths[i], shard);
        if (!seen && (rc = st_open_file(s, shard, err, errlen)) != 0) break;
    }
    if (rc == 0) json_object_foreach(map, key, val)
    {
        const StTensor *t = st_find(s, key);
        const char *want = json_string_value(val);
        const char *have = t ? strrchr(s->paths[t->file], '/') + 1 : NULL;
        if (!t || strcmp(have, want)) {
            rc = set_err(err, errlen, "%s: weight_map.%s: tensor %s is not in %s%s%s", path, key, key, want,
                         t ? ", it is in " : "", t ? have : "");
            break;
        }
    }
    for (int i = 0; rc == 0 && i < s->n; i++)
        if (!json_object_get(map, s->t[i].name))
            rc = set_err(err, errlen, "%s: tensor %s of %s is not in weight_map", path, s->t[i].name,
                         s->paths[s->t[i].file]);
    json_decref(root);
    return rc;
}

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) bits = sign | 0x7f800000u | (man << 13); /* inf, nan */
    else if (exp) bits = sign | ((exp + 112) << 23) | (man << 13);
    else if (!man) bits = sign;
    else { /* subnormal: normalize */
        int e = -1;
        do man <<= 1, e++;
        while (!(man & 0x400));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

int st_read_f32(const StSet *s, const StTensor *t, float *dst, size_t n, char *err, size_t errlen)
{
    const char *path = s->paths[t->file];
    if (n != st_numel(t)) return set_err(err, errlen, "%s: tensor %s: internal size mismatch", path, t->name);
    FILE *f = fopen(path, "rb");
    if (!f) return set_err(err, errlen, "%s: %s", path, strerror(errno));
    size_t bytes = (size_t)(t->end - t->begin);
    int ok = fseeko(f, (off_t)(s->data_off[t->file] + t->begin), SEEK_SET) == 0;
    if (ok && t->dtype == ST_F32) ok = fread(dst, 1, bytes, f) == bytes;
    else if (ok) {
        /* 2-byte values, read into the upper half of dst and widened in place from the front */
        uint16_t *h = (uint16_t *)(void *)(dst + n) - n;
        ok = fread(h, 1, bytes, f) == bytes;
        for (size_t i = 0; ok && i < n; i++) {
            uint16_t v = h[i];
            if (t->dtype == ST_BF16) {
                uint32_t bits = (uint32_t)v << 16;
                memcpy(&dst[i], &bits, 4);
            } else
                dst[i] = half_to_float(v);
        }
    }
    fclose(f);
    if (!ok) return set_err(err, errlen, "%s: tensor %s: cannot read its data (file changed or truncated?)", path, t->name);
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const StWriteTensor *)a)->name, ((const StWriteTensor *)b)->name);
}

int st_write(const char *path, const StWriteTensor *in, int n, char *err, size_t errlen)
{
    StWriteTensor *t = malloc(sizeof *t * (size_t)(n ? n : 1));
    if (!t) return set_err(err, errlen, "%s: out of memory", path);
    memcpy(t, in, sizeof *t * (size_t)n);
    qsort(t, (size_t)n, sizeof *t, by_name);
    json_t *root = json_object(), *meta = json_object();
    json_object_set_new(meta, "format", json_string("pt"));
    json_object_set_new(root, "__metadata__", meta);
    uint64_t at = 0;
    for (int i = 0; i < n; i++) {
        uint64_t numel = 1;
        json_t *e = json_object(), *sh = json_array(), *off = json_array();
        for (int d = 0; d < t[i].ndim; d++) {
            json_array_append_new(sh, json_integer(t[i].shape[d]));
            numel *= (uint64_t)t[i].shape[d];
        }
        json_array_append_new(off, json_integer((json_int_t)at));
        json_array_append_new(off, json_integer((json_int_t)(at + 4 * numel)));
        at += 4 * numel;
        json_object_set_new(e, "dtype", json_string("F32"));
        json_object_set_new(e, "shape", sh);
        json_object_set_new(e, "data_offsets", off);
        json_object_set_new(root, t[i].name, e);
    }
    char *h = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(root);
    if (!h) {
        free(t);
        return set_err(err, errlen, "%s: out of memory", path);
    }
    size_t hlen = strlen(h), padded = (hlen + 7) / 8 * 8;
    unsigned char lenb[8];
    for (int i = 0; i < 8; i++) lenb[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    FILE *f = fopen(path, "wb");
    int ok = f != NULL;
    if (ok) ok = fwrite(lenb, 1, 8, f) == 8 && fwrite(h, 1, hlen, f) == hlen;
    for (size_t i = hlen; ok && i < padded; i++) ok = fputc(' ', f) != EOF;
    for (int i = 0; ok && i < n; i++) {
        size_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) numel *= (size_t)t[i].shape[d];
        ok = fwrite(t[i].data, sizeof(float), numel, f) == numel;
    }
    int e = errno;
    if (f && fclose(f) != 0) ok = 0;
    free(h);
    free(t);
    if (!ok) return set_err(err, errlen, "%s: cannot write: %s", path, strerror(e ? e : EIO));
    return 0;
}
