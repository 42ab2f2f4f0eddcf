/* tokenizer_bpe: byte-level BPE with Hugging Face's semantics, and its
 * learner; see tokenizer.h. The algorithms follow Hugging Face `tokenizers`
 * (models/bpe/word.rs, pre_tokenizers/byte_level.rs, added_vocabulary.rs)
 * step by step where the ids depend on them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/checksum.h"
#include "src/tokenizer.h"
#include "src/unicode.h"
#include "src/util.h"

/* ---------------------------------------------------------------------- */
/* allocation, string tables, hash maps                                    */

static void *xrealloc(void *p, size_t n, size_t elem)
{
    if (elem && n > SIZE_MAX / elem) fatal(EXIT_RUNTIME, "tokenizer: allocation overflow");
    size_t bytes = n * elem;
    void *q = realloc(p, bytes ? bytes : 1);
    if (!q) fatal(EXIT_RUNTIME, "tokenizer: out of memory (%zu bytes)", bytes);
    return q;
}

/* Grows *p (holding *cap elements) to hold at least need. */
#define RESERVE(p, cap, need)                                                                                  \
    do {                                                                                                       \
        if ((size_t)(need) > (size_t)(cap)) {                                                                  \
            size_t c_ = (cap) ? (size_t)(cap) : 16;                                                            \
            while (c_ < (size_t)(need)) c_ *= 2;                                                               \
            (p) = xrealloc((p), c_, sizeof *(p));                                                              \
            (cap) = c_;                                                                                        \
        }                                                                                                      \
    } while (0)

/* Byte strings back to back; string i is buf[off[i], off[i] + len[i]). */
typedef struct {
    char *buf;
    size_t used, cap;
    size_t *off, *len;
    size_t n, ncap;
} Texts;

static size_t texts_add(Texts *t, const void *s, size_t n)
{
    RESERVE(t->buf, t->cap, t->used + n);
    if (t->n == t->ncap) {
        t->ncap = t->ncap ? 2 * t->ncap : 64;
        t->off = xrealloc(t->off, t->ncap, sizeof *t->off);
        t->len = xrealloc(t->len, t->ncap, sizeof *t->len);
    }
    if (n) memcpy(t->buf + t->used, s, n);
    t->off[t->n] = t->used, t->len[t->n] = n;
    t->used += n;
    return t->n++;
}

/* Appends to the last string (building it in pieces). */
static void texts_extend(Texts *t, const void *s, size_t n)
{
    RESERVE(t->buf, t->cap, t->used + n);
    memcpy(t->buf + t->used, s, n);
    t->used += n;
    t->len[t->n - 1] += n;
}

static const char *texts_at(const Texts *t, size_t i, size_t *n)
{
    *n = t->len[i];
    return t->buf + t->off[i];
}

static void texts_free(Texts *t)
{
    free(t->buf);
    free(t->off);
    free(t->len);
}

/* A hash index over some of a Texts' strings: string -> its index. */
typedef struct {
    int32_t *slot; /* index + 1, 0 = empty */
    size_t cap, n;
} Index;

static int32_t index_find(const Index *x, const Texts *t, const void *s, size_t n)
{
    if (!x->cap) return -1;
    for (size_t j = checksum64(s, n) & (x->cap - 1);; j = (j + 1) & (x->cap - 1)) {
        int32_t v = x->slot[j] - 1;
        if (v < 0) return -1;
        if (t->len[v] == n && memcmp(t->buf + t->off[v], s, n) == 0) return v;
    }
}

static void index_put_slot(int32_t *slot, size_t cap, const Texts *t, int32_t v)
{
    size_t j = checksum64(t->buf + t->off[v], t->len[v]) & (cap - 1);
    while (slot[j]) j = (j + 1) & (cap - 1);
    slot[j] = v + 1;
}

/* Adds string v of t (the caller checked it is absent). */
static void index_add(Index *x, const Texts *t, int32_t v)
{
    if (2 * (x->n + 1) > x->cap) {
        size_t cap = x->cap ? 2 * x->cap : 64;
        int32_t *slot = xrealloc(NULL, cap, sizeof *slot);
        memset(slot, 0, cap * sizeof *slot);
        for (size_t j = 0; j < x->cap; j++)
            if (x->slot[j]) index_put_slot(slot, cap, t, x->slot[j] - 1);
        free(x->slot);
        x->slot = slot, x->cap = cap;
    }
    index_put_slot(x->slot, x->cap, t, v);
    x->n++;
}

/* (a, b) id pairs -> an int32 value. */
typedef struct {
    uint64_t *key;
    int32_t *val; /* -1 = empty */
    size_t cap, n;
} PairMap;

static uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t)(uint32_t)a << 32 | (uint32_t)b; }

static int32_t pairmap_get(const PairMap *m, int32_t a, int32_t b)
{
    if (!m->cap) return -1;
    uint64_t k = pair_key(a, b);
    for (size_t j = checksum_mix(k) & (m->cap - 1);; j = (j + 1) & (m->cap - 1)) {
        if (m->val[j] < 0) return -1;
        if (m->key[j] == k) return m->val[j];
    }
}

static void pairmap_put_slot(uint64_t *key, int32_t *val, size_t cap, uint64_t k, int32_t v)
{
    size_t j = checksum_mix(k) & (cap - 1);
    while (val[j] >= 0) j = (j + 1) & (cap - 1);
    key[j] = k, val[j] = v;
}

