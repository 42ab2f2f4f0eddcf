/* prep: JSONL preference rows -> HDF5 dataset; see prep.h.
 *
 * One pass over the input keeps the accepted rows' text in one byte arena
 * (1x the kept input) with spans per pair and per user; tokenizing waits
 * until the users are known, so the token stream is written once, already
 * grouped by user (desc, then prompt/chosen/rejected of each pair), which
 * is the order the sampler reads it in. Peak memory is about 5x the kept
 * text: the arena plus the int32 stream (one id per byte at most). */
#include "src/prep.h"

#include <ctype.h>
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/dataset.h"
#include "io/jsonl.h"
#include "io/tokenizer_json.h"
#include "src/checksum.h"
#include "src/tokenizer.h"
#include "src/util.h"

/* Progress is reported every this many lines: often enough for a smooth
 * line, rare enough to cost nothing. */
#define PREP_PROGRESS_EVERY 4096

typedef struct { uint64_t off, len; } Span; /* bytes of the arena */

typedef struct {
    Span prompt, chosen, rejected;
    long line;
    uint32_t user;
} Pair;

typedef struct {
    Span id, desc;   /* desc.len == 0: no description */
    int64_t n_pairs;
    int split, kept;
    int forced;      /* the Split a row's "split" field names, if forced_line */
    long forced_line; /* the first row that named it; 0: none did */
} User;

/* Open-addressing hash sets of indices; slots hold index + 1, 0 = empty.
 * The full hash is kept beside it so most misses never touch the text. */
typedef struct {
    int64_t *slot;
    uint64_t *hash;
    size_t cap, used;
} IndexSet;

typedef struct {
    const PrepOptions *o;
    PrepStats *s;
    char *text;
    size_t text_len, text_cap;
    Pair *pairs;
    size_t n_pairs, pairs_cap;
    User *users;
    size_t n_users, users_cap;
    IndexSet user_set, pair_set;
} Prep;

/* ---- growth and hashing ---- */

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 1024;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return -1;
    *p = q, *cap = c;
    return 0;
}

static int arena_add(Prep *P, const char *s, size_t n, Span *out)
{
    if (grow((void **)&P->text, &P->text_cap, P->text_len + n, 1) != 0) return -1;
    memcpy(P->text + P->text_len, s, n);
    out->off = P->text_len, out->len = n;
    P->text_len += n;
    return 0;
}

static int span_equals(const Prep *P, Span a, const char *s, size_t n)
{
    return a.len == n && memcmp(P->text + a.off, s, n) == 0;
}

static int set_init(IndexSet *t)
{
    t->cap = 1024, t->used = 0;
    t->slot = calloc(t->cap, sizeof *t->slot);
    t->hash = calloc(t->cap, sizeof *t->hash);
    return t->slot && t->hash ? 0 : -1;
}

static void set_free(IndexSet *t)
{
    free(t->slot);
    free(t->hash);
}

/* Doubles at half load, so probes stay short. */
static int set_grow(IndexSet *t)
{
    IndexSet n = { calloc(2 * t->cap, sizeof(int64_t)), calloc(2 * t->cap, sizeof(uint64_t)), 2 * t->cap, t->used };
    if (!n.slot || !n.hash) {
        set_free(&n);
        return -1;
    }
    for (size_t i = 0; i < t->cap; i++) {
        if (!t->slot[i]) continue;
        size_t j = t->hash[i] & (n.cap - 1);
        while (n.slot[j]) j = (j + 1) & (n.cap - 1);
        n.slot[j] = t->slot[i], n.hash[j] = t->hash[i];
    }
    set_free(t);
    *t = n;
    return 0;
}

/* ---- users and pairs ---- */

/* The index of the user with this id, creating it on first sight; -1 on OOM. */
static int64_t user_index(Prep *P, const char *id, size_t len)
{
    IndexSet *t = &P->user_set;
    uint64_t h = checksum64(id, len);
    size_t j = h & (t->cap - 1);
    for (; t->slot[j]; j = (j + 1) & (t->cap - 1))
        if (t->hash[j] == h && span_equals(P, P->users[t->slot[j] - 1].id, id, len)) return t->slot[j] - 1;
    if (P->n_users >= UINT32_MAX) return -1;
    if (grow((void **)&P->users, &P->users_cap, P->n_users + 1, sizeof(User)) != 0) return -1;
    User *u = &P->users[P->n_users];
    memset(u, 0, sizeof *u);
    if (arena_add(P, id, len, &u->id) != 0) return -1;
    t->slot[j] = (int64_t)P->n_users + 1, t->hash[j] = h;
    if (++t->used * 2 > t->cap && set_grow(t) != 0) return -1;
    return (int64_t)P->n_users++;
}

