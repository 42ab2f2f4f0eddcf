/* ckpt: HDF5 checkpoints; see ckpt.h for the guarantees. */
#include "io/ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/h5util.h"
#include "io/hf.h"
#include "io/tokenizer_json.h"
#include "src/bf16.h"
#include "src/checksum.h"
#include "src/fault.h"
#include "src/tokenizer.h"
#include "src/util.h"

#define CKPT_FORMAT "fspo-checkpoint"

/* Checksum of one named tensor, mixed so the sum over tensors is
 * order-independent yet still binds each tensor to its name. */
static uint64_t named_sum(const char *name, uint64_t sum) { return checksum_mix(checksum64(name, strlen(name)) ^ sum); }

/* Fault hooks for the reliability tests (src/fault.h), read from
 * FSPO_FAULT once per save: ckptfail@STEP makes the save of STEP fail
 * midway like a full disk (ENOSPC); ckptslow@MS sleeps MS ms after each
 * tensor so a test can kill the writer at a random point inside the write. */
static Faults faults = { .ckptfail_step = -1 };

/* t's values, data[0 .. numel), stored as store says */
static int write_tensor(hid_t group, const TensorInfo *t, const float *data, CkptStore store)
{
    int ms = faults.ckptslow_ms;
    if (ms > 0) nanosleep(&(struct timespec){ ms / 1000, (ms % 1000) * 1000000L }, NULL);
    int64_t dims[2] = { t->shape[0], t->shape[1] };
    const float *x = data;
    int rc;
    if (store == CKPT_STORE_BF16) { /* exact: ckpt_save_weights checked that bf16 holds every value */
        uint16_t *h = malloc((size_t)t->numel * sizeof *h);
        hid_t bt = h5_type_bf16();
        if (h) bf16_round(h, x, (size_t)t->numel);
        rc = !h || bt < 0 ? -1 : h5_write_deflate(group, t->name, bt, bt, t->ndim, dims, h);
        if (bt >= 0) H5Tclose(bt);
        free(h);
    } else
        rc = h5_write(group, t->name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, t->ndim, dims, x);
    if (rc < 0) return -1;
    hid_t ds = H5Dopen2(group, t->name, H5P_DEFAULT);
    if (ds < 0) return -1;
    rc = h5_attr_write_u64(ds, "checksum", checksum64(x, t->numel * sizeof(float)));
    H5Dclose(ds);
    return rc;
}

/* The largest tensor of m, in elements. */
static size_t largest_tensor(const Model *m)
{
    size_t n = 1;
    for (int i = 0; i < m->n_tensors; i++) n = m->tensors[i].numel > n ? m->tensors[i].numel : n;
    return n;
}

/* gname's tensors from the flat buffer base, or (base NULL) each fetched
 * into one tensor's buffer by meta->fetch(which) */
static int write_group(hid_t file, const char *gname, const Model *m, const float *base, CkptStore store,
                       const CkptMeta *meta, int which)
{
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    /* track creation order so tools list tensors in model order, not alphabetically */
    hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
    H5Pset_link_creation_order(gcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
    hid_t g = H5Gcreate2(file, gname, lcpl, gcpl, H5P_DEFAULT);
    H5Pclose(gcpl);
    H5Pclose(lcpl);
    if (g < 0) return -1;
    int rc = 0;
    float *buf = base ? NULL : malloc(largest_tensor(m) * sizeof(float));
    if (!base && !buf) rc = -1;
    for (int i = 0; i < m->n_tensors && rc == 0; i++) {
        const TensorInfo *t = &m->tensors[i];
        if (buf) meta->fetch(meta->fetch_ctx, which, t, buf);
        rc = write_tensor(g, t, buf ? buf : base + t->offset, store);
    }
    free(buf);
    H5Gclose(g);
    return rc;
}

/* A stored tensor's element type: 0 float32 little-endian, 1 bfloat16, -1
 * absent, -2 another type. Fills nd and d like h5_dims. */
static int tensor_dims(hid_t g, const char *name, int *nd, int64_t *d)
{
    int found = h5_dims(g, name, H5T_IEEE_F32LE, nd, d);
    if (found != -2) return found;
    hid_t bt = h5_type_bf16();
    found = bt < 0 ? -2 : h5_dims(g, name, bt, nd, d);
    if (bt >= 0) H5Tclose(bt);
    return found == 0 ? 1 : found;
}

/* Reads n values of dataset ds, stored as float32 (bf16 0) or bfloat16
 * (bf16 1, widened exactly), into dst. 0 or -1. */
static int read_floats(hid_t ds, int bf16, size_t n, float *dst)
{
    if (!bf16) return H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst) < 0 ? -1 : 0;
    uint16_t *h = malloc(n * sizeof *h);
    hid_t bt = h5_type_bf16();
    int rc = !h || bt < 0 || H5Dread(ds, bt, H5S_ALL, H5S_ALL, H5P_DEFAULT, h) < 0 ? -1 : 0;
    for (size_t i = 0; rc == 0 && i < n; i++) dst[i] = bf16_to_float(h[i]);
    if (bt >= 0) H5Tclose(bt);
    free(h);
    return rc;
}

/* Order-independent checksum of m's weights, as weights_checksum stores it. */
static uint64_t weights_sum(const Model *m)
{
    uint64_t wsum = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const TensorInfo *t = &m->tensors[i];
        wsum += named_sum(t->name, checksum64(m->params + t->offset, t->numel * sizeof(float)));
    }
    return wsum;
}

/* The shape attributes that came after model_shape (grouped-query attention,
 * untied head, RoPE base, RMSNorm epsilon). A checkpoint written before them
 * has none: read_model_extras then gives the defaults that model had. */
static int write_model_extras(hid_t f, const ModelConfig *c)
{
    int rc = h5_attr_write_i64(f, "model_n_kv_heads", c->n_kv_heads);
    rc |= h5_attr_write_i64(f, "model_tie_embeddings", !c->untied);
    rc |= h5_attr_write_f64(f, "model_rope_theta", c->rope_theta);
    rc |= h5_attr_write_f64(f, "model_norm_eps", c->norm_eps);
    return rc;
}