/* Adds (a, b) -> v; the caller checked (a, b) is absent. */
static void pairmap_add(PairMap *m, int32_t a, int32_t b, int32_t v)
{
    if (2 * (m->n + 1) > m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 256;
        uint64_t *key = xrealloc(NULL, cap, sizeof *key);
        int32_t *val = xrealloc(NULL, cap, sizeof *val);
        memset(val, 0xff, cap * sizeof *val);
        for (size_t j = 0; j < m->cap; j++)
            if (m->val[j] >= 0) pairmap_put_slot(key, val, cap, m->key[j], m->val[j]);
        free(m->key);
        free(m->val);
        m->key = key, m->val = val, m->cap = cap;
    }
    pairmap_put_slot(m->key, m->val, m->cap, pair_key(a, b), v);
    m->n++;
}

static void pairmap_free(PairMap *m)
{
    free(m->key);
    free(m->val);
}

/* A binary heap of T in an array: NAME_push(h, &n, x) (room for one more
 * is the caller's), NAME_pop(h, &n) the element for which BEFORE(x, y)
 * holds against every other. */
#define DEFINE_HEAP(NAME, T, BEFORE)                                                                           \
    static void NAME##_push(T *h, size_t *n, T x)                                                              \
    {                                                                                                          \
        size_t i = (*n)++;                                                                                     \
        while (i > 0 && BEFORE(x, h[(i - 1) / 2])) {                                                           \
            h[i] = h[(i - 1) / 2];                                                                             \
            i = (i - 1) / 2;                                                                                   \
        }                                                                                                      \
        h[i] = x;                                                                                              \
    }                                                                                                          \
    static T NAME##_pop(T *h, size_t *n)                                                                       \
    {                                                                                                          \
        T top = h[0], last = h[--*n];                                                                          \
        size_t i = 0;                                                                                          \
        for (;;) {                                                                                             \
            size_t k = 2 * i + 1;                                                                              \
            if (k >= *n) break;                                                                                \
            if (k + 1 < *n && BEFORE(h[k + 1], h[k])) k++;                                                     \
            if (!BEFORE(h[k], last)) break;                                                                    \
            h[i] = h[k];                                                                                       \
            i = k;                                                                                             \
        }                                                                                                      \
        if (*n) h[i] = last;                                                                                   \
        return top;                                                                                            \
    }

/* ---------------------------------------------------------------------- */
/* the byte <-> character table (GPT-2's bytes_to_unicode)                 */

/* Printable bytes other than space and soft hyphen stand for themselves;
 * the other 68 take U+0100.. in byte order, so every byte is a visible,
 * non-space character. */
static uint32_t byte_char(unsigned b)
{
    if (b <= 0x20) return 0x100 + b;           /* 33 controls and space: U+0100..U+0120 */
    if (b >= 0x7F && b <= 0xA0) return b + 0xA2; /* DEL, C1 controls, NBSP: U+0121..U+0142 */
    if (b == 0xAD) return 0x143;                 /* soft hyphen */
    return b;
}

/* The inverse: the byte a character stands for, -1 if none. */
static int char_byte(uint32_t cp)
{
    if (cp >= 0x100 && cp <= 0x120) return (int)(cp - 0x100);
    if (cp >= 0x121 && cp <= 0x142) return (int)(cp - 0xA2);
    if (cp == 0x143) return 0xAD;
    if ((cp >= '!' && cp <= '~') || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF)) return (int)cp;
    return -1;
}

/* UTF-8 of one character (cp < 0x800 here); returns its length. */
static size_t put_char(char *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

size_t bpe_byte_level(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t k = 0; k < n; k++) o += put_char(out + o, byte_char((unsigned char)s[k]));
    return o;
}

/* What the ByteLevel decoder makes of a token's text: its bytes if every
 * character stands for one, else the text's own UTF-8 bytes (Hugging
 * Face's rule). Appended as a new string of t; *pure says which. */
static size_t texts_add_decoded(Texts *t, const char *text, size_t n, int *pure)
{
    size_t i = texts_add(t, "", 0);
    *pure = 1;
    for (size_t k = 0; k < n;) {
        uint32_t cp;
        size_t len = utf8_next((const unsigned char *)text + k, n - k, &cp);
        int b = char_byte(cp);
        if (b < 0) {
            *pure = 0;
            t->used -= t->len[i];
            t->len[i] = 0;
            texts_extend(t, text, n);
            return i;
        }
        char c = (char)b;
        texts_extend(t, &c, 1);
        k += len;
    }
    return i;
}

/* ---------------------------------------------------------------------- */
/* the pre-tokenizer                                                       */

static UcClass class_at(const unsigned char *s, size_t n, size_t i, size_t *len)
{
    uint32_t cp;
    *len = utf8_next(s + i, n - i, &cp);
    return uc_class(cp);
}

/* One match of the GPT-2 pattern at i. The alternatives are tried in the
 * pattern's order; everything matches one of them, so pieces tile the text. */
size_t bpe_piece_end(const char *text, size_t n, size_t i)
{
    const unsigned char *s = (const unsigned char *)text;
    if (s[i] == '\'' && i + 1 < n) { /* 's|'t|'re|'ve|'m|'ll|'d */
        unsigned char c = s[i + 1];
        if (c == 's' || c == 't' || c == 'm' || c == 'd') return i + 2;
        if (i + 2 < n && ((c == 'r' && s[i + 2] == 'e') || (c == 'v' && s[i + 2] == 'e') ||
                          (c == 'l' && s[i + 2] == 'l')))
            return i + 3;
    }
    /* ` ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+`: an optional space, then a run of one class */
    size_t k = i + (s[i] == ' ' && i + 1 < n), len;
    UcClass c = class_at(s, n, k, &len);
    if (c != UC_SPACE) {
        size_t e = k + len;
        while (e < n && class_at(s, n, e, &len) == c) e += len;
        return e;
    }
    /* `\s+(?!\S)|\s+`: a whitespace run, less its last character when a
     * non-space follows, unless that leaves nothing */
    size_t e = i, last = i;
    while (e < n && class_at(s, n, e, &len) == UC_SPACE) last = e, e += len;
    if (e == n || last == i) return e;
    return last;
}