static uint64_t pair_hash(uint32_t user, const PrefRow *r)
{
    uint64_t h = checksum_mix(user + 0x9E3779B97F4A7C15ull);
    h = checksum_combine(h, checksum64(r->prompt, r->prompt_len));
    h = checksum_combine(h, checksum64(r->chosen, r->chosen_len));
    return checksum_combine(h, checksum64(r->rejected, r->rejected_len));
}

/* The line of an earlier kept identical row, or 0. *slot_out is where a
 * new row goes. */
static long find_duplicate(const Prep *P, uint32_t user, const PrefRow *r, uint64_t h, size_t *slot_out)
{
    const IndexSet *t = &P->pair_set;
    size_t j = h & (t->cap - 1);
    for (; t->slot[j]; j = (j + 1) & (t->cap - 1)) {
        const Pair *p = &P->pairs[t->slot[j] - 1];
        if (t->hash[j] == h && p->user == user && span_equals(P, p->prompt, r->prompt, r->prompt_len) &&
            span_equals(P, p->chosen, r->chosen, r->chosen_len) &&
            span_equals(P, p->rejected, r->rejected, r->rejected_len))
            return p->line;
    }
    *slot_out = j;
    return 0;
}

static int add_pair(Prep *P, uint32_t user, const PrefRow *r, long line, uint64_t h, size_t slot)
{
    if (grow((void **)&P->pairs, &P->pairs_cap, P->n_pairs + 1, sizeof(Pair)) != 0) return -1;
    Pair *p = &P->pairs[P->n_pairs];
    p->line = line, p->user = user;
    if (arena_add(P, r->prompt, r->prompt_len, &p->prompt) || arena_add(P, r->chosen, r->chosen_len, &p->chosen) ||
        arena_add(P, r->rejected, r->rejected_len, &p->rejected))
        return -1;
    IndexSet *t = &P->pair_set;
    t->slot[slot] = (int64_t)P->n_pairs + 1, t->hash[slot] = h;
    P->n_pairs++;
    P->users[user].n_pairs++;
    if (++t->used * 2 > t->cap && set_grow(t) != 0) return -1;
    return 0;
}

/* The first description wins; later different ones are counted, since a
 * user whose description changes mid-file is worth a warning. */
static int note_description(Prep *P, User *u, const PrefRow *r)
{
    if (!r->user_description) return 0;
    if (u->desc.len == 0) return arena_add(P, r->user_description, r->user_description_len, &u->desc);
    if (!span_equals(P, u->desc, r->user_description, r->user_description_len)) P->s->description_conflicts++;
    return 0;
}

/* A row's "split" field: the user's first one is kept, and a row naming
 * another split is fatal, whatever --strict says (see prep.h). */
static int note_split(Prep *P, User *u, const PrefRow *r, long line, char *err, size_t errlen)
{
    if (!r->split) return 0;
    int sp = dataset_split_parse(r->split); /* the reader accepts only the three names */
    if (!u->forced_line) {
        u->forced = sp, u->forced_line = line;
        return 0;
    }
    if (u->forced == sp) return 0;
    return set_err(err, errlen, "%s:%ld: the rows of user '%.*s%s' disagree on 'split': '%s' here, '%s' on line %ld "
                                "(a user belongs to one split; nothing written)",
                   P->o->in_path, line, u->id.len > 80 ? 80 : (int)u->id.len, P->text + u->id.off,
                   u->id.len > 80 ? "..." : "", r->split, dataset_split_name(u->forced), u->forced_line);
}

/* ---- bad lines ---- */

void prep_reason_kind(const char *reason, char *kind, size_t cap)
{
    size_t o = 0;
    for (const char *c = reason; *c && o + 1 < cap; c++) {
        if ((c[0] == ':' && c[1] == ' ') || (c[0] == ' ' && c[1] == '(')) break; /* details follow */
        if (isdigit((unsigned char)*c)) {
            kind[o++] = 'N';
            while (isdigit((unsigned char)c[1])) c++;
        } else {
            kind[o++] = *c;
        }
    }
    kind[o] = '\0';
}

