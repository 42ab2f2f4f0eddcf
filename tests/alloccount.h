/* alloccount: counts the allocations fspo's own code makes while armed,
 * through the linker's --wrap=malloc,calloc,realloc,posix_memalign (the
 * Makefile's WRAP_ALLOC; test_model and test_bf16 link this). Libraries'
 * own allocations (OpenBLAS, oneDNN, libc) do not go through the wrap. */
#ifndef FSPO_ALLOCCOUNT_H
#define FSPO_ALLOCCOUNT_H

extern int alloc_armed; /* count while nonzero */
extern int alloc_count; /* allocations counted */

#endif
