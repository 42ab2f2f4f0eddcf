/* frozen: the one loader of a frozen (forward-only) model from a checkpoint
 * or a Hugging Face Llama directory: train's reference (loss.ref_ckpt), every
 * model eval reads, fspo sample, export, model logits and model strip.
 *
 * Steps, each failing with a message that names the file:
 *   1. without a given shape: the path must open ("cannot open the checkpoint");
 *   2. with a tokenizer: the checkpoint's must be it (ckpt_check_tokenizer);
 *   3. the model: of the given shape, else of the checkpoint's own;
 *   4. its weights (ckpt_load: shape against the model, every checksum);
 *   5. if asked, the weights checksum a preference stage records. */
#ifndef FSPO_FROZEN_H
#define FSPO_FROZEN_H

#include <stddef.h>
#include <stdint.h>

#include "io/ckpt.h"
#include "src/model.h"
#include "src/tokenizer.h"

typedef struct {
    /* NULL: the checkpoint's own shape (eval, sample, export, strip); else
     * this one, which the checkpoint must match (train's reference takes
     * the config's model section) */
    const ModelConfig *shape;
    int max_rows; /* rows of a batch the model runs */
    int max_len;  /* tokens of a row; 0 or above the shape's max_seq: its max_seq */
    const Tokenizer *tok; /* non-NULL: the checkpoint must read these ids... */
    const char *tok_from; /* ...those of this dataset (for the message) */
    CkptMeta *meta;       /* non-NULL: the checkpoint's metadata */
    uint64_t *checksum;   /* non-NULL: its weights checksum */
    AttentionKind attention; /* how its forward keeps attention (ATTENTION_FULL by default) */
} FrozenSpec;

/* The model of path as spec asks, or NULL with a message naming the file. */
Model *frozen_load(const char *path, const FrozenSpec *spec, char *err, size_t errlen);

#endif
