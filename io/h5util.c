/* h5util: see h5util.h. */
#include "h5util.h"

#include "checksum.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

int h5_check_file(const char *path, char *reason, size_t len)
{
    if (h5_check_signature(path, reason, len) != 0) return -1;
    return h5_check_seal(path, reason, len);
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

static int attr_read_scalar(hid_t obj, const char *name, hid_t type_mem, void *v)
{
    if (H5Aexists(obj, name) <= 0) return -1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t s = H5Aget_space(a);
    int rc = H5Sget_simple_extent_npoints(s) == 1 && H5Aread(a, type_mem, v) >= 0 ? 0 : -1;
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
    if (np >= 1 && np <= n && H5Aread(a, H5T_NATIVE_INT64, v) >= 0) {
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

int h5_write(hid_t loc, const char *name, hid_t type_file, hid_t type_mem, int ndim, const int64_t *dims,
             const void *data)
{
    hsize_t d[4];
    for (int i = 0; i < ndim && i < 4; i++) d[i] = (hsize_t)dims[i];
    hid_t s = H5Screate_simple(ndim, d, NULL);
    hid_t ds = H5Dcreate2(loc, name, type_file, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = ds < 0 || H5Dwrite(ds, type_mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0 ? -1 : 0;
    if (ds >= 0) H5Dclose(ds);
    H5Sclose(s);
    return rc;
}

int h5_dims(hid_t loc, const char *name, int *ndim, int64_t *dims)
{
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0) return -1;
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0) return -1;
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