static int read_model_extras(hid_t f, const char *path, ModelConfig *c, char *err, size_t errlen)
{
    int64_t kv = c->n_heads, tie = 1;
    c->rope_theta = 10000.0, c->norm_eps = 1e-5;
    h5_attr_read_i64(f, "model_n_kv_heads", &kv);
    h5_attr_read_i64(f, "model_tie_embeddings", &tie);
    h5_attr_read_f64(f, "model_rope_theta", &c->rope_theta);
    h5_attr_read_f64(f, "model_norm_eps", &c->norm_eps);
    if (kv < 1 || kv > c->n_heads || (tie != 0 && tie != 1) || !(c->rope_theta > 0) || !(c->norm_eps > 0))
        return set_err(err, errlen, "%s: model_n_kv_heads, model_tie_embeddings, model_rope_theta or model_norm_eps "
                                    "out of range", path);
    c->n_kv_heads = (int)kv, c->untied = !tie;
    return 0;
}

static int write_file(const char *tmp, const Model *m, const Optimizer *o, const CkptMeta *meta,
                      const char *config_yaml, CkptStore store)
{
    hid_t f = h5_create(tmp);
    if (f < 0) return -1;
    const ModelConfig *c = &m->cfg;
    int64_t shape[6] = { c->vocab, c->d_model, c->n_layers, c->n_heads, c->ffn_hidden, c->max_seq };
    uint64_t wsum = weights_sum(m);
    int rc = 0;
    rc |= h5_attr_write_str(f, "format", CKPT_FORMAT);
    rc |= h5_attr_write_i64(f, "format_version", CKPT_FORMAT_VERSION);
    rc |= h5_attr_write_i64(f, "step", meta->step);
    rc |= h5_attr_write_i64(f, "samples_seen", meta->samples_seen);
    rc |= h5_attr_write_i64(f, "world_size", meta->world_size);
    rc |= h5_attr_write_i64(f, "seed", meta->seed);
    rc |= h5_attr_write_u64(f, "data_checksum", meta->data_checksum);
    rc |= h5_attr_write_str(f, "stage", meta->stage);
    rc |= h5_attr_write_str(f, "ref_ckpt", meta->ref_ckpt);
    rc |= h5_attr_write_u64(f, "ref_checksum", meta->ref_checksum);
    rc |= h5_attr_write_str(f, "lineage", meta->lineage);
    rc |= h5_attr_write_i64(f, "skipped_examples", meta->skipped_examples);
    rc |= h5_attr_write_i64(f, "skipped_nonfinite", meta->skipped_nonfinite);
    rc |= h5_attr_write_str(f, "config_yaml", config_yaml ? config_yaml : "");
    rc |= tokenizer_h5_write(f, meta->tok);
    rc |= h5_attr_write_i64s(f, "model_shape", shape, 6);
    rc |= write_model_extras(f, c);
    rc |= h5_attr_write_u64(f, "weights_checksum", wsum);
    rc |= h5_attr_write_i64(f, "created_unix", (int64_t)time(NULL));
    rc |= write_group(f, "/model", m, m->params, store, meta, 0);
    int injected = rc == 0 && meta->step == faults.ckptfail_step;
    if (injected) rc = -1;
    if (o && rc == 0) {
        rc |= h5_attr_write_str(f, "optim_type", OPTIM_KIND_NAMES[o->cfg.kind]);
        rc |= h5_attr_write_i64(f, "optim_step", o->t);
        int whole = o->lo == 0 && o->hi == m->n_params; /* else a ZeRO-1 slice: meta->fetch has them (ckpt_save) */
        if (rc == 0 && o->m) rc |= write_group(f, "/optim/m", m, whole ? o->m : NULL, CKPT_STORE_F32, meta, 0);
        if (rc == 0) rc |= write_group(f, "/optim/v", m, whole ? o->v : NULL, CKPT_STORE_F32, meta, 1);
    }
    /* flush before close so a failed write (disk full) is reported here */
    if (H5Fflush(f, H5F_SCOPE_GLOBAL) < 0) rc = -1;
    if (H5Fclose(f) < 0) rc = -1;
    if (rc == 0 && h5_seal(tmp) != 0) rc = -1;
    if (injected) errno = ENOSPC;
    return rc ? -1 : 0;
}

/* ---- listing the checkpoints of a directory ---- */

typedef struct { long step; char name[64]; } CkptEntry;

int ckpt_name_step(const char *name, long *step)
{
    if (strncmp(name, "ckpt_", 5) != 0) return 0;
    char *end;
    errno = 0;
    long s = strtol(name + 5, &end, 10);
    if (errno || end == name + 5 || strcmp(end, ".h5") != 0 || s < 0) return 0;
    *step = s;
    return 1;
}

static int by_step_desc(const void *a, const void *b)
{
    long x = ((const CkptEntry *)a)->step, y = ((const CkptEntry *)b)->step;
    return (x < y) - (x > y);
}

/* Checkpoint files of dir, newest first; *n entries; NULL and -1 on error. */
static CkptEntry *list_ckpts(const char *dir, int *n)
{
    DIR *d = opendir(dir);
    if (!d) return NULL;
    int cap = 16;
    CkptEntry *e = malloc(sizeof *e * cap);
    *n = 0;
    struct dirent *de;
    while (e && (de = readdir(d))) {
        long step;
        if (!ckpt_name_step(de->d_name, &step) || strlen(de->d_name) >= sizeof e->name) continue;
        if (*n == cap) {
            CkptEntry *grown = realloc(e, sizeof *e * (cap *= 2));
            if (!grown) { free(e); e = NULL; break; }
            e = grown;
        }
        e[*n].step = step;
        memcpy(e[*n].name, de->d_name, strlen(de->d_name) + 1); /* length checked above */
        (*n)++;
    }
    closedir(d);
    if (e) qsort(e, *n, sizeof *e, by_step_desc);
    return e;
}

