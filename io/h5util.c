/* h5util: see h5util.h. */
#include "io/h5util.h"

#include "src/checksum.h"
#include "src/fault.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

void h5_quiet(void)
{
    static int done;
    if (!done) {
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
        done = 1;
    }
}

int h5_check_signature(const char *path, char *reason, size_t len)
{
    static const unsigned char sig[8] = { 0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n' };
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(reason, len, "%s", strerror(errno));
        return -1;
    }
    if (S_ISDIR(st.st_mode)) {
        snprintf(reason, len, "is a directory, not a file");
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(reason, len, "not a regular file");
        return -1;
    }
    if (st.st_size == 0) {
        snprintf(reason, len, "empty file");
        return -1;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(reason, len, "cannot open: %s", strerror(errno));
        return -1;
    }
    /* the superblock may sit at 0, 512, 1024, 2048, ... (HDF5's user block) */
    int found = 0;
    for (long off = 0; off + 8 <= st.st_size && off <= (1L << 20) && !found; off = off ? off * 2 : 512) {
        unsigned char buf[8];
        if (fseek(f, off, SEEK_SET) != 0 || fread(buf, 1, 8, f) != 8) break;
        found = memcmp(buf, sig, 8) == 0;
    }
    fclose(f);
    if (!found) {
        snprintf(reason, len, "not an HDF5 file (no HDF5 signature)");
        return -1;
    }
    return 0;
}

hid_t h5_fapl(void)
{
    h5_quiet();
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_file_locking(fapl, 0, 1);
    return fapl;
}

hid_t h5_create(const char *path)
{
    hid_t fapl = h5_fapl(), fcpl = H5Pcreate(H5P_FILE_CREATE);
    H5Pset_userblock(fcpl, H5_SEAL_BYTES); /* room for the seal */
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, fcpl, fapl);
    H5Pclose(fcpl);
    H5Pclose(fapl);
    return f;
}

/* Checksum of bytes [H5_SEAL_BYTES, EOF) in 1 MiB chunks; -1 on read error. */
static int sealed_region_sum(FILE *f, uint64_t *sum, uint64_t *bytes)
{
    static unsigned char buf[1 << 20];
    uint64_t h = 0x5EA1ull, n = 0;
    if (fseek(f, H5_SEAL_BYTES, SEEK_SET) != 0) return -1;
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) {
        h = checksum_combine(h, checksum64(buf, got));
        n += got;
    }
    if (ferror(f)) return -1;
    *sum = h;
    *bytes = n;
    return 0;
}

int h5_seal(const char *path)
{
    FILE *f = fopen(path, "r+b");
    if (!f) return -1;
    uint64_t sum, n;
    char block[H5_SEAL_BYTES] = { 0 };
    int rc = sealed_region_sum(f, &sum, &n);
    if (rc == 0) {
        snprintf(block, sizeof block, "FSPOSEAL1 %016llx %llu\n", (unsigned long long)sum, (unsigned long long)n);
        rc = fseek(f, 0, SEEK_SET) == 0 && fwrite(block, 1, sizeof block, f) == sizeof block ? 0 : -1;
    }
    if (fclose(f) != 0) rc = -1;
    return rc;
}

int h5_check_seal(const char *path, char *reason, size_t len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(reason, len, "%s", strerror(errno));
        return -1;
    }
    char block[H5_SEAL_BYTES + 1] = { 0 };
    unsigned long long want_sum = 0, want_n = 0;
    int rc = -1;
    if (fread(block, 1, H5_SEAL_BYTES, f) != H5_SEAL_BYTES || sscanf(block, "FSPOSEAL1 %llx %llu", &want_sum, &want_n) != 2)
        snprintf(reason, len, "no fspo seal (not written by fspo, or its first 512 bytes are damaged)");
    else {
        uint64_t sum, n;
        if (sealed_region_sum(f, &sum, &n) != 0) snprintf(reason, len, "read error: %s", strerror(errno));
        else if (n != want_n)
            snprintf(reason, len, "truncated or extended: %llu bytes after the seal, %llu sealed", (unsigned long long)n, want_n);
        else if (sum != want_sum)
            snprintf(reason, len, "file checksum mismatch: corrupt or modified after it was written");
        else
            rc = 0;
    }
    fclose(f);
    return rc;
}

hid_t h5_open_ro(const char *path)
{
    hid_t fapl = h5_fapl();
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    return f;
}

static int attr_write(hid_t obj, const char *name, hid_t type_file, hid_t type_mem, hid_t space, const void *v)
{
    if (H5Aexists(obj, name) > 0) H5Adelete(obj, name);
    hid_t a = H5Acreate2(obj, name, type_file, space, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a < 0 || H5Awrite(a, type_mem, v) < 0 ? -1 : 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    return rc;
}

int h5_attr_write_i64(hid_t obj, const char *name, int64_t v)
{
    return attr_write(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, H5Screate(H5S_SCALAR), &v);
}

int h5_attr_write_u64(hid_t obj, const char *name, uint64_t v)
{
    return attr_write(obj, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, H5Screate(H5S_SCALAR), &v);
}

int h5_attr_write_f64(hid_t obj, const char *name, double v)
{
    return attr_write(obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, H5Screate(H5S_SCALAR), &v);
}

int h5_attr_write_i64s(hid_t obj, const char *name, const int64_t *v, int n)
{
    hsize_t d = (hsize_t)n;
    return attr_write(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, H5Screate_simple(1, &d, NULL), v);
}

/* Variable-length UTF-8 strings: h5py reads them as Python str. */
static hid_t vlen_str_type(void)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}