static void count_kind(PrepStats *s, const char *reason, long line)
{
    char kind[sizeof s->kinds[0].kind];
    prep_reason_kind(reason, kind, sizeof kind);
    int k = 0;
    while (k < s->n_kinds && strcmp(s->kinds[k].kind, kind) != 0) k++;
    if (k == s->n_kinds) {
        if (k == PREP_MAX_KINDS) { /* cannot happen with today's reasons; lump any future excess */
            k--;
            snprintf(s->kinds[k].kind, sizeof s->kinds[k].kind, "other");
        } else {
            s->n_kinds++;
            snprintf(s->kinds[k].kind, sizeof s->kinds[k].kind, "%s", kind);
            s->kinds[k].first_line = line;
        }
    }
    s->kinds[k].count++;
}

/* Records a bad line; in strict mode it becomes the run's error (returns -1). */
static int bad_line(Prep *P, long line, const char *msg, char *err, size_t errlen)
{
    char prefix[64];
    int n = snprintf(prefix, sizeof prefix, ":%ld: ", line);
    const char *reason = strstr(msg, prefix);
    reason = reason ? reason + n : msg;
    P->s->bad_lines++;
    count_kind(P->s, reason, line);
    if (P->o->strict)
        return set_err(err, errlen, "%s (--strict stops at the first bad line; nothing written)", msg);
    if (P->o->on_bad_line) P->o->on_bad_line(P->o->ctx, line, msg);
    return 0;
}

/* ---- reading ---- */

/* Accepts or rejects one row; 0, or -1 with err (strict stop or OOM). */
static int take_row(Prep *P, const PrefRow *r, long line, int *oom, char *err, size_t errlen)
{
    char msg[4400]; /* a path can be 4 KiB */
    if (r->chosen_len == r->rejected_len && memcmp(r->chosen, r->rejected, r->chosen_len) == 0) {
        snprintf(msg, sizeof msg, "%s:%ld: chosen and rejected are identical", P->o->in_path, line);
        return bad_line(P, line, msg, err, errlen);
    }
    int64_t u = user_index(P, r->user_id, strlen(r->user_id));
    if (u < 0) goto out_of_memory;
    /* before the duplicate check: an exact copy of a row with another split
     * is a conflict too, whichever of the two comes first */
    if (note_split(P, &P->users[u], r, line, err, errlen) != 0) return -1;
    size_t slot = 0;
    uint64_t h = pair_hash((uint32_t)u, r);
    long dup = find_duplicate(P, (uint32_t)u, r, h, &slot);
    if (dup) {
        snprintf(msg, sizeof msg, "%s:%ld: duplicate of line %ld", P->o->in_path, line, dup);
        return bad_line(P, line, msg, err, errlen);
    }
    if (add_pair(P, (uint32_t)u, r, line, h, slot) != 0 || note_description(P, &P->users[u], r) != 0)
        goto out_of_memory;
    P->s->rows_ok++;
    return 0;
out_of_memory:
    *oom = 1;
    return set_err(err, errlen, "%s:%ld: out of memory holding %zu MiB of text", P->o->in_path, line,
                   P->text_len >> 20);
}

static int read_rows(Prep *P, char *err, size_t errlen)
{
    char why[1024];
    JsonlReader *r = jsonl_reader_open(P->o->in_path, P->o->max_line_bytes, why, sizeof why);
    if (!r) return set_err(err, errlen, "%s", why), EXIT_USAGE;
    jsonl_reader_set_keys(r, &P->o->keys);
    int rc = 0, oom = 0;
    uint64_t done = 0, total = 0;
    /* decoded JSON text is never longer than its encoding, so the file size
     * bounds the arena: reserving it once saves the copies of doubling
     * (pages are only committed as they are touched) */
    jsonl_progress(r, &done, &total);
    char *text = total && total < SIZE_MAX / 2 ? malloc((size_t)total) : NULL;
    if (text) P->text = text, P->text_cap = (size_t)total; /* else: grow as we go */
    for (long n = 1;; n++) {
        PrefRow row;
        long line = 0;
        int got = jsonl_next_row(r, &row, &line, why, sizeof why);
        P->s->lines = line;
        if (got == 0) break;
        if (got == -2) {
            rc = (set_err(err, errlen, "%s", why), EXIT_RUNTIME);
            break;
        }
        int bad = got == 1 ? take_row(P, &row, line, &oom, err, errlen) : bad_line(P, line, why, err, errlen);
        if (bad) {
            rc = oom ? EXIT_RUNTIME : EXIT_USAGE;
            break;
        }
        if (P->o->on_progress && n % PREP_PROGRESS_EVERY == 0) {
            jsonl_progress(r, &done, &total);
            P->o->on_progress(P->o->ctx, done, total, P->s->rows_ok + P->s->bad_lines);
        }
    }
    jsonl_progress(r, &done, &total);
    P->s->bytes_read = done;
    if (P->o->on_progress && rc == 0) P->o->on_progress(P->o->ctx, done, total, P->s->rows_ok + P->s->bad_lines);
    jsonl_reader_close(r);
    return rc;
}