/* ckpt_*.h5.tmp left by a writer that was killed mid-save: never
 * checkpoints (nothing reads them), only wasted space. One writer per run
 * directory (rank 0), so any tmp other than the one just renamed is stale. */
static void remove_stale_tmps(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        long step;
        char name[256];
        if (len < 5 || len >= sizeof name || strcmp(de->d_name + len - 4, ".tmp") != 0) continue;
        memcpy(name, de->d_name, len - 4);
        name[len - 4] = '\0';
        if (!ckpt_name_step(name, &step)) continue;
        char p[4400];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        unlink(p);
    }
    closedir(d);
}

static int verify_file(const char *path, FILE *print, uint64_t *wsum_out, char *lineage, size_t lineage_len,
                       char *err, size_t errlen);

/* The lineage of a checkpoint file, remembered by name, inode, size and
 * change time: pruning asks about the same few files at every save, and
 * each answer costs a full read. -1 if the file does not verify. */
static int lineage_of(const char *path, char *out, size_t len)
{
    static struct { char path[4200], lineage[64]; ino_t ino; off_t size; struct timespec ctime; } cache[32];
    static int next;
    struct stat st;
    if (stat(path, &st) != 0) return -1;
    for (int i = 0; i < 32; i++)
        if (!strcmp(cache[i].path, path) && cache[i].ino == st.st_ino && cache[i].size == st.st_size &&
            cache[i].ctime.tv_sec == st.st_ctim.tv_sec && cache[i].ctime.tv_nsec == st.st_ctim.tv_nsec) {
            snprintf(out, len, "%s", cache[i].lineage);
            return 0;
        }
    char why[1024], lin[64] = "";
    if (verify_file(path, NULL, NULL, lin, sizeof lin, why, sizeof why) != 0) return -1;
    int k = next++ % 32;
    snprintf(cache[k].path, sizeof cache[k].path, "%s", path);
    snprintf(cache[k].lineage, sizeof cache[k].lineage, "%s", lin);
    cache[k].ino = st.st_ino, cache[k].size = st.st_size, cache[k].ctime = st.st_ctim;
    snprintf(out, len, "%s", lin);
    return 0;
}

/* Deletes this lineage's checkpoints beyond the newest `keep` (the new one
 * at `kept` counts). Another lineage's files and files that do not verify
 * are not this run's to delete: they stay, and do not count. */
static void prune(const char *dir, const CkptMeta *meta, int keep, const char *kept)
{
    int n = 0;
    CkptEntry *e = list_ckpts(dir, &n);
    if (!e || keep <= 0) {
        free(e);
        return;
    }
    int count = 1, removed = 0; /* the new file */
    for (int i = 0; i < n; i++) {
        if (e[i].step == meta->step) continue;
        char old[4200], lin[64];
        snprintf(old, sizeof old, "%s/%s", dir, e[i].name);
        if (lineage_of(old, lin, sizeof lin) != 0 || strcmp(lin, meta->lineage) != 0) continue;
        if (count < keep) {
            count++;
            continue;
        }
        removed += unlink(old) == 0;
    }
    if (removed) fsync_dir_of(kept);
    free(e);
}

/* write <path>.tmp, commit it as path, read it back: the one way a checkpoint
 * file comes to exist (ckpt_save and ckpt_save_weights) */
static int write_commit_verify(const char *path, const Model *m, const Optimizer *o, const CkptMeta *meta,
                               const char *config_yaml, CkptStore store, char *err, size_t errlen)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    faults = fault_from_env();
    errno = 0;
    if (write_file(tmp, m, o, meta, config_yaml, store) != 0) {
        int e = errno;
        unlink(tmp);
        return set_err(err, errlen, "%s: writing the checkpoint failed (%s%s); previous checkpoints are untouched",
                          tmp, e ? strerror(e) : "HDF5 write error",
                          meta->step == faults.ckptfail_step ? ", injected by FSPO_FAULT" : "");
    }
    char why[256];
    if (commit_tmp(tmp, path, why, sizeof why) != 0)
        return set_err(err, errlen, "%s: %s; previous checkpoints are untouched", tmp, why);
    h5_trust(path); /* this process wrote it: no isolated structure check (the checksums are still read) */
    /* read it back before anything older may go: never trade a good file for an unverified one */
    char verr[512];
    if (ckpt_verify(path, verr, sizeof verr) != 0) {
        unlink(path);
        return set_err(err, errlen, "%s: the new checkpoint does not verify (%s); removed it, previous "
                                       "checkpoints are untouched",
                          path, verr);
    }
    return 0;
}

int ckpt_save(const char *dir, const Model *m, const Optimizer *o, const CkptMeta *meta, const char *config_yaml,
              int keep, char *path_out, size_t path_len, char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/ckpt_%lld.h5", dir, (long long)meta->step);
    if (o && (o->lo != 0 || o->hi != m->n_params) && !meta->fetch)
        return set_err(err, errlen, "internal: the optimizer holds parameters [%zu, %zu) of %zu and no fetch gives "
                                    "the rest of the moments", o->lo, o->hi, m->n_params);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return set_err(err, errlen, "%s: checkpoint directory: %s", dir,
                          errno ? strerror(errno) : "not a directory");
    if (write_commit_verify(path, m, o, meta, config_yaml, CKPT_STORE_F32, err, errlen) != 0) return -1;
    if (path_out) snprintf(path_out, path_len, "%s", path);
    remove_stale_tmps(dir);
    prune(dir, meta, keep, path);
    return 0;
}

