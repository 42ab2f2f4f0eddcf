/* Checkpoints: bit-exact round trip (also of ZeRO-1 optimizer slices),
 * retention, newest-verified selection,
 * bad files rejected with the file and reason, and crash safety under
 * SIGKILL during ckpt_save.
 * usage: test_ckpt              run the tests
 *        test_ckpt --write DIR  write DIR/ckpt_7.h5 of a known model plus
 *                               DIR/logits.f32 and DIR/tokens.i32 for the
 *                               h5py / PyTorch checks in test_ckpt.sh */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "io/ckpt.h"
#include "io/config.h"
#include "io/h5util.h"
#include "src/model.h"
#include "src/optim.h"
#include "src/rng.h"
#include "src/util.h"
#include "tests/check.h"

static const ModelConfig small = { .vocab = 264, .d_model = 32, .n_layers = 2, .n_heads = 4, .max_seq = 16 };
static const char *yaml = "model:\n  d_model: 32\ntrain:\n  run_dir: \"runs/x\"\n";

static Model *trained_model(const ModelConfig *cfg, Optimizer *o, uint64_t seed)
{
    Model *m = model_create(cfg, 1, 1, 1);
    model_init_weights(m, seed);
    OptimConfig oc = config_optim_default(OPTIM_ADAMW);
    optim_init(o, &oc, m->n_params);
    Rng r = rng_seed(seed, 9);
    for (int s = 0; s < 2; s++) { /* give the moments real values */
        for (size_t i = 0; i < m->n_params; i++) m->grads[i] = (float)rng_normal(&r) * 0.01f;
        optim_step(o, m, 1e-3f);
    }
    return m;
}

static CkptMeta meta_at(long step)
{
    CkptMeta meta = { .step = step, .samples_seen = step * 8, .world_size = 2, .seed = 1234,
                      .data_checksum = 0xABCDEF0123456789ull, .stage = "pref", .ref_ckpt = "runs/sft/ckpt_9.h5",
                      .ref_checksum = 42 };
    return meta;
}

/* every directory made here, removed at the end (only these: another
 * test_ckpt may be running next to this one) */
static char made[128][64];
static int n_made;

static char *tmpdir(void)
{
    if (n_made == 128) {
        fprintf(stderr, "tmpdir: too many\n");
        exit(1);
    }
    char *d = made[n_made++];
    snprintf(d, 64, "/tmp/fspo-ckpt.XXXXXX");
    if (!mkdtemp(d)) {
        perror("mkdtemp");
        exit(1);
    }
    return d;
}

static void remove_tmpdirs(void)
{
    for (int i = 0; i < n_made; i++) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%.63s'", made[i]);
        if (system(cmd) != 0) fprintf(stderr, "cleanup of %s failed\n", made[i]);
    }
}

static int exists(const char *dir, const char *name)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

static void test_round_trip(void)
{
    Optimizer o, o2;
    Model *m = trained_model(&small, &o, 5);
    char *dir = tmpdir(), path[512], err[1024];
    CkptMeta meta = meta_at(7), back;
    int rc = ckpt_save(dir, m, &o, &meta, yaml, 3, path, sizeof path, err, sizeof err);
    check(rc == 0, "save", "%s", rc ? err : path);
    Model *m2 = model_create(&small, 1, 1, 1);
    OptimConfig oc = config_optim_default(OPTIM_ADAMW);
    optim_init(&o2, &oc, m2->n_params);
    rc = ckpt_load(path, m2, &o2, &back, err, sizeof err);
    size_t nb = sizeof(float) * m->n_params;
    check(rc == 0 && !memcmp(m->params, m2->params, nb) && !memcmp(o.m, o2.m, nb) && !memcmp(o.v, o2.v, nb) &&
              o.t == o2.t,
          "round trip is bit-identical", "%s (optimizer step %ld)", rc ? err : "params, m, v equal", o2.t);
    check(back.step == 7 && back.samples_seen == 56 && back.world_size == 2 && back.seed == 1234 &&
              back.data_checksum == meta.data_checksum && !strcmp(back.stage, "pref") &&
              !strcmp(back.ref_ckpt, meta.ref_ckpt) && back.ref_checksum == 42,
          "metadata round trip", "step %lld stage %s ref %s", (long long)back.step, back.stage, back.ref_ckpt);
    ModelConfig c;
    rc = ckpt_read_model_config(path, &c, err, sizeof err);
    check(rc == 0 && c.d_model == 32 && c.n_layers == 2 && c.ffn_hidden == m->cfg.ffn_hidden, "model shape readable",
          "%s", rc ? err : "d_model 32, 2 layers");
    uint64_t w1, w2;
    ckpt_weights_checksum(path, &w1, err, sizeof err);
    m->params[3] += 1.0f;
    meta.step = 8;
    ckpt_save(dir, m, NULL, &meta, yaml, 3, path, sizeof path, err, sizeof err);
    ckpt_weights_checksum(path, &w2, err, sizeof err);
    check(w1 != w2, "weights checksum tracks the weights", "%016llx vs %016llx", (unsigned long long)w1,
          (unsigned long long)w2);
    /* a weights-only checkpoint loads for init_from but not for resume */
    rc = ckpt_load(path, m2, NULL, NULL, err, sizeof err);
    int rc2 = ckpt_load(path, m2, &o2, NULL, err, sizeof err);
    check(rc == 0 && rc2 == -1 && strstr(err, "no optimizer state"), "weights-only checkpoint", "%s", err);
    optim_free(&o);
    optim_free(&o2);
    model_free(m);
    model_free(m2);
}