/* ---- split and output ---- */

Split prep_split_of(uint64_t seed, const char *user_id, size_t len, double val_frac, double test_frac)
{
    /* the hash of version 1's held-out split, so test users for T are its held-out users for T */
    uint64_t h = checksum_combine(checksum_mix(seed ^ 0x5EED5EED5EED5EEDull), checksum64(user_id, len));
    double x = (double)(h >> 11) * 0x1.0p-53;
    return x < test_frac ? SPLIT_TEST : x < test_frac + val_frac ? SPLIT_VALIDATION : SPLIT_TRAIN;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Drops small users, assigns the split, fills the counts; 0 or EXIT_USAGE. */
static int choose_users(Prep *P, char *err, size_t errlen)
{
    PrepStats *s = P->s;
    int64_t largest = 0, listed = 0;
    size_t ex = 0;
    for (size_t i = 0; i < P->n_users; i++) {
        User *u = &P->users[i];
        if (u->n_pairs > largest) largest = u->n_pairs;
        u->kept = u->n_pairs >= P->o->min_pairs;
        if (!u->kept) {
            s->dropped_users++, s->dropped_pairs += u->n_pairs;
            if (ex + u->id.len + 10 < sizeof s->dropped_example) { /* the first few ids, for the warning */
                ex += (size_t)snprintf(s->dropped_example + ex, sizeof s->dropped_example - ex, "%s'%.*s'",
                                       ex ? ", " : "", (int)u->id.len, P->text + u->id.off);
                listed++;
            }
            continue;
        }
        const PrepOptions *o = P->o;
        u->split = o->all_test      ? SPLIT_TEST
                   : u->forced_line ? u->forced
                                    : (int)prep_split_of(o->seed, P->text + u->id.off, u->id.len, o->val_frac,
                                                         o->test_frac);
        s->forced_users += !o->all_test && u->forced_line;
        s->users++;
        s->split_users[u->split]++;
        s->pairs += u->n_pairs;
        s->split_pairs[u->split] += u->n_pairs;
        s->users_with_description += u->desc.len > 0;
        s->tokens += (int64_t)u->desc.len;
    }
    if (listed < s->dropped_users) strcat(s->dropped_example, ex ? ", ..." : "...");
    if (s->users == 0)
        return set_err(err, errlen, "%s: no user has at least %lld pairs (--min-pairs; users seen: %zu, the most "
                                    "pairs any has: %lld)",
                       P->o->in_path, (long long)P->o->min_pairs, P->n_users, (long long)largest),
               EXIT_USAGE;
    if (s->split_users[SPLIT_TRAIN] == 0 && !P->o->all_test)
        return set_err(err, errlen, "%s: none of the %lld users is a training user (%lld validation, %lld test; "
                                    "--val-frac %g, --test-frac %g); at least one is needed, or --all-test for a "
                                    "file that is only evaluated",
                       P->o->in_path, (long long)s->users, (long long)s->split_users[SPLIT_VALIDATION],
                       (long long)s->split_users[SPLIT_TEST], P->o->val_frac, P->o->test_frac),
               EXIT_USAGE;
    int64_t *counts = malloc(sizeof(int64_t) * (size_t)s->users), k = 0;
    if (!counts) return set_err(err, errlen, "out of memory"), EXIT_RUNTIME;
    for (size_t i = 0; i < P->n_users; i++)
        if (P->users[i].kept) counts[k++] = P->users[i].n_pairs;
    qsort(counts, (size_t)k, sizeof *counts, cmp_i64);
    s->pairs_min = counts[0], s->pairs_median = counts[k / 2], s->pairs_max = counts[k - 1];
    free(counts);
    for (size_t p = 0; p < P->n_pairs; p++)
        if (P->users[P->pairs[p].user].kept)
            s->tokens += (int64_t)(P->pairs[p].prompt.len + P->pairs[p].chosen.len + P->pairs[p].rejected.len);
    return 0;
}

static void put_span(const Prep *P, Dataset *d, Span sp, int64_t *at, int64_t *dst)
{
    size_t n = tok_encode(&d->tok, P->text + sp.off, sp.len, d->tokens + *at);
    dst[0] = *at, dst[1] = (int64_t)n;
    *at += (int64_t)n;
}

/* --tokenizer, before the input is read (a bad one fails fast): the byte
 * tokenizer or a file's into t, or for bpe:V its V in *learn_v (0: none).
 * 0 or EXIT_USAGE with err. */
static int open_tokenizer(Prep *P, Tokenizer *t, int32_t *learn_v, char *err, size_t errlen)
{
    const char *spec = P->o->tokenizer;
    double t0 = now_seconds();
    memset(t, 0, sizeof *t);
    *learn_v = 0;
    size_t sl = spec ? strlen(spec) : 0;
    int json = spec && strcmp(spec, "bytes") && strncmp(spec, "bpe:", 4) && !(sl > 3 && !strcmp(spec + sl - 3, ".h5"));
    if (P->o->add_structure_tokens && !json)
        return set_err(err, errlen, "--add-structure-tokens extends a tokenizer.json file (--tokenizer FILE.json); "
                                    "--tokenizer %s already has fspo's structure tokens", spec ? spec : "bytes"),
               EXIT_USAGE;
    if (!spec || !strcmp(spec, "bytes")) return 0;
    char why[1024];
    if (strncmp(spec, "bpe:", 4) != 0) {
        int rc = json ? tokenizer_load_json(spec, P->o->add_structure_tokens, t, P->s->structure_added,
                                            sizeof P->s->structure_added, why, sizeof why)
                      : tokenizer_load(spec, t, why, sizeof why);
        if (rc != 0) return set_err(err, errlen, "--tokenizer %s", why), EXIT_USAGE;
        P->s->tokenizer_seconds = now_seconds() - t0;
        return 0;
    }
    char *end = NULL;
    long v = strtol(spec + 4, &end, 10);
    if (!end || end == spec + 4 || *end || v < TOKENIZER_VOCAB || v > (1L << 24))
        return set_err(err, errlen, "--tokenizer %s: V must be an integer in [%d, %d] (256 bytes and %d structure "
                                    "tokens come first)", spec, TOKENIZER_VOCAB, 1 << 24, TOKENIZER_VOCAB - 256),
               EXIT_USAGE;
    *learn_v = (int32_t)v;
    return 0;
}

/* bpe:V: learns t from the training users' text alone. 0 or an exit code with err. */
static int learn_tokenizer(Prep *P, int32_t v, Tokenizer *t, char *err, size_t errlen)
{
    double t0 = now_seconds();
    BpeCorpus *c = bpe_corpus_new();
    for (size_t i = 0; i < P->n_users; i++) {
        const User *u = &P->users[i];
        if (u->kept && u->split == SPLIT_TRAIN) bpe_corpus_add(c, P->text + u->desc.off, u->desc.len);
    }
    for (size_t k = 0; k < P->n_pairs; k++) {
        const Pair *p = &P->pairs[k];
        const User *u = &P->users[p->user];
        if (!u->kept || u->split != SPLIT_TRAIN) continue; /* never validation or test users' text */
        bpe_corpus_add(c, P->text + p->prompt.off, p->prompt.len);
        bpe_corpus_add(c, P->text + p->chosen.off, p->chosen.len);
        bpe_corpus_add(c, P->text + p->rejected.off, p->rejected.len);
    }
    BpeLearnOptions opt = { .vocab_size = v, .min_count = 2 };
    BpeLearnStats st;
    char why[1024];
    Bpe *b = bpe_learn(c, &opt, &st, why, sizeof why);
    bpe_corpus_free(c);
    if (!b) return set_err(err, errlen, "--tokenizer %s: %s", P->o->tokenizer, why), EXIT_USAGE;
    P->s->tokenizer_bytes = st.bytes;
    char *json = tokenizer_json_dump(b);
    if (!json) {
        bpe_free(b);
        return set_err(err, errlen, "out of memory writing the tokenizer"), EXIT_RUNTIME;
    }
    if (tok_init_bpe(t, b, json, why, sizeof why) != 0) /* cannot happen for a learned one */
        return set_err(err, errlen, "--tokenizer %s: %s", P->o->tokenizer, why), EXIT_RUNTIME;
    P->s->tokenizer_seconds = now_seconds() - t0;
    return 0;
}

/* Kept users in order of first appearance, each user's pairs in input
 * order (a stable counting sort of pairs by user). Takes tok. */
static int build_dataset(const Prep *P, Dataset *d, Tokenizer *tok)
{
    const PrepStats *s = P->s;
    memset(d, 0, sizeof *d);
    d->tok = *tok;
    memset(tok, 0, sizeof *tok);
    d->n_users = s->users, d->n_pairs = s->pairs, d->n_tokens = s->tokens; /* bytes: at most one token each */
    size_t np = (size_t)s->pairs, nu = (size_t)s->users;
    d->tokens = malloc(sizeof(int32_t) * (size_t)(s->tokens ? s->tokens : 1));
    d->prompt = malloc(sizeof(int64_t) * 2 * np);
    d->chosen = malloc(sizeof(int64_t) * 2 * np);
    d->rejected = malloc(sizeof(int64_t) * 2 * np);
    d->user_pairs = malloc(sizeof(int64_t) * 2 * nu);
    d->user_desc = malloc(sizeof(int64_t) * 2 * nu);
    d->user_split = malloc(nu);
    d->user_ids = calloc(nu, sizeof(char *));
    int64_t *slot_of = malloc(sizeof(int64_t) * (P->n_users + 1)); /* original user -> next pair slot */
    int ok = d->tokens && d->prompt && d->chosen && d->rejected && d->user_pairs && d->user_desc &&
             d->user_split && d->user_ids && slot_of;
    int64_t u = 0, next_pair = 0, at = 0;
    for (size_t i = 0; ok && i < P->n_users; i++) {
        const User *src = &P->users[i];
        slot_of[i] = -1;
        if (!src->kept) continue;
        slot_of[i] = next_pair;
        d->user_pairs[2 * u] = next_pair, d->user_pairs[2 * u + 1] = src->n_pairs;
        d->user_split[u] = (uint8_t)src->split;
        d->user_ids[u] = malloc(src->id.len + 1);
        if (!(ok = d->user_ids[u] != NULL)) break;
        memcpy(d->user_ids[u], P->text + src->id.off, src->id.len);
        d->user_ids[u][src->id.len] = '\0';
        next_pair += src->n_pairs;
        u++;
    }
    /* text order: each user's description, then its pairs, as the sampler reads them */
    u = 0;
    for (size_t i = 0; ok && i < P->n_users; i++)
        if (P->users[i].kept) put_span(P, d, P->users[i].desc, &at, d->user_desc + 2 * u++);
    int64_t *pair_at = malloc(sizeof(int64_t) * (np ? np : 1)); /* output slot -> input pair */
    ok = ok && pair_at;
    for (size_t p = 0; ok && p < P->n_pairs; p++) {
        int64_t sl = slot_of[P->pairs[p].user];
        if (sl >= 0) pair_at[sl] = (int64_t)p, slot_of[P->pairs[p].user]++;
    }
    for (size_t k = 0; ok && k < np; k++) {
        const Pair *p = &P->pairs[pair_at[k]];
        put_span(P, d, p->prompt, &at, d->prompt + 2 * k);
        put_span(P, d, p->chosen, &at, d->chosen + 2 * k);
        put_span(P, d, p->rejected, &at, d->rejected + 2 * k);
    }
    free(pair_at);
    free(slot_of);
    d->n_tokens = at;
    int32_t *fit = ok && at < s->tokens ? realloc(d->tokens, sizeof(int32_t) * (size_t)(at ? at : 1)) : NULL;
    if (fit) d->tokens = fit;
    d->vocab = tok_n_ids(&d->tok);
    snprintf(d->source, sizeof d->source, "%s", P->o->in_path);
    d->val_frac = P->o->all_test ? 0 : P->o->val_frac;
    d->test_frac = P->o->all_test ? 1 : P->o->test_frac;
    d->seed = (int64_t)P->o->seed;
    return ok ? 0 : -1;
}

/* Fails fast, before a long read, on an output that cannot be written. */
static int check_output(const PrepOptions *o, char *err, size_t errlen)
{
    struct stat so, si;
    if (!o->out_path || !*o->out_path) return set_err(err, errlen, "no output file (-o OUT.h5)");
    if (stat(o->out_path, &so) == 0) {
        if (S_ISDIR(so.st_mode)) return set_err(err, errlen, "%s: output is a directory", o->out_path);
        if (stat(o->in_path, &si) == 0 && si.st_dev == so.st_dev && si.st_ino == so.st_ino)
            return set_err(err, errlen, "%s: output is the input file", o->out_path);
    }
    char *copy = strdup(o->out_path);
    if (!copy) return set_err(err, errlen, "out of memory");
    const char *dir = dirname(copy);
    int rc = 0;
    if (stat(dir, &so) != 0)
        rc = set_err(err, errlen, "%s: cannot write: directory %s %s", o->out_path, dir,
                     errno == ENOENT ? "does not exist" : strerror(errno));
    else if (!S_ISDIR(so.st_mode))
        rc = set_err(err, errlen, "%s: cannot write: %s is not a directory", o->out_path, dir);
    else if (access(dir, W_OK | X_OK) != 0)
        rc = set_err(err, errlen, "%s: cannot write: directory %s: %s", o->out_path, dir, strerror(errno));
    free(copy);
    return rc;
}

static void sort_kinds(PrepStats *s)
{
    for (int i = 1; i < s->n_kinds; i++) /* insertion sort: a handful of kinds, stable */
        for (int j = i; j > 0; j--) {
            PrepBadKind *a = &s->kinds[j - 1], *b = &s->kinds[j];
            if (a->count > b->count || (a->count == b->count && a->first_line <= b->first_line)) break;
            PrepBadKind t = *a;
            *a = *b, *b = t;
        }
}

int prep_run(const PrepOptions *o, PrepStats *s, char *err, size_t errlen)
{
    double t0 = now_seconds();
    memset(s, 0, sizeof *s);
    if (check_output(o, err, errlen) != 0) return EXIT_USAGE;
    if (!(o->val_frac >= 0 && o->test_frac >= 0 && o->val_frac + o->test_frac < 1) || o->min_pairs < 1)
        return set_err(err, errlen, "val_frac %g and test_frac %g must be >= 0 with a sum below 1, min_pairs >= 1",
                       o->val_frac, o->test_frac),
               EXIT_USAGE;
    Prep P = { .o = o, .s = s };
    Tokenizer tok;
    int32_t learn_v;
    int rc = open_tokenizer(&P, &tok, &learn_v, err, errlen);
    if (rc == 0 && (set_init(&P.user_set) || set_init(&P.pair_set)))
        rc = (set_err(err, errlen, "out of memory"), EXIT_RUNTIME);
    if (rc == 0) rc = read_rows(&P, err, errlen);
    sort_kinds(s);
    if (rc == 0) rc = choose_users(&P, err, errlen);
    if (rc == 0 && learn_v) rc = learn_tokenizer(&P, learn_v, &tok, err, errlen);
    if (rc == 0) {
        Dataset d;
        s->text_bytes = s->tokens;
        if (build_dataset(&P, &d, &tok) != 0)
            rc = (set_err(err, errlen, "out of memory building the dataset"), EXIT_RUNTIME);
        s->tokens = d.n_tokens;
        snprintf(s->tokenizer, sizeof s->tokenizer, "%s", tok_name(&d.tok));
        s->vocab = d.vocab;
        /* the arena is no longer needed: give its memory back before HDF5 takes its own */
        free(P.text), P.text = NULL;
        if (rc == 0 && dataset_write(o->out_path, &d, err, errlen) != 0) rc = EXIT_RUNTIME;
        dataset_free(&d);
    }
    tok_free(&tok);
    free(P.text);
    free(P.pairs);
    free(P.users);
    set_free(&P.user_set);
    set_free(&P.pair_set);
    s->seconds = now_seconds() - t0;
    return rc;
}
