/* dist: MPI wrappers; see dist.h. */
#include "mpi/dist.h"

#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "src/pool.h"
#include "src/util.h"

static int initialized_here;

static void abort_hook(int code) { dist_abort(code); }

void dist_init(int *argc, char ***argv, Dist *d)
{
    int provided;
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    initialized_here = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d->size);
    MPI_Comm local;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &local);
    MPI_Comm_rank(local, &d->local_rank);
    MPI_Comm_size(local, &d->local_size);
    MPI_Comm_free(&local);
    fatal_set_hook(abort_hook);
}

int dist_initialized(void) { return initialized_here; }

void dist_finalize(void)
{
    if (!initialized_here) return;
    fatal_set_hook(NULL);
    MPI_Finalize();
    initialized_here = 0;
}

void dist_abort(int code)
{
    if (initialized_here) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

void dist_barrier(void) { MPI_Barrier(MPI_COMM_WORLD); }

void dist_bcast(void *buf, size_t bytes, int root)
{
    /* MPI counts are int: send large buffers in chunks of 1 GiB */
    char *p = buf;
    while (bytes > 0) {
        size_t n = bytes > (1u << 30) ? (1u << 30) : bytes;
        MPI_Bcast(p, (int)n, MPI_BYTE, root, MPI_COMM_WORLD);
        p += n;
        bytes -= n;
    }
}

void dist_allreduce_sum_f64(double *v, int n) { MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD); }

int dist_allreduce_max_int(int v)
{
    int out;
    MPI_Allreduce(&v, &out, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return out;
}

void dist_allreduce_max_ints(int *v, int n) { MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_INT, MPI_MAX, MPI_COMM_WORLD); }

int dist_all_equal_u64(uint64_t v)
{
    uint64_t mn, mx;
    MPI_Allreduce(&v, &mn, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&v, &mx, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    return mn == mx;
}

/* ---- bucketed, overlapped gradient allreduce ---- */

struct GradReducer {
    float *grads;
    int n_buckets;
    size_t *start;       /* [n_buckets+1] bucket b covers [start[b], start[b+1]); buckets in memory order */
    int next;            /* highest bucket index not yet started + 1 (buckets start from the end) */
    MPI_Request *req;    /* [n_buckets] */
    double wait_s;
    int started;
};

GradReducer *dist_reducer_create(float *grads, const size_t *cuts, int n_cuts, double bucket_bytes)
{
    GradReducer *r = calloc(1, sizeof *r);
    r->grads = grads;
    r->start = malloc(sizeof(size_t) * (n_cuts + 2));
    r->req = malloc(sizeof(MPI_Request) * (n_cuts + 1));
    if (!r->start || !r->req) fatal(EXIT_RUNTIME, "out of memory for gradient buckets");
    /* merge adjacent ranges, walking from the end, until each bucket holds >= bucket_bytes */
    size_t n = cuts[n_cuts - 1], end = n, min_floats = (size_t)(bucket_bytes / sizeof(float));
    size_t *rev = malloc(sizeof(size_t) * (n_cuts + 1));
    int nb = 0;
    rev[nb++] = n;
    for (int i = n_cuts - 2; i >= -1; i--) {
        size_t cut = i >= 0 ? cuts[i] : 0;
        if (cut == end) continue; /* no empty buckets */
        if (end - cut >= min_floats || cut == 0) {
            rev[nb++] = cut;
            end = cut;
        }
    }
    /* rev holds bucket boundaries from n down to 0 */
    r->n_buckets = nb - 1;
    for (int b = 0; b < nb; b++) r->start[b] = rev[nb - 1 - b];
    free(rev);
    return r;
}

void dist_reducer_free(GradReducer *r)
{
    if (!r) return;
    free(r->start);
    free(r->req);
    free(r);
}

static void poll(void *ctx)
{
    GradReducer *r = ctx;
    if (r->next >= r->n_buckets) return;
    int flag;
    /* one MPI_Testall moves every bucket in flight one round on */
    MPI_Testall(r->n_buckets - r->next, r->req + r->next, &flag, MPI_STATUSES_IGNORE);
}

void dist_reducer_begin(GradReducer *r)
{
    r->next = r->n_buckets;
    r->wait_s = 0;
    r->started = 0;
    /* long kernels (attention) poll the buckets in flight between heads */
    pool_set_progress(poll, r);
}

static void start_bucket(GradReducer *r, int b)
{
    size_t off = r->start[b], count = r->start[b + 1] - off;
    /* buckets are far below 2^31 floats (bucket_mb is MiB-sized), but guard anyway */
    if (count > (size_t)1 << 30) fatal(EXIT_RUNTIME, "internal: gradient bucket of %zu floats", count);
    MPI_Iallreduce(MPI_IN_PLACE, r->grads + off, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &r->req[b]);
    r->started++;
}

void dist_reducer_ready(GradReducer *r, size_t from)
{
    while (r->next > 0 && r->start[r->next - 1] >= from) start_bucket(r, --r->next);
    /* Open MPI moves nonblocking collectives forward only inside MPI calls:
     * poke the ones in flight so they progress during the backward */
    poll(r);
}

int dist_reducer_pending(GradReducer *r)
{
    int pending = 0;
    for (int b = r->next; b < r->n_buckets; b++) {
        int done;
        MPI_Test(&r->req[b], &done, MPI_STATUS_IGNORE);
        pending += !done;
    }
    return pending + r->next; /* not started yet count too */
}

void dist_reducer_finish(GradReducer *r)
{
    dist_reducer_ready(r, 0);
    double t0 = now_seconds();
    MPI_Waitall(r->n_buckets, r->req, MPI_STATUSES_IGNORE);
    r->wait_s += now_seconds() - t0;
    pool_set_progress(NULL, NULL);
}

void dist_reducer_stats(const GradReducer *r, double *wait_s, int *buckets)
{
    *wait_s = r->wait_s;
    *buckets = r->started;
}

double dist_time_allreduce(float *buf, size_t n)
{
    double t[3];
    for (int k = 0; k < 3; k++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = now_seconds();
        for (size_t off = 0; off < n; off += (size_t)1 << 28) {
            size_t c = n - off < ((size_t)1 << 28) ? n - off : ((size_t)1 << 28);
            MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)c, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        }
        t[k] = now_seconds() - t0;
    }
    return median(t, 3);
}