/* ---------------------------------------------------------------------- */
/* added tokens: leftmost-longest matching                                 */

typedef struct {
    const char **text;
    size_t *len;
    int32_t *id;
    size_t n;
    uint8_t first[256]; /* some token starts with this byte */
} Matcher;

static void matcher_add(Matcher *m, const char *text, size_t len, int32_t id)
{
    m->text = xrealloc(m->text, m->n + 1, sizeof *m->text);
    m->len = xrealloc(m->len, m->n + 1, sizeof *m->len);
    m->id = xrealloc(m->id, m->n + 1, sizeof *m->id);
    m->text[m->n] = text, m->len[m->n] = len, m->id[m->n] = id;
    m->first[(unsigned char)text[0]] = 1;
    m->n++;
}

static void matcher_free(Matcher *m)
{
    free(m->text);
    free(m->len);
    free(m->id);
}

/* The leftmost match in s[from, n), the longest there: its length (0 if
 * none), *at its start and *id its token. */
static size_t matcher_find(const Matcher *m, const unsigned char *s, size_t n, size_t from, size_t *at,
                           int32_t *id)
{
    if (!m->n) return 0;
    for (size_t i = from; i < n; i++) {
        if (!m->first[s[i]]) continue;
        size_t best = 0;
        for (size_t t = 0; t < m->n; t++)
            if (m->len[t] > best && m->len[t] <= n - i && !memcmp(s + i, m->text[t], m->len[t]))
                best = m->len[t], *id = m->id[t];
        if (best) {
            *at = i;
            return best;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* the tokenizer                                                           */

struct Bpe {
    BpeSpec spec;                   /* views of the arrays below */
    BpeToken *vocab;                /* in id order */
    BpeMerge *merges;
    BpeAdded *added;
    int32_t n_vocab, n_ids;
    Texts text;                     /* per id: the token's text (an added token's content) */
    Texts bytes;                    /* per id: what it decodes to */
    Index by_text;                  /* model vocabulary: text -> id */
    Index by_bytes;                 /* model tokens whose text is all byte characters: bytes -> id */
    Texts added_text;               /* added tokens' contents, in file order */
    Index added_index;
    PairMap merge_rank;             /* (left id, right id) -> rank */
    int32_t *merge_new;             /* rank -> the merged token's id */
    int32_t byte_id[256];           /* the id of each byte's character, -1 if not in the vocabulary */
    uint8_t *special;               /* per id: a special added token */
    Matcher match[2];               /* added tokens with normalized false, true */
    int ignore_merges;
};

/* A string for an error message: at most 40 bytes, control bytes as \xNN. */
static const char *shown(char *buf, size_t cap, const char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 8 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i == 40) {
            o += (size_t)snprintf(buf + o, cap - o, "...");
            break;
        }
        if (c < 0x20 || c == 0x7f) o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
        else buf[o++] = (char)c;
    }
    buf[o] = '\0';
    return buf;
}

void bpe_free(Bpe *b)
{
    if (!b) return;
    free(b->vocab);
    free(b->merges);
    free(b->added);
    texts_free(&b->text);
    texts_free(&b->bytes);
    texts_free(&b->added_text);
    free(b->by_text.slot);
    free(b->by_bytes.slot);
    free(b->added_index.slot);
    pairmap_free(&b->merge_rank);
    free(b->merge_new);
    free(b->special);
    matcher_free(&b->match[0]);
    matcher_free(&b->match[1]);
    free(b);
}

/* Model vocabulary: ids 0..n-1 each exactly once, texts distinct. */
static int build_vocab(Bpe *b, const BpeSpec *sp, char *err, size_t errlen)
{
    char s1[200], s2[200];
    size_t n = sp->n_vocab;
    if (n == 0) return set_err(err, errlen, "model.vocab: empty");
    if (n > (1u << 30)) return set_err(err, errlen, "model.vocab: %zu entries, more than 2^30", n);
    int64_t *at = xrealloc(NULL, n, sizeof *at); /* id -> entry */
    for (size_t i = 0; i < n; i++) at[i] = -1;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const BpeToken *t = &sp->vocab[i];
        if (t->id < 0 || t->id >= (int64_t)n)
            rc = set_err(err, errlen,
                         "model.vocab: '%s' has id %lld, outside 0..%zu (the ids must number the %zu entries)",
                         shown(s1, sizeof s1, t->text, t->len), (long long)t->id, n - 1, n);
        else if (at[t->id] >= 0)
            rc = set_err(err, errlen, "model.vocab: '%s' and '%s' both have id %lld",
                         shown(s1, sizeof s1, sp->vocab[at[t->id]].text, sp->vocab[at[t->id]].len),
                         shown(s2, sizeof s2, t->text, t->len), (long long)t->id);
        else at[t->id] = (int64_t)i;
    }
    for (size_t id = 0; id < n && rc == 0; id++) {
        const BpeToken *t = &sp->vocab[at[id]];
        if (index_find(&b->by_text, &b->text, t->text, t->len) >= 0) {
            rc = set_err(err, errlen, "model.vocab: '%s' appears twice", shown(s1, sizeof s1, t->text, t->len));
            break;
        }
        index_add(&b->by_text, &b->text, (int32_t)texts_add(&b->text, t->text, t->len));
        int pure;
        texts_add_decoded(&b->bytes, t->text, t->len, &pure);
        if (pure) index_add(&b->by_bytes, &b->bytes, (int32_t)id);
    }
    free(at);
    b->n_vocab = (int32_t)n;
    for (unsigned c = 0; c < 256; c++) {
        char ch[2];
        b->byte_id[c] = index_find(&b->by_text, &b->text, ch, put_char(ch, byte_char(c)));
    }
    return rc;
}

