/* tokenizer_json: reading and writing tokenizer.json; see tokenizer_json.h.
 * This file checks the JSON's shape and what it asks for; bpe_build
 * (src/tokenizer_bpe.c) checks that the vocabulary, merges and added
 * tokens fit together. */
#include "io/tokenizer_json.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/ckpt.h"
#include "io/dataset.h"
#include "io/h5util.h"
#include "src/util.h"

/* ---- reading ---- */

typedef struct {
    const char *path;
    char *err;
    size_t errlen;
} Ctx;

#define FAIL(c, ...) set_err((c)->err, (c)->errlen, __VA_ARGS__)

static int is_null(const json_t *v) { return !v || json_is_null(v); }

/* An optional boolean: *out keeps its default when the key is absent or null. */
static int opt_bool(Ctx *c, const json_t *obj, const char *section, const char *key, int *out)
{
    json_t *v = json_object_get(obj, key);
    if (is_null(v)) return 0;
    if (!json_is_boolean(v)) return FAIL(c, "%s: %s.%s is not true or false", c->path, section, key);
    *out = json_is_true(v);
    return 0;
}

/* "type" of a component, or NULL with err set when it is not a string. */
static const char *type_of(Ctx *c, const json_t *obj, const char *section)
{
    if (!json_is_object(obj)) {
        FAIL(c, "%s: %s is not an object", c->path, section);
        return NULL;
    }
    json_t *t = json_object_get(obj, "type");
    if (!json_is_string(t)) {
        FAIL(c, "%s: %s.type is missing or not a string", c->path, section);
        return NULL;
    }
    return json_string_value(t);
}

/* ByteLevel, and for the pre-tokenizer the options that change the pieces. */
static int check_byte_level(Ctx *c, const json_t *root, const char *section, int required)
{
    json_t *v = json_object_get(root, section);
    if (is_null(v)) {
        if (!required) return 0;
        return FAIL(c, "%s: %s is missing or null; fspo reads byte-level BPE, which needs the ByteLevel %s",
                    c->path, section, section);
    }
    const char *type = type_of(c, v, section);
    if (!type) return -1;
    if (strcmp(type, "ByteLevel") != 0)
        return FAIL(c, "%s: %s type '%s' is not supported (fspo reads byte-level BPE: ByteLevel%s)", c->path,
                    section, type, required ? "" : " or null");
    if (strcmp(section, "pre_tokenizer") != 0) return 0;
    int prefix = 1, regex = 1; /* Hugging Face's defaults */
    if (opt_bool(c, v, section, "add_prefix_space", &prefix) != 0 || opt_bool(c, v, section, "use_regex", &regex) != 0)
        return -1;
    if (prefix)
        return FAIL(c, "%s: pre_tokenizer.add_prefix_space true is not supported (only false)", c->path);
    if (!regex) return FAIL(c, "%s: pre_tokenizer.use_regex false is not supported (only true)", c->path);
    return 0;
}

/* Keys whose only supported value is null (or absent). */
static int check_null(Ctx *c, const json_t *obj, const char *section, const char *key, const char *why)
{
    json_t *v = json_object_get(obj, key);
    if (is_null(v)) return 0;
    if (json_is_object(v) && json_is_string(json_object_get(v, "type")))
        return FAIL(c, "%s: %s%s%s type '%s' is not supported (%s)", c->path, section, *section ? "." : "", key,
                    json_string_value(json_object_get(v, "type")), why);
    return FAIL(c, "%s: %s%s%s is not supported (%s)", c->path, section, *section ? "." : "", key, why);
}

static int check_model_options(Ctx *c, const json_t *model, int *ignore_merges)
{
    json_t *d = json_object_get(model, "dropout");
    if (!is_null(d) && !(json_is_number(d) && json_number_value(d) == 0))
        return FAIL(c, "%s: model.dropout is not supported (only null)", c->path);
    if (check_null(c, model, "model", "unk_token", "byte-level BPE has no unknown token") != 0) return -1;
    static const char *const affix[] = { "continuing_subword_prefix", "end_of_word_suffix" };
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(model, affix[i]);
        if (!is_null(v) && !(json_is_string(v) && json_string_length(v) == 0))
            return FAIL(c, "%s: model.%s is not supported (only null)", c->path, affix[i]);
    }
    int fuse = 0, fallback = 0;
    *ignore_merges = 0;
    if (opt_bool(c, model, "model", "fuse_unk", &fuse) != 0 ||
        opt_bool(c, model, "model", "byte_fallback", &fallback) != 0 ||
        opt_bool(c, model, "model", "ignore_merges", ignore_merges) != 0)
        return -1;
    if (fallback) return FAIL(c, "%s: model.byte_fallback true is not supported (only false)", c->path);
    return 0;
}

