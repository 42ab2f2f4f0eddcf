/* h5util: the small HDF5 vocabulary shared by checkpoints and datasets
 * (internal to io/). Every helper returns 0 / -1 and never prints: callers
 * turn failures into messages that name the file. */
#ifndef FSPO_H5UTIL_H
#define FSPO_H5UTIL_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

/* Silences HDF5's own error-stack printing (once per process). */
void h5_quiet(void);

/* 0 if `path` is a readable regular file that starts with the HDF5
 * signature; else -1 with a reason ("no such file", "is a directory",
 * "empty file", "not an HDF5 file"). Checked before libhdf5 parses
 * anything, so hostile files meet our code first. */
int h5_check_signature(const char *path, char *reason, size_t len);

/* The seal: fspo reserves a 512-byte HDF5 user block at the start of every
 * file it writes and, after closing the file, stores there a checksum of
 * everything after it ("FSPOSEAL1 <hex checksum> <bytes>"). Readers check
 * the seal BEFORE libhdf5 parses the file: libhdf5 is not robust to corrupt
 * input (a flipped byte in a link index can make it free garbage), so no
 * damaged file ever reaches it. Not a defence against deliberate tampering. */
#define H5_SEAL_BYTES 512
int h5_seal(const char *path);
/* 0 if the seal matches; -1 with a reason (no seal, truncated, corrupt). */
int h5_check_seal(const char *path, char *reason, size_t len);
/* Structure check before any data is read: the file may hold only what
 * fspo writes (groups; contiguous 1-D/2-D datasets without filters or
 * external storage; little-endian integers and IEEE floats, strings; no
 * soft, external or user-defined links, no virtual datasets, no named
 * datatypes), every dataset's data and attribute inside the file, at most
 * 100000 objects. The seal does not prove fspo wrote a file (anyone can
 * recompute it), and libhdf5 has crash bugs on malformed files, so the
 * first check of a file runs in a forked child with bounded memory: a
 * child killed by a signal or silent for H5_VALIDATE_TIMEOUT_MS (plus 1 s
 * per 100 MB of file) becomes
 * "libhdf5 crashed/hung while validating ... file is malformed". A file
 * that passed, or that this process wrote (h5_trust), is not re-checked
 * until it changes (device, inode, size, mtime, ctime, sealed checksum). 0, or -1 with a
 * reason naming the object. FSPO_FAULT=h5crash / h5hang make the child
 * crash / hang (tests; h5hang waits 1 s, not 10). */
#define H5_VALIDATE_TIMEOUT_MS 10000
int h5_validate(const char *path, char *reason, size_t len);
/* Marks a file this process just wrote as validated. */
void h5_trust(const char *path);
/* on = 0 runs the check in-process (to replay a crash under a debugger);
 * default 1. timeout_ms > 0 replaces the child's timeout (the fuzz harness,
 * whose own timeout is shorter); 0 keeps the default. */
void h5_set_isolation(int on, int timeout_ms);
/* Signature, seal, then h5_validate: everything to know before handing a
 * path to libhdf5 for reading. */
int h5_check_file(const char *path, char *reason, size_t len);

/* File access without file locking: network filesystems often lack lock
 * support, and fspo never shares a file between writers (rank 0 writes a
 * temporary name, then renames). */
hid_t h5_fapl(void);
hid_t h5_create(const char *path);
hid_t h5_open_ro(const char *path);

int h5_attr_write_i64(hid_t obj, const char *name, int64_t v);
int h5_attr_write_u64(hid_t obj, const char *name, uint64_t v);
int h5_attr_write_f64(hid_t obj, const char *name, double v);
int h5_attr_write_i64s(hid_t obj, const char *name, const int64_t *v, int n);
int h5_attr_write_str(hid_t obj, const char *name, const char *s);
int h5_attr_read_i64(hid_t obj, const char *name, int64_t *v);
int h5_attr_read_u64(hid_t obj, const char *name, uint64_t *v);
int h5_attr_read_f64(hid_t obj, const char *name, double *v);
/* Reads up to n values; *got = how many the attribute has. */
int h5_attr_read_i64s(hid_t obj, const char *name, int64_t *v, int n, int *got);
/* Copies the string into buf (truncating to len-1); -1 if absent or not a string. */
int h5_attr_read_str(hid_t obj, const char *name, char *buf, size_t len);
/* The same, into a fresh malloc'd buffer the caller frees (for long text). */
char *h5_attr_read_str_alloc(hid_t obj, const char *name);

/* Writes a contiguous dataset of `type_file` with `ndim` dims from memory of `type_mem`. */
int h5_write(hid_t loc, const char *name, hid_t type_file, hid_t type_mem, int ndim, const int64_t *dims,
             const void *data);
/* The same, chunked by rows (about 1 MB a chunk), byte-shuffled and deflated
 * (level 6): for data read whole, such as a shipped model's weights. */
int h5_write_deflate(hid_t loc, const char *name, hid_t type_file, hid_t type_mem, int ndim, const int64_t *dims,
                     const void *data);
/* A new HDF5 datatype for bfloat16 (binary32's top 16 bits: sign, 8-bit
 * exponent with bias 127, 7-bit mantissa), which any HDF5 reader converts
 * (h5py: ds.astype("f4")); close it with H5Tclose. -1 on failure. */
hid_t h5_type_bf16(void);
/* Dataset dims (up to 4); -1 if absent, -2 if its type in the file is not type_file. */
int h5_dims(hid_t loc, const char *name, hid_t type_file, int *ndim, int64_t *dims);
int h5_read(hid_t loc, const char *name, hid_t type_mem, void *data);

/* fsync a file by path, and the directory holding it. */
int fsync_path(const char *path);
int fsync_dir_of(const char *path);
/* Makes a finished temporary file durable under its final name: fsync it,
 * rename it over `path`, fsync the directory. On failure the temporary is
 * removed, `path` is untouched and why says which step failed. */
int commit_tmp(const char *tmp, const char *path, char *why, size_t len);

/* 1-D dataset of variable-length UTF-8 strings (h5py: array of str). */
int h5_write_strings(hid_t loc, const char *name, char *const *s, int64_t n);
/* Reads n strings into a fresh array of malloc'd strings; -1 if absent,
 * not n strings, or not strings. Free with h5_free_strings. */
int h5_read_strings(hid_t loc, const char *name, int64_t n, char ***out);
void h5_free_strings(char **s, int64_t n);
/* "/a/b" exists (walks components: H5Lexists needs each parent). */
int h5_group_exists(hid_t f, const char *gname);
#endif
