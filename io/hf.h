/* hf: Hugging Face LlamaForCausalLM model directories (docs/interop.md).
 *
 * A directory with config.json, model.safetensors (or a sharded index and
 * its shards), tokenizer.json and generation_config.json. Tensor names map
 * onto fspo's: q/k/v_proj fuse into attn.wqkv, gate/up_proj into mlp.w13
 * (gate first), lm_head is the untied head; RoPE changes from Hugging
 * Face's rotate-half pairing (i, i + hd/2) to fspo's interleaved pairs
 * (2i, 2i+1) by permuting each q and k head's rows, and back on export.
 * ckpt.h's loaders take such a directory wherever they take a checkpoint. */
#ifndef FSPO_HF_H
#define FSPO_HF_H

#include <stddef.h>
#include <stdio.h>

#include "src/model.h"
#include "src/tokenizer.h"

/* 1 if path is a directory holding config.json. */
int hf_is_dir(const char *path);
/* The model shape from DIR/config.json (architectures must name
 * LlamaForCausalLM; rope_scaling, biases and other activations are
 * refused), validated. 0, or -1 with err naming the file and key. */
int hf_read_config(const char *dir, ModelConfig *cfg, char *err, size_t errlen);
/* Reads the weights of DIR into m, whose shape must be DIR's (the caller
 * checks with hf_read_config) except that m's vocab may be larger than
 * vocab_size: rows vocab_size.. of embed_tokens (and of an untied lm_head)
 * are then set to the mean of DIR's rows, and one line on stderr says so; a
 * smaller vocab is refused. F32, F16 and BF16 tensors become fp32. */
int hf_read_weights(const char *dir, Model *m, char *err, size_t errlen);
/* `fspo inspect DIR`: config.json, the tokenizer (and what fspo adds to
 * it), the tensors (dtype, shape, L2 norm, file), then a full read of the
 * weights. 0, or -1 with err if anything fspo checks fails. */
int hf_print(const char *dir, FILE *out, char *err, size_t errlen);
/* Writes m as a Hugging Face directory into dir, which must not exist or be
 * empty: config.json, model.safetensors (fp32), tokenizer.json (tok's, the
 * checkpoint's tokenizer; for the byte tokenizer, NULL or zeroed, a
 * byte-level BPE without merges), generation_config.json (tok's BOS/EOS
 * ids). Deterministic: the same weights give the same bytes. */
int hf_export(const Model *m, const Tokenizer *tok, const char *dir, char *err, size_t errlen);

#endif
