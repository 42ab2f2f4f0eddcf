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

#endif
