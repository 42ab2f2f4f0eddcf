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

#include <stddef.h>

#include "tokenizer.h"

/* NULL with err = "PATH: key: reason" (malformed JSON with line and column). */
Bpe *tokenizer_json_read(const char *path, char *err, size_t errlen);
/* Writes b to PATH.tmp and renames it into place; 0, or -1 with err. */
int tokenizer_json_write(const Bpe *b, const char *path, char *err, size_t errlen);

#endif