int ckpt_save_weights(const char *path, const Model *m, const CkptMeta *meta, const char *config_yaml,
                      CkptStore store, char *err, size_t errlen)
{
    struct stat st;
    if (lstat(path, &st) == 0)
        return set_err(err, errlen, "%s: exists; a weights-only copy never overwrites a file (remove it first)",
                          path);
    /* storing must not round: the file's checksums are of the float32 values
     * the reader gets back, so the caller rounds (model_round_bf16) */
    for (size_t i = 0; store == CKPT_STORE_BF16 && i < m->n_params; i++) {
        float x = m->params[i], y = bf16_to_float(bf16_from_float(x));
        if (memcmp(&x, &y, sizeof x) != 0)
            return set_err(err, errlen, "%s: weight %zu (%g) is not a bfloat16 value; round the model first "
                                        "(model_round_bf16)", path, i, (double)x);
    }
    return write_commit_verify(path, m, NULL, meta, config_yaml, store, err, errlen);
}

/* ---- reading ---- */

static int open_ckpt(const char *path, hid_t *f, char *err, size_t errlen)
{
    char why[256];
    if (h5_check_file(path, why, sizeof why) != 0) return set_err(err, errlen, "%s: %s", path, why);
    *f = h5_open_ro(path);
    if (*f < 0) return set_err(err, errlen, "%s: HDF5 cannot open it (truncated or corrupt)", path);
    char fmt[64] = "";
    int64_t ver = -1;
    if (h5_attr_read_str(*f, "format", fmt, sizeof fmt) != 0 || strcmp(fmt, CKPT_FORMAT) != 0) {
        H5Fclose(*f);
        return set_err(err, errlen, "%s: not an fspo checkpoint (format attribute '%s')", path, fmt);
    }
    if (h5_attr_read_i64(*f, "format_version", &ver) != 0 || ver != CKPT_FORMAT_VERSION) {
        H5Fclose(*f);
        return set_err(err, errlen, "%s: checkpoint format version %lld, this build reads version %d", path,
                          (long long)ver, CKPT_FORMAT_VERSION);
    }
    return 0;
}

/* ---- the tokenizer ---- */

int ckpt_read_tokenizer(const char *path, Tokenizer *t, char *err, size_t errlen)
{
    hid_t f = -1;
    memset(t, 0, sizeof *t);
    if (hf_is_dir(path)) { /* its tokenizer.json; without one, fspo's byte ids */
        char json[4200];
        snprintf(json, sizeof json, "%s/tokenizer.json", path);
        return access(json, F_OK) == 0 ? tokenizer_load_json(json, 1, t, NULL, 0, err, errlen) : 0;
    }
    if (open_ckpt(path, &f, err, errlen) != 0) return -1;
    int rc = tokenizer_h5_read(f, path, t, err, errlen);
    H5Fclose(f);
    return rc;
}

int ckpt_check_tokenizer(const char *path, const Tokenizer *want, const char *want_from, char *err, size_t errlen)
{
    Tokenizer t;
    if (ckpt_read_tokenizer(path, &t, err, errlen) != 0) return -1;
    char name[64], what[200];
    snprintf(name, sizeof name, "%s", tok_name(&t));
    int same = !strcmp(name, tok_name(want));
    /* a Hugging Face directory's model reads its tokenizer.json's ids: data
     * whose tokenizer has them all, meaning the same (with the structure
     * tokens added otherwise, say), is fine: the vocabulary grows to it */
    int32_t diff = -1, n_own = 0;
    if (!same && hf_is_dir(path)) { /* the ids its own file defines: the structure tokens added may sit elsewhere */
        char json[4200];
        snprintf(json, sizeof json, "%s/tokenizer.json", path);
        Bpe *own = access(json, F_OK) == 0 ? tokenizer_json_read(json, err, errlen) : NULL;
        if (access(json, F_OK) == 0 && !own) return tok_free(&t), -1;
        n_own = own ? bpe_n_ids(own) : TOKENIZER_VOCAB;
        diff = tok_first_difference(&t, want, n_own, what, sizeof what);
        bpe_free(own);
    }
    tok_free(&t);
    if (!same && hf_is_dir(path) && (diff >= 0 || tok_n_ids(want) >= n_own)) {
        if (diff < 0) return 0; /* the data's tokenizer extends the directory's */
        return set_err(err, errlen, "%s: its tokenizer.json and the tokenizer of %s (%s) disagree on id %d (%s): "
                                    "the imported model's rows would mean other tokens than the data's ids (fspo "
                                    "prep --tokenizer %s/tokenizer.json --add-structure-tokens makes data for it)",
                       path, want_from, tok_name(want), (int)diff, what, path);
    }
    if (!same)
        return set_err(err, errlen, "%s: the model reads the ids of tokenizer %s, but %s was tokenized with %s: a "
                                    "checkpoint and the data it reads must share one tokenizer (fspo prep "
                                    "--tokenizer %s uses this checkpoint's)",
                       path, name, want_from, tok_name(want), path);
    return 0;
}

static int read_shape(hid_t f, const char *path, ModelConfig *c, char *err, size_t errlen)
{
    int64_t s[6];
    int got = 0;
    if (h5_attr_read_i64s(f, "model_shape", s, 6, &got) != 0 || got != 6)
        return set_err(err, errlen, "%s: attribute model_shape missing or malformed", path);
    for (int i = 0; i < 6; i++)
        if (s[i] < 0 || s[i] > (1 << 24)) return set_err(err, errlen, "%s: model_shape out of range", path);
    *c = (ModelConfig){ (int)s[0], (int)s[1], (int)s[2], (int)s[3], (int)s[4], (int)s[5], 0, 0, 0, 0 };
    return read_model_extras(f, path, c, err, errlen);
}

static void shape_text(const ModelConfig *c, char *buf, size_t len);