/* bf16 storage (fspo model strip --bf16): refused for weights bf16 cannot
 * hold exactly; after model_round_bf16 it loads back bit for bit, each weight
 * the nearest bf16 of the original (checked against a scalar rounding written
 * here), the file smaller than the float32 one by over a third of the weights'
 * float32 bytes (a real model's file is 36% of its float32 twin; here metadata
 * and 14 chunk indexes weigh more) */
static uint32_t nearest_bf16_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return ((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16) << 16;
}

static void test_bf16_storage(void)
{
    Optimizer o;
    Model *m = trained_model(&small, &o, 3);
    char *dir = tmpdir(), p16[512], p32[512], err[1024];
    snprintf(p16, sizeof p16, "%s/w16.h5", dir);
    snprintf(p32, sizeof p32, "%s/w32.h5", dir);
    CkptMeta meta = meta_at(3);
    int rc = ckpt_save_weights(p16, m, &meta, yaml, CKPT_STORE_BF16, err, sizeof err);
    check(rc == -1 && strstr(err, "is not a bfloat16 value") && access(p16, F_OK) != 0,
          "bf16 storage refuses weights it would round", "%s", err);
    float *orig = malloc(m->n_params * sizeof *orig);
    memcpy(orig, m->params, m->n_params * sizeof *orig);
    rc = ckpt_save_weights(p32, m, &meta, yaml, CKPT_STORE_F32, err, sizeof err);
    model_round_bf16(m);
    rc |= ckpt_save_weights(p16, m, &meta, yaml, CKPT_STORE_BF16, err, sizeof err);
    Model *m2 = model_create(&small, 1, 1, 1);
    rc |= ckpt_load(p16, m2, NULL, NULL, err, sizeof err);
    size_t bad = 0;
    for (size_t i = 0; rc == 0 && i < m->n_params; i++) {
        uint32_t got;
        memcpy(&got, &m2->params[i], 4);
        bad += got != nearest_bf16_bits(orig[i]);
    }
    struct stat a, b;
    stat(p16, &a), stat(p32, &b);
    check(rc == 0 && bad == 0 && (double)(b.st_size - a.st_size) > 4.0 * m->n_params / 3, "bf16 storage reads back the nearest bf16 of each weight",
          "%s; %zu of %zu differ; %lld vs %lld bytes", rc ? err : "loaded", bad, m->n_params, (long long)a.st_size,
          (long long)b.st_size);
    free(orig);
    optim_free(&o);
    model_free(m);
    model_free(m2);
}

static void test_retention_and_latest(void)
{
    Optimizer o;
    Model *m = trained_model(&small, &o, 6);
    char *dir = tmpdir(), path[512], err[1024];
    for (long s = 1; s <= 5; s++) {
        CkptMeta meta = meta_at(s * 10);
        ckpt_save(dir, m, &o, &meta, yaml, 3, path, sizeof path, err, sizeof err);
    }
    check(!exists(dir, "ckpt_10.h5") && !exists(dir, "ckpt_20.h5") && exists(dir, "ckpt_30.h5") &&
              exists(dir, "ckpt_40.h5") && exists(dir, "ckpt_50.h5"),
          "keep 3 keeps the newest three", "%s", dir);
    char latest[512];
    int found = ckpt_find_latest(dir, NULL, latest, sizeof latest, err, sizeof err);
    check(found == 1 && strstr(latest, "ckpt_50.h5"), "find_latest picks the newest", "%s", latest);
    /* numeric, not lexical, order: step 100 is newer than 50 */
    CkptMeta meta = meta_at(100);
    ckpt_save(dir, m, &o, &meta, yaml, 10, path, sizeof path, err, sizeof err);
    found = ckpt_find_latest(dir, NULL, latest, sizeof latest, err, sizeof err);
    check(found == 1 && strstr(latest, "ckpt_100.h5"), "find_latest orders steps numerically", "%s", latest);
    /* corrupt the newest: it is skipped with a message, the next one is chosen */
    FILE *f = fopen(path, "r+b");
    fseek(f, -100, SEEK_END);
    int ch = fgetc(f);
    fseek(f, -100, SEEK_END);
    fputc(ch ^ 0x40, f);
    fclose(f);
    found = ckpt_find_latest(dir, NULL, latest, sizeof latest, err, sizeof err);
    check(found == 1 && strstr(latest, "ckpt_50.h5"), "find_latest skips a corrupt newest", "%s", latest);
    /* stray files are ignored; an empty dir has none; a missing dir is an error */
    char junk[600];
    snprintf(junk, sizeof junk, "%s/ckpt_999.h5.tmp", dir);
    fclose(fopen(junk, "w"));
    snprintf(junk, sizeof junk, "%s/ckpt_abc.h5", dir);
    fclose(fopen(junk, "w"));
    found = ckpt_find_latest(dir, NULL, latest, sizeof latest, err, sizeof err);
    check(found == 1 && strstr(latest, "ckpt_50.h5"), "stray names ignored", "%s", latest);
    found = ckpt_find_latest(tmpdir(), NULL, latest, sizeof latest, err, sizeof err);
    check(found == 0, "empty directory has no checkpoint", "%d", found);
    found = ckpt_find_latest("/nonexistent/run", NULL, latest, sizeof latest, err, sizeof err);
    check(found == -1 && strstr(err, "/nonexistent/run"), "missing directory", "%s", err);
    optim_free(&o);
    model_free(m);
}