static int build_merges(Bpe *b, const BpeSpec *sp, char *err, size_t errlen)
{
    char s1[200], s2[200];
    if (sp->n_merges > (1u << 30)) return set_err(err, errlen, "model.merges: more than 2^30");
    b->merge_new = xrealloc(NULL, sp->n_merges ? sp->n_merges : 1, sizeof *b->merge_new);
    char *joined = NULL;
    size_t jcap = 0;
    int rc = 0;
    for (size_t r = 0; r < sp->n_merges && rc == 0; r++) {
        const BpeMerge *m = &sp->merges[r];
        int32_t a = index_find(&b->by_text, &b->text, m->left, m->left_len);
        int32_t c = index_find(&b->by_text, &b->text, m->right, m->right_len);
        RESERVE(joined, jcap, m->left_len + m->right_len + 1);
        memcpy(joined, m->left, m->left_len);
        memcpy(joined + m->left_len, m->right, m->right_len);
        int32_t t = index_find(&b->by_text, &b->text, joined, m->left_len + m->right_len);
        if (a < 0 || c < 0 || t < 0)
            rc = set_err(err, errlen, "model.merges[%zu]: '%s' is not in the vocabulary", r,
                         a < 0   ? shown(s1, sizeof s1, m->left, m->left_len)
                         : c < 0 ? shown(s1, sizeof s1, m->right, m->right_len)
                                 : shown(s1, sizeof s1, joined, m->left_len + m->right_len));
        else if (pairmap_get(&b->merge_rank, a, c) >= 0)
            rc = set_err(err, errlen, "model.merges[%zu]: '%s %s' repeats merges[%d]", r,
                         shown(s1, sizeof s1, m->left, m->left_len), shown(s2, sizeof s2, m->right, m->right_len),
                         pairmap_get(&b->merge_rank, a, c));
        else {
            pairmap_add(&b->merge_rank, a, c, (int32_t)r);
            b->merge_new[r] = t;
        }
    }
    free(joined);
    return rc;
}

/* Hugging Face's numbering: an added token in the model vocabulary has its
 * id there; the others take n_vocab, n_vocab + 1, ... in list order. */
static int build_added(Bpe *b, const BpeSpec *sp, char *err, size_t errlen)
{
    char s1[200];
    int32_t next = b->n_vocab;
    for (size_t i = 0; i < sp->n_added; i++) {
        const BpeAdded *a = &sp->added[i];
        if (a->len == 0) return set_err(err, errlen, "added_tokens[%zu]: empty content", i);
        if (index_find(&b->added_index, &b->added_text, a->text, a->len) >= 0)
            return set_err(err, errlen, "added_tokens[%zu]: '%s' is listed twice", i,
                           shown(s1, sizeof s1, a->text, a->len));
        index_add(&b->added_index, &b->added_text, (int32_t)texts_add(&b->added_text, a->text, a->len));
        int32_t id = index_find(&b->by_text, &b->text, a->text, a->len);
        int in_vocab = id >= 0;
        if (!in_vocab) {
            if (next == INT32_MAX) return set_err(err, errlen, "added_tokens[%zu]: too many ids", i);
            id = next++;
        }
        if (a->id != id)
            return set_err(err, errlen, "added_tokens[%zu]: '%s' has id %lld, but Hugging Face numbers it %d (%s)",
                           i, shown(s1, sizeof s1, a->text, a->len), (long long)a->id, id,
                           in_vocab ? "its id in model.vocab"
                                    : "added tokens outside model.vocab follow it in the order listed");
        if (!in_vocab) {
            int pure;
            texts_add(&b->text, a->text, a->len);
            texts_add_decoded(&b->bytes, a->text, a->len, &pure);
        }
    }
    b->n_ids = next;
    b->special = xrealloc(NULL, (size_t)next, 1);
    memset(b->special, 0, (size_t)next);
    /* the matchers point into added_text, complete now */
    for (size_t i = 0; i < sp->n_added; i++) {
        size_t len;
        const char *t = texts_at(&b->added_text, i, &len);
        int32_t id = (int32_t)sp->added[i].id;
        b->special[id] = sp->added[i].special != 0;
        matcher_add(&b->match[sp->added[i].normalized != 0], t, len, id);
    }
    return 0;
}