int ckpt_read_model_config(const char *path, ModelConfig *cfg, char *err, size_t errlen)
{
    if (hf_is_dir(path)) { /* the vocabulary grows to the tokenizer's ids (structure tokens added) */
        Tokenizer t;
        if (hf_read_config(path, cfg, err, errlen) != 0 || ckpt_read_tokenizer(path, &t, err, errlen) != 0) return -1;
        if (tok_n_ids(&t) > cfg->vocab) cfg->vocab = tok_n_ids(&t);
        tok_free(&t);
        return 0;
    }
    hid_t f = -1;
    if (open_ckpt(path, &f, err, errlen) != 0) return -1;
    int rc = read_shape(f, path, cfg, err, errlen);
    int nd, packed = 0;
    int64_t d[4];
    if (rc == 0 && h5_group_exists(f, "/model")) {
        hid_t g = H5Gopen2(f, "/model", H5P_DEFAULT);
        packed = g >= 0 && tensor_dims(g, "tok_emb", &nd, d) == 1;
        if (g >= 0) H5Gclose(g);
    }
    H5Fclose(f);
    if (rc == 0) {
        char why[256];
        if (model_config_validate(cfg, why, sizeof why) != 0)
            return set_err(err, errlen, "%s: stored model shape is invalid: %s", path, why);
        /* a model is built from this shape before any tensor is read: its
         * embedding and attention weights alone must fit in the file (bf16
         * weights are deflated, which shrinks data at most 1032-fold) */
        struct stat st;
        double floats = (double)cfg->vocab * cfg->d_model + 4.0 * cfg->n_layers * cfg->d_model * cfg->d_model;
        double bytes = packed ? floats * 2 / 1032 : floats * sizeof(float);
        if (stat(path, &st) == 0 && bytes > (double)st.st_size) {
            shape_text(cfg, why, sizeof why);
            return set_err(err, errlen, "%s: stored model shape (%s) needs at least %.0f MB of weights, the file "
                                        "holds %.1f MB (not a checkpoint of that model)",
                           path, why, bytes / 1e6, st.st_size / 1e6);
        }
    }
    return rc;
}

/* Reads tensor `t` of group g into dst, checking shape and checksum. */
static int read_tensor(hid_t g, const char *gname, const TensorInfo *t, float *dst, const char *path, char *err,
                       size_t errlen)
{
    int nd = 0;
    int64_t d[4];
    int found = tensor_dims(g, t->name, &nd, d);
    if (found == -2)
        return set_err(err, errlen, "%s: tensor %s/%s is not float32 little-endian or bfloat16 (what fspo writes)",
                       path, gname, t->name);
    if (found < 0) return set_err(err, errlen, "%s: tensor %s/%s missing", path, gname, t->name);
    int ok = nd == t->ndim && d[0] == t->shape[0] && (nd == 1 || d[1] == t->shape[1]);
    if (!ok) {
        char have[64] = "[", want[64];
        for (int i = 0; i < nd; i++)
            snprintf(have + strlen(have), sizeof have - strlen(have), "%s%lld", i ? ", " : "", (long long)d[i]);
        strcat(have, "]");
        if (t->ndim == 2) snprintf(want, sizeof want, "[%d, %d]", t->shape[0], t->shape[1]);
        else snprintf(want, sizeof want, "[%d]", t->shape[0]);
        return set_err(err, errlen, "%s: tensor %s/%s has shape %s, the model expects %s", path, gname, t->name,
                          have, want);
    }
    hid_t ds = H5Dopen2(g, t->name, H5P_DEFAULT);
    uint64_t want_sum = 0;
    int have_sum = ds >= 0 && h5_attr_read_u64(ds, "checksum", &want_sum) == 0;
    int rd = ds >= 0 && read_floats(ds, found == 1, (size_t)t->numel, dst) == 0;
    if (ds >= 0) H5Dclose(ds);
    if (!rd) return set_err(err, errlen, "%s: tensor %s/%s cannot be read (corrupt file)", path, gname, t->name);
    if (!have_sum) return set_err(err, errlen, "%s: tensor %s/%s has no checksum", path, gname, t->name);
    if (checksum64(dst, t->numel * sizeof(float)) != want_sum)
        return set_err(err, errlen, "%s: tensor %s/%s fails its checksum (corrupt file)", path, gname, t->name);
    return 0;
}

/* Elements [lo, hi) of the flat vector gname's tensors make, into out
 * (hi - lo floats): tensors inside the range are read straight in, one
 * across an end through a buffer of one tensor; every checksum checked. */
static int read_group_range(hid_t f, const char *gname, const Model *m, size_t lo, size_t hi, float *out,
                            const char *path, char *err, size_t errlen)
{
    if (!h5_group_exists(f, gname)) return set_err(err, errlen, "%s: group %s missing", path, gname);
    hid_t g = H5Gopen2(f, gname, H5P_DEFAULT);
    if (g < 0) return set_err(err, errlen, "%s: group %s cannot be opened", path, gname);
    int rc = 0;
    float *buf = NULL;
    for (int i = 0; i < m->n_tensors && rc == 0; i++) {
        const TensorInfo *t = &m->tensors[i];
        size_t s = t->offset > lo ? t->offset : lo, e = t->offset + t->numel < hi ? t->offset + t->numel : hi;
        if (s >= e) continue;
        if (s == t->offset && e == t->offset + t->numel) {
            rc = read_tensor(g, gname, t, out + (s - lo), path, err, errlen);
            continue;
        }
        if (!buf && !(buf = malloc(largest_tensor(m) * sizeof(float))))
            rc = set_err(err, errlen, "%s: out of memory reading %s", path, gname);
        if (rc == 0) rc = read_tensor(g, gname, t, buf, path, err, errlen);
        if (rc == 0) memcpy(out + (s - lo), buf + (s - t->offset), (e - s) * sizeof(float));
    }
    free(buf);
    H5Gclose(g);
    return rc;
}

static int read_group(hid_t f, const char *gname, const Model *m, float *base, const char *path, char *err,
                      size_t errlen)
{
    return read_group_range(f, gname, m, 0, m->n_params, base, path, err, errlen);
}