/* Names of the ckpt_*.h5 in dir, sorted by step, space separated. */
static void listing(const char *dir, char *out, size_t len)
{
    long steps[64];
    int n = 0;
    for (long s = 0; s <= 100; s++) {
        char p[256];
        snprintf(p, sizeof p, "%s/ckpt_%ld.h5", dir, s);
        if (access(p, F_OK) == 0 && n < 64) steps[n++] = s;
    }
    out[0] = '\0';
    for (int i = 0; i < n; i++) snprintf(out + strlen(out), len - strlen(out), "%s%ld", i ? " " : "", steps[i]);
}

static void flip_byte(const char *path, long from_end)
{
    FILE *f = fopen(path, "r+b");
    fseek(f, -from_end, SEEK_END);
    int ch = fgetc(f);
    fseek(f, -from_end, SEEK_END);
    fputc(ch ^ 0x40, f);
    fclose(f);
}

/* Two runs' checkpoints in one directory: each prunes only its own. */
static void test_lineages(void)
{
    Optimizer o;
    Model *m = trained_model(&small, &o, 7);
    char *dir = tmpdir(), path[512], err[4096], got[256];
    /* run A saves 10, 20, 30, 40; run B saves 15, 25, 35 in between; keep 2 */
    long a[] = { 10, 20, 30, 40 }, b[] = { 15, 25, 35 };
    for (int i = 0; i < 4; i++) {
        CkptMeta meta = meta_at(a[i]);
        snprintf(meta.lineage, sizeof meta.lineage, "aaaa");
        meta.skipped_examples = 3 * a[i], meta.skipped_nonfinite = a[i] / 10;
        ckpt_save(dir, m, &o, &meta, yaml, 2, path, sizeof path, err, sizeof err);
        if (i < 3) {
            meta = meta_at(b[i]);
            snprintf(meta.lineage, sizeof meta.lineage, "bbbb");
            ckpt_save(dir, m, &o, &meta, yaml, 2, path, sizeof path, err, sizeof err);
        }
    }
    /* by hand: A keeps its newest two (30, 40), B its newest two (25, 35) */
    listing(dir, got, sizeof got);
    check(!strcmp(got, "25 30 35 40"), "keep prunes only the saving run's lineage", "left: %s (want 25 30 35 40)", got);
    CkptMeta back;
    Model *m2 = model_create(&small, 1, 1, 1);
    snprintf(path, sizeof path, "%s/ckpt_40.h5", dir);
    int rc = ckpt_load(path, m2, NULL, &back, err, sizeof err);
    check(rc == 0 && !strcmp(back.lineage, "aaaa") && back.skipped_examples == 120 && back.skipped_nonfinite == 4,
          "lineage and skip counts round trip", "%s lineage '%s' skipped %lld/%lld", rc ? err : "loaded", back.lineage,
          (long long)back.skipped_examples, (long long)back.skipped_nonfinite);
    char latest[512];
    int fa = ckpt_find_latest(dir, "aaaa", latest, sizeof latest, err, sizeof err);
    int ok_a = fa == 1 && strstr(latest, "ckpt_40.h5");
    int fb = ckpt_find_latest(dir, "bbbb", latest, sizeof latest, err, sizeof err);
    check(ok_a && fb == 1 && strstr(latest, "ckpt_35.h5"), "find_latest picks the newest of the asked lineage",
          "a %d, b %d %s", fa, fb, latest);
    int fc = ckpt_find_latest(dir, "cccc", latest, sizeof latest, err, sizeof err);
    check(fc == -1 && strstr(err, "holds 4 checkpoint file(s) and none can be resumed") &&
              strstr(err, "ckpt_40.h5: written by another run (lineage aaaa") &&
              strstr(err, "ckpt_25.h5: written by another run (lineage bbbb"),
          "another lineage's checkpoints are not resumed", "%d: %s", fc, err);
    /* a damaged file of A is neither deleted nor counted: A's next save keeps 40 and 50, prunes 30 */
    snprintf(path, sizeof path, "%s/ckpt_30.h5", dir);
    flip_byte(path, 100);
    CkptMeta meta = meta_at(50);
    snprintf(meta.lineage, sizeof meta.lineage, "aaaa");
    ckpt_save(dir, m, &o, &meta, yaml, 2, path, sizeof path, err, sizeof err);
    listing(dir, got, sizeof got);
    check(!strcmp(got, "25 30 35 40 50"), "a checkpoint that does not verify is never pruned", "left: %s", got);
    meta = meta_at(60);
    snprintf(meta.lineage, sizeof meta.lineage, "aaaa");
    ckpt_save(dir, m, &o, &meta, yaml, 2, path, sizeof path, err, sizeof err);
    listing(dir, got, sizeof got);
    check(!strcmp(got, "25 30 35 50 60"), "pruning goes on past it", "left: %s (want 25 30 35 50 60)", got);
    /* only damaged files: -1, each named with its reason */
    char *bad = tmpdir();
    for (long s = 1; s <= 2; s++) {
        meta = meta_at(s);
        ckpt_save(bad, m, &o, &meta, yaml, 5, path, sizeof path, err, sizeof err);
        flip_byte(path, 200 * s);
    }
    int fd = ckpt_find_latest(bad, NULL, latest, sizeof latest, err, sizeof err);
    check(fd == -1 && strstr(err, "holds 2 checkpoint file(s) and none can be resumed") && strstr(err, "ckpt_1.h5: ") &&
              strstr(err, "ckpt_2.h5: ") && strstr(err, "file checksum mismatch"),
          "only damaged checkpoints: an error listing each and why", "%d: %s", fd, err);
    model_free(m2);
    optim_free(&o);
    model_free(m);
}