/* n entries of size bytes for the list `what`; NULL with err on OOM. */
static void *entries(Ctx *c, size_t n, size_t size, const char *what)
{
    void *p = calloc(n ? n : 1, size);
    if (!p) FAIL(c, "%s: out of memory for %s (%zu entries)", c->path, what, n);
    return p;
}

static int read_vocab(Ctx *c, const json_t *model, BpeToken **out, size_t *n)
{
    json_t *v = json_object_get(model, "vocab");
    if (!json_is_object(v)) return FAIL(c, "%s: model.vocab is missing or not an object", c->path);
    *n = json_object_size(v);
    BpeToken *t = *out = entries(c, *n, sizeof *t, "model.vocab");
    if (!t) return -1;
    size_t i = 0;
    /* the iterator gives each key with its length */
    for (void *it = json_object_iter((json_t *)v); it; it = json_object_iter_next((json_t *)v, it), i++) {
        const char *key = json_object_iter_key(it);
        json_t *id = json_object_iter_value(it);
        size_t len = json_object_iter_key_len(it);
        if (!json_is_integer(id))
            return FAIL(c, "%s: model.vocab: '%.*s' has an id that is not an integer", c->path,
                        (int)(len > 40 ? 40 : len), key);
        t[i] = (BpeToken){ key, len, json_integer_value(id) };
    }
    return 0;
}

/* merges: all "a b" strings (Hugging Face before 0.20) or all [a, b] pairs. */
static int read_merges(Ctx *c, const json_t *model, BpeMerge **out, size_t *n)
{
    json_t *m = json_object_get(model, "merges");
    if (!json_is_array(m)) return FAIL(c, "%s: model.merges is missing or not an array", c->path);
    *n = json_array_size(m);
    BpeMerge *r = *out = entries(c, *n, sizeof *r, "model.merges");
    if (!r) return -1;
    int strings = *n && json_is_string(json_array_get(m, 0));
    for (size_t i = 0; i < *n; i++) {
        json_t *e = json_array_get(m, i);
        if (strings) {
            if (!json_is_string(e))
                return FAIL(c, "%s: model.merges[%zu] is not a string like merges[0] (\"a b\")", c->path, i);
            const char *s = json_string_value(e);
            size_t len = json_string_length(e);
            const char *sp = memchr(s, ' ', len);
            if (!sp || sp == s || sp + 1 == s + len || memchr(sp + 1, ' ', (size_t)(s + len - sp - 1)))
                return FAIL(c, "%s: model.merges[%zu]: '%.*s' is not two tokens separated by one space", c->path, i,
                            (int)(len > 40 ? 40 : len), s);
            r[i] = (BpeMerge){ s, sp + 1, (size_t)(sp - s), (size_t)(s + len - sp - 1) };
        } else {
            json_t *a = json_array_get(e, 0), *b = json_array_get(e, 1);
            if (!json_is_array(e) || json_array_size(e) != 2 || !json_is_string(a) || !json_is_string(b))
                return FAIL(c, "%s: model.merges[%zu] is not a pair of strings like merges[0] ([\"a\", \"b\"])",
                            c->path, i);
            r[i] = (BpeMerge){ json_string_value(a), json_string_value(b), json_string_length(a),
                               json_string_length(b) };
        }
    }
    return 0;
}

