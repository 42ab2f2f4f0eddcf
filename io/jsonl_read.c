/* jsonl_read: preference rows from JSON lines; see jsonl.h.
 *
 * The file is read in chunks into one bounded buffer and split on '\n'
 * here, not by jansson: a line is parsed only once it is whole and no
 * longer than max_line_bytes, so one runaway line (a missing newline in a
 * multi-GB export) costs a skipped line, never the whole file in memory.
 * Each bad line is reported with the first problem found, as
 * "FILE:LINE: reason"; the caller decides whether to skip or stop.
 *
 * Rules a row must meet (docs/formats.md, "Input: JSON lines"):
 *   - one JSON object per line; blank (whitespace-only) lines are skipped
 *     silently; the last line needs no '\n'; a UTF-8 BOM is ignored;
 *   - "prompt", "chosen", "rejected": non-empty strings (may hold NUL);
 *   - "user_id": a non-empty string without NUL, or an integer, which
 *     becomes its decimal text (7 and "7" are the same user);
 *   - "user_description": optional; a string if present ("" = absent);
 *   - "split": optional; if present exactly "train", "validation" or "test"
 *     (anything else is a bad line: a misspelt split must not train a test
 *     user);
 *   - other fields are ignored (exports often carry extra columns);
 *   - duplicate keys in one object are malformed JSON: which value was
 *     meant is ambiguous. */
#include "io/jsonl.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/dataset.h"
#include "src/util.h"

/* Reads of this size keep syscall overhead negligible; a line may be
 * longer, the buffer then grows up to max_line_bytes + 2. */
#define JSONL_CHUNK (1u << 20)

struct JsonlReader {
    char *path;
    int fd;
    size_t max_line;
    char *buf;
    size_t cap, start, end; /* unconsumed bytes are buf[start, end) */
    int eof;
    long line_no;
    uint64_t consumed, total;
    json_t *root;           /* the current row; PrefRow's strings point into it */
    JsonlKeys keys;         /* the columns' field names, all set */
    char user_id_text[32];  /* an integer user_id in decimal */
};

JsonlReader *jsonl_reader_open(const char *path, size_t max_line_bytes, char *err, size_t errlen)
{
    if (max_line_bytes < 1 || max_line_bytes > ((size_t)1 << 40)) {
        set_err(err, errlen, "%s: line length limit %zu is out of range", path, max_line_bytes);
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        set_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
        set_err(err, errlen, "%s: cannot read: %s", path, S_ISDIR(st.st_mode) ? "is a directory" : strerror(errno));
        close(fd);
        return NULL;
    }
    JsonlReader *r = calloc(1, sizeof *r);
    size_t need = max_line_bytes + 2; /* the longest allowed line, its '\n', and one byte to see it is longer */
    size_t cap = need < JSONL_CHUNK ? need : JSONL_CHUNK;
    if (cap < 4096) cap = 4096;
    char *buf = malloc(cap);
    char *p = strdup(path);
    if (!r || !buf || !p) {
        free(r), free(buf), free(p), close(fd);
        set_err(err, errlen, "%s: out of memory opening the reader", path);
        return NULL;
    }
    r->path = p, r->fd = fd, r->max_line = max_line_bytes, r->buf = buf, r->cap = cap;
    jsonl_reader_set_keys(r, &(JsonlKeys){ 0 });
    r->total = S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0; /* a pipe has no size */
    return r;
}

void jsonl_reader_set_keys(JsonlReader *r, const JsonlKeys *k)
{
    r->keys.user_id = k->user_id ? k->user_id : "user_id";
    r->keys.prompt = k->prompt ? k->prompt : "prompt";
    r->keys.chosen = k->chosen ? k->chosen : "chosen";
    r->keys.rejected = k->rejected ? k->rejected : "rejected";
    r->keys.label = k->label;
}

void jsonl_progress(const JsonlReader *r, uint64_t *done, uint64_t *total)
{
    *done = r->consumed;
    *total = r->total > r->consumed ? r->total : r->consumed;
}

void jsonl_reader_close(JsonlReader *r)
{
    if (!r) return;
    json_decref(r->root);
    close(r->fd);
    free(r->buf);
    free(r->path);
    free(r);
}

/* One read(2) into buf[end, cap): >0 bytes, 0 at end of file, -1 on error. */
static ssize_t fill(JsonlReader *r, char *err, size_t errlen)
{
    for (;;) {
        ssize_t n = read(r->fd, r->buf + r->end, r->cap - r->end);
        if (n >= 0) {
            if (n == 0) r->eof = 1;
            r->end += (size_t)n;
            return n;
        }
        if (errno != EINTR) return set_err(err, errlen, "%s: read error after line %ld: %s", r->path, r->line_no,
                                           strerror(errno));
    }
}

