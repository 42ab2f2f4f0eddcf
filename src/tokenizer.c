/* tokenizer: the byte tokenizer and the interface both tokenizers share;
 * see tokenizer.h. */
#include "src/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/checksum.h"
#include "src/util.h"

static const char *const special_names[TOKENIZER_VOCAB - 256] = {
    "<|bos|>", "<|eos|>", "<|example|>", "<|question|>", "<|preferred|>", "<|dispreferred|>", "<|task|>",
    "<|user|>",
};

const char *tok_special_name(int id)
{
    return id >= 256 && id < TOKENIZER_VOCAB ? special_names[id - 256] : NULL;
}

/* 1 if b gives the byte tokenizer's ids for every text: no merges, byte b
 * is id b, the structure tokens at 256..263 and no other ids. */
static int byte_equivalent(const Bpe *b, const int32_t *special)
{
    const BpeSpec *s = bpe_spec(b);
    if (s->n_merges != 0 || bpe_n_ids(b) != TOKENIZER_VOCAB) return 0;
    for (int k = 0; k < TOKENIZER_VOCAB - TOK_BOS; k++)
        if (special[k] != TOK_BOS + k) return 0;
    for (int c = 0; c < 256; c++) {
        char byte = (char)c;
        int32_t id;
        if (bpe_encode_text(b, &byte, 1, &id) != 1 || id != c) return 0;
    }
    return 1;
}

Bpe *tok_add_structure(const Bpe *b, char *added, size_t added_len, char *err, size_t errlen)
{
    const BpeSpec *s = bpe_spec(b);
    BpeAdded *a = malloc(sizeof *a * (s->n_added + (TOKENIZER_VOCAB - TOK_BOS)));
    if (!a) return set_err(err, errlen, "out of memory"), NULL;
    memcpy(a, s->added, sizeof *a * s->n_added);
    size_t n = s->n_added, used = 0;
    int32_t next = bpe_n_ids(b);
    if (added_len) added[0] = '\0';
    for (int k = 0; k < TOKENIZER_VOCAB - TOK_BOS; k++) {
        const char *name = special_names[k];
        int32_t id = bpe_added_id(b, name);
        if (id >= 0) { /* present: reused if special */
            if (!bpe_is_special(b, id)) {
                free(a);
                return set_err(err, errlen, "added token '%s' (id %d) is not special; fspo's structure tokens must be "
                                            "(set \"special\": true)", name, (int)id), NULL;
            }
            continue;
        }
        /* Hugging Face's add_special_tokens: the vocabulary id of the same
         * text if there is one, else the next id after all others */
        id = -1;
        for (size_t v = 0; v < s->n_vocab && id < 0; v++)
            if (s->vocab[v].len == strlen(name) && !memcmp(s->vocab[v].text, name, s->vocab[v].len)) id = (int32_t)s->vocab[v].id;
        if (id < 0) id = next++;
        a[n++] = (BpeAdded){ name, strlen(name), id, 1, 0 };
        if (added_len && used < added_len)
            used += (size_t)snprintf(added + used, added_len - used, "%s%s %d", used ? ", " : "", name, (int)id);
    }
    BpeSpec ns = *s;
    ns.added = a, ns.n_added = n;
    Bpe *out = bpe_build(&ns, err, errlen);
    free(a);
    return out;
}

int tok_init_bpe(Tokenizer *t, Bpe *b, char *json, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    int missing = bpe_missing_byte(b);
    if (missing >= 0) {
        bpe_free(b), free(json);
        return set_err(err, errlen, "the tokenizer cannot encode byte 0x%02x (its byte-level character is not in "
                                    "model.vocab), so some text would be lost", missing);
    }
    for (int k = TOK_BOS; k < TOKENIZER_VOCAB; k++) {
        int32_t id = bpe_added_id(b, special_names[k - TOK_BOS]);
        if (id < 0 || !bpe_is_special(b, id)) {
            bpe_free(b), free(json);
            return set_err(err, errlen, "the tokenizer has no special added token '%s' (fspo's structure tokens "
                                        "are %s ... %s; fspo prep --add-structure-tokens appends those missing)",
                           special_names[k - TOK_BOS], special_names[0],
                           special_names[TOKENIZER_VOCAB - TOK_BOS - 1]);
        }
        t->special[k - TOK_BOS] = id;
    }
    if (byte_equivalent(b, t->special)) { /* the byte tokenizer written as a BPE (fspo export's): it is that one */
        bpe_free(b), free(json);
        memset(t, 0, sizeof *t);
        return 0;
    }
    t->bpe = b;
    t->json = json;
    t->n_ids = bpe_n_ids(b);
    snprintf(t->name, sizeof t->name, "bpe%d-%016llx", (int)t->n_ids,
             (unsigned long long)checksum64(json, json ? strlen(json) : 0));
    return 0;
}

