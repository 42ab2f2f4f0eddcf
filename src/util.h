/* util: small helpers shared by every module (allocation, errors, timing). */
#ifndef FSPO_UTIL_H
#define FSPO_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Exit codes of the CLI contract (docs/design.md). */
enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2, EXIT_REQUEUE = 3 };

/* Print "fspo: <message>" to stderr and exit with `code`. */
_Noreturn void fatal(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Called by fatal() after printing, instead of exit(), when set: under MPI
 * it aborts the whole job so no rank waits forever for a dead one. */
void fatal_set_hook(void (*hook)(int code));
/* Called by fatal() before the hook (MPI_Abort runs no atexit handlers):
 * what must not outlive the process, e.g. the run directory's lock. */
void fatal_set_cleanup(void (*cleanup)(void));
/* "fspo: <message>" on stderr, like fatal() but returning. Both escape
 * control characters (see str_escape): messages quote paths, values and
 * library errors that come from input, and never echo them raw. */
void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Copies src into dst (always terminated, truncated to fit) with every
 * byte a terminal could act on escaped: C0 controls and DEL as \n, \r,
 * \t or \xHH, the C1 controls U+0080..U+009F, and bytes that are not
 * valid UTF-8 as \xHH. Other UTF-8 passes through. Returns dst. */
char *str_escape(char *dst, size_t len, const char *src);

/* 1 if paths a and b name the same file: the same device and inode when
 * both exist; when neither does, the same name in the same (existing)
 * directory, symlinks and "./" resolved. 0 otherwise. */
int same_file(const char *a, const char *b);

/* 64-byte aligned allocation (AVX-512 cache lines); dies on OOM naming the
 * purpose, since an OOM deep in a training run must say what it was for. */
void *xmalloc_aligned(size_t bytes, const char *what);
void *xcalloc_aligned(size_t bytes, const char *what);
void xfree_aligned(void *p);

/* mkdir -p with the user's umask. 0; MKDIRS_TOO_LONG for a path beyond
 * PATH_MAX; MKDIRS_NOT_DIR when path exists and is not a directory; -1 with
 * errno set by the first mkdir that failed other than for existing. */
enum { MKDIRS_TOO_LONG = -3, MKDIRS_NOT_DIR = -2 };
int make_dirs(const char *path);

/* The rest of stream f, malloc'd and NUL-terminated; its length (the NUL
 * not counted) in *n unless n is NULL. NULL with errno ENOMEM (out of
 * memory) or EIO (a read error). */
char *read_stream(FILE *f, size_t *n);

/* CPUs this process may run on (its affinity mask, e.g. what mpirun's
 * default --bind-to core left it); 0 if unknown. */
int affinity_cpus(void);

/* Physical memory of this machine in bytes; 0 if unknown. */
double machine_memory_bytes(void);

/* The median of v[0..n-1] (the mean of the middle two for even n; the
 * first 4096 values at most); v is left as it is. */
double median(const double *v, int n);

/* Monotonic wall-clock seconds. */
double now_seconds(void);

/* snprintf into a fixed error buffer; returns -1 so validators can
 * `return set_err(...)`. */
int set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