static int read_meta(hid_t f, CkptMeta *meta)
{
    memset(meta, 0, sizeof *meta);
    int rc = 0;
    rc |= h5_attr_read_i64(f, "step", &meta->step);
    rc |= h5_attr_read_i64(f, "samples_seen", &meta->samples_seen);
    rc |= h5_attr_read_i64(f, "world_size", &meta->world_size);
    rc |= h5_attr_read_i64(f, "seed", &meta->seed);
    rc |= h5_attr_read_u64(f, "data_checksum", &meta->data_checksum);
    rc |= h5_attr_read_str(f, "stage", meta->stage, sizeof meta->stage);
    rc |= h5_attr_read_str(f, "ref_ckpt", meta->ref_ckpt, sizeof meta->ref_ckpt);
    rc |= h5_attr_read_u64(f, "ref_checksum", &meta->ref_checksum);
    /* absent from checkpoints written before lineages and skip counts existed */
    h5_attr_read_str(f, "lineage", meta->lineage, sizeof meta->lineage);
    h5_attr_read_i64(f, "skipped_examples", &meta->skipped_examples);
    h5_attr_read_i64(f, "skipped_nonfinite", &meta->skipped_nonfinite);
    return rc ? -1 : 0;
}

static void shape_text(const ModelConfig *c, char *buf, size_t len)
{
    snprintf(buf, len, "vocab %d, d_model %d, n_layers %d, n_heads %d, ffn_hidden %d, max_seq %d, n_kv_heads %d, "
             "tie_embeddings %s, rope_theta %g, norm_eps %g", c->vocab, c->d_model, c->n_layers, c->n_heads,
             c->ffn_hidden, c->max_seq, c->n_kv_heads, c->untied ? "false" : "true", c->rope_theta, c->norm_eps);
}

/* ckpt_load of a Hugging Face directory (io/hf.h): weights only, the
 * shape from its config.json. */
static int load_hf(const char *path, Model *m, const Optimizer *o, CkptMeta *meta, char *err, size_t errlen)
{
    if (o) return set_err(err, errlen, "%s: a Hugging Face model directory holds no optimizer state: use "
                                       "train.init_from to start from it", path);
    ModelConfig c;
    if (hf_read_config(path, &c, err, errlen) != 0) return -1;
    ModelConfig same = c; /* weights only: any max_seq (max_position_embeddings), as in ckpt_load */
    same.max_seq = m->cfg.max_seq;
    same.vocab = m->cfg.vocab; /* hf_read_weights grows the vocabulary or refuses to shrink it */
    if (memcmp(&same, &m->cfg, sizeof same) != 0) {
        char have[300], want[300];
        shape_text(&c, have, sizeof have);
        shape_text(&m->cfg, want, sizeof want);
        return set_err(err, errlen, "%s: model shape mismatch: its config.json has %s; the config has %s", path, have,
                       want);
    }
    if (meta) memset(meta, 0, sizeof *meta);
    return hf_read_weights(path, m, err, errlen);
}

/* ckpt_weights_checksum of a Hugging Face directory: over the weights as
 * fspo holds them (the same sum a checkpoint of them would store). */
static int hf_weights_checksum(const char *path, uint64_t *sum, char *err, size_t errlen)
{
    ModelConfig c;
    if (hf_read_config(path, &c, err, errlen) != 0) return -1;
    Model *m = model_create(&c, 0, 1, 1);
    int rc = hf_read_weights(path, m, err, errlen);
    if (rc == 0) *sum = weights_sum(m);
    model_free(m);
    return rc;
}

int ckpt_load(const char *path, Model *m, Optimizer *o, CkptMeta *meta, char *err, size_t errlen)
{
    if (hf_is_dir(path)) return load_hf(path, m, o, meta, err, errlen);
    hid_t f = -1;
    if (open_ckpt(path, &f, err, errlen) != 0) return -1;
    ModelConfig c;
    int rc = read_shape(f, path, &c, err, errlen);
    /* a weights-only load (init_from, a reference, eval) may change max_seq:
     * RoPE has no weights, so the tensors are the same at any context length;
     * a resume keeps the shape it was trained with */
    ModelConfig same = c;
    if (!o) same.max_seq = m->cfg.max_seq;
    if (rc == 0 && memcmp(&same, &m->cfg, sizeof same) != 0) {
        char have[300], want[300];
        shape_text(&c, have, sizeof have);
        shape_text(&m->cfg, want, sizeof want);
        rc = set_err(err, errlen, "%s: model shape mismatch: the checkpoint has %s; the config has %s", path,
                        have, want);
    }
    CkptMeta local;
    if (rc == 0 && read_meta(f, meta ? meta : &local) != 0)
        rc = set_err(err, errlen, "%s: checkpoint metadata attributes missing or malformed", path);
    if (rc == 0) rc = read_group(f, "/model", m, m->params, path, err, errlen);
    model_params_changed(m);
    if (rc == 0 && o) {
        char kind[16] = "";
        int64_t t = 0;
        const char *want = OPTIM_KIND_NAMES[o->cfg.kind];
        if (h5_attr_read_str(f, "optim_type", kind, sizeof kind) != 0)
            rc = set_err(err, errlen, "%s: no optimizer state in this checkpoint (weights only): use "
                                         "train.init_from to start from it",
                            path);
        else if (strcmp(kind, want) != 0)
            rc = set_err(err, errlen, "%s: optimizer state is %s, the config asks for %s", path, kind, want);
        else if (h5_attr_read_i64(f, "optim_step", &t) != 0 || t < 0)
            rc = set_err(err, errlen, "%s: attribute optim_step missing or malformed", path);
        if (rc == 0 && o->m) rc = read_group_range(f, "/optim/m", m, o->lo, o->hi, o->m, path, err, errlen);
        if (rc == 0) rc = read_group_range(f, "/optim/v", m, o->lo, o->hi, o->v, path, err, errlen);
        if (rc == 0) o->t = t;
    }
    H5Fclose(f);
    return rc;
}

int ckpt_read_moment_slices(const char *path, const Model *m, const size_t *bounds, int first, int n_slices,
                            float *mbuf, float *vbuf, void (*deliver)(void *ctx, int k, const float *mm, const float *vv),
                            void *ctx, char *err, size_t errlen)
{
    hid_t f = -1;
    if (open_ckpt(path, &f, err, errlen) != 0) return -1;
    int rc = 0;
    for (int k = first; k < n_slices && rc == 0; k++) {
        if (mbuf) rc = read_group_range(f, "/optim/m", m, bounds[k], bounds[k + 1], mbuf, path, err, errlen);
        if (rc == 0) rc = read_group_range(f, "/optim/v", m, bounds[k], bounds[k + 1], vbuf, path, err, errlen);
        if (rc == 0) deliver(ctx, k, mbuf, vbuf);
    }
    H5Fclose(f);
    return rc;
}