/* What id is in t: its bytes (a structure token's name) and whether it is special. */
static const char *token_of(const Tokenizer *t, int32_t id, char *byte, size_t *len, int *special)
{
    if (t && t->bpe) {
        *special = bpe_is_special(t->bpe, id);
        return bpe_token_bytes(t->bpe, id, len);
    }
    *special = id >= 256;
    if (id < 256) {
        *byte = (char)id, *len = 1;
        return byte;
    }
    *len = strlen(special_names[id - 256]);
    return special_names[id - 256];
}

int32_t tok_first_difference(const Tokenizer *a, const Tokenizer *b, int32_t n, char *what, size_t len)
{
    if (tok_n_ids(a) < n) n = tok_n_ids(a);
    if (tok_n_ids(b) < n) n = tok_n_ids(b);
    for (int32_t id = 0; id < n; id++) {
        char ba, bb;
        size_t la = 0, lb = 0;
        int sa, sb;
        const char *ta = token_of(a, id, &ba, &la, &sa), *tb = token_of(b, id, &bb, &lb, &sb);
        if (sa == sb && ta && tb && la == lb && !memcmp(ta, tb, la)) continue;
        char ea[64], eb[64], ra[40], rb[40];
        snprintf(ra, sizeof ra, "%.*s", (int)(la < 30 ? la : 30), ta ? ta : "");
        snprintf(rb, sizeof rb, "%.*s", (int)(lb < 30 ? lb : 30), tb ? tb : "");
        snprintf(what, len, "'%s'%s vs '%s'%s", str_escape(ea, sizeof ea, ra), sa ? " (special)" : "",
                 str_escape(eb, sizeof eb, rb), sb ? " (special)" : "");
        return id;
    }
    return -1;
}

void tok_free(Tokenizer *t)
{
    if (!t) return;
    bpe_free(t->bpe);
    free(t->json);
    memset(t, 0, sizeof *t);
}

const char *tok_name(const Tokenizer *t) { return t && t->bpe ? t->name : TOKENIZER_ID; }

int32_t tok_n_ids(const Tokenizer *t) { return t && t->bpe ? t->n_ids : TOKENIZER_VOCAB; }

int32_t tok_id(const Tokenizer *t, int which) { return t && t->bpe ? t->special[which - TOK_BOS] : which; }

int tok_is_special(const Tokenizer *t, int32_t id)
{
    if (!t || !t->bpe) return id < 0 || id >= 256;
    return id < 0 || id >= t->n_ids || bpe_is_special(t->bpe, id);
}

size_t tok_encode(const Tokenizer *t, const char *s, size_t n, int32_t *out)
{
    if (t && t->bpe) return bpe_encode_text(t->bpe, s, n, out);
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n; i++) out[i] = u[i];
    return n;
}

/* The name of structure token id, NULL if id is not one. */
static const char *structure_name(const Tokenizer *t, int32_t id)
{
    for (int k = TOK_BOS; k < TOKENIZER_VOCAB; k++)
        if (tok_id(t, k) == id) return special_names[k - TOK_BOS];
    return NULL;
}

size_t tok_decode(const Tokenizer *t, const int32_t *ids, size_t n, char *out, size_t cap, int show_special)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        char byte = (char)ids[i];
        const char *piece = &byte;
        size_t plen = 1;
        if (tok_is_special(t, ids[i])) {
            const char *name = structure_name(t, ids[i]);
            plen = name ? strlen(name) : 0;
            if (!name && t && t->bpe && ids[i] >= 0 && ids[i] < t->n_ids) /* another special added token */
                name = bpe_token_bytes(t->bpe, ids[i], &plen);
            if (!name) name = "<|?|>", plen = 5;
            piece = name;
            if (!show_special) plen = 0;
        } else if (t && t->bpe) {
            piece = bpe_token_bytes(t->bpe, ids[i], &plen);
        }
        for (size_t j = 0; j < plen; j++, len++)
            if (cap && len < cap - 1) out[len] = piece[j];
    }
    if (cap) out[len < cap ? len : cap - 1] = '\0';
    return len;
}
