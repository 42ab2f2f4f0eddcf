/* Tokenizers. The byte tokenizer: lossless on any bytes (random, invalid
 * UTF-8, NUL), specials never produced by text, and decode's snprintf-like
 * bounds. The BPE (ids checked against Hugging Face itself in
 * tests/test_tokenizer.sh): hand-worked encodings of a tiny vocabulary,
 * the GPT-2 pieces of a sentence as Hugging Face splits it, the learner's
 * merges against a from-scratch learner that recounts every pair per merge,
 * order independence, lossless round trips of arbitrary bytes, the checks
 * of bpe_build, and a tokenizer.json write/read round trip. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/tokenizer_json.h"
#include "src/rng.h"
#include "src/tokenizer.h"
#include "src/unicode.h"
#include "tests/check.h"

static int round_trips(const char *s, size_t n)
{
    int32_t *ids = malloc(sizeof(int32_t) * (n + 1));
    char *back = malloc(n + 1);
    int ok = tok_encode(NULL, s, n, ids) == n;
    size_t len = tok_decode(NULL, ids, n, back, n + 1, 1);
    ok &= len == n && memcmp(back, s, n) == 0;
    for (size_t i = 0; i < n; i++) ok &= ids[i] < 256;
    free(ids);
    free(back);
    return ok;
}

static void test_byte_tokenizer(void)
{
    Rng r = rng_seed(31, 0);
    int bad = 0;
    char buf[4096];
    for (int t = 0; t < 2000; t++) {
        size_t n = rng_below(&r, sizeof buf);
        for (size_t i = 0; i < n; i++) buf[i] = (char)rng_below(&r, 256);
        bad += !round_trips(buf, n);
    }
    check(bad == 0, "random bytes round-trip", "%d of 2000 strings differ", bad);
    static const char *nasty[] = { "\xff\xfe\xfd", "\xc3\x28", "\xe2\x82", "\xf0\x28\x8c\x28", "\xed\xa0\x80",
                                   "caf\xc3\xa9 \xf0\x9f\x8e\xac", "" };
    bad = 0;
    for (size_t i = 0; i < sizeof nasty / sizeof *nasty; i++) bad += !round_trips(nasty[i], strlen(nasty[i]));
    bad += !round_trips("a\0b\0", 4);
    check(bad == 0, "invalid UTF-8, emoji and NUL round-trip", "%d cases differ", bad);
    int32_t ids[5] = { 'h', TOK_EOS, 'i', TOK_TASK, 300 };
    size_t need = tok_decode(NULL, ids, 5, buf, sizeof buf, 1);
    check(!strcmp(buf, "h<|eos|>i<|task|><|?|>") && need == strlen(buf), "special tokens display", "'%s'", buf);
    need = tok_decode(NULL, ids, 5, buf, sizeof buf, 0);
    check(!strcmp(buf, "hi") && need == 2, "special tokens hidden", "'%s'", buf);
    char small[4];
    need = tok_decode(NULL, ids, 5, small, sizeof small, 1);
    check(need == strlen("h<|eos|>i<|task|><|?|>") && !strcmp(small, "h<|"), "decode truncates like snprintf",
          "needs %zu, wrote '%s'", need, small);
}

/* ---- Unicode ---- */