/* ---- bad checkpoint inputs: each must fail with the file named and the reason ---- */

typedef void (*Damage)(const char *path);

/* Damage done through the HDF5 API is re-sealed, so the test reaches the
 * checks behind the seal; byte-level damage (flips, truncation) is not. */
static void reseal(const char *path)
{
    if (h5_seal(path) != 0) fprintf(stderr, "reseal %s failed\n", path);
}

static hid_t open_rw(const char *path)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_file_locking(fapl, 0, 1);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, fapl);
    H5Pclose(fapl);
    return f;
}
static void set_i64_attr(const char *path, const char *name, int64_t v)
{
    hid_t f = open_rw(path);
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT64, &v);
    H5Aclose(a);
    H5Fclose(f);
    reseal(path);
}
static void dmg_version(const char *p) { set_i64_attr(p, "format_version", 99); }
static void dmg_missing_tensor(const char *p)
{
    hid_t f = open_rw(p);
    H5Ldelete(f, "/model/layers.1.mlp.w2", H5P_DEFAULT);
    H5Fclose(f);
    reseal(p);
}
static void dmg_reshaped_tensor(const char *p)
{
    hid_t f = open_rw(p);
    H5Ldelete(f, "/model/layers.0.attn.wo", H5P_DEFAULT);
    hsize_t d[2] = { 16, 64 };
    hid_t s = H5Screate_simple(2, d, NULL);
    hid_t ds = H5Dcreate2(f, "/model/layers.0.attn.wo", H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(ds);
    H5Sclose(s);
    H5Fclose(f);
    reseal(p);
}
static void dmg_no_checksum(const char *p)
{
    hid_t f = open_rw(p);
    hid_t ds = H5Dopen2(f, "/model/final_norm", H5P_DEFAULT);
    H5Adelete(ds, "checksum");
    H5Dclose(ds);
    H5Fclose(f);
    reseal(p);
}
static void flip_data_byte(const char *p, const char *dset)
{
    hid_t f = open_rw(p);
    hid_t ds = H5Dopen2(f, dset, H5P_DEFAULT);
    haddr_t off = H5Dget_offset(ds);
    H5Dclose(ds);
    H5Fclose(f);
    int fd = open(p, O_RDWR);
    unsigned char b;
    if (pread(fd, &b, 1, (off_t)off + 5) == 1) {
        b ^= 0x10;
        if (pwrite(fd, &b, 1, (off_t)off + 5) != 1) perror("pwrite");
    }
    close(fd);
}
static void dmg_bitflip_weights(const char *p) { flip_data_byte(p, "/model/layers.0.attn.wqkv"); }
static void dmg_bitflip_resealed(const char *p)
{
    flip_data_byte(p, "/model/layers.0.attn.wqkv");
    reseal(p);
}
static void dmg_bitflip_moment_resealed(const char *p)
{
    flip_data_byte(p, "/optim/v/tok_emb");
    reseal(p);
}
static void dmg_seal(const char *p)
{
    int fd = open(p, O_RDWR);
    if (pwrite(fd, "XXXX", 4, 0) != 4) perror("pwrite");
    close(fd);
}
static void dmg_truncate(const char *p)
{
    struct stat st;
    stat(p, &st);
    if (truncate(p, st.st_size / 2) != 0) perror("truncate");
}
static void dmg_empty(const char *p)
{
    if (truncate(p, 0) != 0) perror("truncate");
}
static void dmg_text(const char *p)
{
    FILE *f = fopen(p, "w");
    fputs("model:\n  d_model: 32\n", f);
    fclose(f);
}
static void dmg_directory(const char *p)
{
    unlink(p);
    mkdir(p, 0755);
}
static void dmg_foreign_hdf5(const char *p)
{
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(f);
}
static void dmg_shape_attr(const char *p)
{
    hid_t f = open_rw(p);
    hid_t a = H5Aopen(f, "model_shape", H5P_DEFAULT);
    int64_t s[6] = { 264, 64, 2, 4, 0, 16 };
    H5Awrite(a, H5T_NATIVE_INT64, s);
    H5Aclose(a);
    H5Fclose(f);
    reseal(p);
}
static void dmg_missing(const char *p) { unlink(p); }

static void test_bad_checkpoints(void)
{
    static const struct { const char *name; Damage damage; const char *want; } cases[] = {
        { "wrong format version", dmg_version, "format version 99, this build reads version 1" },
        { "missing tensor", dmg_missing_tensor, "tensor /model/layers.1.mlp.w2 missing" },
        { "wrong tensor shape", dmg_reshaped_tensor, "tensor /model/layers.0.attn.wo has shape [16, 64], the model "
                                                     "expects [32, 32]" },
        { "tensor without checksum", dmg_no_checksum, "tensor /model/final_norm has no checksum" },
        { "bit flip", dmg_bitflip_weights, "file checksum mismatch: corrupt or modified" },
        { "bit flip behind a valid seal", dmg_bitflip_resealed, "layers.0.attn.wqkv fails its checksum" },
        { "bit flip in a moment behind a valid seal", dmg_bitflip_moment_resealed, "/optim/v/tok_emb fails its checksum" },
        { "damaged seal", dmg_seal, "no fspo seal" },
        { "truncated file", dmg_truncate, "truncated or extended" },
        { "empty file", dmg_empty, "empty file" },
        { "not HDF5", dmg_text, "not an HDF5 file" },
        { "directory", dmg_directory, "is a directory" },
        { "foreign HDF5 file", dmg_foreign_hdf5, "no fspo seal" },
        { "model shape of another config", dmg_shape_attr, "model shape mismatch: the checkpoint has vocab 264, "
                                                           "d_model 64" },
        { "no such file", dmg_missing, "No such file or directory" },
    };
    Optimizer o;
    Model *m = trained_model(&small, &o, 7);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *dir = tmpdir(), path[512], err[1024] = "";
        CkptMeta meta = meta_at(3);
        ckpt_save(dir, m, &o, &meta, yaml, 3, path, sizeof path, err, sizeof err);
        cases[i].damage(path);
        int rc = ckpt_load(path, m, &o, NULL, err, sizeof err);
        char label[96];
        snprintf(label, sizeof label, "bad checkpoint: %s", cases[i].name);
        check(rc == -1 && strstr(err, path) && strstr(err, cases[i].want), label, "%s", err);
    }
    /* another model shape in the config */
    char *dir = tmpdir(), path[512], err[1024];
    CkptMeta meta = meta_at(3);
    ckpt_save(dir, m, &o, &meta, yaml, 3, path, sizeof path, err, sizeof err);
    ModelConfig other = small;
    other.n_layers = 3;
    Model *m3 = model_create(&other, 0, 1, 1);
    int rc = ckpt_load(path, m3, NULL, NULL, err, sizeof err);
    check(rc == -1 && strstr(err, "n_layers 2") && strstr(err, "n_layers 3"), "bad checkpoint: config has another "
                                                                              "shape", "%s", err);
    model_free(m3);
    /* optimizer kind differs */
    Optimizer rms;
    OptimConfig rc_cfg = config_optim_default(OPTIM_RMSPROP);
    optim_init(&rms, &rc_cfg, m->n_params);
    rc = ckpt_load(path, m, &rms, NULL, err, sizeof err);
    check(rc == -1 && strstr(err, "optimizer state is adamw, the config asks for rmsprop"), "bad checkpoint: other "
                                                                                             "optimizer", "%s", err);
    optim_free(&rms);
    /* unreadable: as root, drop to nobody in a child (root reads through file modes) */
    chmod(path, 0600);
    pid_t pid = fork();
    if (pid == 0) {
        if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0)) _exit(3);
        if (geteuid() != 0) chmod(path, 0000);
        int r = ckpt_load(path, m, &o, NULL, err, sizeof err);
        _exit(r == -1 && strstr(err, "Permission denied") ? 0 : 1);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "bad checkpoint: unreadable", "child status %d", WEXITSTATUS(st));
    chmod(path, 0644);
    /* saving into a directory that is not there fails cleanly */
    meta.step = 4;
    rc = ckpt_save("/nonexistent/dir", m, &o, &meta, yaml, 3, path, sizeof path, err, sizeof err);
    check(rc == -1 && strstr(err, "/nonexistent/dir"), "save into a missing directory", "%s", err);
    optim_free(&o);
    model_free(m);
}