int h5_attr_write_str(hid_t obj, const char *name, const char *s)
{
    hid_t t = vlen_str_type();
    int rc = attr_write(obj, name, t, t, H5Screate(H5S_SCALAR), &s);
    H5Tclose(t);
    return rc;
}

/* 1 if attribute a's type in the file is of the class type_mem has (an
 * integer is not read from a float or a string, nor a float from text). */
static int attr_class_ok(hid_t a, hid_t type_mem)
{
    hid_t ft = H5Aget_type(a);
    int ok = ft >= 0 && H5Tget_class(ft) == H5Tget_class(type_mem);
    if (ft >= 0) H5Tclose(ft);
    return ok;
}

static int attr_read_scalar(hid_t obj, const char *name, hid_t type_mem, void *v)
{
    if (H5Aexists(obj, name) <= 0) return -1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t s = H5Aget_space(a);
    int rc = attr_class_ok(a, type_mem) && H5Sget_simple_extent_npoints(s) == 1 && H5Aread(a, type_mem, v) >= 0 ? 0 : -1;
    H5Sclose(s);
    H5Aclose(a);
    return rc;
}

int h5_attr_read_i64(hid_t obj, const char *name, int64_t *v) { return attr_read_scalar(obj, name, H5T_NATIVE_INT64, v); }
int h5_attr_read_u64(hid_t obj, const char *name, uint64_t *v) { return attr_read_scalar(obj, name, H5T_NATIVE_UINT64, v); }
int h5_attr_read_f64(hid_t obj, const char *name, double *v) { return attr_read_scalar(obj, name, H5T_NATIVE_DOUBLE, v); }

int h5_attr_read_i64s(hid_t obj, const char *name, int64_t *v, int n, int *got)
{
    if (H5Aexists(obj, name) <= 0) return -1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t s = H5Aget_space(a);
    hssize_t np = H5Sget_simple_extent_npoints(s);
    int rc = -1;
    if (np >= 1 && np <= n && attr_class_ok(a, H5T_NATIVE_INT64) && H5Aread(a, H5T_NATIVE_INT64, v) >= 0) {
        *got = (int)np;
        rc = 0;
    }
    H5Sclose(s);
    H5Aclose(a);
    return rc;
}

char *h5_attr_read_str_alloc(hid_t obj, const char *name)
{
    if (H5Aexists(obj, name) <= 0) return NULL;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return NULL;
    hid_t ft = H5Aget_type(a), s = H5Aget_space(a);
    char *out = NULL;
    if (H5Tget_class(ft) == H5T_STRING && H5Sget_simple_extent_npoints(s) == 1) {
        if (H5Tis_variable_str(ft) > 0) {
            hid_t t = vlen_str_type();
            char *p = NULL;
            if (H5Aread(a, t, &p) >= 0 && p) {
                out = strdup(p);
                H5free_memory(p);
            }
            H5Tclose(t);
        } else {
            size_t n = H5Tget_size(ft);
            if (n < (1u << 28)) {
                hid_t t = H5Tcopy(H5T_C_S1);
                H5Tset_size(t, n + 1);
                out = calloc(1, n + 2);
                if (out && H5Aread(a, t, out) < 0) {
                    free(out);
                    out = NULL;
                }
                H5Tclose(t);
            }
        }
    }
    H5Tclose(ft);
    H5Sclose(s);
    H5Aclose(a);
    return out;
}

int h5_attr_read_str(hid_t obj, const char *name, char *buf, size_t len)
{
    char *s = h5_attr_read_str_alloc(obj, name);
    if (!s) return -1;
    snprintf(buf, len, "%s", s);
    free(s);
    return 0;
}