static void test_unicode(void)
{
    static const struct {
        const char *s;
        size_t len;
        uint32_t cp;
    } cases[] = {
        { "A", 1, 'A' },           { "\xc3\xa9", 2, 0xE9 },          { "\xe2\x82\xac", 3, 0x20AC },
        { "\xf0\x9f\x8e\xac", 4, 0x1F3AC }, { "\xc0\x80", 1, UTF8_INVALID }, /* overlong NUL */
        { "\xe0\x80\xaf", 1, UTF8_INVALID },                           /* overlong '/' */
        { "\xed\xa0\x80", 1, UTF8_INVALID },                           /* surrogate */
        { "\xf4\x90\x80\x80", 1, UTF8_INVALID },                       /* past U+10FFFF */
        { "\x80", 1, UTF8_INVALID },   { "\xe2\x82", 1, UTF8_INVALID }, /* truncated */
        { "\xc3\x28", 1, UTF8_INVALID }, { "\xff", 1, UTF8_INVALID },
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        uint32_t cp;
        size_t len = utf8_next((const unsigned char *)cases[i].s, strlen(cases[i].s), &cp);
        if (len != cases[i].len || cp != cases[i].cp) {
            bad++;
            printf("  case %zu: length %zu, U+%04X\n", i, len, cp);
        }
    }
    check(bad == 0, "strict UTF-8 decoding", "%d of %zu cases wrong", bad, sizeof cases / sizeof *cases);
    /* classes of characters whose General_Category is known (Unicode charts) */
    static const struct {
        uint32_t cp;
        UcClass c;
    } classes[] = {
        { 'a', UC_LETTER },   { 'Z', UC_LETTER },   { 0xE9, UC_LETTER },   { 0x4E00, UC_LETTER },
        { 0xAA, UC_LETTER },  { 0x2C6, UC_LETTER }, /* modifier letter (Lm) */
        { '7', UC_NUMBER },   { 0x663, UC_NUMBER }, /* Arabic-Indic 3 */
        { 0xB2, UC_NUMBER },  { 0xBD, UC_NUMBER },  { 0x216B, UC_NUMBER }, /* ², ½, Roman XII */
        { ' ', UC_SPACE },    { '\t', UC_SPACE },   { '\n', UC_SPACE },    { 0x0B, UC_SPACE },  { 0x85, UC_SPACE },
        { 0xA0, UC_SPACE },   { 0x2003, UC_SPACE }, { 0x2028, UC_SPACE },  { 0x3000, UC_SPACE },
        { 0x1C, UC_OTHER }, /* not \s in Oniguruma, though Python's isspace says so */
        { 0x200B, UC_OTHER }, /* zero width space is Cf */
        { 0x301, UC_OTHER },  { '!', UC_OTHER },    { 0x1F3AC, UC_OTHER }, { 0xE000, UC_OTHER }, { 0, UC_OTHER },
        { UTF8_INVALID, UC_OTHER },
    };
    bad = 0;
    for (size_t i = 0; i < sizeof classes / sizeof *classes; i++) bad += uc_class(classes[i].cp) != classes[i].c;
    check(bad == 0, "Unicode classes of known characters", "%d wrong", bad);
    /* binary search needs sorted, disjoint ranges */
    const uint32_t (*tables[3])[2] = { uc_letter_ranges, uc_number_ranges, uc_space_ranges };
    size_t sizes[3] = { uc_letter_ranges_n, uc_number_ranges_n, uc_space_ranges_n };
    bad = 0;
    for (int t = 0; t < 3; t++)
        for (size_t i = 0; i < sizes[t]; i++)
            bad += tables[t][i][0] > tables[t][i][1] || (i && tables[t][i][0] <= tables[t][i - 1][1]);
    check(bad == 0, "class tables sorted and disjoint", "%d bad ranges", bad);
}

/* ---- BPE: hand-built vocabulary ---- */

/* byte-level text: ' ' is U+0120 "Ġ" */
#define G "\xC4\xA0"

static Bpe *tiny(int ignore_merges, char *err, size_t errlen)
{
    static const BpeToken vocab[] = { { "a", 1, 0 },     { "b", 1, 1 },   { "c", 1, 2 },   { G, 2, 3 },
                                      { "ab", 2, 4 },    { "bc", 2, 5 },  { "abc", 3, 6 }, { G "a", 3, 7 },
                                      { "<|eos|>", 7, 8 } };
    static const BpeMerge merges[] = { { "b", "c", 1, 1 }, { "a", "b", 1, 1 }, { G, "a", 2, 1 } };
    static const BpeAdded added[] = { { "<|eos|>", 7, 8, 1, 0 }, { "xyz", 3, 9, 0, 1 } };
    BpeSpec spec = { vocab, 9, merges, 3, added, 2, ignore_merges };
    return bpe_build(&spec, err, errlen);
}

static int encodes_to(const Bpe *b, const char *s, const int32_t *want, size_t n_want)
{
    int32_t got[64];
    size_t n = bpe_encode(b, s, strlen(s), got);
    int ok = n == n_want && !memcmp(got, want, n * sizeof *got);
    if (!ok) {
        printf("  '%s' ->", s);
        for (size_t i = 0; i < n; i++) printf(" %d", got[i]);
        printf("\n");
    }
    return ok;
}

