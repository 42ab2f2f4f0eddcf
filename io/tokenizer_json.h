/* tokenizer_json: Hugging Face's tokenizer.json for byte-level BPE (jansson).
 *
 * Reads what Hugging Face `tokenizers` writes for the GPT-2 family: model
 * BPE (merges as "a b" strings or as ["a", "b"] pairs), pre_tokenizer
 * ByteLevel with add_prefix_space false and use_regex true, decoder
 * ByteLevel, no normalizer, post_processor null or ByteLevel, truncation
 * and padding null, added tokens without single_word/lstrip/rstrip. Anything
 * else is refused with the key that is not supported, rather than tokenized
 * differently from Hugging Face. docs/formats.md has the details. */
#ifndef FSPO_TOKENIZER_JSON_H
#define FSPO_TOKENIZER_JSON_H

#include <hdf5.h>
#include <stddef.h>

#include "src/tokenizer.h"

/* NULL with err = "PATH: key: reason" (malformed JSON with line and column). */
Bpe *tokenizer_json_read(const char *path, char *err, size_t errlen);
/* The same from text in memory; name stands for the file in messages. */
Bpe *tokenizer_json_parse(const char *text, size_t len, const char *name, char *err, size_t errlen);
/* The document tokenizer_json_write writes, as a malloc'ed string (NULL
 * when out of memory): how datasets and checkpoints store a tokenizer. */
char *tokenizer_json_dump(const Bpe *b);
/* Writes b to PATH.tmp and renames it into place; 0, or -1 with err. */
int tokenizer_json_write(const Bpe *b, const char *path, char *err, size_t errlen);

/* A tokenizer.json file as a Tokenizer (its text stored in the canonical
 * form tokenizer_json_dump writes), or, for a path ending in .h5, the
 * tokenizer of that dataset or checkpoint (possibly the byte tokenizer):
 * 0, or -1 with err naming the file and what is wrong or missing
 * (tok_init_bpe's conditions). */
int tokenizer_load(const char *path, Tokenizer *t, char *err, size_t errlen);
/* A tokenizer.json file as tokenizer_load reads it; with add_structure,
 * the structure tokens it lacks are appended first (tok_add_structure;
 * `added` says which, at which ids): what fspo prep --add-structure-tokens
 * stores and how fspo reads a Hugging Face directory's tokenizer.json. */
int tokenizer_load_json(const char *path, int add_structure, Tokenizer *t, char *added, size_t added_len, char *err,
                        size_t errlen);

/* How a dataset or checkpoint file f stores its tokenizer: the attribute
 * "tokenizer" (tok_name) and, for a BPE, the dataset /tokenizer_json. */
int tokenizer_h5_write(hid_t f, const Tokenizer *t);
/* Reads it back into t: the byte tokenizer, or the stored BPE, which must
 * have the name the attribute holds. 0, or -1 with err naming path. */
int tokenizer_h5_read(hid_t f, const char *path, Tokenizer *t, char *err, size_t errlen);

#endif