static int write_dataset(hid_t loc, const char *name, hid_t type_file, hid_t type_mem, int ndim, const int64_t *dims,
                         const void *data, hid_t dcpl)
{
    hsize_t d[4];
    for (int i = 0; i < ndim && i < 4; i++) d[i] = (hsize_t)dims[i];
    hid_t s = H5Screate_simple(ndim, d, NULL);
    hid_t ds = H5Dcreate2(loc, name, type_file, s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    int rc = ds < 0 || H5Dwrite(ds, type_mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0 ? -1 : 0;
    if (ds >= 0) H5Dclose(ds);
    H5Sclose(s);
    return rc;
}

int h5_write(hid_t loc, const char *name, hid_t type_file, hid_t type_mem, int ndim, const int64_t *dims,
             const void *data)
{
    return write_dataset(loc, name, type_file, type_mem, ndim, dims, data, H5P_DEFAULT);
}

int h5_write_deflate(hid_t loc, const char *name, hid_t type_file, hid_t type_mem, int ndim, const int64_t *dims,
                     const void *data)
{
    if (ndim < 1 || ndim > 4 || H5Zfilter_avail(H5Z_FILTER_DEFLATE) <= 0) return -1;
    /* chunks of whole rows, about 1 MB: HDF5 caps a chunk at 4 GB and
     * decompresses a chunk at a time */
    size_t row = H5Tget_size(type_file);
    hsize_t chunk[4];
    for (int i = 1; i < ndim; i++) chunk[i] = (hsize_t)dims[i], row *= (size_t)dims[i];
    hsize_t rows = row ? (hsize_t)((1u << 20) / row) : 1;
    chunk[0] = rows < 1 ? 1 : rows > (hsize_t)dims[0] ? (hsize_t)dims[0] : rows;
    for (int i = 0; i < ndim; i++)
        if (chunk[i] == 0) return write_dataset(loc, name, type_file, type_mem, ndim, dims, data, H5P_DEFAULT);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    int rc = dcpl < 0 || H5Pset_chunk(dcpl, ndim, chunk) < 0 || H5Pset_shuffle(dcpl) < 0 || H5Pset_deflate(dcpl, 6) < 0
                 ? -1
                 : write_dataset(loc, name, type_file, type_mem, ndim, dims, data, dcpl);
    if (dcpl >= 0) H5Pclose(dcpl);
    return rc;
}

hid_t h5_type_bf16(void)
{
    /* binary32's top half: sign bit 15, exponent bits 7..14 (bias 127),
     * mantissa bits 0..6 with the implied leading 1 */
    hid_t t = H5Tcopy(H5T_IEEE_F32LE);
    if (t < 0) return -1;
    if (H5Tset_fields(t, 15, 7, 8, 0, 7) < 0 || H5Tset_precision(t, 16) < 0 || H5Tset_size(t, 2) < 0 ||
        H5Tset_ebias(t, 127) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

int h5_dims(hid_t loc, const char *name, hid_t type_file, int *ndim, int64_t *dims)
{
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0) return -1;
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0) return -1;
    hid_t t = H5Dget_type(ds);
    int same = t >= 0 && H5Tequal(t, type_file) > 0;
    if (t >= 0) H5Tclose(t);
    if (!same) {
        H5Dclose(ds);
        return -2;
    }
    hid_t s = H5Dget_space(ds);
    int n = H5Sget_simple_extent_ndims(s), rc = -1;
    if (n >= 0 && n <= 4) {
        hsize_t d[4];
        H5Sget_simple_extent_dims(s, d, NULL);
        for (int i = 0; i < n; i++) dims[i] = (int64_t)d[i];
        *ndim = n;
        rc = 0;
    }
    H5Sclose(s);
    H5Dclose(ds);
    return rc;
}

int h5_read(hid_t loc, const char *name, hid_t type_mem, void *data)
{
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0) return -1;
    int rc = H5Dread(ds, type_mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0 ? -1 : 0;
    H5Dclose(ds);
    return rc;
}

int fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int fsync_dir_of(const char *path)
{
    char *copy = strdup(path);
    if (!copy) return -1;
    int rc = fsync_path(dirname(copy));
    free(copy);
    return rc;
}

int h5_write_strings(hid_t loc, const char *name, char *const *s, int64_t n)
{
    hid_t t = vlen_str_type();
    hsize_t d = (hsize_t)n;
    hid_t sp = H5Screate_simple(1, &d, NULL);
    hid_t ds = H5Dcreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = ds < 0 || (n > 0 && H5Dwrite(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, s) < 0) ? -1 : 0;
    if (ds >= 0) H5Dclose(ds);
    H5Sclose(sp);
    H5Tclose(t);
    return rc;
}

int h5_read_strings(hid_t loc, const char *name, int64_t n, char ***out)
{
    *out = NULL;
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0) return -1;
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0) return -1;
    hid_t ft = H5Dget_type(ds), sp = H5Dget_space(ds);
    int rc = -1;
    if (H5Tget_class(ft) == H5T_STRING && H5Tis_variable_str(ft) > 0 && H5Sget_simple_extent_ndims(sp) == 1 &&
        H5Sget_simple_extent_npoints(sp) == n) {
        char **raw = calloc(n > 0 ? (size_t)n : 1, sizeof(char *));
        char **copy = calloc(n > 0 ? (size_t)n : 1, sizeof(char *));
        hid_t t = vlen_str_type();
        if (raw && copy && (n == 0 || H5Dread(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw) >= 0)) {
            rc = 0;
            for (int64_t i = 0; i < n; i++)
                if (!(copy[i] = strdup(raw[i] ? raw[i] : ""))) rc = -1;
            if (n > 0) H5Dvlen_reclaim(t, sp, H5P_DEFAULT, raw);
        }
        H5Tclose(t);
        free(raw);
        if (rc == 0) *out = copy;
        else h5_free_strings(copy, n);
    }
    H5Tclose(ft);
    H5Sclose(sp);
    H5Dclose(ds);
    return rc;
}