static void test_hand_built(void)
{
    char err[256];
    Bpe *b = tiny(0, err, sizeof err);
    if (!check(b != NULL, "hand-built vocabulary builds", "%s", b ? "" : err)) return;
    int bad = 0;
    /* (b,c) has rank 0: "abc" -> a + bc, and (a, bc) is no merge */
    bad += !encodes_to(b, "abc", (int32_t[]){ 0, 5 }, 2);
    bad += !encodes_to(b, "ab", (int32_t[]){ 4 }, 1);
    bad += !encodes_to(b, "abcabc", (int32_t[]){ 0, 5, 0, 5 }, 4);
    /* " abc" is one piece: (b,c) first, then (Ġ,a) */
    bad += !encodes_to(b, " abc", (int32_t[]){ 7, 5 }, 2);
    /* 'd' and the second piece's bytes outside the vocabulary are dropped */
    bad += !encodes_to(b, "abd", (int32_t[]){ 4 }, 1);
    bad += !encodes_to(b, "ab, c", (int32_t[]){ 4, 3, 2 }, 3);
    /* added tokens first: specials and normalized ones, wherever they are */
    bad += !encodes_to(b, "ab<|eos|>bc", (int32_t[]){ 4, 8, 5 }, 3);
    bad += !encodes_to(b, "axyzb<|eos|", (int32_t[]){ 0, 9, 1 }, 3);
    check(bad == 0, "hand-worked encodings of a tiny vocabulary", "%d wrong", bad);
    char out[64];
    int32_t ids[] = { 7, 5, 8, 9, 99, -1, 4 };
    size_t need = bpe_decode(b, ids, 7, out, sizeof out, 0);
    check(need == strlen(" abc<|eos|>xyzab") && !strcmp(out, " abc<|eos|>xyzab"), "decode: bytes, unknown ids dropped",
          "'%s'", out);
    need = bpe_decode(b, ids, 7, out, sizeof out, 1);
    check(!strcmp(out, " abcxyzab"), "decode skips special tokens only", "'%s'", out);
    need = bpe_decode(b, ids, 7, out, 5, 0);
    check(need == 16 && !strcmp(out, " abc"), "decode truncates like snprintf", "'%s', %zu", out, need);
    check(bpe_added_id(b, "<|eos|>") == 8 && bpe_added_id(b, "xyz") == 9 && bpe_added_id(b, "abc") == -1 &&
              bpe_n_ids(b) == 10,
          "added token ids", "eos %d, xyz %d, %d ids", bpe_added_id(b, "<|eos|>"), bpe_added_id(b, "xyz"),
          bpe_n_ids(b));
    bpe_free(b);
    b = tiny(1, err, sizeof err);
    bad = !encodes_to(b, "abc", (int32_t[]){ 6 }, 1) + !encodes_to(b, "abca", (int32_t[]){ 0, 5, 0 }, 3);
    check(bad == 0, "ignore_merges: a piece that is a token is that token", "%d wrong", bad);
    bpe_free(b);
}

/* ---- the pre-tokenizer ---- */

static void test_pieces(void)
{
    /* Hugging Face tokenizers 0.23.2, byteLevelPreTokenizer(false, true) on
     * this text gives: Hello|Ġ|Ġworld|ĊĊ|Ġit|'s|Ġ123|Ġï½¶|Ġa|Âł|b */
    const char *s = "Hello  world\n\n it's 123 \xef\xbd\xb6 a\xc2\xa0" "b";
    static const char *const want[] = { "Hello", " ", " world", "\n\n", " it", "'s", " 123", " \xef\xbd\xb6", " a",
                                        "\xc2\xa0", "b" };
    size_t n = strlen(s), k = 0;
    int ok = 1;
    for (size_t i = 0; i < n; k++) {
        size_t e = bpe_piece_end(s, n, i);
        ok &= k < 11 && strlen(want[k]) == e - i && !memcmp(want[k], s + i, e - i);
        i = e;
    }
    check(ok && k == 11, "GPT-2 pieces as Hugging Face splits them", "%zu pieces", k);
    /* rules one by one: contractions are lower-case only; a whitespace run
     * gives its last character to a following word; invalid bytes are
     * punctuation */
    static const struct {
        const char *text, *first;
    } cases[] = {
        { "'ll be", "'ll" }, { "'LL", "'" },   { "''s", "''" },          { "   x", "  " },  { "\t x", "\t" },
        { "\n", "\n" },      { "  ", "  " },   { " \xff\xfe!a", " \xff\xfe!" }, { "a\xff", "a" }, { " 12a", " 12" },
        { "x\xcc\x81", "x" },                  /* a combining mark is not a letter */
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t e = bpe_piece_end(cases[i].text, strlen(cases[i].text), 0);
        if (e != strlen(cases[i].first) || memcmp(cases[i].text, cases[i].first, e)) {
            bad++;
            printf("  case %zu: piece of %zu bytes\n", i, e);
        }
    }
    check(bad == 0, "pre-tokenizer rules", "%d of %zu wrong", bad, sizeof cases / sizeof *cases);
}

/* ---- the learner against a from-scratch one ---- */

typedef struct {
    int32_t *sym;
    size_t n;
    int64_t count;
} Word;

/* Recounts every pair over every word before each merge; same tie rule,
 * same string reuse, same retirement of merged pairs. Merges go to
 * merge[][2] as token ids, token bytes to tok/tok_len. */