char *ckpt_read_config(const char *path, char *err, size_t errlen)
{
    hid_t f = -1;
    if (open_ckpt(path, &f, err, errlen) != 0) return NULL;
    char *yaml = h5_attr_read_str_alloc(f, "config_yaml");
    H5Fclose(f);
    if (!yaml) set_err(err, errlen, "%s: attribute config_yaml missing or malformed", path);
    return yaml;
}

/* ---- generic verification (no model needed) ---- */

typedef struct {
    const char *path, *gname;
    char *err;
    size_t errlen;
    int failed;
    int count; /* tensors visited in the current group */
    uint64_t wsum;
    FILE *print; /* inspect: print a table row per tensor */
} VerifyCtx;

static herr_t verify_one(hid_t g, const char *name, const H5L_info_t *info, void *p)
{
    VerifyCtx *v = p;
    v->count++;
    int nd = 0;
    int64_t d[4] = { 0 };
    int bf16 = tensor_dims(g, name, &nd, d);
    if (bf16 < 0 || nd < 1 || nd > 2 || d[0] <= 0 || (nd == 2 && d[1] <= 0) ||
        (double)d[0] * (nd == 2 ? d[1] : 1) > 4e9) {
        if (!v->failed) set_err(v->err, v->errlen, "%s: %s/%s is not a tensor fspo wrote", v->path, v->gname, name);
        v->failed = 1;
        return v->print ? 0 : 1;
    }
    size_t n = (size_t)d[0] * (nd == 2 ? (size_t)d[1] : 1);
    float *buf = malloc(n * sizeof(float));
    hid_t ds = H5Dopen2(g, name, H5P_DEFAULT);
    uint64_t want = 0;
    int have = ds >= 0 && h5_attr_read_u64(ds, "checksum", &want) == 0;
    int rd = buf && ds >= 0 && read_floats(ds, bf16, n, buf) == 0;
    if (ds >= 0) H5Dclose(ds);
    uint64_t sum = rd ? checksum64(buf, n * sizeof(float)) : 0;
    const char *status = !rd ? "UNREADABLE" : !have ? "NO CHECKSUM" : sum != want ? "MISMATCH" : "ok";
    if (strcmp(status, "ok") != 0) {
        if (!v->failed)
            set_err(v->err, v->errlen, "%s: tensor %s/%s %s", v->path, v->gname, name,
                       !rd ? "cannot be read (corrupt file)" : !have ? "has no checksum" : "fails its checksum (corrupt file)");
        v->failed = 1;
    }
    if (strcmp(v->gname, "/model") == 0) v->wsum += named_sum(name, sum);
    if (v->print) {
        double ss = 0;
        for (size_t i = 0; rd && i < n; i++) ss += (double)buf[i] * buf[i];
        char shape[48];
        if (nd == 2) snprintf(shape, sizeof shape, "[%lld, %lld]", (long long)d[0], (long long)d[1]);
        else snprintf(shape, sizeof shape, "[%lld]", (long long)d[0]);
        fprintf(v->print, "  %-8s %-26s %-14s %12.5g  %s\n", v->gname + 1, name, shape, sqrt(ss), status);
    }
    free(buf);
    return v->failed && !v->print ? 1 : 0;
}

/* Visits every tensor of /model and the /optim groups. A group whose
 * listing fails or whose tensor count differs from the model shape's is
 * corrupt: verification must never pass on tensors it did not read. */
static int verify_groups(hid_t f, VerifyCtx *v, int expected)
{
    static const char *groups[3] = { "/model", "/optim/m", "/optim/v" };
    for (int i = 0; i < 3; i++) {
        if (!h5_group_exists(f, groups[i])) {
            if (i > 0) continue; /* weights-only checkpoints have no /optim */
            v->failed = 1;
            return set_err(v->err, v->errlen, "%s: group /model missing", v->path);
        }
        hid_t g = H5Gopen2(f, groups[i], H5P_DEFAULT);
        if (g < 0) {
            v->failed = 1;
            return set_err(v->err, v->errlen, "%s: group %s cannot be opened", v->path, groups[i]);
        }
        v->gname = groups[i];
        v->count = 0;
        hsize_t idx = 0;
        herr_t r = H5Literate(g, H5_INDEX_CRT_ORDER, H5_ITER_INC, &idx, verify_one, v);
        if (r < 0 && v->count == 0) { /* no creation-order index (not written by fspo): by name */
            idx = 0;
            r = H5Literate(g, H5_INDEX_NAME, H5_ITER_NATIVE, &idx, verify_one, v);
        }
        H5Gclose(g);
        if (!v->failed && (r < 0 || v->count != expected)) {
            v->failed = 1;
            set_err(v->err, v->errlen, "%s: group %s lists %d of the %d tensors the model shape implies (corrupt "
                                       "file)", v->path, groups[i], v->count, expected);
        }
        if (v->failed && !v->print) return -1;
    }
    return v->failed ? -1 : 0;
}

static int verify_file(const char *path, FILE *print, uint64_t *wsum_out, char *lineage, size_t lineage_len,
                       char *err, size_t errlen)
{
    hid_t f = -1;
    if (open_ckpt(path, &f, err, errlen) != 0) return -1;
    VerifyCtx v = { .path = path, .err = err, .errlen = errlen, .print = print };
    ModelConfig c;
    CkptMeta meta;
    int rc = read_shape(f, path, &c, err, errlen);
    if (rc == 0 && read_meta(f, &meta) != 0)
        rc = set_err(err, errlen, "%s: checkpoint metadata attributes missing or malformed", path);
    if (rc == 0) rc = verify_groups(f, &v, model_tensor_count(&c));
    uint64_t want = 0;
    if (rc == 0 && (h5_attr_read_u64(f, "weights_checksum", &want) != 0 || want != v.wsum))
        rc = set_err(err, errlen, "%s: weights checksum does not match the tensors (corrupt file)", path);
    if (lineage && h5_attr_read_str(f, "lineage", lineage, lineage_len) != 0) lineage[0] = '\0';
    H5Fclose(f);
    if (wsum_out) *wsum_out = v.wsum;
    return rc;
}