static int read_added(Ctx *c, const json_t *root, BpeAdded **out, size_t *n)
{
    json_t *a = json_object_get(root, "added_tokens");
    *n = 0;
    if (is_null(a)) return 0;
    if (!json_is_array(a)) return FAIL(c, "%s: added_tokens is not an array", c->path);
    *n = json_array_size(a);
    BpeAdded *r = *out = entries(c, *n, sizeof *r, "added_tokens");
    if (!r) return -1;
    for (size_t i = 0; i < *n; i++) {
        json_t *e = json_array_get(a, i);
        char where[48];
        snprintf(where, sizeof where, "added_tokens[%zu]", i);
        if (!json_is_object(e)) return FAIL(c, "%s: %s is not an object", c->path, where);
        json_t *id = json_object_get(e, "id"), *content = json_object_get(e, "content");
        if (!json_is_integer(id)) return FAIL(c, "%s: %s.id is missing or not an integer", c->path, where);
        if (!json_is_string(content)) return FAIL(c, "%s: %s.content is missing or not a string", c->path, where);
        int special = 0, normalized = 1; /* Hugging Face's defaults */
        if (opt_bool(c, e, where, "special", &special) != 0 || opt_bool(c, e, where, "normalized", &normalized) != 0)
            return -1;
        static const char *const unsupported[] = { "single_word", "lstrip", "rstrip" };
        for (int k = 0; k < 3; k++) {
            int on = 0;
            if (opt_bool(c, e, where, unsupported[k], &on) != 0) return -1;
            if (on) return FAIL(c, "%s: %s.%s true is not supported (only false)", c->path, where, unsupported[k]);
        }
        r[i] = (BpeAdded){ json_string_value(content), json_string_length(content), json_integer_value(id), special,
                           normalized };
    }
    return 0;
}

static Bpe *read_root(Ctx *c, const json_t *root)
{
    if (!json_is_object(root)) {
        FAIL(c, "%s: not a JSON object", c->path);
        return NULL;
    }
    json_t *version = json_object_get(root, "version");
    if (version && !(json_is_string(version) && !strcmp(json_string_value(version), "1.0"))) {
        FAIL(c, "%s: version is not \"1.0\"", c->path);
        return NULL;
    }
    json_t *model = json_object_get(root, "model");
    const char *type = model ? type_of(c, model, "model") : NULL;
    if (!model) FAIL(c, "%s: model is missing", c->path);
    if (!type) return NULL;
    if (strcmp(type, "BPE") != 0) {
        FAIL(c, "%s: model type '%s' is not supported (only BPE)", c->path, type);
        return NULL;
    }
    BpeSpec spec = { 0 };
    BpeToken *vocab = NULL;
    BpeMerge *merges = NULL;
    BpeAdded *added = NULL;
    Bpe *b = NULL;
    if (check_null(c, root, "", "truncation", "only null") == 0 &&
        check_null(c, root, "", "padding", "only null") == 0 &&
        check_null(c, root, "", "normalizer", "fspo reads byte-level BPE without a normalizer") == 0 &&
        check_byte_level(c, root, "pre_tokenizer", 1) == 0 && check_byte_level(c, root, "decoder", 1) == 0 &&
        check_byte_level(c, root, "post_processor", 0) == 0 &&
        check_model_options(c, model, &spec.ignore_merges) == 0 && read_vocab(c, model, &vocab, &spec.n_vocab) == 0 &&
        read_merges(c, model, &merges, &spec.n_merges) == 0 && read_added(c, root, &added, &spec.n_added) == 0) {
        spec.vocab = vocab, spec.merges = merges, spec.added = added;
        char why[512];
        b = bpe_build(&spec, why, sizeof why);
        if (!b) FAIL(c, "%s: %s", c->path, why);
    }
    free(vocab);
    free(merges);
    free(added);
    return b;
}