static size_t naive_learn(const char *const *texts, size_t n_texts, int32_t vocab, int64_t min_count,
                          char tok[][256], size_t *tok_len, int32_t (*merge)[2])
{
    Word *w = calloc(4096, sizeof *w);
    size_t nw = 0;
    for (size_t t = 0; t < n_texts; t++) {
        size_t n = strlen(texts[t]);
        for (size_t i = 0; i < n;) {
            size_t e = bpe_piece_end(texts[t], n, i), k;
            for (k = 0; k < nw; k++) {
                int same = w[k].n == e - i;
                for (size_t j = 0; same && j < w[k].n; j++) same = w[k].sym[j] == (unsigned char)texts[t][i + j];
                if (same) break;
            }
            if (k == nw) {
                w[nw].sym = malloc(sizeof(int32_t) * (e - i));
                for (size_t j = i; j < e; j++) w[nw].sym[j - i] = (unsigned char)texts[t][j];
                w[nw++].n = e - i;
            }
            w[k].count++;
            i = e;
        }
    }
    int32_t ntok = 0;
    for (; ntok < 256; ntok++) tok[ntok][0] = (char)ntok, tok_len[ntok] = 1;
    for (; ntok < TOKENIZER_VOCAB; ntok++) {
        tok_len[ntok] = strlen(tok_special_name(ntok));
        memcpy(tok[ntok], tok_special_name(ntok), tok_len[ntok]);
    }
    int64_t *count = malloc(sizeof(int64_t) * (size_t)vocab * (size_t)vocab);
    uint8_t *retired = calloc((size_t)vocab * (size_t)vocab, 1);
    size_t nm = 0;
    while (ntok < vocab) {
        memset(count, 0, sizeof(int64_t) * (size_t)vocab * (size_t)vocab);
        for (size_t k = 0; k < nw; k++)
            for (size_t j = 0; j + 1 < w[k].n; j++) count[w[k].sym[j] * vocab + w[k].sym[j + 1]] += w[k].count;
        int64_t best = 0;
        int32_t ba = -1, bb = -1;
        for (int32_t a = 0; a < ntok; a++) /* (a, b) ascending: the first maximum wins ties */
            for (int32_t b = 0; b < ntok; b++)
                if (!retired[a * vocab + b] && count[a * vocab + b] > best) best = count[a * vocab + b], ba = a, bb = b;
        if (best < min_count) break;
        retired[ba * vocab + bb] = 1;
        char joined[256];
        size_t jl = tok_len[ba] + tok_len[bb];
        if (jl > sizeof joined) break; /* the corpus keeps tokens short */
        memcpy(joined, tok[ba], tok_len[ba]);
        memcpy(joined + tok_len[ba], tok[bb], tok_len[bb]);
        int32_t t = 0;
        while (t < ntok && !(tok_len[t] == jl && !memcmp(tok[t], joined, jl))) t++;
        if (t == ntok) memcpy(tok[ntok], joined, jl), tok_len[ntok++] = jl;
        merge[nm][0] = ba, merge[nm][1] = bb, nm++;
        for (size_t k = 0; k < nw; k++) {
            size_t o = 0;
            for (size_t j = 0; j < w[k].n;) {
                if (j + 1 < w[k].n && w[k].sym[j] == ba && w[k].sym[j + 1] == bb) w[k].sym[o++] = t, j += 2;
                else w[k].sym[o++] = w[k].sym[j++];
            }
            w[k].n = o;
        }
    }
    for (size_t k = 0; k < nw; k++) free(w[k].sym);
    free(w);
    free(count);
    free(retired);
    return nm;
}

/* Random short texts over a small alphabet: many ties, runs like "aaaa"
 * whose pairs overlap, and merges that rebuild an existing string. */
static char **random_corpus(uint64_t seed, size_t n, size_t *total)
{
    static const char *const atoms[] = { "a", "b", "ab", "ba", " ", "!", "1", "\xc3\xa9", "'s", "\n", "aaa" };
    Rng r = rng_seed(seed, 1);
    char **texts = malloc(sizeof *texts * n);
    *total = 0;
    for (size_t t = 0; t < n; t++) {
        texts[t] = calloc(200, 1);
        size_t atoms_n = 1 + rng_below(&r, 25);
        for (size_t k = 0; k < atoms_n; k++)
            strcat(texts[t], atoms[rng_below(&r, sizeof atoms / sizeof *atoms)]);
        *total += strlen(texts[t]);
    }
    return texts;
}

static Bpe *learn(char **texts, size_t n, const size_t *order, int32_t vocab, int64_t min_count)
{
    BpeCorpus *c = bpe_corpus_new();
    for (size_t i = 0; i < n; i++) {
        const char *t = texts[order ? order[i] : i];
        bpe_corpus_add(c, t, strlen(t));
    }
    char err[256];
    BpeLearnOptions opt = { vocab, min_count };
    Bpe *b = bpe_learn(c, &opt, NULL, err, sizeof err);
    if (!b) printf("  bpe_learn: %s\n", err);
    bpe_corpus_free(c);
    return b;
}