void h5_free_strings(char **s, int64_t n)
{
    if (!s) return;
    for (int64_t i = 0; i < n; i++) free(s[i]);
    free(s);
}

int h5_group_exists(hid_t f, const char *gname)
{
    char part[256];
    for (const char *p = strchr(gname + 1, '/');; p = strchr(p + 1, '/')) {
        size_t n = p ? (size_t)(p - gname) : strlen(gname);
        if (n >= sizeof part) return 0;
        memcpy(part, gname, n);
        part[n] = '\0';
        if (H5Lexists(f, part, H5P_DEFAULT) <= 0) return 0;
        if (!p) return 1;
    }
}

int commit_tmp(const char *tmp, const char *path, char *why, size_t len)
{
    const char *step = fsync_path(tmp) != 0 ? "fsync" : rename(tmp, path) != 0 ? "rename" : NULL;
    if (step) {
        snprintf(why, len, "%s failed: %s", step, strerror(errno));
        unlink(tmp);
        return -1;
    }
    fsync_dir_of(path);
    return 0;
}

/* ---- structure validation (before any data is read) ---- */

/* What fspo writes, and so all a reader accepts: groups and contiguous
 * datasets of at most 2 dimensions, no filters (but for bfloat16 weights:
 * chunked, shuffled and deflated, every chunk written and inside the file),
 * no external storage, no soft or external links, no virtual datasets, no
 * named datatypes; integers and floats little-endian of 1-8 bytes (floats:
 * IEEE 4 and 8 bytes, bfloat16), strings; every dataset's raw data and every
 * attribute inside the file. Caps keep the walk itself
 * bounded whatever the file claims. */
#define H5V_MAX_OBJECTS 100000
#define H5V_MAX_ATTR_BYTES (64u << 20)

typedef struct {
    hid_t file;
    uint64_t fsize;
    long objects;
    char *reason;
    size_t len;
    int failed;
} H5Walk;