/* The spec view of b, pointing into its own tables. */
static void build_spec(Bpe *b, const BpeSpec *sp)
{
    b->vocab = xrealloc(NULL, (size_t)b->n_vocab, sizeof *b->vocab);
    for (int32_t id = 0; id < b->n_vocab; id++) {
        size_t len;
        const char *t = texts_at(&b->text, (size_t)id, &len);
        b->vocab[id] = (BpeToken){ t, len, id };
    }
    b->merges = xrealloc(NULL, sp->n_merges ? sp->n_merges : 1, sizeof *b->merges);
    for (size_t r = 0; r < b->merge_rank.cap; r++) {
        if (b->merge_rank.val[r] < 0) continue;
        int32_t rank = b->merge_rank.val[r];
        size_t la, lb;
        const char *ta = texts_at(&b->text, (size_t)(b->merge_rank.key[r] >> 32), &la);
        const char *tb = texts_at(&b->text, (size_t)(uint32_t)b->merge_rank.key[r], &lb);
        b->merges[rank] = (BpeMerge){ ta, tb, la, lb };
    }
    b->added = xrealloc(NULL, sp->n_added ? sp->n_added : 1, sizeof *b->added);
    for (size_t i = 0; i < sp->n_added; i++) {
        size_t len;
        const char *t = texts_at(&b->added_text, i, &len);
        b->added[i] = (BpeAdded){ t, len, sp->added[i].id, sp->added[i].special != 0, sp->added[i].normalized != 0 };
    }
    b->spec = (BpeSpec){ b->vocab, (size_t)b->n_vocab, b->merges, sp->n_merges, b->added, sp->n_added,
                         b->ignore_merges };
}

Bpe *bpe_build(const BpeSpec *sp, char *err, size_t errlen)
{
    Bpe *b = xrealloc(NULL, 1, sizeof *b);
    memset(b, 0, sizeof *b);
    b->ignore_merges = sp->ignore_merges != 0;
    if (build_vocab(b, sp, err, errlen) != 0 || build_merges(b, sp, err, errlen) != 0 ||
        build_added(b, sp, err, errlen) != 0) {
        bpe_free(b);
        return NULL;
    }
    build_spec(b, sp);
    return b;
}

const BpeSpec *bpe_spec(const Bpe *b) { return &b->spec; }

int32_t bpe_n_ids(const Bpe *b) { return b->n_ids; }

int32_t bpe_added_id(const Bpe *b, const char *content)
{
    int32_t i = index_find(&b->added_index, &b->added_text, content, strlen(content));
    return i < 0 ? -1 : (int32_t)b->spec.added[i].id;
}

const char *bpe_token_bytes(const Bpe *b, int32_t id, size_t *len)
{
    if (id < 0 || id >= b->n_ids) return NULL;
    return texts_at(&b->bytes, (size_t)id, len);
}

/* ---- encoding ---- */

typedef struct {
    int32_t c, prev, next, len; /* len 0: merged into its left neighbour */
} Sym;

typedef struct {
    int32_t rank, pos, new_id;
} Cand;

/* Pieces up to SCRATCH_INLINE bytes (nearly all) use the inline arrays,
 * so encoding a short text allocates nothing. */
#define SCRATCH_INLINE 64

typedef struct {
    Sym *sym;
    Cand *heap;
    size_t n;
    Sym *big_sym;
    Cand *big_heap;
    size_t big_sym_cap, big_heap_cap;
    Sym inline_sym[SCRATCH_INLINE];
    Cand inline_heap[3 * SCRATCH_INLINE + 1];
} Scratch;

/* Hugging Face's order: lowest rank first, then leftmost */
static int cand_before(Cand x, Cand y) { return x.rank != y.rank ? x.rank < y.rank : x.pos < y.pos; }
DEFINE_HEAP(cand_heap, Cand, cand_before)

/* Pushes the merge of the symbols at pos and its right neighbour, if any. */
static void push_pair(const Bpe *b, Scratch *w, int32_t pos)
{
    int32_t next = w->sym[pos].next;
    if (next < 0) return;
    int32_t r = pairmap_get(&b->merge_rank, w->sym[pos].c, w->sym[next].c);
    if (r >= 0) cand_heap_push(w->heap, &w->n, (Cand){ r, pos, b->merge_new[r] });
}

/* One piece: Word::merge_all of Hugging Face (lowest rank first, leftmost
 * on ties; a queued merge is stale if its pair changed since). */
static size_t encode_piece(const Bpe *b, const unsigned char *p, size_t m, int32_t *out, Scratch *w)
{
    if (b->ignore_merges) {
        int32_t id = index_find(&b->by_bytes, &b->bytes, p, m);
        if (id >= 0) {
            out[0] = id;
            return 1;
        }
    }
    /* the heap holds at most m - 1 merges at first plus 2 per merge */
    if (m <= SCRATCH_INLINE) w->sym = w->inline_sym, w->heap = w->inline_heap;
    else {
        RESERVE(w->big_sym, w->big_sym_cap, m);
        RESERVE(w->big_heap, w->big_heap_cap, 3 * m + 1);
        w->sym = w->big_sym, w->heap = w->big_heap;
    }
    int32_t ns = 0;
    for (size_t k = 0; k < m; k++) {
        int32_t id = b->byte_id[p[k]];
        if (id < 0) continue; /* no unk token: dropped */
        w->sym[ns] = (Sym){ id, ns - 1, -1, 1 };
        if (ns > 0) w->sym[ns - 1].next = ns;
        ns++;
    }
    w->n = 0;
    for (int32_t i = 0; i + 1 < ns; i++) push_pair(b, w, i);
    while (w->n) {
        Cand top = cand_heap_pop(w->heap, &w->n);
        Sym *s = &w->sym[top.pos];
        if (s->len == 0 || s->next < 0) continue;
        Sym right = w->sym[s->next];
        int32_t r = pairmap_get(&b->merge_rank, s->c, right.c);
        if (r < 0 || b->merge_new[r] != top.new_id) continue;
        w->sym[s->next].len = 0;
        s->c = top.new_id, s->len += right.len, s->next = right.next;
        if (right.next >= 0) w->sym[right.next].prev = top.pos;
        if (s->prev >= 0) push_pair(b, w, s->prev);
        push_pair(b, w, top.pos);
    }
    size_t k = 0;
    for (int32_t i = 0; i < ns; i++)
        if (w->sym[i].len) out[k++] = w->sym[i].c;
    return k;
}