static int same_spec(const BpeSpec *x, const BpeSpec *y)
{
    if (x->n_vocab != y->n_vocab || x->n_merges != y->n_merges || x->n_added != y->n_added) return 0;
    for (size_t i = 0; i < x->n_vocab; i++)
        if (x->vocab[i].id != y->vocab[i].id || x->vocab[i].len != y->vocab[i].len ||
            memcmp(x->vocab[i].text, y->vocab[i].text, x->vocab[i].len))
            return 0;
    for (size_t i = 0; i < x->n_merges; i++)
        if (x->merges[i].left_len != y->merges[i].left_len || x->merges[i].right_len != y->merges[i].right_len ||
            memcmp(x->merges[i].left, y->merges[i].left, x->merges[i].left_len) ||
            memcmp(x->merges[i].right, y->merges[i].right, x->merges[i].right_len))
            return 0;
    for (size_t i = 0; i < x->n_added; i++)
        if (x->added[i].id != y->added[i].id || x->added[i].len != y->added[i].len ||
            memcmp(x->added[i].text, y->added[i].text, x->added[i].len) || x->added[i].special != y->added[i].special)
            return 0;
    return 1;
}

static void test_learner(void)
{
    int bad = 0, trials = 0;
    for (uint64_t seed = 1; seed <= 12; seed++) {
        size_t total, n = 60;
        char **texts = random_corpus(seed, n, &total);
        int32_t vocab = 264 + 40 + (int32_t)(seed * 7);
        int64_t min_count = 1 + (int64_t)(seed % 3);
        static char tok[1024][256];
        static size_t tok_len[1024];
        static int32_t merge[1024][2];
        size_t nm = naive_learn((const char *const *)texts, n, vocab, min_count, tok, tok_len, merge);
        Bpe *b = learn(texts, n, NULL, vocab, min_count);
        const BpeSpec *s = b ? bpe_spec(b) : NULL;
        int ok = s && s->n_merges == nm;
        for (size_t m = 0; ok && m < nm; m++) {
            char left[600], right[600];
            size_t ll = bpe_byte_level(tok[merge[m][0]], tok_len[merge[m][0]], left);
            size_t rl = bpe_byte_level(tok[merge[m][1]], tok_len[merge[m][1]], right);
            ok = s->merges[m].left_len == ll && !memcmp(s->merges[m].left, left, ll) &&
                 s->merges[m].right_len == rl && !memcmp(s->merges[m].right, right, rl);
            if (!ok) printf("  seed %llu: merge %zu differs\n", (unsigned long long)seed, m);
        }
        if (!ok && s) printf("  seed %llu: %zu merges vs %zu\n", (unsigned long long)seed, s->n_merges, nm);
        bad += !ok;
        trials++;
        /* the same pieces in another order learn the same tokenizer */
        size_t order[60];
        Rng r = rng_seed(seed, 7);
        for (size_t i = 0; i < n; i++) order[i] = i;
        for (size_t i = n - 1; i > 0; i--) {
            size_t j = rng_below(&r, (uint32_t)i + 1), t = order[i];
            order[i] = order[j], order[j] = t;
        }
        Bpe *shuffled = learn(texts, n, order, vocab, min_count);
        if (!shuffled || !s || !same_spec(s, bpe_spec(shuffled))) {
            bad++;
            printf("  seed %llu: another input order learns another tokenizer\n", (unsigned long long)seed);
        }
        bpe_free(shuffled);
        bpe_free(b);
        for (size_t i = 0; i < n; i++) free(texts[i]);
        free(texts);
    }
    check(bad == 0, "incremental learner = recount-every-pair learner, in any input order",
          "%d of %d corpora differ", bad, trials);
}

/* Learned on text with special token names in it: they stay whole, are
 * never learned from, and keep their ids. */
static void test_learned_specials(void)
{
    char *texts[] = { "<|bos|>hello world<|eos|>", "<|example|><|question|>hello?<|preferred|>yes<|eos|>",
                      "hello hello <|task|>world <|user|>likes" };
    Bpe *b = learn(texts, 3, NULL, 300, 1);
    if (!b) return;
    const BpeSpec *s = bpe_spec(b);
    int ok = s->n_added == TOKENIZER_VOCAB - TOK_BOS;
    for (int id = TOK_BOS; ok && id < TOKENIZER_VOCAB; id++)
        ok = bpe_added_id(b, tok_special_name(id)) == id && s->vocab[id].len == strlen(tok_special_name(id)) &&
             !memcmp(s->vocab[id].text, tok_special_name(id), s->vocab[id].len);
    for (size_t m = 0; ok && m < s->n_merges; m++)
        ok = !memchr(s->merges[m].left, '|', s->merges[m].left_len) &&
             !memchr(s->merges[m].right, '|', s->merges[m].right_len);
    int32_t ids[64];
    const char *t = "<|bos|>hello<|eos|>";
    size_t n = bpe_encode(b, t, strlen(t), ids);
    ok &= n >= 3 && ids[0] == TOK_BOS && ids[n - 1] == TOK_EOS;
    for (int id = 0; id < 256; id++) { /* byte ids are the byte values */
        size_t len;
        const char *bytes = bpe_token_bytes(b, id, &len);
        ok &= len == 1 && (unsigned char)bytes[0] == id;
    }
    check(ok, "special tokens: whole, not learned from, ids 256..263; bytes are ids 0..255", "%zu merges",
          s->n_merges);
    bpe_free(b);
}

