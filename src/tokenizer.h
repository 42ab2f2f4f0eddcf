/* tokenizer: the byte tokenizer that datasets use (below) and a byte-level
 * BPE in Hugging Face's tokenizer.json format (further down), which keeps
 * the same ids for bytes and special tokens.
 *
 * The byte tokenizer: byte-level vocabulary plus structure tokens.
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

/* "<|eos|>" etc. for a special id of the byte tokenizer (TOK_BOS..
 * TOK_USER_DESC), NULL for a byte or an unknown id: also the contents of
 * these tokens in a BPE tokenizer. */
const char *tok_special_name(int id);

/* ---- byte-level BPE in Hugging Face's tokenizer.json format ----
 *
 * The GPT-2 / Llama-3 family's tokenizer, with the semantics of Hugging
 * Face `tokenizers` for this subset (tests/test_tokenizer.sh checks ids
 * against the official Node.js binding): no normalizer; added tokens are
 * cut out of the text first (leftmost-longest; tokens with normalized=false
 * in a first pass, normalized=true ones in the pieces left over); the rest
 * goes through the ByteLevel pre-tokenizer (add_prefix_space false,
 * use_regex true: the GPT-2 pattern
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * splits it into pieces, each byte of a piece becomes one of 256 printable
 * characters), then the BPE model (no dropout, no unk token: a byte whose
 * character is missing from the vocabulary is dropped, as Hugging Face
 * does): repeatedly apply the lowest-ranked merge among adjacent symbols,
 * the leftmost on ties. The ByteLevel decoder maps characters back to bytes.
 *
 * Bytes that are not valid UTF-8 (Hugging Face only takes valid strings):
 * each such byte is one character of the "other" class (like punctuation:
 * it joins a ` ?[^\s\p{L}\p{N}]+` run) and maps through the byte table like
 * any byte, so decode(encode(s)) == s for any bytes. On valid UTF-8 the ids
 * are Hugging Face's. Decoding returns the raw bytes; Hugging Face's decode
 * returns the same bytes when they are valid UTF-8 (else it substitutes
 * U+FFFD).
 *
 * Ids are int32: the model vocabulary is 0..n_vocab-1, added tokens that
 * are not in it follow in order. Tokenizers learned by bpe_learn number the
 * 256 single bytes 0..255 (id = byte value), the special tokens 256..263
 * as above (TOK_BOS...; in the vocabulary and in added_tokens), and merges
 * from 264 on. */
typedef struct Bpe Bpe;

/* tokenizer.json's lists as plain data: what io/tokenizer_json.c reads from
 * a file and writes to one. Strings are UTF-8 with explicit lengths; texts
 * of model tokens are in byte-level characters ("\xC4\xA0the" is " the"). */
typedef struct {
    const char *text;
    size_t len;
    int64_t id;
} BpeToken;
typedef struct {
    const char *left, *right;
    size_t left_len, right_len;
} BpeMerge;
typedef struct {
    const char *text;
    size_t len;
    int64_t id;
    int special, normalized;
} BpeAdded;
typedef struct {
    const BpeToken *vocab;  /* model.vocab, any order */
    size_t n_vocab;
    const BpeMerge *merges; /* model.merges, rank order */
    size_t n_merges;
    const BpeAdded *added;  /* added_tokens */
    size_t n_added;
    int ignore_merges;      /* model.ignore_merges: a piece that is a whole token is that token */
} BpeSpec;

/* Builds a tokenizer from its parts, checking them the way Hugging Face
 * does and more strictly: vocabulary ids must number the entries 0..n-1
 * (no duplicate, none out of range), each merge's two tokens and their
 * concatenation must be in the vocabulary, no merge may repeat, and an
 * added token's id must be the one Hugging Face gives it (its vocabulary
 * id, else the next id after the vocabulary and earlier added tokens).
 * NULL with err naming the entry, e.g. "model.merges[17]: 'x' is not in
 * the vocabulary". */
Bpe *bpe_build(const BpeSpec *spec, char *err, size_t errlen);
/* The parts of b (vocab in id order), valid until bpe_free. */
const BpeSpec *bpe_spec(const Bpe *b);
void bpe_free(Bpe *b);
/* Number of ids: the model vocabulary plus added tokens outside it. */
int32_t bpe_n_ids(const Bpe *b);
/* The id of an added token with this content (e.g. tok_special_name(TOK_EOS)), -1 if none. */
int32_t bpe_added_id(const Bpe *b, const char *content);

/* Text to ids; out must hold n ids (a token covers at least one byte).
 * Returns the number written. */
size_t bpe_encode(const Bpe *b, const char *s, size_t n, int32_t *out);
/* The same, except that special added tokens are not cut out of the text
 * (Hugging Face's encode_special_tokens = true): their contents are
 * encoded as text, so text never produces a special token. */
size_t bpe_encode_text(const Bpe *b, const char *s, size_t n, int32_t *out);
/* 1 if id is a special added token. */
int bpe_is_special(const Bpe *b, int32_t id);
/* A byte whose byte-level character is not in the vocabulary (the
 * tokenizer drops it), or -1 if every byte can be encoded. */
int bpe_missing_byte(const Bpe *b);
/* Ids to bytes, like snprintf: writes at most cap-1 bytes plus a NUL and
 * returns the full length. Special added tokens are skipped when
 * skip_special, unknown ids always (as Hugging Face does). */
