#include "tests/alloccount.h"

#include <stddef.h>

void *__real_malloc(size_t);
void *__real_calloc(size_t, size_t);
void *__real_realloc(void *, size_t);
int __real_posix_memalign(void **, size_t, size_t);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t a, size_t b);
void *__wrap_realloc(void *p, size_t n);
int __wrap_posix_memalign(void **p, size_t a, size_t n);

int alloc_armed, alloc_count;

void *__wrap_malloc(size_t n) { alloc_count += alloc_armed; return __real_malloc(n); }
void *__wrap_calloc(size_t a, size_t b) { alloc_count += alloc_armed; return __real_calloc(a, b); }
void *__wrap_realloc(void *p, size_t n) { alloc_count += alloc_armed; return __real_realloc(p, n); }
int __wrap_posix_memalign(void **p, size_t a, size_t n) { alloc_count += alloc_armed; return __real_posix_memalign(p, a, n); }
