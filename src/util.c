#define _GNU_SOURCE /* sched_getaffinity */
#include "util.h"

#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void (*fatal_hook)(int code);

void fatal_set_hook(void (*hook)(int code)) { fatal_hook = hook; }

void fatal(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("fspo: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    if (fatal_hook) fatal_hook(code);
    exit(code);
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