static int h5v_fail(H5Walk *w, const char *obj, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int h5v_fail(H5Walk *w, const char *obj, const char *fmt, ...)
{
    if (w->failed) return -1;
    w->failed = 1;
    char what[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(w->reason, w->len, "%.160s: %s", obj, what);
    return -1;
}

/* A datatype fspo could have written: 0, or -1 with why. */
static int h5v_type(hid_t t, char *why, size_t len)
{
    H5T_class_t c = H5Tget_class(t);
    size_t n = H5Tget_size(t);
    if (c == H5T_INTEGER || c == H5T_FLOAT) {
        if (n != 1 && n != 2 && n != 4 && n != 8)
            return snprintf(why, len, "a %zu-byte %s type", n, c == H5T_FLOAT ? "float" : "integer"), -1;
        if (n > 1 && H5Tget_order(t) != H5T_ORDER_LE)
            return snprintf(why, len, "a big-endian (or mixed-order) %s type, fspo writes little-endian",
                            c == H5T_FLOAT ? "float" : "integer"), -1;
        if (c == H5T_FLOAT && n == 2) { /* bfloat16 (shipped weights) is the one 2-byte float fspo writes */
            hid_t bt = h5_type_bf16();
            int same = bt >= 0 && H5Tequal(t, bt) > 0;
            if (bt >= 0) H5Tclose(bt);
            if (same) return 0;
        }
        if (c == H5T_FLOAT && n < 4)
            return snprintf(why, len, "a %zu-byte float type, fspo writes 4- and 8-byte floats and bfloat16", n), -1;
        if (c == H5T_FLOAT && ((n == 4 && H5Tequal(t, H5T_IEEE_F32LE) <= 0) || (n == 8 && H5Tequal(t, H5T_IEEE_F64LE) <= 0)))
            return snprintf(why, len, "a non-IEEE %zu-byte float type", n), -1;
        return 0;
    }
    if (c == H5T_STRING) {
        if (H5Tis_variable_str(t) <= 0 && n > (1u << 20))
            return snprintf(why, len, "a fixed-length string of %zu bytes", n), -1;
        return 0;
    }
    static const char *names[] = { [H5T_TIME] = "a time", [H5T_BITFIELD] = "a bitfield", [H5T_OPAQUE] = "an opaque",
                                   [H5T_COMPOUND] = "a compound", [H5T_REFERENCE] = "a reference", [H5T_ENUM] = "an enum",
                                   [H5T_VLEN] = "a variable-length sequence", [H5T_ARRAY] = "an array" };
    const char *nm = c > 0 && c < (int)(sizeof names / sizeof *names) && names[c] ? names[c] : "an unknown";
    return snprintf(why, len, "%s datatype, which fspo never writes", nm), -1;
}

/* Reads every value of attribute a (or dataset ds) of file type t and
 * dataspace s into memory of the type fspo's readers use, and drops it. */
static int h5v_read_values(hid_t a, hid_t ds, hid_t t, hid_t s)
{
    hssize_t np = H5Sget_simple_extent_npoints(s);
    if (np <= 0) return 0;
    H5T_class_t c = H5Tget_class(t);
    int vlen = c == H5T_STRING && H5Tis_variable_str(t) > 0;
    hid_t mt = vlen ? vlen_str_type() : c == H5T_STRING ? H5Tcopy(t) : c == H5T_FLOAT ? H5Tcopy(H5T_NATIVE_DOUBLE)
               : H5Tget_sign(t) == H5T_SGN_NONE ? H5Tcopy(H5T_NATIVE_UINT64) : H5Tcopy(H5T_NATIVE_INT64);
    size_t each = vlen ? sizeof(char *) : H5Tget_size(mt);
    void *buf = calloc((size_t)np, each ? each : 1);
    int rc = -1;
    if (buf) {
        herr_t r = ds >= 0 ? H5Dread(ds, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) : H5Aread(a, mt, buf);
        rc = r < 0 ? -1 : 0;
        if (r >= 0 && vlen) H5Dvlen_reclaim(mt, s, H5P_DEFAULT, buf);
    }
    free(buf);
    H5Tclose(mt);
    return rc;
}

static herr_t h5v_attr(hid_t obj, const char *name, const H5A_info_t *info, void *p)
{
    H5Walk *w = p;
    char label[200], why[160], on[100] = "";
    if (H5Iget_name(obj, on, sizeof on) < 0 || !strcmp(on, "/")) on[0] = '\0';
    snprintf(label, sizeof label, "%s%sattribute '%.60s'", on, on[0] ? ": " : "", name);
    if (++w->objects > H5V_MAX_OBJECTS) return h5v_fail(w, label, "more than %d objects and attributes", H5V_MAX_OBJECTS);
    if (info->data_size > H5V_MAX_ATTR_BYTES || info->data_size > w->fsize)
        return h5v_fail(w, label, "%llu bytes of data in a %llu-byte file (limit %u MiB)",
                        (unsigned long long)info->data_size, (unsigned long long)w->fsize, H5V_MAX_ATTR_BYTES >> 20);
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return h5v_fail(w, label, "cannot be opened (corrupt file)");
    hid_t t = H5Aget_type(a), s = H5Aget_space(a);
    int rc = 0;
    if (t < 0 || s < 0) rc = h5v_fail(w, label, "type or dataspace unreadable (corrupt file)");
    else if (h5v_type(t, why, sizeof why) != 0) rc = h5v_fail(w, label, "%s", why);
    else {
        int nd = H5Sget_simple_extent_ndims(s);
        hssize_t np = H5Sget_simple_extent_npoints(s);
        if (nd < 0 || nd > 1) rc = h5v_fail(w, label, "a dataspace of rank %d, fspo writes scalars and lists", nd);
        else if (np < 0 || (uint64_t)np * H5Tget_size(t) > w->fsize)
            rc = h5v_fail(w, label, "%lld elements, more than the file holds", (long long)np);
    }
    /* read the value too, as the readers will: a string's bytes live in the global heap, whose
     * corruption libhdf5 meets only then (and copies gigabytes from), so meet it here */
    if (rc == 0 && h5v_read_values(a, -1, t, s) != 0) rc = h5v_fail(w, label, "its value cannot be read (corrupt file)");
    if (t >= 0) H5Tclose(t);
    if (s >= 0) H5Sclose(s);
    H5Aclose(a);
    return rc;
}

static int h5v_attrs(H5Walk *w, hid_t obj)
{
    hsize_t idx = 0;
    if (H5Aiterate2(obj, H5_INDEX_NAME, H5_ITER_NATIVE, &idx, h5v_attr, w) < 0 && !w->failed) return -1;
    return w->failed ? -1 : 0;
}

/* A packed dataset's chunks: at most 64 Mi values each, every one written,
 * inside the file and with both filters applied. */
static int h5v_chunks(H5Walk *w, hid_t ds, hid_t dcpl, int nd, const hsize_t *d, const char *label)
{
    hsize_t ch[2] = { 0, 0 }, grid[2] = { 1, 1 }; /* chunk shape, chunks along each dimension */
    uint64_t values = 1;
    if (H5Pget_chunk(dcpl, 2, ch) != nd) return h5v_fail(w, label, "chunk rank differs from the dataset's (corrupt file)");
    for (int i = 0; i < nd; i++) {
        if (ch[i] == 0 || ch[i] > d[i]) return h5v_fail(w, label, "chunk dimension %d is %llu (dataset %llu)", i,
                                                     (unsigned long long)ch[i], (unsigned long long)d[i]);
        values *= ch[i];
        grid[i] = (d[i] + ch[i] - 1) / ch[i];
    }
    hsize_t want = grid[0] * grid[1];
    /* h5_write_deflate's chunks hold about 1 MB (or the whole dataset): at
     * least 2^18 values, so the walk below visits a bounded number of them */
    uint64_t total = 1;
    for (int i = 0; i < nd; i++) total *= d[i];
    if (values > (64u << 20) || values < (total < (1u << 18) ? total : (1u << 18)))
        return h5v_fail(w, label, "chunks of %llu values, fspo writes about 1 MB a chunk", (unsigned long long)values);
    /* by coordinate: HDF5 1.10's H5Dget_num_chunks misses a single-chunk index */
    for (hsize_t i = 0; i < want; i++) {
        hsize_t off[2] = { i / grid[1] * ch[0], i % grid[1] * ch[1] }; /* grid[1] is 1 for a vector */
        unsigned mask = 0;
        haddr_t addr = HADDR_UNDEF;
        hsize_t size = 0;
        if (H5Dget_chunk_info_by_coord(ds, off, &mask, &addr, &size) < 0 || addr == HADDR_UNDEF)
            return h5v_fail(w, label, "chunk %llu of %llu was never written (corrupt or unfinished file)",
                            (unsigned long long)i, (unsigned long long)want);
        if (addr > w->fsize || size > w->fsize - addr)
            return h5v_fail(w, label, "chunk %llu lies beyond the end of the file", (unsigned long long)i);
        if (mask != 0) return h5v_fail(w, label, "chunk %llu skipped a filter, fspo applies both", (unsigned long long)i);
    }
    return 0;
}

static int h5v_dataset(H5Walk *w, hid_t ds, const char *label)
{
    char why[160];
    hid_t t = H5Dget_type(ds), s = H5Dget_space(ds), dcpl = H5Dget_create_plist(ds);
    int rc = 0;
    if (t < 0 || s < 0 || dcpl < 0) {
        rc = h5v_fail(w, label, "type, dataspace or layout unreadable (corrupt file)");
        goto out;
    }
    H5D_layout_t lay = H5Pget_layout(dcpl);
    int nf = H5Pget_nfilters(dcpl), ne = H5Pget_external_count(dcpl);
    if (lay == H5D_VIRTUAL) {
        rc = h5v_fail(w, label, "a virtual dataset (data mapped from other datasets or files), which fspo never writes");
        goto out;
    }
    if (ne != 0) {
        rc = h5v_fail(w, label, "external storage (raw data in %d other file(s)), which fspo never writes", ne);
        goto out;
    }
    /* the one filtered form fspo writes (h5_write_deflate, for bf16 weights):
     * chunked, shuffle then deflate */
    hid_t bt = h5_type_bf16();
    int packed = lay == H5D_CHUNKED && nf == 2 && bt >= 0 && H5Tequal(t, bt) > 0 &&
                 H5Pget_filter2(dcpl, 0, NULL, NULL, NULL, 0, NULL, NULL) == H5Z_FILTER_SHUFFLE &&
                 H5Pget_filter2(dcpl, 1, NULL, NULL, NULL, 0, NULL, NULL) == H5Z_FILTER_DEFLATE;
    if (bt >= 0) H5Tclose(bt);
    if (nf != 0 && !packed) {
        unsigned flags = 0, cd[8];
        size_t ncd = 8;
        char fname[64] = "";
        H5Z_filter_t id = nf > 0 ? H5Pget_filter2(dcpl, 0, &flags, &ncd, cd, sizeof fname, fname, NULL) : -1;
        for (char *c = fname; *c; c++)
            if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e) *c = '?';
        rc = h5v_fail(w, label, "filter %d%s%s%s (compression or another filter), which fspo never writes", (int)id,
                      fname[0] ? " (" : "", fname, fname[0] ? ")" : "");
        goto out;
    }
    if (lay != H5D_CONTIGUOUS && !packed) {
        rc = h5v_fail(w, label, "%s layout, fspo writes contiguous datasets (chunked only when shuffled and deflated)",
                      lay == H5D_CHUNKED ? "chunked" : lay == H5D_COMPACT ? "compact" : "an unknown");
        goto out;
    }
    if (h5v_type(t, why, sizeof why) != 0) {
        rc = h5v_fail(w, label, "%s", why);
        goto out;
    }
    int nd = H5Sget_simple_extent_ndims(s);
    if (H5Sget_simple_extent_type(s) != H5S_SIMPLE || nd < 1 || nd > 2) {
        rc = h5v_fail(w, label, "a dataspace of rank %d, fspo writes 1 or 2 dimensions", nd);
        goto out;
    }
    hsize_t d[2], mx[2];
    H5Sget_simple_extent_dims(s, d, mx);
    uint64_t bytes = H5Tget_size(t);
    /* deflate expands at most 1032:1, so a packed dataset's values fit in 1032 file sizes */
    uint64_t room = packed ? w->fsize * 1032 : w->fsize;
    for (int i = 0; i < nd; i++) {
        if (d[i] > room || (bytes && d[i] > room / bytes)) {
            rc = h5v_fail(w, label, "dimension %d is %llu: more elements than a %llu-byte file can hold", i,
                          (unsigned long long)d[i], (unsigned long long)w->fsize);
            goto out;
        }
        bytes *= d[i];
    }
    if (bytes > room) {
        rc = h5v_fail(w, label, "%llu bytes of data in a %llu-byte file", (unsigned long long)bytes, (unsigned long long)w->fsize);
        goto out;
    }
    if (packed) {
        rc = h5v_chunks(w, ds, dcpl, nd, d, label);
        goto out;
    }
    haddr_t off = H5Dget_offset(ds);
    if (bytes > 0 && (off == HADDR_UNDEF || off > w->fsize || bytes > w->fsize - off))
        rc = h5v_fail(w, label, off == HADDR_UNDEF ? "its data was never written" : "its data lies beyond the end of the file");
    /* variable-length strings point into the global heap: read them here, as for attributes */
    else if (H5Tget_class(t) == H5T_STRING && h5v_read_values(-1, ds, t, s) != 0)
        rc = h5v_fail(w, label, "its strings cannot be read (corrupt file)");
out:
    if (t >= 0) H5Tclose(t);
    if (s >= 0) H5Sclose(s);
    if (dcpl >= 0) H5Pclose(dcpl);
    return rc;
}

static herr_t h5v_link(hid_t g, const char *name, const H5L_info_t *info, void *p)
{
    H5Walk *w = p;
    char label[160];
    snprintf(label, sizeof label, "/%.140s", name);
    if (++w->objects > H5V_MAX_OBJECTS) return h5v_fail(w, label, "more than %d objects and attributes", H5V_MAX_OBJECTS);
    if (info->type == H5L_TYPE_SOFT) return h5v_fail(w, label, "a soft link, which fspo never writes");
    if (info->type == H5L_TYPE_EXTERNAL) return h5v_fail(w, label, "an external link (to another file), which fspo never writes");
    if (info->type != H5L_TYPE_HARD) return h5v_fail(w, label, "a user-defined link, which fspo never writes");
    hid_t o = H5Oopen(g, name, H5P_DEFAULT);
    if (o < 0) return h5v_fail(w, label, "cannot be opened (corrupt file)");
    H5I_type_t kind = H5Iget_type(o);
    int rc = 0;
    if (kind == H5I_DATASET) rc = h5v_dataset(w, o, label);
    else if (kind != H5I_GROUP) rc = h5v_fail(w, label, "a named datatype or unknown object, which fspo never writes");
    if (rc == 0) rc = h5v_attrs(w, o);
    H5Oclose(o);
    return rc ? -1 : 0;
}

/* The walk itself, in whatever process runs it. */
static int h5v_walk(const char *path, char *reason, size_t len)
{
    struct stat st;
    if (stat(path, &st) != 0) return snprintf(reason, len, "%s", strerror(errno)), -1;
    H5Walk w = { .fsize = (uint64_t)st.st_size, .reason = reason, .len = len };
    w.file = h5_open_ro(path);
    if (w.file < 0) return snprintf(reason, len, "HDF5 cannot open it (truncated or corrupt)"), -1;
    int rc = h5v_attrs(&w, w.file);
    if (rc == 0 && H5Lvisit(w.file, H5_INDEX_NAME, H5_ITER_NATIVE, h5v_link, &w) < 0) rc = -1;
    if (rc != 0 && !w.failed) snprintf(reason, len, "its object index cannot be walked (corrupt file)");
    H5Fclose(w.file);
    return rc;
}

/* ---- isolation: the first look at a file runs in a child process ---- */

static int isolate = 1, fixed_timeout_ms;
void h5_set_isolation(int on, int timeout_ms)
{
    isolate = on;
    fixed_timeout_ms = timeout_ms;
}

/* Verdicts on files this process wrote or already validated, by identity:
 * a file is re-checked only if it changes. */
#define H5V_CACHE 64
static struct { dev_t dev; ino_t ino; off_t size; struct timespec mtime, ctime; uint64_t seal; int ok; char reason[256]; } verdicts[H5V_CACHE];
static int n_verdicts;

/* The checksum the seal records (0 if none): part of a file's identity, so
 * a file rewritten in place within one timestamp tick is not mistaken for
 * the one checked before. */
static uint64_t seal_of(const char *path)
{
    char block[H5_SEAL_BYTES + 1] = { 0 };
    unsigned long long sum = 0, n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    if (fread(block, 1, H5_SEAL_BYTES, f) != H5_SEAL_BYTES || sscanf(block, "FSPOSEAL1 %llx %llu", &sum, &n) != 2) sum = 0;
    fclose(f);
    return sum;
}

static int same_file(int i, const struct stat *st, uint64_t seal)
{
    return verdicts[i].seal == seal && verdicts[i].dev == st->st_dev && verdicts[i].ino == st->st_ino && verdicts[i].size == st->st_size &&
           verdicts[i].mtime.tv_sec == st->st_mtim.tv_sec && verdicts[i].mtime.tv_nsec == st->st_mtim.tv_nsec &&
           verdicts[i].ctime.tv_sec == st->st_ctim.tv_sec && verdicts[i].ctime.tv_nsec == st->st_ctim.tv_nsec;
}

/* The cached verdict's index, or -1. */
static int cached(const struct stat *st, uint64_t seal)
{
    for (int i = 0; i < n_verdicts && i < H5V_CACHE; i++)
        if (same_file(i, st, seal)) return i;
    return -1;
}

static void remember(const struct stat *st, uint64_t seal, int ok, const char *reason)
{
    int k = cached(st, seal);
    if (k < 0) k = n_verdicts++ % H5V_CACHE;
    verdicts[k].dev = st->st_dev, verdicts[k].ino = st->st_ino, verdicts[k].size = st->st_size;
    verdicts[k].mtime = st->st_mtim, verdicts[k].ctime = st->st_ctim, verdicts[k].ok = ok;
    verdicts[k].seal = seal;
    snprintf(verdicts[k].reason, sizeof verdicts[k].reason, "%s", reason);
}

void h5_trust(const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0) remember(&st, seal_of(path), 1, "");
}