/* ---- crash safety: SIGKILL at random points during ckpt_save ---- */
static void test_kill_during_save(int trials)
{
    /* big enough that a save takes tens of milliseconds, so kills land inside it */
    ModelConfig cfg = { .vocab = 264, .d_model = 256, .n_layers = 4, .n_heads = 4, .max_seq = 16 };
    Optimizer o;
    Model *m = trained_model(&cfg, &o, 8);
    char err[1024], path[512];
    CkptMeta meta = meta_at(1);
    double t0 = now_seconds();
    ckpt_save(tmpdir(), m, &o, &meta, yaml, 2, path, sizeof path, err, sizeof err);
    double save_s = now_seconds() - t0;
    Rng r = rng_seed((uint64_t)time(NULL), 5);
    int ok = 0, killed_mid = 0;
    for (int t = 0; t < trials; t++) {
        char *dir = tmpdir();
        meta = meta_at(1);
        ckpt_save(dir, m, &o, &meta, yaml, 2, path, sizeof path, err, sizeof err);
        pid_t pid = fork();
        if (pid == 0) {
            CkptMeta m2 = meta_at(2);
            m->params[0] += 1.0f;
            _exit(ckpt_save(dir, m, &o, &m2, yaml, 1, NULL, 0, err, sizeof err) == 0 ? 0 : 1);
        }
        double delay = rng_uniform(&r) * save_s * 1.1;
        struct timespec ts = { (time_t)delay, (long)((delay - (time_t)delay) * 1e9) };
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        killed_mid += WIFSIGNALED(st);
        char latest[512];
        int found = ckpt_find_latest(dir, NULL, latest, sizeof latest, err, sizeof err);
        Model *m2 = model_create(&cfg, 1, 1, 1);
        CkptMeta back;
        int loads = found == 1 && ckpt_load(latest, m2, NULL, &back, err, sizeof err) == 0;
        /* with keep = 1 the child deletes step 1 only after step 2 verified, so one of them always remains */
        if (loads && (back.step == 1 || back.step == 2)) ok++;
        else fprintf(stderr, "trial %d: found %d %s: %s\n", t, found, latest, err);
        model_free(m2);
    }
    check(ok == trials && killed_mid > 0, "SIGKILL during save never loses the latest checkpoint",
          "%d/%d trials recovered a verified checkpoint (%d killed mid-save, save takes %.0f ms)", ok, trials,
          killed_mid, save_s * 1e3);
    optim_free(&o);
    model_free(m);
}