static void test_round_trips(void)
{
    size_t total;
    char **texts = random_corpus(99, 200, &total);
    Bpe *b = learn(texts, 200, NULL, 400, 2);
    for (size_t i = 0; i < 200; i++) free(texts[i]);
    free(texts);
    if (!b) return;
    Rng r = rng_seed(5, 0);
    static char buf[5000], back[5001];
    static int32_t ids[5000];
    int bad = 0, out_of_range = 0;
    size_t tokens = 0, bytes = 0;
    for (int t = 0; t < 1000; t++) {
        size_t n = rng_below(&r, sizeof buf);
        int mode = t % 3; /* any bytes; ASCII-heavy; bytes from a few that form specials and UTF-8 */
        for (size_t i = 0; i < n; i++) {
            if (mode == 0) buf[i] = (char)rng_below(&r, 256);
            else if (mode == 1) buf[i] = " ab!'s\n\t1"[rng_below(&r, 10)];
            else buf[i] = "<|eos>\xc3\xa9\xf0\x9f\x8e\xac\xff"[rng_below(&r, 13)];
        }
        size_t k = bpe_encode(b, buf, n, ids);
        for (size_t i = 0; i < k; i++) out_of_range += ids[i] < 0 || ids[i] >= bpe_n_ids(b);
        size_t len = bpe_decode(b, ids, k, back, sizeof back, 0);
        bad += len != n || memcmp(back, buf, n) != 0;
        tokens += k, bytes += n;
    }
    check(bad == 0 && out_of_range == 0, "any bytes round-trip through the BPE (invalid UTF-8, NUL, specials)",
          "%d of 1000 differ, %d ids out of range; %.2f bytes/token", bad, out_of_range,
          (double)bytes / (double)(tokens ? tokens : 1));
    /* tokenizer.json: write, read back, same parts and same ids */
    char path[] = "/tmp/fspo-test-tok-XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) close(fd);
    char err[512];
    int ok = tokenizer_json_write(b, path, err, sizeof err) == 0;
    Bpe *again = ok ? tokenizer_json_read(path, err, sizeof err) : NULL;
    ok = again && same_spec(bpe_spec(b), bpe_spec(again));
    for (int t = 0; ok && t < 50; t++) {
        size_t n = rng_below(&r, 2000);
        for (size_t i = 0; i < n; i++) buf[i] = (char)rng_below(&r, 256);
        static int32_t ids2[5000];
        size_t k = bpe_encode(b, buf, n, ids), k2 = bpe_encode(again, buf, n, ids2);
        ok = k == k2 && !memcmp(ids, ids2, k * sizeof *ids);
    }
    check(ok, "tokenizer.json write and read back: same parts, same ids", "%s", ok ? "" : err);
    remove(path);
    bpe_free(again);
    bpe_free(b);
}

/* ---- bpe_build's checks ---- */