#if defined(__SANITIZE_ADDRESS__)
#define H5V_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define H5V_ASAN 1
#endif
#endif

/* The child: bounded memory (unless a sanitizer owns the address space),
 * the walk, its verdict down the pipe, _exit (no atexit handlers: MPI,
 * HDF5 and the parent's buffers belong to the parent). */
static void h5v_child(const char *path, uint64_t fsize, int fd, int timeout_ms)
{
    /* a crash ends the child by its signal, whatever handlers the parent installed */
    static const int crash_signals[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGALRM };
    for (size_t i = 0; i < sizeof crash_signals / sizeof *crash_signals; i++) signal(crash_signals[i], SIG_DFL);
    /* and a child whose parent died (killed while it waited) ends by itself: no orphan spinning in libhdf5 */
    alarm((unsigned)(timeout_ms / 1000 + 2));
    Faults fault = fault_from_env();
    if (fault.h5crash) raise(SIGSEGV);
    if (fault.h5hang) pause();
#ifndef H5V_ASAN
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2) pages = 0;
        fclose(f);
    }
    if (pages > 0) {
        uint64_t cap = (uint64_t)pages * (uint64_t)sysconf(_SC_PAGESIZE) + (512ull << 20) + 4 * fsize;
        struct rlimit rl = { cap, cap };
        setrlimit(RLIMIT_AS, &rl);
    }