size_t bpe_decode(const Bpe *b, const int32_t *ids, size_t n, char *out, size_t cap, int skip_special);
/* What one id decodes to, NULL for an unknown id. */
const char *bpe_token_bytes(const Bpe *b, int32_t id, size_t *len);
/* The pre-tokenizer: the end of the piece that starts at s[i] (i < n). */
size_t bpe_piece_end(const char *s, size_t n, size_t i);
/* Bytes as byte-level characters (" the" -> "\xC4\xA0the"), how Hugging Face
 * shows pieces and tokens; out holds 2n bytes. Returns the length. */
size_t bpe_byte_level(const char *s, size_t n, char *out);

/* ---- learning a BPE ----
 * Texts are cut at the special token names (never learned from), split by
 * the pre-tokenizer, and their pieces counted; bpe_learn then merges the
 * most frequent adjacent pair until the vocabulary has vocab_size tokens
 * or no pair occurs min_count times. Ties go to the pair whose (left id,
 * right id) is smallest. Pair counts are updated incrementally, only in the
 * pieces that contain the merged pair. The result depends only on the
 * multiset of pieces: the same corpus gives the same tokenizer in any
 * order. A merge whose concatenation is already a token reuses its id. */
typedef struct BpeCorpus BpeCorpus;
typedef struct {
    int32_t vocab_size; /* >= TOKENIZER_VOCAB (256 bytes + 8 special tokens) */
    int64_t min_count;  /* >= 1 */
} BpeLearnOptions;
typedef struct {
    int64_t bytes, pieces, unique_pieces, pairs; /* pairs: distinct adjacent pairs at the start */
    int32_t merges, vocab;                        /* done, and the resulting vocabulary size */
} BpeLearnStats;

BpeCorpus *bpe_corpus_new(void);
void bpe_corpus_add(BpeCorpus *c, const char *s, size_t n);
/* NULL with err on bad options. st may be NULL. */
Bpe *bpe_learn(const BpeCorpus *c, const BpeLearnOptions *opt, BpeLearnStats *st, char *err, size_t errlen);
void bpe_corpus_free(BpeCorpus *c);

/* ---- the tokenizer interface: what datasets, packing, sampling and eval use ----
 *
 * One tokenizer object for both kinds: a zero-initialized Tokenizer (bpe
 * NULL) is the byte tokenizer, so code that never set one (hand-built test
 * datasets) reads bytes. A BPE tokenizer maps the eight structure tokens
 * to its added tokens of the same contents ("<|bos|>" ...), wherever their
 * ids are; a tokenizer learned by bpe_learn has them at 256..263 like the
 * byte tokenizer. Text never produces a structure token with either (a
 * literal "<|eos|>" in a prompt is text). */
typedef struct {
    Bpe *bpe;                                  /* NULL: the byte tokenizer */
    int32_t special[TOKENIZER_VOCAB - TOK_BOS]; /* BPE: the ids of TOK_BOS..TOK_USER_DESC */
    int32_t n_ids;                             /* BPE: ids it can produce (the smallest model.vocab) */
    char name[32];                             /* BPE: "bpe<n_ids>-<16 hex of the json's checksum>" */
    char *json;                                /* BPE: its tokenizer.json text, as stored in datasets */
} Tokenizer;

/* Takes b and json (malloc'ed, owned from then on, freed on error too):
 * 0, or -1 with err if b lacks one of the eight structure tokens as a
 * special added token or cannot encode every byte. A BPE that gives the
 * byte tokenizer's ids on every text (no merges, bytes at their values,
 * structure tokens at 256..263: what fspo export writes for a byte model)
 * becomes the byte tokenizer (t zeroed). */
int tok_init_bpe(Tokenizer *t, Bpe *b, char *json, char *err, size_t errlen);
/* b with those of fspo's eight structure tokens it lacks appended as
 * special added tokens, in TOK_BOS..TOK_USER_DESC order, numbered as
 * Hugging Face's add_special_tokens numbers them (the id of the same text
 * in the vocabulary, else the next id after all of b's): b's ids keep
 * their meaning. Tokens b has are reused (they must be special). `added`
 * lists what was added ("<|bos|> 300, ...", "" if nothing). A new Bpe, or
 * NULL with err. */
Bpe *tok_add_structure(const Bpe *b, char *added, size_t added_len, char *err, size_t errlen);
/* The first id below n and both tokenizers' counts that means something
 * else in a than in b (other bytes, or special in one only), with both
 * shown in `what`; -1 if they agree on every such id. */
int32_t tok_first_difference(const Tokenizer *a, const Tokenizer *b, int32_t n, char *what, size_t len);
void tok_free(Tokenizer *t);
/* TOKENIZER_ID for the byte tokenizer, else t->name: equal names, equal ids. */
const char *tok_name(const Tokenizer *t);
/* Smallest model vocabulary that holds every id (264 for bytes). */
int32_t tok_n_ids(const Tokenizer *t);
/* The id of structure token `which` (TOK_BOS..TOK_USER_DESC); t may be NULL (bytes). */
int32_t tok_id(const Tokenizer *t, int which);
/* 1 if id is not text: a structure or other special token, or outside the
 * tokenizer's ids. Generation stops at such a token. */
int tok_is_special(const Tokenizer *t, int32_t id);
/* Text to ids; out holds n ids (each id covers at least one byte).
 * Returns the number written. */
size_t tok_encode(const Tokenizer *t, const char *s, size_t n, int32_t *out);
/* Ids to bytes. Structure tokens become their names ("<|eos|>") when
 * show_special, else nothing; ids outside the tokenizer "<|?|>" or nothing.
 * Writes at most cap-1 bytes plus a NUL; returns the length the full text
 * needs (like snprintf). */
size_t tok_decode(const Tokenizer *t, const int32_t *ids, size_t n, char *out, size_t cap, int show_special);

#endif
