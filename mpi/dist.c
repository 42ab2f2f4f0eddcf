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

void dist_gather_bytes(const void *mine, size_t bytes, void *all, int root)
{
    MPI_Gather(mine, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, root, MPI_COMM_WORLD);
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
    /* sharded (ZeRO-1) only */
    int shard, rank, size;
    size_t lo, hi;       /* this rank's slice */
    size_t *bounds;      /* [size + 1] every rank's */
    int *counts;         /* [n_buckets][size] each bucket's floats in each rank's slice */
    int *displs;         /* [n_buckets][size] where they start, from the bucket's start */
    float *scratch;      /* [hi - lo] the reduce-scatter's results */
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

GradReducer *dist_reducer_create_sharded(float *grads, const size_t *cuts, int n_cuts, double bucket_bytes,
                                         const size_t *bounds)
{
    GradReducer *r = dist_reducer_create(grads, cuts, n_cuts, bucket_bytes);
    r->shard = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &r->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &r->size);
    r->lo = bounds[r->rank], r->hi = bounds[r->rank + 1];
    r->bounds = malloc(sizeof(size_t) * (r->size + 1));
    if (!r->bounds) fatal(EXIT_RUNTIME, "out of memory for gradient buckets");
    memcpy(r->bounds, bounds, sizeof(size_t) * (r->size + 1));
    int nb = r->n_buckets, W = r->size;
    r->counts = malloc(sizeof(int) * (size_t)nb * W);
    r->displs = malloc(sizeof(int) * (size_t)nb * W);
    r->scratch = xcalloc_aligned(sizeof(float) * (r->hi - r->lo > 0 ? r->hi - r->lo : 1), "gradient slice");
    if (!r->counts || !r->displs) fatal(EXIT_RUNTIME, "out of memory for gradient buckets");
    for (int b = 0; b < nb; b++) {
        size_t s = r->start[b], e = r->start[b + 1];
        if (e - s > (size_t)1 << 30) fatal(EXIT_RUNTIME, "internal: gradient bucket of %zu floats", e - s);
        for (int k = 0; k < W; k++) {
            size_t a = bounds[k] > s ? bounds[k] : s, z = bounds[k + 1] < e ? bounds[k + 1] : e;
            r->counts[b * W + k] = a < z ? (int)(z - a) : 0;
            r->displs[b * W + k] = a < z ? (int)(a - s) : 0;
        }
    }
    return r;
}

/* bucket b's part of this rank's slice: its first float's index in the slice */
static size_t slice_offset(const GradReducer *r, int b)
{
    size_t s = r->start[b] + (size_t)r->displs[b * r->size + r->rank];
    return r->counts[b * r->size + r->rank] > 0 ? s - r->lo : 0;
}

int dist_reducer_buckets(const GradReducer *r, const size_t **start)
{
    *start = r->start;
    return r->n_buckets;
}

void dist_slices_allgather_start(GradReducer *r, float *buf, int b)
{
    MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, buf + r->start[b], r->counts + b * r->size, r->displs + b * r->size,
                    MPI_FLOAT, MPI_COMM_WORLD, &r->req[b]);
    /* move the ones in flight on (Open MPI progresses only inside MPI calls) */
    int flag;
    MPI_Testall(b + 1, r->req, &flag, MPI_STATUSES_IGNORE);
}

double dist_slices_allgather_wait(GradReducer *r)
{
    double t0 = now_seconds();
    MPI_Waitall(r->n_buckets, r->req, MPI_STATUSES_IGNORE);
    return now_seconds() - t0;
}

void dist_slices_allgather(GradReducer *r, float *buf)
{
    for (int b = 0; b < r->n_buckets; b++) dist_slices_allgather_start(r, buf, b);
    dist_slices_allgather_wait(r);
}

void dist_slices_gather_range(GradReducer *r, const float *mine, size_t s, size_t e, float *out, int root)
{
    int W = r->size, *counts = malloc(sizeof(int) * 2 * W), *displs = counts ? counts + W : NULL;
    if (!counts) fatal(EXIT_RUNTIME, "out of memory gathering the optimizer slices");
    if (e - s > (size_t)1 << 30) fatal(EXIT_RUNTIME, "internal: gathering %zu floats at once", e - s);
    for (int k = 0; k < W; k++) {
        size_t a = r->bounds[k] > s ? r->bounds[k] : s, z = r->bounds[k + 1] < e ? r->bounds[k + 1] : e;
        counts[k] = a < z ? (int)(z - a) : 0;
        displs[k] = a < z ? (int)(a - s) : 0;
    }
    size_t from = r->lo > s ? r->lo : s; /* this rank's part starts here (if it has one) */
    MPI_Gatherv(counts[r->rank] ? mine + (from - r->lo) : mine, counts[r->rank], MPI_FLOAT, out, counts, displs,
                MPI_FLOAT, root, MPI_COMM_WORLD);
    free(counts);
}

void dist_send_floats(const float *buf, size_t n, int dest)
{
    for (size_t off = 0; off < n; off += (size_t)1 << 30) {
        size_t c = n - off < ((size_t)1 << 30) ? n - off : ((size_t)1 << 30);
        MPI_Send(buf + off, (int)c, MPI_FLOAT, dest, 0, MPI_COMM_WORLD);
    }
}

void dist_recv_floats(float *buf, size_t n, int src)
{
    for (size_t off = 0; off < n; off += (size_t)1 << 30) {
        size_t c = n - off < ((size_t)1 << 30) ? n - off : ((size_t)1 << 30);
        MPI_Recv(buf + off, (int)c, MPI_FLOAT, src, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    }
}

void dist_reducer_free(GradReducer *r)
{
    if (!r) return;
    free(r->counts);
    free(r->displs);
    free(r->bounds);
    xfree_aligned(r->scratch);
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
    if (r->shard)
        MPI_Ireduce_scatter(r->grads + off, r->scratch + slice_offset(r, b), r->counts + b * r->size, MPI_FLOAT,
                            MPI_SUM, MPI_COMM_WORLD, &r->req[b]);
    else
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
    if (r->shard) memcpy(r->grads + r->lo, r->scratch, sizeof(float) * (r->hi - r->lo));
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

double dist_reducer_time(GradReducer *r)
{
    double t[3];
    for (int k = 0; k < 3; k++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = now_seconds();
        dist_reducer_begin(r);
        dist_reducer_finish(r);
        t[k] = now_seconds() - t0;
    }
    return median(t, 3);
}