Bpe *tokenizer_json_read(const char *path, char *err, size_t errlen)
{
    Ctx c = { path, err, errlen };
    FILE *f = fopen(path, "rb");
    if (!f) {
        FAIL(&c, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    json_error_t je;
    json_t *root = json_loadf(f, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    int read_error = ferror(f);
    fclose(f);
    if (!root) {
        if (read_error) FAIL(&c, "%s: read error", path);
        else FAIL(&c, "%s:%d:%d: malformed JSON: %s", path, je.line, je.column, je.text);
        return NULL;
    }
    Bpe *b = read_root(&c, root);
    json_decref(root);
    return b;
}

Bpe *tokenizer_json_parse(const char *text, size_t len, const char *name, char *err, size_t errlen)
{
    Ctx c = { name, err, errlen };
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (!root) {
        FAIL(&c, "%s:%d:%d: malformed JSON: %s", name, je.line, je.column, je.text);
        return NULL;
    }
    Bpe *b = read_root(&c, root);
    json_decref(root);
    return b;
}

/* ---- writing ---- */

static json_t *byte_level(int prefix)
{
    return json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", prefix, "trim_offsets", 1,
                     "use_regex", 1);
}

static int by_id(const void *x, const void *y)
{
    const BpeAdded *a = x, *b = y;
    return (a->id > b->id) - (a->id < b->id);
}

/* The document Hugging Face would write for this tokenizer: keys in its
 * order, added tokens by id, the vocabulary by id, merges by rank ("a b"
 * strings, readable by every version, unless a token holds a space). */
static json_t *to_json(const BpeSpec *s)
{
    int ok = 1;
    json_t *added = json_array();
    BpeAdded *sorted = malloc((s->n_added ? s->n_added : 1) * sizeof *sorted);
    if (!sorted) return NULL;
    memcpy(sorted, s->added, s->n_added * sizeof *sorted);
    qsort(sorted, s->n_added, sizeof *sorted, by_id);
    for (size_t i = 0; i < s->n_added && ok; i++)
        ok = json_array_append_new(added, json_pack("{s:I, s:s%, s:b, s:b, s:b, s:b, s:b}", "id",
                                                    (json_int_t)sorted[i].id, "content", sorted[i].text,
                                                    sorted[i].len, "single_word", 0, "lstrip", 0, "rstrip", 0,
                                                    "normalized", sorted[i].normalized, "special",
                                                    sorted[i].special)) == 0;
    free(sorted);
    json_t *vocab = json_object();
    for (size_t i = 0; i < s->n_vocab && ok; i++) {
        /* json_object_setn keeps keys with any bytes, in insertion order */
        ok = json_object_setn_new(vocab, s->vocab[i].text, s->vocab[i].len, json_integer(s->vocab[i].id)) == 0;
    }
    int pairs = 0;
    for (size_t r = 0; r < s->n_merges; r++)
        pairs |= memchr(s->merges[r].left, ' ', s->merges[r].left_len) != NULL ||
                 memchr(s->merges[r].right, ' ', s->merges[r].right_len) != NULL;
    json_t *merges = json_array();
    char *line = NULL;
    size_t cap = 0;
    for (size_t r = 0; r < s->n_merges && ok; r++) {
        const BpeMerge *m = &s->merges[r];
        if (pairs) {
            ok = json_array_append_new(merges, json_pack("[s%, s%]", m->left, m->left_len, m->right,
                                                         m->right_len)) == 0;
            continue;
        }
        size_t need = m->left_len + m->right_len + 1;
        if (need > cap) {
            char *grown = realloc(line, need);
            if (!grown) {
                ok = 0;
                break;
            }
            line = grown, cap = need;
        }
        memcpy(line, m->left, m->left_len);
        line[m->left_len] = ' ';
        memcpy(line + m->left_len + 1, m->right, m->right_len);
        ok = json_array_append_new(merges, json_stringn(line, need)) == 0;
    }
    free(line);
    json_t *model = json_pack("{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:o}", "type", "BPE", "dropout",
                              "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 0,
                              "byte_fallback", 0, "ignore_merges", s->ignore_merges, "vocab", vocab, "merges", merges);
    json_t *root = json_pack("{s:s, s:n, s:n, s:o, s:n, s:o, s:n, s:o, s:o}", "version", "1.0", "truncation",
                             "padding", "added_tokens", added, "normalizer", "pre_tokenizer", byte_level(0),
                             "post_processor", "decoder", byte_level(1), "model", model);
    if (!ok || !root) {
        json_decref(root);
        return NULL;
    }
    return root;
}

char *tokenizer_json_dump(const Bpe *b)
{
    json_t *root = to_json(bpe_spec(b));
    if (!root) return NULL;
    char *text = json_dumps(root, JSON_INDENT(2));
    json_decref(root);
    size_t n = text ? strlen(text) : 0;
    char *out = text ? realloc(text, n + 2) : NULL; /* the trailing newline the file has */
    if (!out) {
        free(text);
        return NULL;
    }
    out[n] = '\n', out[n + 1] = '\0';
    return out;
}

int tokenizer_json_write(const Bpe *b, const char *path, char *err, size_t errlen)
{
    json_t *root = to_json(bpe_spec(b));
    if (!root)
        return set_err(err, errlen, "%s: cannot build the JSON (out of memory or a token that is not UTF-8)", path);
    size_t n = strlen(path);
    char *tmp = malloc(n + 5);
    if (!tmp) {
        json_decref(root);
        return set_err(err, errlen, "%s: out of memory", path);
    }
    memcpy(tmp, path, n);
    memcpy(tmp + n, ".tmp", 5);
    FILE *f = fopen(tmp, "wb");
    int rc = -1;
    if (!f) set_err(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
    else {
        int ok = json_dumpf(root, f, JSON_INDENT(2)) == 0 && fputc('\n', f) != EOF;
        int e = errno;
        if (fclose(f) != 0 && ok) ok = 0, e = errno;
        char why[256];
        if (!ok) {
            set_err(err, errlen, "%s: write failed: %s", tmp, strerror(e ? e : EIO));
            unlink(tmp);
        } else if (commit_tmp(tmp, path, why, sizeof why) != 0) set_err(err, errlen, "%s: %s", path, why);
        else rc = 0;
    }
    free(tmp);
    json_decref(root);
    return rc;
}

/* ---- in HDF5 files (datasets and checkpoints) ---- */

int tokenizer_h5_write(hid_t f, const Tokenizer *t)
{
    int rc = h5_attr_write_str(f, "tokenizer", tok_name(t));
    if (t && t->bpe) rc |= h5_write_strings(f, "tokenizer_json", (char *const *)&t->json, 1);
    return rc ? -1 : 0;
}

int tokenizer_h5_read(hid_t f, const char *path, Tokenizer *t, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    char name[64] = "";
    if (h5_attr_read_str(f, "tokenizer", name, sizeof name) != 0)
        return set_err(err, errlen, "%s: attribute tokenizer missing or malformed", path);
    if (!strcmp(name, TOKENIZER_ID)) return 0;
    char **json = NULL;
    if (h5_read_strings(f, "tokenizer_json", 1, &json) != 0)
        return set_err(err, errlen, "%s: tokenizer '%s' is not the byte tokenizer (%s), and the file holds no "
                                    "tokenizer_json", path, name, TOKENIZER_ID);
    char where[4200], why[1024];
    snprintf(where, sizeof where, "%s:/tokenizer_json", path);
    char *text = json[0];
    json[0] = NULL;
    h5_free_strings(json, 1);
    Bpe *b = tokenizer_json_parse(text, strlen(text), where, why, sizeof why);
    if (!b) {
        free(text);
        return set_err(err, errlen, "%s", why);
    }
    if (tok_init_bpe(t, b, text, why, sizeof why) != 0) return set_err(err, errlen, "%s: %s", where, why);
    if (strcmp(tok_name(t), name) != 0) {
        set_err(err, errlen, "%s: the stored tokenizer.json is %s, not the '%s' the file names (corrupt file)", path,
                tok_name(t), name);
        tok_free(t);
        return -1;
    }
    return 0;
}

int tokenizer_load(const char *path, Tokenizer *t, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    size_t n = strlen(path);
    if (n > 3 && !strcmp(path + n - 3, ".h5")) {
        int rc = dataset_read_tokenizer(path, t, err, errlen);
        if (rc != 0 && strstr(err, "not an fspo dataset")) rc = ckpt_read_tokenizer(path, t, err, errlen);
        return rc;
    }
    return tokenizer_load_json(path, 0, t, NULL, 0, err, errlen);
}

int tokenizer_load_json(const char *path, int add_structure, Tokenizer *t, char *added, size_t added_len, char *err,
                        size_t errlen)
{
    memset(t, 0, sizeof *t);
    if (added_len) added[0] = '\0';
    Bpe *b = tokenizer_json_read(path, err, errlen);
    if (!b) return -1;
    char why[1024];
    if (add_structure) {
        Bpe *grown = tok_add_structure(b, added, added_len, why, sizeof why);
        bpe_free(b);
        if (!grown) return set_err(err, errlen, "%s: %s", path, why);
        b = grown;
    }
    char *json = tokenizer_json_dump(b);
    if (!json) {
        bpe_free(b);
        return set_err(err, errlen, "%s: out of memory", path);
    }
    if (tok_init_bpe(t, b, json, why, sizeof why) != 0) return set_err(err, errlen, "%s: %s", path, why);
    return 0;
}