static void test_build_errors(void)
{
    static const struct {
        BpeToken vocab[4];
        size_t n_vocab;
        BpeMerge merge;
        size_t n_merges;
        BpeAdded added[2];
        size_t n_added;
        const char *want;
    } cases[] = {
        { { { "a", 1, 0 }, { "b", 1, 5 } }, 2, { 0 }, 0, { { 0 } }, 0, "'b' has id 5, outside 0..1" },
        { { { "a", 1, 0 }, { "b", 1, 0 } }, 2, { 0 }, 0, { { 0 } }, 0, "'a' and 'b' both have id 0" },
        { { { "a", 1, -1 } }, 1, { 0 }, 0, { { 0 } }, 0, "has id -1" },
        { { { "a", 1, 0 }, { "a", 1, 1 } }, 2, { 0 }, 0, { { 0 } }, 0, "'a' appears twice" },
        { { { 0 } }, 0, { 0 }, 0, { { 0 } }, 0, "model.vocab: empty" },
        { { { "a", 1, 0 }, { "b", 1, 1 } }, 2, { "a", "c", 1, 1 }, 1, { { 0 } }, 0,
          "model.merges[0]: 'c' is not in the vocabulary" },
        { { { "a", 1, 0 }, { "b", 1, 1 } }, 2, { "a", "b", 1, 1 }, 1, { { 0 } }, 0,
          "model.merges[0]: 'ab' is not in the vocabulary" },
        { { { "a", 1, 0 }, { "b", 1, 1 } }, 2, { 0 }, 0, { { "<|x|>", 5, 7, 1, 0 } }, 1,
          "added_tokens[0]: '<|x|>' has id 7, but Hugging Face numbers it 2" },
        { { { "a", 1, 0 }, { "b", 1, 1 } }, 2, { 0 }, 0, { { "b", 1, 2, 1, 0 } }, 1, "numbers it 1 (its id in model" },
        { { { "a", 1, 0 } }, 1, { 0 }, 0, { { "<|x|>", 5, 1, 1, 0 }, { "<|x|>", 5, 2, 1, 0 } }, 2,
          "added_tokens[1]: '<|x|>' is listed twice" },
        { { { "a", 1, 0 } }, 1, { 0 }, 0, { { "", 0, 1, 1, 0 } }, 1, "added_tokens[0]: empty content" },
        { { { "a\n", 2, 0 }, { "b", 1, 0 } }, 2, { 0 }, 0, { { 0 } }, 0, "'a\\x0a' and 'b'" },
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char err[256] = "";
        BpeSpec spec = { cases[i].vocab, cases[i].n_vocab, &cases[i].merge, cases[i].n_merges, cases[i].added,
                         cases[i].n_added, 0 };
        Bpe *b = bpe_build(&spec, err, sizeof err);
        if (b || !strstr(err, cases[i].want)) {
            bad++;
            printf("  case %zu: %s\n", i, b ? "accepted" : err);
        }
        bpe_free(b);
    }
    /* a merge repeated */
    static const BpeToken v[] = { { "a", 1, 0 }, { "b", 1, 1 }, { "ab", 2, 2 } };
    static const BpeMerge m[] = { { "a", "b", 1, 1 }, { "a", "b", 1, 1 } };
    BpeSpec spec = { v, 3, m, 2, NULL, 0, 0 };
    char err[256] = "";
    Bpe *b = bpe_build(&spec, err, sizeof err);
    if (b || !strstr(err, "model.merges[1]: 'a b' repeats merges[0]")) bad++, printf("  repeat: %s\n", err);
    bpe_free(b);
    check(bad == 0, "bpe_build refuses inconsistent parts, naming the entry", "%d cases wrong", bad);
}

/* tok_add_structure: ids as Hugging Face's add_special_tokens gives them
 * (hand-computed): a special token already added is reused, a text already
 * in the vocabulary gets its vocabulary id, the others follow every id in
 * order; an added one that is not special is refused. */
static void test_add_structure(void)
{
    char err[256] = "", added[400];
    Bpe *b = tiny(0, err, sizeof err); /* ids 0..8 vocab (<|eos|> 8, added, special), "xyz" added at 9 */
    Bpe *g = b ? tok_add_structure(b, added, sizeof added, err, sizeof err) : NULL;
    int ok = g && bpe_n_ids(g) == 17 && bpe_added_id(g, "<|eos|>") == 8 && bpe_added_id(g, "xyz") == 9 &&
             bpe_added_id(g, "<|bos|>") == 10 && bpe_added_id(g, "<|user|>") == 16 && bpe_is_special(g, 12) &&
             !strcmp(added, "<|bos|> 10, <|example|> 11, <|question|> 12, <|preferred|> 13, <|dispreferred|> 14, "
                            "<|task|> 15, <|user|> 16");
    for (int32_t id = 0; g && id < 10; id++) { /* the original ids keep their meaning */
        size_t la, lb;
        const char *ta = bpe_token_bytes(b, id, &la), *tb = bpe_token_bytes(g, id, &lb);
        ok &= la == lb && !memcmp(ta, tb, la) && bpe_is_special(b, id) == bpe_is_special(g, id);
    }
    check(ok, "tok_add_structure appends the missing tokens after every id, reusing <|eos|>", "%s", g ? added : err);
    Bpe *again = g ? tok_add_structure(g, added, sizeof added, err, sizeof err) : NULL;
    check(again && bpe_n_ids(again) == 17 && !added[0], "tok_add_structure on its own result adds nothing", "%s", added);
    bpe_free(again), bpe_free(g), bpe_free(b);
    /* "<|task|>" a plain vocabulary token: it becomes the special added token of that id */
    static const BpeToken v[] = { { "a", 1, 0 }, { "<|task|>", 8, 1 }, { "b", 1, 2 } };
    BpeSpec spec = { v, 3, NULL, 0, NULL, 0, 0 };
    b = bpe_build(&spec, err, sizeof err);
    g = b ? tok_add_structure(b, added, sizeof added, err, sizeof err) : NULL;
    check(g && bpe_added_id(g, "<|task|>") == 1 && bpe_is_special(g, 1) && bpe_added_id(g, "<|dispreferred|>") == 8 &&
              bpe_added_id(g, "<|user|>") == 9 && bpe_n_ids(g) == 10,
          "a structure token's text in the vocabulary keeps its id", "%s", g ? added : err);
    bpe_free(g), bpe_free(b);
    static const BpeAdded ns[] = { { "<|eos|>", 7, 3, 0, 0 } };
    BpeSpec spec2 = { v, 3, NULL, 0, ns, 1, 0 };
    b = bpe_build(&spec2, err, sizeof err);
    g = b ? tok_add_structure(b, added, sizeof added, err, sizeof err) : NULL;
    check(!g && strstr(err, "added token '<|eos|>' (id 3) is not special"), "a structure token that is not special is refused",
          "%s", err);
    bpe_free(g), bpe_free(b);
}

