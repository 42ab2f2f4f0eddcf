/* ckpt: crash-safe HDF5 checkpoints (docs/formats.md).
 *
 * One file per checkpoint, <dir>/ckpt_<step>.h5, readable with h5py:
 * /model/<tensor> with real shapes, /optim/m|v/<tensor> moments, and
 * attributes for everything a resume or an audit needs. Every tensor
 * carries a checksum. A save writes <file>.tmp, flushes, fsyncs, renames
 * and fsyncs the directory, verifies the new file, and only then deletes
 * checkpoints beyond `keep`: a crash at any instant leaves the previous
 * checkpoint intact and no file that passes verification half-written. */
#ifndef FSPO_CKPT_H
#define FSPO_CKPT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "src/model.h"
#include "src/optim.h"
#include "src/tokenizer.h"

#define CKPT_FORMAT_VERSION 1

typedef struct {
    int64_t step;          /* optimizer steps completed */
    int64_t samples_seen;  /* meta-examples consumed */
    int64_t world_size;    /* ranks at save (resume may use another) */
    int64_t seed;          /* train.seed */
    uint64_t data_checksum; /* content checksum of the dataset trained on */
    char stage[16];        /* sft | pref */
    char ref_ckpt[512];    /* reference (SFT) checkpoint of a pref stage, "" if none */
    uint64_t ref_checksum; /* its weights checksum */
    char lineage[40];      /* the run that wrote it (io/rundir.h); "" if written without one */
    int64_t skipped_examples;  /* meta-examples skipped so far (too long for model.max_seq) */
    int64_t skipped_nonfinite; /* steps skipped so far (non-finite loss or gradients) */
    const Tokenizer *tok;  /* saving: the tokenizer of the data trained on (NULL: bytes); not set by loading */
    /* saving, ZeRO-1 (the optimizer holds a slice): the moments come tensor
     * by tensor from fetch (which 0: m, 1: v) into buf (t->numel floats):
     * called for every tensor of /optim/m (AdamW) and then of /optim/v, in
     * model order, once each, unless the save fails first; NULL: the
     * optimizer holds them all. Not set by loading. */
    void (*fetch)(void *ctx, int which, const TensorInfo *t, float *buf);
    void *fetch_ctx;
} CkptMeta;

/* Saves m (and o's moments unless o is NULL; from meta->fetch if o holds
 * a slice) as <dir>/ckpt_<step>.h5 and
 * prunes older ones of the same lineage (meta->lineage) so at most `keep`
 * of it remain: checkpoints of another lineage, and files that do not
 * verify (whose lineage is unknown), are never deleted. config_yaml is the
 * resolved config text. Writes the final path to path_out. 0, or -1 with
 * a message (the previous checkpoints are then untouched). */
int ckpt_save(const char *dir, const Model *m, const Optimizer *o, const CkptMeta *meta, const char *config_yaml,
              int keep, char *path_out, size_t path_len, char *err, size_t errlen);

/* How ckpt_save_weights stores the weights: float32 (as training writes
 * them), or bfloat16, half the bytes, byte-shuffled and deflated (a shipped
 * model). Either way the reader gets the same float32 values: bf16 storage
 * takes only weights that bf16 holds exactly (model_round_bf16 first), so
 * storing loses nothing and the checksums are those of the float32 values. */
typedef enum { CKPT_STORE_F32, CKPT_STORE_BF16 } CkptStore;

/* Writes m's weights and meta, without optimizer state, as exactly `path`
 * (a shipped model: `fspo model strip`): the same tmp -> commit -> verify as
 * ckpt_save, no pruning; refuses a path that exists. 0, or -1 with a message. */
int ckpt_save_weights(const char *path, const Model *m, const CkptMeta *meta, const char *config_yaml,
                      CkptStore store, char *err, size_t errlen);