/* Discards the rest of an over-long line, chunk by chunk, up to and
 * including its '\n': the line is never held whole. */
static int skip_rest_of_line(JsonlReader *r, char *err, size_t errlen)
{
    for (;;) {
        char *nl = memchr(r->buf + r->start, '\n', r->end - r->start);
        if (nl) {
            size_t n = (size_t)(nl - (r->buf + r->start)) + 1;
            r->start += n, r->consumed += n;
            return 0;
        }
        r->consumed += r->end - r->start;
        r->start = r->end = 0;
        if (r->eof) return 0;
        if (fill(r, err, errlen) < 0) return -1;
    }
}

/* Makes room for more of a partial line: slides it to the front, and
 * grows the buffer only when the line alone fills it. */
static int make_room(JsonlReader *r, char *err, size_t errlen)
{
    size_t have = r->end - r->start;
    memmove(r->buf, r->buf + r->start, have);
    r->start = 0, r->end = have;
    if (have < r->cap) return 0;
    size_t limit = r->max_line + 2, cap = r->cap * 2 < limit ? r->cap * 2 : limit;
    char *b = realloc(r->buf, cap);
    if (!b) return set_err(err, errlen, "%s:%ld: out of memory for a %zu-byte line", r->path, r->line_no + 1, cap);
    r->buf = b, r->cap = cap;
    return 0;
}

/* The next line without its '\n': 1 and (*line, *len) or *too_long;
 * 0 at end of file; -1 on a read error. */
static int next_line(JsonlReader *r, char **line, size_t *len, int *too_long, char *err, size_t errlen)
{
    *too_long = 0;
    for (;;) {
        size_t have = r->end - r->start;
        char *nl = memchr(r->buf + r->start, '\n', have);
        if (nl || (r->eof && have > 0)) {
            *line = r->buf + r->start;
            *len = nl ? (size_t)(nl - *line) : have;
            r->start += *len + (nl != NULL), r->consumed += *len + (nl != NULL);
            r->line_no++;
            *too_long = *len > r->max_line;
            return 1;
        }
        if (r->eof) return 0;
        if (have > r->max_line) { /* no '\n' in more than the limit: over-long, whatever follows */
            r->line_no++;
            *too_long = 1;
            return skip_rest_of_line(r, err, errlen) == 0 ? 1 : -1;
        }
        if (make_room(r, err, errlen) != 0 || fill(r, err, errlen) < 0) return -1;
    }
}

static int is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return 0;
    return 1;
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "unknown";
}

/* jansson quotes the offending token; control bytes in it would garble a
 * terminal or a log, so they are shown as \xNN. */
static void escape_controls(char *dst, size_t cap, const char *src)
{
    size_t o = 0;
    for (const unsigned char *s = (const unsigned char *)src; *s && o + 5 < cap; s++) {
        if (*s < 0x20 || *s == 0x7f) o += (size_t)snprintf(dst + o, cap - o, "\\x%02x", *s);
        else dst[o++] = (char)*s;
    }
    dst[o] = '\0';
}

/* A required non-empty string field; 0 or -1 with the reason. */
static int text_field(JsonlReader *r, json_t *obj, const char *name, const char **s, size_t *len, char *err,
                      size_t errlen)
{
    json_t *v = json_object_get(obj, name);
    if (!v) return set_err(err, errlen, "%s:%ld: missing field '%s'", r->path, r->line_no, name);
    if (!json_is_string(v))
        return set_err(err, errlen, "%s:%ld: field '%s' is not a string (it is %s)", r->path, r->line_no, name,
                       json_kind(v));
    *s = json_string_value(v);
    *len = json_string_length(v);
    if (*len == 0) return set_err(err, errlen, "%s:%ld: empty '%s'", r->path, r->line_no, name);
    return 0;
}