/* The Tokenizer interface over a learned BPE: the structure tokens are its
 * added tokens, text never becomes one (unlike bpe_encode, which cuts
 * them out as Hugging Face does), other text encodes as bpe_encode does,
 * and the stored JSON round-trips to the same name. */
static void test_interface(void)
{
    BpeCorpus *c = bpe_corpus_new();
    const char *texts[] = { "the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "emoji 🎬 café" };
    for (int k = 0; k < 40; k++) bpe_corpus_add(c, texts[k % 4], strlen(texts[k % 4]));
    BpeLearnOptions opt = { .vocab_size = 300, .min_count = 2 };
    char err[512];
    Bpe *b = bpe_learn(c, &opt, NULL, err, sizeof err);
    bpe_corpus_free(c);
    Tokenizer t;
    char *json = b ? tokenizer_json_dump(b) : NULL;
    int rc = b && json ? tok_init_bpe(&t, b, json, err, sizeof err) : -1;
    check(rc == 0, "tok_init_bpe on a learned tokenizer", "%s", rc ? err : tok_name(&t));
    if (rc != 0) return;
    int ok = tok_n_ids(&t) == bpe_n_ids(t.bpe) && strncmp(tok_name(&t), "bpe", 3) == 0;
    for (int k = TOK_BOS; k < TOKENIZER_VOCAB; k++) ok &= tok_id(&t, k) == k && tok_is_special(&t, k);
    ok &= !tok_is_special(&t, 'a') && tok_is_special(&t, tok_n_ids(&t)) && tok_is_special(&t, -1);
    check(ok, "learned BPE: structure tokens at 256..263, special; text ids are not", "%d ids", (int)tok_n_ids(&t));
    const char *s = "the cat<|eos|> sat<|task|>";
    int32_t a[64], h[64];
    size_t na = tok_encode(&t, s, strlen(s), a), nh = bpe_encode(t.bpe, s, strlen(s), h);
    int none = 1, hf = 0;
    for (size_t i = 0; i < na; i++) none &= !tok_is_special(&t, a[i]);
    for (size_t i = 0; i < nh; i++) hf += h[i] == TOK_EOS || h[i] == TOK_TASK;
    char back[128];
    size_t len = tok_decode(&t, a, na, back, sizeof back, 1);
    check(none && hf == 2 && len == strlen(s) && !strcmp(back, s),
          "text never produces a structure token (bpe_encode's Hugging Face semantics do)", "%zu ids, '%s'", na, back);
    const char *plain = "the dog sat on the mat, café";
    na = tok_encode(&t, plain, strlen(plain), a), nh = bpe_encode(t.bpe, plain, strlen(plain), h);
    check(na == nh && !memcmp(a, h, na * sizeof *a) && na < strlen(plain), "other text: bpe_encode's ids",
          "%zu ids for %zu bytes", na, strlen(plain));
    int32_t row[3] = { 'x', TOK_EOS, 5000 };
    len = tok_decode(&t, row, 3, back, sizeof back, 1);
    check(!strcmp(back, "x<|eos|><|?|>") && tok_decode(&t, row, 3, back, sizeof back, 0) == 1,
          "decode: structure names shown or hidden, unknown ids", "'%s'", back);
    Bpe *b2 = tokenizer_json_parse(t.json, strlen(t.json), "stored", err, sizeof err);
    Tokenizer t2;
    rc = b2 ? tok_init_bpe(&t2, b2, strdup(t.json), err, sizeof err) : -1;
    check(rc == 0 && !strcmp(tok_name(&t2), tok_name(&t)), "stored JSON reads back to the same tokenizer", "%s",
          rc ? err : tok_name(&t2));
    if (rc == 0) tok_free(&t2);
    tok_free(&t);
    check(tok_name(NULL) == tok_name(&(Tokenizer){ 0 }) && !strcmp(tok_name(NULL), TOKENIZER_ID) &&
              tok_n_ids(NULL) == TOKENIZER_VOCAB && tok_id(NULL, TOK_EOS) == TOK_EOS,
          "a zeroed Tokenizer is the byte tokenizer", "%s", TOKENIZER_ID);
}

int main(void)
{
    test_byte_tokenizer();
    test_interface();
    test_unicode();
    test_hand_built();
    test_pieces();
    test_learner();
    test_learned_specials();
    test_round_trips();
    test_build_errors();
    test_add_structure();
    return check_status();
}
