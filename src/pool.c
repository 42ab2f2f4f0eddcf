/* pool: see pool.h. Workers spin briefly on a generation counter, then
 * sleep on a condition variable: they must not burn the cores that
 * OpenBLAS's own threads use between our dispatches. */
#include "src/pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "src/util.h"

static struct {
    int n;       /* threads in use, caller included */
    int started; /* workers created */
    pthread_t tid[POOL_MAX_THREADS];
    unsigned start_gen[POOL_MAX_THREADS]; /* generation when worker i was created */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint gen;  /* bumped per dispatch */
    atomic_int done;  /* workers finished with the current dispatch */
    PoolFn fn;
    void *ctx;
    int nt;           /* thread count of the current dispatch */
} P = { .n = 1, .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

#define SPIN_ITERS 20000

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void *worker(void *arg)
{
    int id = (int)(size_t)arg;
    unsigned seen = P.start_gen[id]; /* not P.gen: a dispatch may already have started */
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&P.gen, memory_order_acquire)) == seen && spins < SPIN_ITERS) {
            cpu_relax();
            spins++;
        }
        if (g == seen) {
            pthread_mutex_lock(&P.mu);
            while ((g = atomic_load(&P.gen)) == seen) pthread_cond_wait(&P.cv, &P.mu);
            pthread_mutex_unlock(&P.mu);
        }
        seen = g;
        if (id < P.nt) P.fn(P.ctx, id, P.nt);
        atomic_fetch_add_explicit(&P.done, 1, memory_order_release);
    }
    return NULL;
}

void pool_set_threads(int n)
{
    if (n < 1) n = 1;
    if (n > POOL_MAX_THREADS) n = POOL_MAX_THREADS;
    while (P.started < n - 1) {
        P.start_gen[P.started + 1] = atomic_load(&P.gen);
        if (pthread_create(&P.tid[P.started], NULL, worker, (void *)(size_t)(P.started + 1)) != 0)
            fatal(EXIT_RUNTIME, "cannot start a worker thread");
        pthread_detach(P.tid[P.started]);
        P.started++;
    }
    P.n = n;
}

int pool_threads(void) { return P.n; }

static void (*progress_fn)(void *);
static void *progress_ctx;

void pool_set_progress(void (*fn)(void *ctx), void *ctx)
{
    progress_fn = fn;
    progress_ctx = ctx;
}

void pool_progress(void)
{
    if (progress_fn) progress_fn(progress_ctx);
}

void pool_run(PoolFn fn, void *ctx)
{
    int nt = P.n;
    if (nt <= 1) {
        fn(ctx, 0, 1);
        return;
    }
    P.fn = fn;
    P.ctx = ctx;
    P.nt = nt;
    atomic_store(&P.done, 0);
    pthread_mutex_lock(&P.mu);
    atomic_fetch_add_explicit(&P.gen, 1, memory_order_release);
    pthread_cond_broadcast(&P.cv);
    pthread_mutex_unlock(&P.mu);
    fn(ctx, 0, nt);
    /* every started worker reports, including ones beyond nt (they do nothing) */
    int spins = 0;
    while (atomic_load_explicit(&P.done, memory_order_acquire) < P.started)
        if (++spins > 64) sched_yield();
        else cpu_relax();
}
