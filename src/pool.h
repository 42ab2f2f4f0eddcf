/* pool: a tiny fork-join thread pool for the non-BLAS loops of the step
 * (softmax, SwiGLU, RMSNorm, RoPE, log-softmax), OpenMP-free.
 *
 * pool_set_threads(n) starts n-1 workers once (the caller is thread 0);
 * pool_run(fn, ctx) then calls fn(ctx, t, n) for t = 0..n-1 at once and
 * returns when all are done. pool_run allocates nothing, so the step loop
 * stays allocation-free. Work is split by rows (or by columns for sums over
 * rows), never by partial sums, so results do not depend on the thread
 * count: every element is computed by the same code in the same order. */
#ifndef FSPO_POOL_H
#define FSPO_POOL_H

#include <stddef.h>

#define POOL_MAX_THREADS 64

typedef void (*PoolFn)(void *ctx, int t, int nt);

/* Sets the thread count (1 = run everything on the caller). Starts missing
 * workers; never call it from inside pool_run. */
void pool_set_threads(int n);
int pool_threads(void);
void pool_run(PoolFn fn, void *ctx);

/* A progress hook (the data-parallel code sets one to poll its nonblocking
 * allreduces, which Open MPI moves forward only inside MPI calls): long
 * kernels call pool_progress() from thread 0, i.e. the caller's thread,
 * between units of work. NULL clears it. */
void pool_set_progress(void (*fn)(void *ctx), void *ctx);
void pool_progress(void);

/* [*lo, *hi) = thread t's share of [0, n) in nt near-equal contiguous parts. */
static inline void pool_range(size_t n, int t, int nt, size_t *lo, size_t *hi)
{
    *lo = n * (size_t)t / (size_t)nt;
    *hi = n * (size_t)(t + 1) / (size_t)nt;
}

#endif