static int write_sample(const char *dir)
{
    Optimizer o;
    Model *m = trained_model(&small, &o, 11);
    char path[512], err[1024];
    CkptMeta meta = meta_at(7);
    if (ckpt_save(dir, m, &o, &meta, yaml, 3, path, sizeof path, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    /* logits of one causal row, for the PyTorch comparison */
    Model *f = model_create(&small, 0, 1, 16);
    memcpy(f->params, m->params, sizeof(float) * m->n_params);
    Batch b;
    batch_alloc(&b, 1, 16, 1, 1);
    batch_reset(&b, 1, 16, 1);
    int32_t toks[16];
    Rng r = rng_seed(3, 3);
    for (int t = 0; t < 16; t++) toks[t] = (int32_t)rng_below(&r, 264);
    batch_set_causal_row(&b, 0, toks);
    float logp;
    b.targets[0] = (Target){ 0, 1, 1 };
    b.n_targets = 1;
    model_forward(f, &b, &logp);
    char p[600];
    snprintf(p, sizeof p, "%s/logits.f32", dir);
    FILE *fl = fopen(p, "wb");
    fwrite(f->logits, sizeof(float), 16 * 264, fl);
    fclose(fl);
    snprintf(p, sizeof p, "%s/tokens.i32", dir);
    fl = fopen(p, "wb");
    fwrite(toks, sizeof(int32_t), 16, fl);
    fclose(fl);
    snprintf(p, sizeof p, "%s/params.f32", dir);
    fl = fopen(p, "wb");
    fwrite(m->params, sizeof(float), m->n_params, fl);
    fclose(fl);
    batch_free(&b);
    model_free(f);
    optim_free(&o);
    model_free(m);
    printf("%s\n", path);
    return 0;
}

/* A byte-for-byte copy: a file this process did not write (a new inode). */
static int copy_file(const char *from, const char *to)
{
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    char buf[1 << 16];
    size_t n;
    int rc = a && b ? 0 : -1;
    while (rc == 0 && (n = fread(buf, 1, sizeof buf, a)) > 0) rc = fwrite(buf, 1, n, b) == n ? 0 : -1;
    if (a) fclose(a);
    if (b && fclose(b) != 0) rc = -1;
    return rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Processes of process group g that are not zombies, from /proc. */
static int live_in_group(pid_t g)
{
    DIR *d = opendir("/proc");
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        char path[300], buf[512];
        if (de->d_name[0] < '1' || de->d_name[0] > '9') continue;
        snprintf(path, sizeof path, "/proc/%s/stat", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t got = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[got] = '\0';
        char *rp = strrchr(buf, ')'), state = 0;
        long ppid = 0, pgrp = 0;
        if (rp && sscanf(rp + 1, " %c %ld %ld", &state, &ppid, &pgrp) == 3 && pgrp == g && state != 'Z') n++;
    }
    if (d) closedir(d);
    return n;
}

/* The isolated structure check (io/h5util.h) on a normal checkpoint: what
 * it costs against the same check in-process, that a verdict is reused
 * until the file changes, and that a child that crashes or hangs becomes
 * an error naming what happened (FSPO_FAULT=h5crash / h5hang). */
static void test_isolation(void)
{
    Optimizer o;
    Model *m = trained_model(&small, &o, 9);
    char *dir = tmpdir(), path[512], err[1024], why[512], p[600];
    CkptMeta meta = meta_at(3);
    int rc = ckpt_save(dir, m, &o, &meta, yaml, 3, path, sizeof path, err, sizeof err);
    double iso[5], inproc[5];
    int bad = rc != 0;
    for (int i = 0; i < 10; i++) {
        snprintf(p, sizeof p, "%s/copy_%d.h5", dir, i);
        bad |= copy_file(path, p) != 0;
        h5_set_isolation(i < 5, 0);
        double t0 = now_seconds();
        bad |= h5_validate(p, why, sizeof why) != 0;
        (i < 5 ? iso : inproc)[i % 5] = 1e3 * (now_seconds() - t0);
    }
    h5_set_isolation(1, 0);
    qsort(iso, 5, sizeof *iso, cmp_double);
    qsort(inproc, 5, sizeof *inproc, cmp_double);
    struct stat st;
    stat(path, &st);
    check(!bad && iso[2] < 250, "isolated structure check of a normal checkpoint is cheap",
          "%lld-byte checkpoint: %.2f ms in a forked child, %.2f ms in-process (medians of 5; fork + wait %.2f ms)%s",
          (long long)st.st_size, iso[2], inproc[2], iso[2] - inproc[2], bad ? "; a check failed" : "");
    /* a verdict is reused: with the child set to crash, nothing is forked for known files */
    setenv("FSPO_FAULT", "h5crash", 1);
    snprintf(p, sizeof p, "%s/copy_0.h5", dir);
    int known = h5_validate(p, why, sizeof why), own = h5_validate(path, why, sizeof why);
    check(known == 0 && own == 0, "a file validated or written by this process is not checked again", "%d %d", known, own);
    /* the same file changed (a byte of a tensor, re-sealed): checked again, and the child's crash is the error */
    flip_data_byte(p, "/model/final_norm");
    reseal(p);
    rc = h5_validate(p, why, sizeof why);
    check(rc == -1 && strstr(why, "libhdf5 crashed while validating (signal 11)") && strstr(why, "file is malformed"),
          "a changed file is checked again; a child killed by a signal becomes an error", "%s", why);
    rc = ckpt_verify(p, err, sizeof err);
    check(rc == -1 && strstr(err, p) && strstr(err, "libhdf5 crashed"), "the reader names the file", "%s", err);
    setenv("FSPO_FAULT", "h5hang", 1);
    snprintf(p, sizeof p, "%s/copy_1.h5", dir);
    flip_data_byte(p, "/model/final_norm");
    reseal(p);
    double t0 = now_seconds();
    rc = h5_validate(p, why, sizeof why);
    double waited = now_seconds() - t0;
    check(rc == -1 && strstr(why, "libhdf5 hung while validating (no answer in 1 s, killed)") && waited < 5,
          "a child that hangs is killed and becomes an error", "%.1f s: %s", waited, why);
    /* the process checking the file dies while its child hangs: the child ends by itself */
    snprintf(p, sizeof p, "%s/orphan.h5", dir); /* a file no verdict is cached for */
    copy_file(path, p);
    pid_t checker = fork();
    if (checker == 0) {
        setpgid(0, 0); /* the child it forks is in this group */
        h5_set_isolation(1, 1000);
        h5_validate(p, why, sizeof why);
        _exit(0);
    }
    setpgid(checker, checker);
    nanosleep(&(struct timespec){ 0, 300000000L }, NULL);
    int before = live_in_group(checker); /* the checker and its hanging child */
    kill(checker, SIGKILL);
    waitpid(checker, NULL, 0);
    int live = -1;
    double t1 = now_seconds();
    while ((live = live_in_group(checker)) > 0 && now_seconds() - t1 < 8) nanosleep(&(struct timespec){ 0, 100000000L }, NULL);
    check(before == 2 && live == 0, "a validation child whose parent was killed ends by itself (its alarm)",
          "%d processes before the kill; %d left %.1f s after it", before, live, now_seconds() - t1);
    unsetenv("FSPO_FAULT");
    int status = 0;
    check(waitpid(-1, &status, WNOHANG) == -1 && errno == ECHILD, "no validation child is left", "a child remains");
    model_free(m);
    optim_free(&o);
}

/* ZeRO-1 without MPI: 3 optimizer slices of a trained model. Loading a
 * whole checkpoint into each slice, and ckpt_read_moment_slices, give the
 * slices of the whole moments; a save whose moments come tensor by tensor
 * from the slices (meta.fetch, as train.c gathers them) writes the same
 * tensors as the whole optimizer's save. */
enum { SLICES = 3 };
static Optimizer *fetch_from; /* [SLICES] */
static void fetch_slices(void *ctx, int which, const TensorInfo *t, float *buf)
{
    int *calls = ctx;
    (*calls)++;
    for (size_t i = 0; i < t->numel; i++) {
        size_t e = t->offset + i;
        for (int k = 0; k < SLICES; k++)
            if (e >= fetch_from[k].lo && e < fetch_from[k].hi)
                buf[i] = (which ? fetch_from[k].v : fetch_from[k].m)[e - fetch_from[k].lo];
    }
}
static struct { Optimizer *want; int ok, delivered; } slice_check;
static void check_slice(void *ctx, int k, const float *mm, const float *vv)
{
    (void)ctx;
    const Optimizer *w = &slice_check.want[k];
    size_t nb = sizeof(float) * (w->hi - w->lo);
    slice_check.ok &= !memcmp(mm, w->m, nb) && !memcmp(vv, w->v, nb);
    slice_check.delivered++;
}

static void test_slices(void)
{
    Optimizer o, sl[SLICES];
    Model *m = trained_model(&small, &o, 11);
    char *dir = tmpdir(), path[512], path2[512], err[1024];
    CkptMeta meta = meta_at(3);
    int rc = ckpt_save(dir, m, &o, &meta, yaml, 3, path, sizeof path, err, sizeof err);
    OptimConfig oc = config_optim_default(OPTIM_ADAMW);
    size_t n = m->n_params, bounds[SLICES + 1];
    int same = rc == 0;
    for (int k = 0; k < SLICES; k++) {
        optim_shard_range(n, k, SLICES, &bounds[k], &bounds[k + 1]);
        optim_init_slice(&sl[k], &oc, n, bounds[k], bounds[k + 1]);
        Model *mk = model_create(&small, 1, 1, 1);
        rc |= ckpt_load(path, mk, &sl[k], NULL, err, sizeof err);
        size_t nb = sizeof(float) * (bounds[k + 1] - bounds[k]);
        same &= rc == 0 && sl[k].t == o.t && !memcmp(sl[k].m, o.m + bounds[k], nb) && !memcmp(sl[k].v, o.v + bounds[k], nb);
        model_free(mk);
    }
    check(same, "a checkpoint loads into optimizer slices", "%s", rc ? err : "3 slices equal the whole moments' parts");
    float *mbuf = malloc(sizeof(float) * n), *vbuf = malloc(sizeof(float) * n);
    slice_check.want = sl, slice_check.ok = 1, slice_check.delivered = 0;
    rc = ckpt_read_moment_slices(path, m, bounds, 1, SLICES, mbuf, vbuf, check_slice, NULL, err, sizeof err);
    check(rc == 0 && slice_check.ok && slice_check.delivered == SLICES - 1, "ckpt_read_moment_slices reads slices 1..2",
          "%s", rc ? err : "equal");
    /* the fetched save, from the slices; its moments against the whole save's */
    char *dir2 = tmpdir();
    int calls = 0;
    fetch_from = sl;
    meta.fetch = fetch_slices, meta.fetch_ctx = &calls;
    rc = ckpt_save(dir2, m, &sl[0], &meta, yaml, 3, path2, sizeof path2, err, sizeof err);
    Optimizer back;
    optim_init(&back, &oc, n);
    Model *m2 = model_create(&small, 1, 1, 1);
    if (rc == 0) rc = ckpt_load(path2, m2, &back, NULL, err, sizeof err);
    size_t nb = sizeof(float) * n;
    check(rc == 0 && calls == 2 * m->n_tensors && !memcmp(back.m, o.m, nb) && !memcmp(back.v, o.v, nb) && back.t == o.t,
          "a save fed tensor by tensor from slices equals the whole save", "%s (%d fetches for %d tensors)",
          rc ? err : "moments bit-identical", calls, m->n_tensors);
    meta.fetch = NULL;
    rc = ckpt_save(dir2, m, &sl[1], &meta, yaml, 3, path2, sizeof path2, err, sizeof err);
    check(rc == -1, "a slice without fetch is refused", "%s", err);
    free(mbuf);
    free(vbuf);
    optim_free(&back);
    optim_free(&o);
    for (int k = 0; k < SLICES; k++) optim_free(&sl[k]);
    model_free(m);
    model_free(m2);
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--write")) return write_sample(argv[2]);
    /* test_ckpt --reseal FILE: accept an HDF5 file edited on purpose by a test (h5py) */
    if (argc == 3 && !strcmp(argv[1], "--reseal")) return h5_seal(argv[2]) == 0 ? 0 : 1;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    test_round_trip();
    test_slices();
    test_bf16_storage();
    test_retention_and_latest();
    test_lineages();
    test_bad_checkpoints();
    test_isolation();
    test_kill_during_save(argc == 3 && !strcmp(argv[1], "--trials") ? atoi(argv[2]) : 20);
    remove_tmpdirs();
    return check_status();
}