/* ckpt_load, ckpt_read_model_config and ckpt_weights_checksum also take a
 * Hugging Face Llama directory (one holding config.json, io/hf.h) in place
 * of a checkpoint file: weights only, the shape from its config.json.
 *
 * Loads weights into m, and the optimizer state into o unless o is NULL
 * (then it is a weights-only load, as train.init_from does, and m may have
 * another max_seq: no tensor depends on it). Checks format
 * version, model shape against m->cfg (naming the tensor and both shapes)
 * and every checksum. meta may be NULL. On error m/o may be partly written.
 * An optimizer holding a slice [lo, hi) (ZeRO-1) receives that slice of the
 * moments. */
int ckpt_load(const char *path, Model *m, Optimizer *o, CkptMeta *meta, char *err, size_t errlen);

/* A ZeRO-1 resume, on the rank that loads: the optimizer moments of the
 * slices k = first .. n_slices - 1 of the flat parameter vector
 * ([bounds[k], bounds[k+1]), a checkpoint ckpt_load accepted for m), in
 * order, each read (every tensor's checksum checked) into mbuf (AdamW's m;
 * NULL for RMSprop) and vbuf, sized for the largest slice, and handed to
 * deliver(ctx, k, mbuf, vbuf). The file is opened and checked once.
 * 0, or -1 with a message. */
int ckpt_read_moment_slices(const char *path, const Model *m, const size_t *bounds, int first, int n_slices,
                            float *mbuf, float *vbuf, void (*deliver)(void *ctx, int k, const float *mm, const float *vv),
                            void *ctx, char *err, size_t errlen);

/* The tokenizer a checkpoint's model reads (copied from the dataset it was
 * trained on; older checkpoints: the byte tokenizer). For a Hugging Face
 * directory, its tokenizer.json (tokenizer_load's conditions), or the byte
 * tokenizer if it has none. 0 or -1 with err. */
int ckpt_read_tokenizer(const char *path, Tokenizer *t, char *err, size_t errlen);
/* 0 if the checkpoint's tokenizer is `want` (that of want_from, a dataset
 * path for the message), else -1 with a message naming both. */
int ckpt_check_tokenizer(const char *path, const Tokenizer *want, const char *want_from, char *err, size_t errlen);

/* The model shape stored in a checkpoint (to build a model for it). */
int ckpt_read_model_config(const char *path, ModelConfig *cfg, char *err, size_t errlen);

/* The resolved config text a checkpoint was trained with (malloc'd; the
 * caller frees), or NULL with a message. */
char *ckpt_read_config(const char *path, char *err, size_t errlen);

/* Full verification without a model: signature, format, every tensor's
 * checksum and the weights checksum. */
int ckpt_verify(const char *path, char *err, size_t errlen);

/* Order-independent checksum of the /model tensors: what a preference
 * stage records for its reference checkpoint. */
int ckpt_weights_checksum(const char *path, uint64_t *sum, char *err, size_t errlen);

/* Newest checkpoint in dir that verifies and, unless lineage is NULL,
 * belongs to that lineage. Returns 1 and writes its path; 0 if dir holds
 * no checkpoint file; -1 if dir cannot be read, or if it holds checkpoint
 * files and none qualifies (err then lists each file and why it failed). */
int ckpt_find_latest(const char *dir, const char *lineage, char *path, size_t len, char *err, size_t errlen);

/* The checkpoint files of dir with a step above `step`, which a run going on
 * from `step` would overwrite or outlive: how many (-1 if dir cannot be
 * read), and each with what it is in list ("ckpt_12.h5 does not verify
 * (...)", "... is another run's (lineage ...)", "... is this run's, from a
 * later point"), shortened to fit. */
int ckpt_newer(const char *dir, int64_t step, const char *lineage, char *list, size_t len);

/* 1 and *step if name (a file name, no directory) is ckpt_<step>.h5. */
int ckpt_name_step(const char *name, long *step);

/* `fspo inspect`: step, metadata, config, tensor table (name, shape, norm,
 * checksum status). Returns 0 if every checksum verifies, else -1. */
int ckpt_print(const char *path, FILE *out, char *err, size_t errlen);

#endif
