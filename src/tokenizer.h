/* tokenizer: byte-level vocabulary plus structure tokens.
 * Ids 0..255 are raw bytes, so any byte string round-trips losslessly; the
 * special tokens mark FSPO's prompt layout in one token each instead of
 * markdown headers. PAD aliases EOS: padding is never a loss target and is
 * masked out of attention, so it needs no id of its own, and the vocabulary
 * stays at 264 (a multiple of 8). */
#ifndef FSPO_TOKENIZER_H
#define FSPO_TOKENIZER_H

enum {
    TOK_BOS = 256,
    TOK_EOS = 257,
    TOK_PAD = TOK_EOS,
    TOK_EXAMPLE = 258,      /* starts one few-shot example */
    TOK_QUESTION = 259,     /* a prompt follows */
    TOK_PREFERRED = 260,    /* the user's chosen answer follows */
    TOK_DISPREFERRED = 261, /* the user's rejected answer follows */
    TOK_TASK = 262,         /* the query prompt follows */
    TOK_USER_DESC = 263,    /* a user description follows */
    TOKENIZER_VOCAB = 264   /* smallest model vocab that holds every id */
};

/* Recorded in checkpoints and datasets: data tokenized one way must not be
 * trained with a model that reads ids another way. */
#define TOKENIZER_ID "fspo-byte264-v1"

#include <stddef.h>
#include <stdint.h>

/* Bytes to ids: each byte becomes its own id, so text never produces a
 * special token and decode(encode(s)) == s for any bytes. Writes n ids. */
void tok_encode(const char *s, size_t n, uint16_t *out);

/* Ids to bytes. Special tokens become their display names ("<|eos|>")
 * when show_special, else nothing. Writes at most cap-1 bytes plus a NUL;
 * returns the length the full text needs (like snprintf). */
size_t tok_decode(const uint16_t *ids, size_t n, char *out, size_t cap, int show_special);

/* "<|eos|>" etc. for a special id, NULL for a byte or an unknown id. */
const char *tok_special_name(int id);

#endif