#endif
    char reason[512] = "";
    int rc = h5v_walk(path, reason, sizeof reason);
    if (rc != 0 && write(fd, reason, strlen(reason)) < 0) rc = -1;
    _exit(rc == 0 ? 0 : 1);
}

static int h5v_isolated(const char *path, uint64_t fsize, char *reason, size_t len)
{
    int fds[2];
    if (pipe(fds) != 0) return h5v_walk(path, reason, len);
    /* 10 s, and 1 s more per 100 MB (a big dataset's user ids are read); the h5hang test waits 1 s */
    Faults fault = fault_from_env();
    uint64_t per_size = fsize / 100000000 * 1000;
    int timeout_ms = H5_VALIDATE_TIMEOUT_MS + (int)(per_size < 3600000 ? per_size : 3600000), hung = 0;
    if (fixed_timeout_ms > 0) timeout_ms = fixed_timeout_ms;
    else if (fault.h5hang) timeout_ms = 1000;
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]), close(fds[1]);
        return h5v_walk(path, reason, len);
    }
    if (pid == 0) {
        close(fds[0]);
        h5v_child(path, fsize, fds[1], timeout_ms);
    }
    close(fds[1]);
    /* the verdict comes when the child closes the pipe (it exits) */
    char msg[512];
    size_t got = 0;
    struct pollfd pfd = { .fd = fds[0], .events = POLLIN };
    for (;;) {
        int r = poll(&pfd, 1, timeout_ms);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            hung = 1;
            break;
        }
        ssize_t n = read(fds[0], msg + got, sizeof msg - 1 - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
        if (got == sizeof msg - 1) break;
    }
    msg[got] = '\0';
    close(fds[0]);
    if (hung) kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (hung)
        return snprintf(reason, len, "libhdf5 hung while validating (no answer in %.0f s, killed) — file is malformed",
                        timeout_ms / 1000.0), -1;
    if (WIFSIGNALED(status))
        return snprintf(reason, len, "libhdf5 crashed while validating (signal %d) — file is malformed", WTERMSIG(status)), -1;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
    return snprintf(reason, len, "%s", got ? msg : "validation failed (no reason given)"), -1;
}

int h5_validate(const char *path, char *reason, size_t len)
{
    struct stat st;
    if (stat(path, &st) != 0) return snprintf(reason, len, "%s", strerror(errno)), -1;
    uint64_t seal = seal_of(path);
    int k = cached(&st, seal);
    if (k >= 0) return verdicts[k].ok ? 0 : (snprintf(reason, len, "%s", verdicts[k].reason), -1);
    int rc = isolate ? h5v_isolated(path, (uint64_t)st.st_size, reason, len) : h5v_walk(path, reason, len);
    remember(&st, seal, rc == 0, rc == 0 ? "" : reason);
    return rc;
}

int h5_check_file(const char *path, char *reason, size_t len)
{
    if (h5_check_signature(path, reason, len) != 0) return -1;
    if (h5_check_seal(path, reason, len) != 0) return -1;
    return h5_validate(path, reason, len);
}
