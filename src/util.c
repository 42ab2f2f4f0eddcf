#define _GNU_SOURCE /* sched_getaffinity */
#include "src/util.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static void (*fatal_hook)(int code);
static void (*fatal_cleanup)(void);

void fatal_set_hook(void (*hook)(int code)) { fatal_hook = hook; }
void fatal_set_cleanup(void (*cleanup)(void)) { fatal_cleanup = cleanup; }

/* Length of the valid UTF-8 sequence at s (1..4), 0 if it is not one. */
static int utf8_len(const unsigned char *s)
{
    int n = s[0] < 0x80 ? 1 : (s[0] & 0xe0) == 0xc0 ? 2 : (s[0] & 0xf0) == 0xe0 ? 3 : (s[0] & 0xf8) == 0xf0 ? 4 : 0;
    if (n == 0 || (n == 2 && s[0] < 0xc2) || (n == 4 && s[0] > 0xf4)) return 0;
    for (int i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    if ((n == 3 && s[0] == 0xe0 && s[1] < 0xa0) || (n == 3 && s[0] == 0xed && s[1] >= 0xa0) ||
        (n == 4 && s[0] == 0xf0 && s[1] < 0x90) || (n == 4 && s[0] == 0xf4 && s[1] >= 0x90))
        return 0; /* overlong, surrogate, above U+10FFFF */
    return n;
}

char *str_escape(char *dst, size_t len, const char *src)
{
    if (!len) return dst;
    size_t o = 0;
    for (const unsigned char *s = (const unsigned char *)src; *s;) {
        char esc[8];
        int n = utf8_len(s), raw = n > 0 && s[0] >= 0x20 && s[0] != 0x7f && !(n == 2 && s[0] == 0xc2 && s[1] < 0xa0);
        if (raw) memcpy(esc, s, (size_t)n), esc[n] = '\0';
        else if (*s == '\n') strcpy(esc, "\\n");
        else if (*s == '\r') strcpy(esc, "\\r");
        else if (*s == '\t') strcpy(esc, "\\t");
        else if (n == 2) snprintf(esc, sizeof esc, "\\u%04x", s[1]); /* a C1 control */
        else snprintf(esc, sizeof esc, "\\x%02x", *s), n = 1;
        size_t k = strlen(esc);
        if (o + k >= len) break;
        memcpy(dst + o, esc, k);
        o += k;
        s += n > 0 ? n : 1;
    }
    dst[o] = '\0';
    return dst;
}

static void vreport(const char *fmt, va_list ap)
{
    char msg[16384], out[16384];
    vsnprintf(msg, sizeof msg, fmt, ap);
    fprintf(stderr, "fspo: %s\n", str_escape(out, sizeof out, msg));
}

void report(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(fmt, ap);
    va_end(ap);
}

void fatal(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(fmt, ap);
    va_end(ap);
    if (fatal_cleanup) fatal_cleanup();
    if (fatal_hook) fatal_hook(code);
    exit(code);
}

/* The absolute name of a path whose file may not exist: its directory
 * resolved, then its base name. 0, or -1 if the directory does not exist. */
static int canonical_name(const char *path, char *out, size_t len)
{
    char a[PATH_MAX], b[PATH_MAX], dir[PATH_MAX];
    if (strlen(path) >= sizeof a) return -1;
    strcpy(a, path), strcpy(b, path);
    if (!realpath(dirname(a), dir)) return -1;
    snprintf(out, len, "%s/%s", dir, basename(b));
    return 0;
}

int same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    int ea = stat(a, &sa) == 0, eb = stat(b, &sb) == 0;
    if (ea && eb) return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    if (ea || eb) return 0;
    char ca[PATH_MAX + 256], cb[PATH_MAX + 256];
    if (canonical_name(a, ca, sizeof ca) != 0 || canonical_name(b, cb, sizeof cb) != 0) return !strcmp(a, b);
    return !strcmp(ca, cb);
}

void *xmalloc_aligned(size_t bytes, const char *what)
{
    void *p = NULL;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded == 0) rounded = 64;
    if (posix_memalign(&p, 64, rounded) != 0 || p == NULL)
        fatal(EXIT_RUNTIME, "out of memory allocating %.1f MiB for %s", (double)bytes / (1 << 20), what);
    return p;
}

void *xcalloc_aligned(size_t bytes, const char *what)
{
    void *p = xmalloc_aligned(bytes, what);
    memset(p, 0, bytes);
    return p;
}

void xfree_aligned(void *p) { free(p); }

double machine_memory_bytes(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    double kb = 0;
    if (f) {
        if (fscanf(f, "MemTotal: %lf kB", &kb) != 1) kb = 0;
        fclose(f);
    }
    return kb * 1024;
}

double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int affinity_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
    return CPU_COUNT(&set);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double median(const double *v, int n)
{
    double tmp[4096];
    if (n > 4096) n = 4096;
    memcpy(tmp, v, sizeof(double) * n);
    qsort(tmp, n, sizeof *tmp, cmp_double);
    return n % 2 ? tmp[n / 2] : 0.5 * (tmp[n / 2 - 1] + tmp[n / 2]);
}

char *read_stream(FILE *f, size_t *n)
{
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + len, 1, cap - 1 - len, f)) > 0;) {
        len += got;
        if (len + 1 == cap) {
            char *grown = realloc(buf, cap *= 2);
            if (!grown) free(buf);
            buf = grown;
        }
    }
    if (!buf) return errno = ENOMEM, NULL;
    if (ferror(f)) return free(buf), errno = EIO, NULL;
    buf[len] = '\0';
    if (n) *n = len;
    return buf;
}

int make_dirs(const char *path)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return MKDIRS_TOO_LONG;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST) return -1;
    struct stat st;
    return stat(buf, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : MKDIRS_NOT_DIR;
}