static size_t encode_plain(const Bpe *b, const unsigned char *s, size_t n, int32_t *out, Scratch *w)
{
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        size_t e = bpe_piece_end((const char *)s, n, i);
        k += encode_piece(b, s + i, e - i, out + k, w);
        i = e;
    }
    return k;
}

/* Added tokens of pass `pass` are cut out first; what is between them goes
 * to the next pass, after the last to the pre-tokenizer. */
static size_t encode_pass(const Bpe *b, int pass, const unsigned char *s, size_t n, int32_t *out, Scratch *w,
                          int text_only)
{
    if (pass == 2) return encode_plain(b, s, n, out, w);
    size_t k = 0, from = 0, search = 0, at, len;
    int32_t id;
    while ((len = matcher_find(&b->match[pass], s, n, search, &at, &id)) > 0) {
        if (text_only && b->special[id]) { /* stays text: look for another added token after its start */
            search = at + 1;
            continue;
        }
        k += encode_pass(b, pass + 1, s + from, at - from, out + k, w, text_only);
        out[k++] = id;
        from = search = at + len;
    }
    return k + encode_pass(b, pass + 1, s + from, n - from, out + k, w, text_only);
}

static size_t encode_all(const Bpe *b, const char *s, size_t n, int32_t *out, int text_only)
{
    Scratch w;
    w.big_sym = NULL, w.big_heap = NULL, w.big_sym_cap = w.big_heap_cap = 0;
    size_t k = encode_pass(b, 0, (const unsigned char *)s, n, out, &w, text_only);
    free(w.big_sym);
    free(w.big_heap);
    return k;
}

size_t bpe_encode(const Bpe *b, const char *s, size_t n, int32_t *out) { return encode_all(b, s, n, out, 0); }

size_t bpe_encode_text(const Bpe *b, const char *s, size_t n, int32_t *out) { return encode_all(b, s, n, out, 1); }

int bpe_is_special(const Bpe *b, int32_t id) { return id >= 0 && id < b->n_ids && b->special[id]; }

int bpe_missing_byte(const Bpe *b)
{
    for (int c = 0; c < 256; c++)
        if (b->byte_id[c] < 0) return c;
    return -1;
}

size_t bpe_decode(const Bpe *b, const int32_t *ids, size_t n, char *out, size_t cap, int skip_special)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= b->n_ids || (skip_special && b->special[ids[i]])) continue;
        size_t plen;
        const char *piece = texts_at(&b->bytes, (size_t)ids[i], &plen);
        if (cap && len < cap - 1) memcpy(out + len, piece, plen < cap - 1 - len ? plen : cap - 1 - len);
        len += plen;
    }
    if (cap) out[len < cap ? len : cap - 1] = '\0';
    return len;
}

/* ---------------------------------------------------------------------- */
/* learning                                                                */

struct BpeCorpus {
    Texts pieces;   /* distinct pieces */
    Index index;
    int64_t *count; /* per piece */
    size_t count_cap;
    int64_t bytes, n_pieces;
    Matcher special;
};

BpeCorpus *bpe_corpus_new(void)
{
    BpeCorpus *c = xrealloc(NULL, 1, sizeof *c);
    memset(c, 0, sizeof *c);
    for (int id = TOK_BOS; id < TOKENIZER_VOCAB; id++)
        matcher_add(&c->special, tok_special_name(id), strlen(tok_special_name(id)), id);
    return c;
}

void bpe_corpus_free(BpeCorpus *c)
{
    if (!c) return;
    texts_free(&c->pieces);
    free(c->index.slot);
    free(c->count);
    matcher_free(&c->special);
    free(c);
}

static void count_plain(BpeCorpus *c, const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t e = bpe_piece_end((const char *)s, n, i);
        int32_t w = index_find(&c->index, &c->pieces, s + i, e - i);
        if (w < 0) {
            if (c->pieces.n >= INT32_MAX - 1) fatal(EXIT_RUNTIME, "tokenizer: more than 2^31 distinct pieces");
            w = (int32_t)texts_add(&c->pieces, s + i, e - i);
            index_add(&c->index, &c->pieces, w);
            RESERVE(c->count, c->count_cap, c->pieces.n);
            c->count[w] = 0;
        }
        c->count[w]++;
        c->n_pieces++;
        i = e;
    }
}

void bpe_corpus_add(BpeCorpus *c, const char *text, size_t n)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t from = 0, at, len;
    int32_t id;
    c->bytes += (int64_t)n;
    while ((len = matcher_find(&c->special, s, n, from, &at, &id)) > 0) {
        count_plain(c, s + from, at - from);
        from = at + len;
    }
    count_plain(c, s + from, n - from);
}

typedef struct {
    int64_t count;
    int32_t a, b, p;
} Top;

/* Learner state: pieces as symbol arrays, adjacent pair counts, the
 * pieces each pair occurs in, and a lazy max-heap of pair counts. */
typedef struct {
    int32_t *sym;    /* all pieces' symbols */
    size_t *off;     /* piece -> first symbol */
    int32_t *len;    /* piece -> current symbol count */
    const int64_t *count;
    int32_t *stamp;  /* piece -> last merge that visited it */
    PairMap pair;    /* (a, b) -> pair index */
    int64_t *pcount; /* pair -> occurrences, weighted by piece counts */
    int32_t *pa, *pb;
    int32_t **where; /* pair -> pieces it was seen in (may repeat, may be stale) */
    int32_t *nwhere, *capwhere;
    uint8_t *done, *touched;
    size_t npairs, pcap;
    int32_t *touched_list;
    size_t ntouched, touched_cap;
    Top *heap;
    size_t nheap, heap_cap;
} Learner;