int ckpt_verify(const char *path, char *err, size_t errlen) { return verify_file(path, NULL, NULL, NULL, 0, err, errlen); }

int ckpt_weights_checksum(const char *path, uint64_t *sum, char *err, size_t errlen)
{
    if (hf_is_dir(path)) return hf_weights_checksum(path, sum, err, errlen);
    return verify_file(path, NULL, sum, NULL, 0, err, errlen);
}

int ckpt_find_latest(const char *dir, const char *lineage, char *path, size_t len, char *err, size_t errlen)
{
    int n = 0;
    CkptEntry *e = list_ckpts(dir, &n);
    if (!e) return set_err(err, errlen, "%s: cannot list checkpoints: %s", dir, strerror(errno));
    char why_all[4096] = "";
    size_t used = 0;
    int found = 0;
    for (int i = 0; i < n && !found; i++) {
        char p[4200], why[4400], lin[64] = "";
        snprintf(p, sizeof p, "%s/%s", dir, e[i].name);
        int ok = verify_file(p, NULL, NULL, lin, sizeof lin, why, sizeof why) == 0;
        if (ok && lineage && strcmp(lin, lineage) != 0) {
            ok = 0;
            snprintf(why, sizeof why, "%s: written by another run (lineage %s, not this directory's %s)", p,
                     lin[0] ? lin : "none", lineage);
        }
        if (ok) {
            snprintf(path, len, "%s", p);
            found = 1;
        } else if (used + 8 < sizeof why_all)
            used += (size_t)snprintf(why_all + used, sizeof why_all - used, "%s%s", used ? "; " : "", why);
    }
    free(e);
    if (!found && n > 0)
        return set_err(err, errlen, "%s holds %d checkpoint file(s) and none can be resumed: %s. fspo leaves them "
                                    "as they are: restore a good copy, or start over in another train.run_dir",
                       dir, n, why_all);
    return found;
}
int ckpt_newer(const char *dir, int64_t step, const char *lineage, char *list, size_t len)
{
    int n = 0, count = 0;
    size_t used = 0;
    list[0] = '\0';
    CkptEntry *e = list_ckpts(dir, &n);
    if (!e) return -1;
    for (int i = 0; i < n && e[i].step > step; i++) {
        char p[4200], why[4400], lin[64] = "", item[4600];
        snprintf(p, sizeof p, "%s/%s", dir, e[i].name);
        if (verify_file(p, NULL, NULL, lin, sizeof lin, why, sizeof why) != 0)
            snprintf(item, sizeof item, "%s does not verify (%s)", e[i].name, why);
        else if (strcmp(lin, lineage) != 0)
            snprintf(item, sizeof item, "%s is another run's (lineage %s)", e[i].name, lin[0] ? lin : "none");
        else
            snprintf(item, sizeof item, "%s is this run's, from a later point", e[i].name);
        count++;
        if (used + strlen(item) + 8 < len) used += (size_t)snprintf(list + used, len - used, "%s%s", used ? "; " : "", item);
    }
    free(e);
    return count;
}

int ckpt_print(const char *path, FILE *out, char *err, size_t errlen)
{
    hid_t f = -1;
    if (open_ckpt(path, &f, err, errlen) != 0) return -1;
    CkptMeta meta;
    ModelConfig c = { 0 };
    char shape[300] = "?", tok[64] = "?", optim[16] = "none";
    int64_t ostep = 0;
    if (read_shape(f, path, &c, err, errlen) == 0) shape_text(&c, shape, sizeof shape);
    int meta_ok = read_meta(f, &meta) == 0;
    h5_attr_read_str(f, "tokenizer", tok, sizeof tok);
    h5_attr_read_str(f, "optim_type", optim, sizeof optim);
    h5_attr_read_i64(f, "optim_step", &ostep);
    char *yaml = h5_attr_read_str_alloc(f, "config_yaml");
    H5Fclose(f);
    fprintf(out, "checkpoint %s (format %s v%d)\n", path, CKPT_FORMAT, CKPT_FORMAT_VERSION);
    if (meta_ok) {
        fprintf(out, "  step %lld, samples seen %lld, stage %s, saved by %lld rank(s), seed %lld\n",
                (long long)meta.step, (long long)meta.samples_seen, meta.stage, (long long)meta.world_size,
                (long long)meta.seed);
        fprintf(out, "  data checksum %016llx\n", (unsigned long long)meta.data_checksum);
        if (meta.ref_ckpt[0])
            fprintf(out, "  reference %s (weights checksum %016llx)\n", meta.ref_ckpt,
                    (unsigned long long)meta.ref_checksum);
    } else
        fprintf(out, "  metadata attributes missing or malformed\n");
    fprintf(out, "  model: %s\n  tokenizer: %s\n  optimizer: %s, step %lld\n\n", shape, tok, optim,
            (long long)ostep);
    fprintf(out, "  %-8s %-26s %-14s %12s  %s\n", "group", "tensor", "shape", "L2 norm", "checksum");
    uint64_t wsum = 0;
    int rc = verify_file(path, out, &wsum, NULL, 0, err, errlen);
    fprintf(out, "\n  weights checksum %016llx: %s\n", (unsigned long long)wsum, rc == 0 ? "verified" : "FAILED");
    if (yaml && yaml[0]) fprintf(out, "\nconfig:\n%s%s", yaml, yaml[strlen(yaml) - 1] == '\n' ? "" : "\n");
    free(yaml);
    return rc;
}