/* user_id: ids are stored as C strings in the dataset, so no NUL. */
static int user_id_field(JsonlReader *r, json_t *obj, PrefRow *row, char *err, size_t errlen)
{
    const char *key = r->keys.user_id;
    json_t *v = json_object_get(obj, key);
    if (!v) return set_err(err, errlen, "%s:%ld: missing field '%s'", r->path, r->line_no, key);
    if (json_is_integer(v)) {
        snprintf(r->user_id_text, sizeof r->user_id_text, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        row->user_id = r->user_id_text;
        return 0;
    }
    if (!json_is_string(v))
        return set_err(err, errlen, "%s:%ld: field '%s' is not a string or an integer (it is %s)", r->path,
                       r->line_no, key, json_kind(v));
    size_t len = json_string_length(v);
    row->user_id = json_string_value(v);
    if (len == 0) return set_err(err, errlen, "%s:%ld: empty '%s'", r->path, r->line_no, key);
    if (strlen(row->user_id) != len)
        return set_err(err, errlen, "%s:%ld: field '%s' contains a NUL character", r->path, r->line_no, key);
    return 0;
}

/* --label-key: 1 if the first response (keys.chosen) is the preferred
 * one, 0 if the second, -1 with the reason. */
static int label_field(JsonlReader *r, json_t *obj, char *err, size_t errlen)
{
    const JsonlKeys *k = &r->keys;
    json_t *v = json_object_get(obj, k->label);
    if (!v) return set_err(err, errlen, "%s:%ld: missing field '%s'", r->path, r->line_no, k->label);
    if (json_is_boolean(v)) return json_is_true(v);
    if (json_is_integer(v) && (json_integer_value(v) == 0 || json_integer_value(v) == 1))
        return (int)json_integer_value(v);
    if (json_is_string(v) && !strcmp(json_string_value(v), k->chosen)) return 1;
    if (json_is_string(v) && !strcmp(json_string_value(v), k->rejected)) return 0;
    return set_err(err, errlen, "%s:%ld: field '%s' is not 1/true/'%s' (the first response preferred) or "
                                "0/false/'%s' (the second)",
                   r->path, r->line_no, k->label, k->chosen, k->rejected);
}

static int parse_row(JsonlReader *r, const char *line, size_t len, PrefRow *row, char *err, size_t errlen)
{
    json_error_t jerr;
    /* DECODE_ANY: a bare 42 is "not a JSON object", a clearer message than a parse error */
    r->root = json_loadb(line, len, JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!r->root) {
        char text[4 * JSON_ERROR_TEXT_LENGTH + 8];
        escape_controls(text, sizeof text, jerr.text);
        return set_err(err, errlen, "%s:%ld: malformed JSON: %s (column %d)", r->path, r->line_no, text,
                       jerr.column);
    }
    if (!json_is_object(r->root))
        return set_err(err, errlen, "%s:%ld: not a JSON object (it is %s)", r->path, r->line_no,
                       json_kind(r->root));
    memset(row, 0, sizeof *row);
    const JsonlKeys *k = &r->keys;
    if (user_id_field(r, r->root, row, err, errlen) != 0 ||
        text_field(r, r->root, k->prompt, &row->prompt, &row->prompt_len, err, errlen) != 0 ||
        text_field(r, r->root, k->chosen, &row->chosen, &row->chosen_len, err, errlen) != 0 ||
        text_field(r, r->root, k->rejected, &row->rejected, &row->rejected_len, err, errlen) != 0)
        return -1;
    if (k->label) {
        int first = label_field(r, r->root, err, errlen);
        if (first < 0) return -1;
        if (!first) { /* the second response is the chosen one */
            const char *t = row->chosen;
            size_t tl = row->chosen_len;
            row->chosen = row->rejected, row->chosen_len = row->rejected_len;
            row->rejected = t, row->rejected_len = tl;
        }
    }
    json_t *d = json_object_get(r->root, "user_description");
    if (d && !json_is_string(d))
        return set_err(err, errlen, "%s:%ld: field 'user_description' is not a string (it is %s)", r->path,
                       r->line_no, json_kind(d));
    if (d && json_string_length(d) > 0) {
        row->user_description = json_string_value(d);
        row->user_description_len = json_string_length(d);
    }
    json_t *sp = json_object_get(r->root, "split");
    if (sp && (!json_is_string(sp) || dataset_split_parse(json_string_value(sp)) < 0)) {
        char shown[48] = "";
        if (json_is_string(sp)) escape_controls(shown, sizeof shown, json_string_value(sp));
        return set_err(err, errlen, "%s:%ld: field 'split' is not \"train\", \"validation\" or \"test\" (it is "
                                    "%s%s%s)",
                       r->path, r->line_no, json_is_string(sp) ? "'" : "", json_is_string(sp) ? shown : json_kind(sp),
                       json_is_string(sp) ? "'" : "");
    }
    if (sp) row->split = json_string_value(sp);
    return 0;
}

int jsonl_next_row(JsonlReader *r, PrefRow *row, long *line_no, char *err, size_t errlen)
{
    json_decref(r->root);
    r->root = NULL;
    for (;;) {
        char *line;
        size_t len;
        int too_long, rc = next_line(r, &line, &len, &too_long, err, errlen);
        *line_no = r->line_no;
        if (rc <= 0) return rc < 0 ? -2 : 0;
        if (too_long)
            return set_err(err, errlen, "%s:%ld: line longer than %zu bytes", r->path, r->line_no, r->max_line);
        if (r->line_no == 1 && len >= 3 && !memcmp(line, "\xEF\xBB\xBF", 3)) line += 3, len -= 3;
        if (is_blank(line, len)) continue;
        if (parse_row(r, line, len, row, err, errlen) != 0) return -1;
        return 1;
    }
}