/* Most frequent first, ties to the smallest (left id, right id) */
static int top_before(Top x, Top y)
{
    if (x.count != y.count) return x.count > y.count;
    return x.a != y.a ? x.a < y.a : x.b < y.b;
}
DEFINE_HEAP(top_heap, Top, top_before)

static void lheap_push(Learner *L, Top t)
{
    RESERVE(L->heap, L->heap_cap, L->nheap + 1);
    top_heap_push(L->heap, &L->nheap, t);
}

/* Adds delta to the count of (a, b) as seen in piece w. */
static void pair_change(Learner *L, int32_t a, int32_t b, int64_t delta, int32_t w)
{
    int32_t p = pairmap_get(&L->pair, a, b);
    if (p < 0) {
        if (L->npairs >= INT32_MAX - 1) fatal(EXIT_RUNTIME, "tokenizer: more than 2^31 distinct pairs");
        p = (int32_t)L->npairs++;
        if (L->npairs > L->pcap) {
            size_t c = L->pcap ? 2 * L->pcap : 1024;
            L->pcount = xrealloc(L->pcount, c, sizeof *L->pcount);
            L->pa = xrealloc(L->pa, c, sizeof *L->pa);
            L->pb = xrealloc(L->pb, c, sizeof *L->pb);
            L->where = xrealloc(L->where, c, sizeof *L->where);
            L->nwhere = xrealloc(L->nwhere, c, sizeof *L->nwhere);
            L->capwhere = xrealloc(L->capwhere, c, sizeof *L->capwhere);
            L->done = xrealloc(L->done, c, 1);
            L->touched = xrealloc(L->touched, c, 1);
            L->pcap = c;
        }
        pairmap_add(&L->pair, a, b, p);
        L->pcount[p] = 0, L->pa[p] = a, L->pb[p] = b;
        L->where[p] = NULL, L->nwhere[p] = L->capwhere[p] = 0;
        L->done[p] = L->touched[p] = 0;
    }
    L->pcount[p] += delta;
    if (delta <= 0) return;
    if (!L->nwhere[p] || L->where[p][L->nwhere[p] - 1] != w) {
        RESERVE(L->where[p], L->capwhere[p], L->nwhere[p] + 1);
        L->where[p][L->nwhere[p]++] = w;
    }
    if (!L->touched[p]) {
        L->touched[p] = 1;
        RESERVE(L->touched_list, L->touched_cap, L->ntouched + 1);
        L->touched_list[L->ntouched++] = p;
    }
}

/* Replaces every (a, b) in piece w by t, left to right, updating the
 * counts of the pairs around each occurrence (Hugging Face's Word::merge). */
static void merge_piece(Learner *L, int32_t w, int32_t a, int32_t b, int32_t t)
{
    int32_t *s = L->sym + L->off[w], n = L->len[w], o = 0;
    int64_t cnt = L->count[w];
    for (int32_t i = 0; i < n;) {
        if (i + 1 < n && s[i] == a && s[i + 1] == b) {
            if (o > 0) {
                pair_change(L, s[o - 1], a, -cnt, w);
                pair_change(L, s[o - 1], t, cnt, w);
            }
            if (i + 2 < n) {
                pair_change(L, b, s[i + 2], -cnt, w);
                pair_change(L, t, s[i + 2], cnt, w);
            }
            s[o++] = t;
            i += 2;
        } else {
            s[o++] = s[i++];
        }
    }
    L->len[w] = o;
}

static void learner_free(Learner *L)
{
    free(L->sym);
    free(L->off);
    free(L->len);
    free(L->stamp);
    pairmap_free(&L->pair);
    for (size_t p = 0; p < L->npairs; p++) free(L->where[p]);
    free(L->pcount);
    free(L->pa);
    free(L->pb);
    free(L->where);
    free(L->nwhere);
    free(L->capwhere);
    free(L->done);
    free(L->touched);
    free(L->touched_list);
    free(L->heap);
}

/* Queues every pair whose count changed upwards, with its count now. */
static void push_touched(Learner *L, int64_t min_count)
{
    for (size_t i = 0; i < L->ntouched; i++) {
        int32_t p = L->touched_list[i];
        L->touched[p] = 0;
        if (!L->done[p] && L->pcount[p] >= min_count)
            lheap_push(L, (Top){ L->pcount[p], L->pa[p], L->pb[p], p });
    }
    L->ntouched = 0;
}

/* The tokenizer of learned token bytes and merges, through bpe_build. */
static Bpe *learned_tokenizer(const Texts *tok, const int32_t (*merge)[2], size_t n_merges, char *err,
                              size_t errlen)
{
    Texts text = { 0 };
    char *buf = NULL;
    size_t cap = 0;
    for (size_t id = 0; id < tok->n; id++) {
        size_t len;
        const char *s = texts_at(tok, id, &len);
        RESERVE(buf, cap, 2 * len + 1);
        texts_add(&text, buf, bpe_byte_level(s, len, buf));
    }
    free(buf);
    BpeToken *vocab = xrealloc(NULL, tok->n, sizeof *vocab);
    for (size_t id = 0; id < tok->n; id++) {
        size_t len;
        const char *s = texts_at(&text, id, &len);
        vocab[id] = (BpeToken){ s, len, (int64_t)id };
    }
    BpeMerge *merges = xrealloc(NULL, n_merges ? n_merges : 1, sizeof *merges);
    for (size_t r = 0; r < n_merges; r++)
        merges[r] = (BpeMerge){ vocab[merge[r][0]].text, vocab[merge[r][1]].text, vocab[merge[r][0]].len,
                                vocab[merge[r][1]].len };
    BpeAdded added[TOKENIZER_VOCAB - TOK_BOS];
    for (int id = TOK_BOS; id < TOKENIZER_VOCAB; id++)
        added[id - TOK_BOS] = (BpeAdded){ tok_special_name(id), strlen(tok_special_name(id)), id, 1, 0 };
    BpeSpec spec = { vocab, tok->n, merges, n_merges, added, TOKENIZER_VOCAB - TOK_BOS, 0 };
    Bpe *b = bpe_build(&spec, err, errlen);
    free(vocab);
    free(merges);
    texts_free(&text);
    return b;
}

Bpe *bpe_learn(const BpeCorpus *c, const BpeLearnOptions *opt, BpeLearnStats *st, char *err, size_t errlen)
{
    if (opt->vocab_size < TOKENIZER_VOCAB) {
        set_err(err, errlen, "vocabulary size %d is below %d (256 bytes + %d special tokens)", opt->vocab_size,
                TOKENIZER_VOCAB, TOKENIZER_VOCAB - TOK_BOS);
        return NULL;
    }
    if (opt->min_count < 1) {
        set_err(err, errlen, "minimum pair count %lld is below 1", (long long)opt->min_count);
        return NULL;
    }
    /* tokens: the bytes, the special tokens, then one per new merge */
    Texts tok = { 0 };
    Index tok_index = { 0 };
    for (unsigned v = 0; v < 256; v++) {
        unsigned char byte = (unsigned char)v;
        index_add(&tok_index, &tok, (int32_t)texts_add(&tok, &byte, 1));
    }
    for (int id = TOK_BOS; id < TOKENIZER_VOCAB; id++)
        index_add(&tok_index, &tok, (int32_t)texts_add(&tok, tok_special_name(id), strlen(tok_special_name(id))));

    Learner L = { 0 };
    size_t np = c->pieces.n;
    L.sym = xrealloc(NULL, c->pieces.used ? c->pieces.used : 1, sizeof *L.sym);
    L.off = xrealloc(NULL, np ? np : 1, sizeof *L.off);
    L.len = xrealloc(NULL, np ? np : 1, sizeof *L.len);
    L.stamp = xrealloc(NULL, np ? np : 1, sizeof *L.stamp);
    L.count = c->count;
    for (size_t w = 0; w < np; w++) {
        size_t len;
        const unsigned char *s = (const unsigned char *)texts_at(&c->pieces, w, &len);
        L.off[w] = c->pieces.off[w], L.len[w] = (int32_t)len, L.stamp[w] = -1;
        for (size_t k = 0; k < len; k++) L.sym[L.off[w] + k] = s[k];
        for (size_t k = 0; k + 1 < len; k++) pair_change(&L, s[k], s[k + 1], c->count[w], (int32_t)w);
    }
    if (st) {
        memset(st, 0, sizeof *st);
        st->bytes = c->bytes, st->pieces = c->n_pieces, st->unique_pieces = (int64_t)np;
        st->pairs = (int64_t)L.npairs;
    }
    push_touched(&L, opt->min_count);

    int32_t (*merge)[2] = NULL;
    size_t n_merges = 0, merge_cap = 0;
    char *joined = NULL;
    size_t jcap = 0;
    while ((int32_t)tok.n < opt->vocab_size && L.nheap) {
        Top top = top_heap_pop(L.heap, &L.nheap);
        int32_t p = top.p;
        if (L.done[p]) continue;
        if (top.count != L.pcount[p]) { /* stale: queue it again with its count now */
            if (L.pcount[p] >= opt->min_count) lheap_push(&L, (Top){ L.pcount[p], top.a, top.b, p });
            continue;
        }
        size_t la, lb;
        const char *ta = texts_at(&tok, (size_t)top.a, &la), *tb;
        RESERVE(joined, jcap, la + 1);
        memcpy(joined, ta, la);
        tb = texts_at(&tok, (size_t)top.b, &lb);
        RESERVE(joined, jcap, la + lb);
        memcpy(joined + la, tb, lb);
        int32_t t = index_find(&tok_index, &tok, joined, la + lb);
        if (t < 0) {
            t = (int32_t)texts_add(&tok, joined, la + lb);
            index_add(&tok_index, &tok, t);
        }
        RESERVE(merge, merge_cap, n_merges + 1);
        merge[n_merges][0] = top.a, merge[n_merges][1] = top.b;
        L.done[p] = 1;
        for (int32_t i = 0; i < L.nwhere[p]; i++) {
            int32_t w = L.where[p][i];
            if (L.stamp[w] == (int32_t)n_merges) continue;
            L.stamp[w] = (int32_t)n_merges;
            merge_piece(&L, w, top.a, top.b, t);
        }
        n_merges++;
        free(L.where[p]);
        L.where[p] = NULL, L.nwhere[p] = L.capwhere[p] = 0;
        push_touched(&L, opt->min_count);
    }
    free(joined);
    learner_free(&L);
    free(tok_index.slot);
    Bpe *b = learned_tokenizer(&tok, (const int32_t(*)[2])merge, n_merges, err, errlen);
    if (st) st->merges = (int32_t)n_merges, st->vocab = (int32_t)tok.n;
    free(merge);
    texts_free(&tok);
    return b;
}
