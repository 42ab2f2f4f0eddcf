/* synth: the grammar, the users and the scorer; see synth.h.
 *
 * The grammar, one response:
 *   sentence 1      OPENER(register) FIRST(flavour; NOUN(plain|jargon), ADJ(sentiment))
 *   sentences 2, 3  (long only) CONNECTIVE(register) EXTRA(flavour; ADJ(sentiment))
 *   each sentence   ends in '!' (enthusiastic) or '.'; a "- " line each (bullets) or joined by spaces
 *   then            " EMOJI" (emoji)
 * The scorer's lexicons hold exactly the marker words: sentiment adjectives,
 * register openers and connectives, jargon terms. Every other word of the
 * grammar (nouns, verbs, prompt words) is in no lexicon, which is what makes
 * the scorer exact on generated text; tests/test_synth.c checks it on every
 * attribute mask of every flavour. */
#include "src/synth.h"

#include <math.h>
#include <string.h>

const char *const synth_attr_names[SYNTH_K] = { "long", "positive", "formal", "enthusiastic",
                                                "technical", "bullets", "emoji" };

#define COUNT(a) ((int)(sizeof(a) / sizeof *(a)))

/* ---- grammar: shared register markers ---- */

static const char *const formal_openers[] = { "Overall,", "Indeed,", "Notably,", "Arguably,", "Evidently," };
static const char *const casual_openers[] = { "Honestly,", "Tbh", "Ok so", "Yeah,", "Lol," };
static const char *const formal_connectives[] = { "Furthermore,", "Moreover,", "Additionally,", "Likewise," };
static const char *const casual_connectives[] = { "Also", "Plus", "Oh and", "Btw" };

/* ---- grammar: flavours ---- */

typedef struct {
    const char *name;
    /* prompt = template with {1} and {2} filled from two lists */
    const char *const *prompts, *const *prompt_1, *const *prompt_2;
    int n_prompts, n_prompt_1, n_prompt_2;
    /* first sentence: {N} noun phrase, {A} adjective, {a} "a"/"an" for the next slot */
    const char *first;
    const char *const *plain_nouns, *const *jargon_nouns;
    int n_nouns; /* both noun lists have this length */
    const char *const *extras; /* later sentences, {A} adjective */
    int n_extras;
    const char *const *positive, *const *negative;
    int n_adjectives; /* both adjective lists have this length */
    const char *const *emoji;
    int n_emoji;
} Flavor;

static const char *const reviews_prompts[] = { "Review the movie \"The {1} {2}\".", "What did you think of The {1} {2}?",
                                               "Give me your take on The {1} {2}.",
                                               "Write a quick review of The {1} {2}." };
static const char *const reviews_title_1[] = { "Silent", "Crimson", "Hidden", "Midnight",
                                               "Frozen", "Distant", "Paper",  "Iron" };
static const char *const reviews_title_2[] = { "Harbor", "Garden", "Signal", "Empire",
                                               "River",  "Machine", "Letter", "Orchard" };
static const char *const reviews_plain[] = { "the plot", "the acting", "the ending",
                                             "the cast", "the story",  "the dialogue" };
static const char *const reviews_jargon[] = { "the cinematography",     "the mise-en-scene",
                                              "the diegetic sound",     "the montage",
                                              "the three-act structure", "the chiaroscuro lighting" };
static const char *const reviews_extras[] = { "the pacing felt {A}",  "the soundtrack felt {A}", "the visuals looked {A}",
                                              "the humor felt {A}",   "the final act was {A}",   "the costumes looked {A}" };
static const char *const reviews_positive[] = { "brilliant", "superb", "gripping", "charming" };
static const char *const reviews_negative[] = { "dull", "clumsy", "tedious", "forgettable" };
static const char *const reviews_emoji[] = { "\xF0\x9F\x8E\xAC", "\xF0\x9F\x8D\xBF", "\xF0\x9F\x8E\xA5" }; /* 🎬 🍿 🎥 */

static const char *const elix_prompts[] = { "Explain {1} like I'm {2}.", "How would you explain {1} to {2}?",
                                            "Explain {1} to me as if I were {2}." };
static const char *const elix_concepts[] = { "gravity", "photosynthesis", "inflation", "rainbows",
                                             "vaccines", "tides",          "magnets",   "volcanoes" };
static const char *const elix_audiences[] = { "a five-year-old", "a teenager", "a chef",
                                              "a grandparent",   "a physics student", "a sailor" };
static const char *const elix_plain[] = { "how things push and pull", "tiny moving pieces",     "energy moving around",
                                          "simple everyday rules",    "what happens over time", "things we see every day" };
static const char *const elix_jargon[] = { "entropy",        "eigenstates",    "stochastic processes",
                                           "thermodynamics", "covalent bonds", "electromagnetism" };
static const char *const elix_extras[] = { "the examples are {A}", "the details are {A}",     "the math is {A}",
                                           "the history is {A}",   "the big picture is {A}", "the analogies are {A}" };
static const char *const elix_positive[] = { "fascinating", "elegant", "beautiful", "neat" };
static const char *const elix_negative[] = { "confusing", "tricky", "messy", "baffling" };
static const char *const elix_emoji[] = { "\xF0\x9F\x92\xA1", "\xF0\x9F\xA7\xA0", "\xF0\x9F\x93\x9A" }; /* 💡 🧠 📚 */

static const char *const roleplay_prompts[] = { "{1}, {2}?", "Dear {1}, {2}?", "{1}, quick question: {2}?" };
static const char *const roleplay_personas[] = { "Captain", "Chef", "Coach", "Wizard", "Doctor", "Librarian" };
static const char *const roleplay_questions[] = { "how do I tie a strong knot",    "what should I cook tonight",
                                                  "how do I stay focused",         "which book should I read next",
                                                  "how do I start running",        "how do I fix a squeaky door" };
static const char *const roleplay_plain[] = { "the simple way",    "the classic trick", "a slow start",
                                              "the usual routine", "a quick fix",       "the old method" };
static const char *const roleplay_jargon[] = { "a heuristic approach", "an iterative workflow", "the Pomodoro protocol",
                                               "a periodized plan",    "an algorithmic method", "a modular architecture" };
static const char *const roleplay_extras[] = { "the results are {A}",       "the first week is {A}",
                                               "the effort is {A}",         "my own experience was {A}",
                                               "the payoff is {A}",         "the learning curve is {A}" };
static const char *const roleplay_positive[] = { "excellent", "great", "wonderful", "reliable" };
static const char *const roleplay_negative[] = { "terrible", "awful", "poor", "risky" };
static const char *const roleplay_emoji[] = { "\xF0\x9F\x99\x82", "\xF0\x9F\x91\x8D", "\xE2\x9C\xA8" }; /* 🙂 👍 ✨ */

static const Flavor flavors[SYNTH_N_FLAVORS] = {
    [SYNTH_REVIEWS] = { "reviews", reviews_prompts, reviews_title_1, reviews_title_2, COUNT(reviews_prompts),
                        COUNT(reviews_title_1), COUNT(reviews_title_2), "{N} was {A}", reviews_plain, reviews_jargon,
                        COUNT(reviews_plain), reviews_extras, COUNT(reviews_extras), reviews_positive,
                        reviews_negative, COUNT(reviews_positive), reviews_emoji, COUNT(reviews_emoji) },
    [SYNTH_ELIX] = { "elix", elix_prompts, elix_concepts, elix_audiences, COUNT(elix_prompts), COUNT(elix_concepts),
                     COUNT(elix_audiences), "it is {a} {A} idea about {N}", elix_plain, elix_jargon,
                     COUNT(elix_plain), elix_extras, COUNT(elix_extras), elix_positive, elix_negative,
                     COUNT(elix_positive), elix_emoji, COUNT(elix_emoji) },
    [SYNTH_ROLEPLAY] = { "roleplay", roleplay_prompts, roleplay_personas, roleplay_questions,
                         COUNT(roleplay_prompts), COUNT(roleplay_personas), COUNT(roleplay_questions),
                         "{N} is {a} {A} choice", roleplay_plain, roleplay_jargon, COUNT(roleplay_plain),
                         roleplay_extras, COUNT(roleplay_extras), roleplay_positive, roleplay_negative,
                         COUNT(roleplay_positive), roleplay_emoji, COUNT(roleplay_emoji) },
};

/* The noun and adjective lists of a flavour must pair up one to one, or a
 * slot draw would index past the shorter list. */
_Static_assert(COUNT(reviews_plain) == COUNT(reviews_jargon), "reviews nouns");
_Static_assert(COUNT(elix_plain) == COUNT(elix_jargon), "elix nouns");
_Static_assert(COUNT(roleplay_plain) == COUNT(roleplay_jargon), "roleplay nouns");
_Static_assert(COUNT(reviews_positive) == COUNT(reviews_negative), "reviews adjectives");
_Static_assert(COUNT(elix_positive) == COUNT(elix_negative), "elix adjectives");
_Static_assert(COUNT(roleplay_positive) == COUNT(roleplay_negative), "roleplay adjectives");

static int valid_flavor(int flavor) { return flavor >= 0 && flavor < SYNTH_N_FLAVORS; }

const char *synth_flavor_name(int flavor)
{
    if (flavor == SYNTH_ALL) return "all";
    return valid_flavor(flavor) ? flavors[flavor].name : NULL;
}

int synth_flavor_parse(const char *name)
{
    for (int f = 0; f <= SYNTH_ALL; f++)
        if (name && !strcmp(name, synth_flavor_name(f))) return f;
    return -1;
}

/* ---- rendering ---- */

/* Appends into a fixed buffer; truncates rather than overflows (the
 * buffers are sized for the longest text the grammar makes, which the
 * tests check, so truncation would be a grammar bug, not a crash). */
typedef struct {
    char *p;
    size_t len, cap;
} Buf;

static void put_bytes(Buf *b, const char *s, size_t n)
{
    if (b->len + n >= b->cap) n = b->cap - 1 - b->len;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void put_str(Buf *b, const char *s) { put_bytes(b, s, strlen(s)); }
static void put_char(Buf *b, char c) { put_bytes(b, &c, 1); }

/* Index in [0, n) from 32 random bits (multiply-shift, as rng_below). */
static int pick(uint32_t r, int n) { return (int)(((uint64_t)r * (uint64_t)n) >> 32); }
/* The same, but never `avoid`, so a long answer does not repeat a connective. */
static int pick_other(uint32_t r, int n, int avoid) { return (avoid + 1 + pick(r, n - 1)) % n; }

typedef struct {
    const char *one, *two, *noun, *adj;
} Fill;

static const char *fill_value(const Fill *f, char key)
{
    switch (key) {
    case '1': return f->one;
    case '2': return f->two;
    case 'N': return f->noun;
    case 'A': return f->adj;
    default: return "";
    }
}

static int starts_with_vowel(const char *s) { return s && *s && strchr("aeiouAEIOU", *s) != NULL; }

/* Expands {1} {2} {N} {A}, and {a} as the article the next slot's value takes. */
static void put_template(Buf *b, const char *t, const Fill *f)
{
    for (const char *p = t; *p; p++) {
        if (p[0] == '{' && p[1] && p[2] == '}') {
            if (p[1] == 'a') {
                const char *next = strchr(p + 3, '{');
                put_str(b, next && starts_with_vowel(fill_value(f, next[1])) ? "an" : "a");
            } else
                put_str(b, fill_value(f, p[1]));
            p += 2;
        } else
            put_char(b, *p);
    }
}

/* Slot order in SynthWording. */
enum { SLOT_OPENER, SLOT_NOUN, SLOT_ADJ1, SLOT_CONN2, SLOT_EXTRA2, SLOT_ADJ2, SLOT_CONN3, SLOT_EXTRA3, SLOT_ADJ3, SLOT_EMOJI };
_Static_assert(SLOT_EMOJI + 1 == SYNTH_N_SLOTS, "one draw per slot");

void synth_draw_wording(Rng *rng, SynthWording *wd)
{
    for (int s = 0; s < SYNTH_N_SLOTS; s++) wd->slot[s] = (uint32_t)(rng_u64(rng) >> 32);
}

static int has(unsigned mask, int attr) { return (mask >> attr) & 1u; }

size_t synth_render(int flavor, unsigned mask, const SynthWording *wd, char *out)
{
    out[0] = '\0';
    if (!valid_flavor(flavor)) return 0;
    const Flavor *f = &flavors[flavor];
    const uint32_t *s = wd->slot;
    int formal = has(mask, SYNTH_FORMAL);
    const char *const *adjectives = has(mask, SYNTH_POSITIVE) ? f->positive : f->negative;
    const char *const *connectives = formal ? formal_connectives : casual_connectives;
    int n_conn = formal ? COUNT(formal_connectives) : COUNT(casual_connectives);
    char end = has(mask, SYNTH_ENTHUSIASTIC) ? '!' : '.';
    const char *gap = has(mask, SYNTH_BULLETS) ? "\n" : " ";
    const char *lead = has(mask, SYNTH_BULLETS) ? "- " : "";
    Buf b = { out, 0, SYNTH_MAX_RESPONSE };

    put_str(&b, lead);
    put_str(&b, formal ? formal_openers[pick(s[SLOT_OPENER], COUNT(formal_openers))]
                       : casual_openers[pick(s[SLOT_OPENER], COUNT(casual_openers))]);
    put_char(&b, ' ');
    const char *const *nouns = has(mask, SYNTH_TECHNICAL) ? f->jargon_nouns : f->plain_nouns;
    Fill first = { .noun = nouns[pick(s[SLOT_NOUN], f->n_nouns)],
                   .adj = adjectives[pick(s[SLOT_ADJ1], f->n_adjectives)] };
    put_template(&b, f->first, &first);
    put_char(&b, end);

    if (has(mask, SYNTH_LONG)) {
        int conn2 = pick(s[SLOT_CONN2], n_conn), conn3 = pick_other(s[SLOT_CONN3], n_conn, conn2);
        int extra2 = pick(s[SLOT_EXTRA2], f->n_extras), extra3 = pick_other(s[SLOT_EXTRA3], f->n_extras, extra2);
        const int conn[2] = { conn2, conn3 }, extra[2] = { extra2, extra3 }, adj_slot[2] = { SLOT_ADJ2, SLOT_ADJ3 };
        for (int k = 0; k < 2; k++) {
            put_str(&b, gap);
            put_str(&b, lead);
            put_str(&b, connectives[conn[k]]);
            put_char(&b, ' ');
            Fill more = { .adj = adjectives[pick(s[adj_slot[k]], f->n_adjectives)] };
            put_template(&b, f->extras[extra[k]], &more);
            put_char(&b, end);
        }
    }
    if (has(mask, SYNTH_EMOJI)) {
        put_char(&b, ' ');
        put_str(&b, f->emoji[pick(s[SLOT_EMOJI], f->n_emoji)]);
    }
    return b.len;
}

size_t synth_render_prompt(int flavor, Rng *rng, char *out)
{
    out[0] = '\0';
    if (!valid_flavor(flavor)) return 0;
    const Flavor *f = &flavors[flavor];
    uint32_t r0 = (uint32_t)(rng_u64(rng) >> 32), r1 = (uint32_t)(rng_u64(rng) >> 32),
             r2 = (uint32_t)(rng_u64(rng) >> 32);
    Fill fill = { .one = f->prompt_1[pick(r1, f->n_prompt_1)], .two = f->prompt_2[pick(r2, f->n_prompt_2)] };
    Buf b = { out, 0, SYNTH_MAX_PROMPT };
    put_template(&b, f->prompts[pick(r0, f->n_prompts)], &fill);
    return b.len;
}

/* ---- the scorer ---- */

enum { LEX_POSITIVE, LEX_NEGATIVE, LEX_FORMAL, LEX_CASUAL, LEX_JARGON };

typedef struct {
    const char *word;
    unsigned char len, cls;
} LexWord;

#define W(s, c) { s, sizeof(s) - 1, c }
/* Every grammar marker, plus common words of the same kind so a model's
 * free text is read sensibly too. Lowercase; hyphens and apostrophes are
 * part of a word. */
static const LexWord lexicon[] = {
    /* sentiment: the grammar's adjectives first */
    W("brilliant", LEX_POSITIVE), W("superb", LEX_POSITIVE), W("gripping", LEX_POSITIVE),
    W("charming", LEX_POSITIVE), W("fascinating", LEX_POSITIVE), W("elegant", LEX_POSITIVE),
    W("beautiful", LEX_POSITIVE), W("neat", LEX_POSITIVE), W("excellent", LEX_POSITIVE),
    W("great", LEX_POSITIVE), W("wonderful", LEX_POSITIVE), W("reliable", LEX_POSITIVE),
    W("good", LEX_POSITIVE), W("love", LEX_POSITIVE), W("loved", LEX_POSITIVE), W("amazing", LEX_POSITIVE),
    W("fantastic", LEX_POSITIVE), W("delightful", LEX_POSITIVE), W("enjoyable", LEX_POSITIVE),
    W("lovely", LEX_POSITIVE), W("nice", LEX_POSITIVE), W("best", LEX_POSITIVE), W("perfect", LEX_POSITIVE),
    W("happy", LEX_POSITIVE), W("helpful", LEX_POSITIVE),
    W("dull", LEX_NEGATIVE), W("clumsy", LEX_NEGATIVE), W("tedious", LEX_NEGATIVE),
    W("forgettable", LEX_NEGATIVE), W("confusing", LEX_NEGATIVE), W("tricky", LEX_NEGATIVE),
    W("messy", LEX_NEGATIVE), W("baffling", LEX_NEGATIVE), W("terrible", LEX_NEGATIVE),
    W("awful", LEX_NEGATIVE), W("poor", LEX_NEGATIVE), W("risky", LEX_NEGATIVE),
    W("bad", LEX_NEGATIVE), W("hate", LEX_NEGATIVE), W("hated", LEX_NEGATIVE), W("boring", LEX_NEGATIVE),
    W("horrible", LEX_NEGATIVE), W("worst", LEX_NEGATIVE), W("disappointing", LEX_NEGATIVE),
    W("weak", LEX_NEGATIVE), W("annoying", LEX_NEGATIVE), W("sad", LEX_NEGATIVE), W("useless", LEX_NEGATIVE),
    /* register */
    W("overall", LEX_FORMAL), W("indeed", LEX_FORMAL), W("notably", LEX_FORMAL), W("arguably", LEX_FORMAL),
    W("evidently", LEX_FORMAL), W("furthermore", LEX_FORMAL), W("moreover", LEX_FORMAL),
    W("additionally", LEX_FORMAL), W("likewise", LEX_FORMAL), W("therefore", LEX_FORMAL),
    W("consequently", LEX_FORMAL), W("however", LEX_FORMAL), W("nevertheless", LEX_FORMAL),
    W("hence", LEX_FORMAL), W("thus", LEX_FORMAL),
    W("honestly", LEX_CASUAL), W("tbh", LEX_CASUAL), W("ok", LEX_CASUAL), W("okay", LEX_CASUAL),
    W("yeah", LEX_CASUAL), W("lol", LEX_CASUAL), W("also", LEX_CASUAL), W("plus", LEX_CASUAL),
    W("oh", LEX_CASUAL), W("btw", LEX_CASUAL), W("gonna", LEX_CASUAL), W("kinda", LEX_CASUAL),
    W("wanna", LEX_CASUAL), W("gotta", LEX_CASUAL), W("cool", LEX_CASUAL), W("stuff", LEX_CASUAL),
    W("yep", LEX_CASUAL), W("nope", LEX_CASUAL), W("hey", LEX_CASUAL),
    /* jargon: the grammar's terms, then a few more */
    W("cinematography", LEX_JARGON), W("mise-en-scene", LEX_JARGON), W("diegetic", LEX_JARGON),
    W("montage", LEX_JARGON), W("three-act", LEX_JARGON), W("chiaroscuro", LEX_JARGON),
    W("entropy", LEX_JARGON), W("eigenstates", LEX_JARGON), W("stochastic", LEX_JARGON),
    W("thermodynamics", LEX_JARGON), W("covalent", LEX_JARGON), W("electromagnetism", LEX_JARGON),
    W("heuristic", LEX_JARGON), W("iterative", LEX_JARGON), W("pomodoro", LEX_JARGON),
    W("periodized", LEX_JARGON), W("algorithmic", LEX_JARGON), W("modular", LEX_JARGON),
    W("auteur", LEX_JARGON), W("eigenvalue", LEX_JARGON), W("eigenvalues", LEX_JARGON),
    W("quantum", LEX_JARGON), W("asymptotic", LEX_JARGON), W("bayesian", LEX_JARGON),
    W("mitochondria", LEX_JARGON), W("thermodynamic", LEX_JARGON),
};
#undef W

static int is_lower(unsigned char c) { return c >= 'a' && c <= 'z'; }
static int is_alpha(unsigned char c) { return is_lower(c | 0x20); }
static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static int is_alnum(unsigned char c) { return is_alpha(c) || is_digit(c); }
static int is_word_byte(unsigned char c) { return is_alnum(c) || c == '\'' || c == '-'; }
static int is_blank(unsigned char c) { return c == ' ' || c == '\t'; }
static int is_terminator(unsigned char c) { return c == '.' || c == '!' || c == '?'; }

static int lexicon_class(const char *w, size_t n)
{
    for (int i = 0; i < COUNT(lexicon); i++)
        if (lexicon[i].len == n && lexicon[i].word[0] == w[0] && !memcmp(lexicon[i].word, w, n))
            return lexicon[i].cls;
    return -1;
}

/* A run of '.', '!', '?' ends a sentence unless a word or number goes on
 * ("3.5", "e.g") or the next thing after blanks is a lowercase letter or
 * digit ("e.g. 3.5", "etc. and"); generated sentences always start with a
 * capital, a "- " line or an emoji. */
static int ends_sentence(const unsigned char *t, size_t n, size_t j)
{
    if (j < n && is_alnum(t[j])) return 0;
    while (j < n && is_blank(t[j])) j++;
    return j == n || !(is_lower(t[j]) || is_digit(t[j]));
}

/* Sentences are stretches with a letter in them, ended by a terminator
 * run (ends_sentence), a line break, or the end of the text. */
static void count_sentences(const unsigned char *t, size_t n, SynthEvidence *ev)
{
    int letters = 0;
    for (size_t i = 0; i < n; i++) {
        if (t[i] == '\n') {
            ev->sentences += letters;
            letters = 0;
        } else if (is_terminator(t[i])) {
            size_t j = i;
            int bang = 0;
            while (j < n && is_terminator(t[j])) bang |= t[j++] == '!';
            if (letters && ends_sentence(t, n, j)) {
                ev->sentences++;
                ev->exclaimed += bang;
                letters = 0;
            }
            i = j - 1;
        } else if (is_alpha(t[i]))
            letters = 1;
    }
    ev->sentences += letters;
}

static void count_word(const unsigned char *w, size_t n, SynthEvidence *ev)
{
    while (n && (w[0] == '-' || w[0] == '\'')) w++, n--; /* "- item", "'quoted'" */
    while (n && (w[n - 1] == '-' || w[n - 1] == '\'')) n--;
    char lower[32];
    if (n == 0 || n > sizeof lower) return;
    for (size_t i = 0; i < n; i++) {
        lower[i] = (char)(w[i] | (is_alpha(w[i]) ? 0x20 : 0));
        /* an apostrophe inside a word is a contraction or a possessive: casual */
        if (w[i] == '\'') ev->casual++;
    }
    switch (lexicon_class(lower, n)) {
    case LEX_POSITIVE: ev->positive++; break;
    case LEX_NEGATIVE: ev->negative++; break;
    case LEX_FORMAL: ev->formal++; break;
    case LEX_CASUAL: ev->casual++; break;
    case LEX_JARGON: ev->technical++; break;
    default: break;
    }
}

static void count_words(const unsigned char *t, size_t n, SynthEvidence *ev)
{
    for (size_t i = 0; i < n;) {
        if (!is_word_byte(t[i])) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && is_word_byte(t[j])) j++;
        count_word(t + i, j - i, ev);
        i = j;
    }
}

/* A list line: "- x", "* x", "+ x", "• x" or "1. x" / "1) x", after any indent. */
static int is_list_item(const unsigned char *t, size_t n)
{
    size_t i = 0;
    while (i < n && is_blank(t[i])) i++;
    if (i + 1 < n && (t[i] == '-' || t[i] == '*' || t[i] == '+') && is_blank(t[i + 1])) return 1;
    if (i + 3 < n && t[i] == 0xE2 && t[i + 1] == 0x80 && t[i + 2] == 0xA2 && is_blank(t[i + 3])) return 1;
    size_t d = i;
    while (d < n && is_digit(t[d])) d++;
    return d > i && d + 1 < n && (t[d] == '.' || t[d] == ')') && is_blank(t[d + 1]);
}

static void count_list_lines(const unsigned char *t, size_t n, SynthEvidence *ev)
{
    for (size_t start = 0; start < n;) {
        size_t end = start;
        while (end < n && t[end] != '\n') end++;
        ev->bullet_lines += is_list_item(t + start, end - start);
        start = end + 1;
    }
}

static int is_emoji(uint32_t cp)
{
    return (cp >= 0x1F000 && cp <= 0x1FAFF) /* pictographs, emoticons, transport, supplemental */
           || (cp >= 0x2600 && cp <= 0x27BF) /* miscellaneous symbols, dingbats */
           || (cp >= 0x2B00 && cp <= 0x2BFF); /* stars, arrows */
}

/* Decodes UTF-8 leniently: a malformed sequence is skipped one byte at a
 * time, so arbitrary bytes never read past the end. */
static void count_emoji(const unsigned char *t, size_t n, SynthEvidence *ev)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = t[i];
        size_t len = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 && c <= 0xEF ? 3 : 0;
        if (len == 0 || i + len > n) {
            i++;
            continue;
        }
        uint32_t cp = c & (len == 4 ? 0x07 : 0x0F);
        size_t k = 1;
        for (; k < len && (t[i + k] & 0xC0) == 0x80; k++) cp = (cp << 6) | (t[i + k] & 0x3F);
        if (k < len) {
            i++;
            continue;
        }
        ev->emoji += is_emoji(cp);
        i += len;
    }
}

void synth_score_evidence(const char *text, size_t n, SynthEvidence *ev, double attrs_out[SYNTH_K])
{
    const unsigned char *t = (const unsigned char *)(text ? text : "");
    if (!text) n = 0;
    memset(ev, 0, sizeof *ev);
    count_sentences(t, n, ev);
    count_words(t, n, ev);
    count_list_lines(t, n, ev);
    count_emoji(t, n, ev);
    attrs_out[SYNTH_LONG] = ev->sentences >= 2;
    attrs_out[SYNTH_POSITIVE] = ev->positive > ev->negative;
    attrs_out[SYNTH_FORMAL] = ev->formal > ev->casual;
    attrs_out[SYNTH_ENTHUSIASTIC] = ev->exclaimed >= 1 && 2 * ev->exclaimed >= ev->sentences;
    attrs_out[SYNTH_TECHNICAL] = ev->technical >= 1;
    attrs_out[SYNTH_BULLETS] = ev->bullet_lines >= 1;
    attrs_out[SYNTH_EMOJI] = ev->emoji >= 1;
}

void synth_score(const char *text, size_t n, double attrs_out[SYNTH_K])
{
    SynthEvidence ev;
    synth_score_evidence(text, n, &ev, attrs_out);
}

/* ---- rewards and labels ---- */

double synth_reward(const double w[SYNTH_K], const double attrs[SYNTH_K])
{
    double r = 0;
    for (int k = 0; k < SYNTH_K; k++) r += w[k] * attrs[k];
    return r;
}

static double reward_of_mask(const double w[SYNTH_K], unsigned mask)
{
    double a[SYNTH_K];
    synth_mask_to_attrs(mask, a);
    return synth_reward(w, a);
}

double synth_bt_prob(double r1, double r2, double temperature)
{
    if (!(temperature > 0)) return r1 > r2 ? 1.0 : r1 < r2 ? 0.0 : 0.5;
    double x = (r1 - r2) / temperature;
    /* the form whose exp() cannot overflow */
    return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
}

void synth_mask_to_attrs(unsigned mask, double attrs[SYNTH_K])
{
    for (int k = 0; k < SYNTH_K; k++) attrs[k] = (mask >> k) & 1u;
}

unsigned synth_attrs_to_mask(const double attrs[SYNTH_K])
{
    unsigned m = 0;
    for (int k = 0; k < SYNTH_K; k++) m |= (unsigned)(attrs[k] > 0.5) << k;
    return m;
}

/* ---- users ---- */

/* Marsaglia-Tsang; alpha < 1 through the boost Gamma(a) = Gamma(a+1) U^(1/a). */
static double rng_gamma(Rng *r, double alpha)
{
    if (alpha < 1) {
        double u = rng_uniform(r);
        return rng_gamma(r, alpha + 1) * pow(u, 1.0 / alpha);
    }
    double d = alpha - 1.0 / 3, c = 1 / sqrt(9 * d);
    for (;;) {
        double x, v;
        do {
            x = rng_normal(r);
            v = 1 + c * x;
        } while (v <= 0);
        v = v * v * v;
        double u = rng_uniform(r);
        if (u < 1 - 0.0331 * x * x * x * x || log(u) < 0.5 * x * x + d * (1 - v + log(v))) return d * v;
    }
}

static double random_sign(Rng *r) { return rng_u64(r) >> 63 ? 1.0 : -1.0; }

/* The attributes a dataset varies (--attrs); 0 in a config means all. */
static unsigned allowed_attrs(const SynthConfig *cfg) { return cfg->attrs ? cfg->attrs & SYNTH_ALL_ATTRS : SYNTH_ALL_ATTRS; }

/* Sparse, as PReF's synthetic users: n_active distinct attributes among the
 * allowed ones, +-1. With every attribute allowed the draws are those of the
 * first datasets, so old seeds give the same users. */
static void draw_sparse_weights(Rng *r, int n_active, unsigned allowed, double w[SYNTH_K])
{
    int order[SYNTH_K], m = 0;
    for (int k = 0; k < SYNTH_K; k++)
        if ((allowed >> k) & 1u) order[m++] = k;
    /* a user with no active attribute would make every pair a tie */
    if (n_active < 1) n_active = 1;
    if (n_active > m) n_active = m;
    for (int j = 0; j < n_active; j++) {
        int s = j + (int)rng_below(r, (uint32_t)(m - j));
        int t = order[j];
        order[j] = order[s];
        order[s] = t;
        w[order[j]] = random_sign(r);
    }
}

static void draw_dense_weights(Rng *r, double alpha, unsigned allowed, double w[SYNTH_K])
{
    double sum = 0;
    for (int k = 0; k < SYNTH_K; k++) {
        double g = rng_gamma(r, alpha); /* drawn for every k, so an attribute subset keeps the stream */
        sum += w[k] = ((allowed >> k) & 1u) ? g : 0;
    }
    if (!(sum > 0)) { /* every draw underflowed (tiny alpha): all mass on one allowed attribute */
        int k = (int)rng_below(r, SYNTH_K);
        while (!((allowed >> k) & 1u)) k = (k + 1) % SYNTH_K;
        w[k] = sum = 1;
    }
    /* multiples of 1e-6, so the truth file's decimal text is the exact weight */
    for (int k = 0; k < SYNTH_K; k++) {
        double sign = random_sign(r);
        w[k] = w[k] == 0 ? 0 : round(w[k] * SYNTH_DENSE_TOTAL / sum * 1e6) / 1e6 * sign;
    }
}

static int strongest_attr(const double w[SYNTH_K])
{
    int best = 0;
    for (int k = 1; k < SYNTH_K; k++)
        if (fabs(w[k]) > fabs(w[best])) best = k;
    return best;
}

/* The mask of the two largest |w[k]|, ties to the lower index (a sparse
 * user with one active attribute: that one and the first zero weight). */
static unsigned top2_attrs(const double w[SYNTH_K])
{
    int a = strongest_attr(w), b = a == 0 ? 1 : 0;
    for (int k = 0; k < SYNTH_K; k++)
        if (k != a && fabs(w[k]) > fabs(w[b])) b = k;
    return (1u << a) | (1u << b);
}

static void put_user_id(Buf *b, int index)
{
    char digits[16];
    int n = 0;
    unsigned v = (unsigned)index;
    do digits[n++] = (char)('0' + v % 10), v /= 10;
    while (v);
    put_char(b, 'u');
    for (int pad = n; pad < 5; pad++) put_char(b, '0');
    while (n) put_char(b, digits[--n]);
}

void synth_user_init(const SynthConfig *cfg, int index, SynthUser *u)
{
    memset(u, 0, sizeof *u);
    u->index = index;
    u->flavor = cfg->flavor == SYNTH_ALL ? index % SYNTH_N_FLAVORS : cfg->flavor;
    u->rng = rng_seed(cfg->seed, (uint64_t)index);
    if (cfg->dirichlet_alpha > 0)
        draw_dense_weights(&u->rng, cfg->dirichlet_alpha, allowed_attrs(cfg), u->w);
    else
        draw_sparse_weights(&u->rng, cfg->n_active, allowed_attrs(cfg), u->w);
    /* never empty: sparse users have >= 1 weight of +-1, and a dense user's
     * largest |w| is at least SYNTH_DENSE_TOTAL / SYNTH_K = 0.29 */
    for (int k = 0; k < SYNTH_K; k++) u->active_mask |= (unsigned)(fabs(u->w[k]) >= SYNTH_ACTIVE_MIN) << k;
    u->top2_mask = top2_attrs(u->w);
    for (int i = 0; i < SYNTH_MAX_INTERPOLATED; i++)
        u->interpolated |= cfg->interpolated_pairs[i] && cfg->interpolated_pairs[i] == u->top2_mask;
    Buf id = { u->id, 0, sizeof u->id };
    put_user_id(&id, index);
    u->description_len = synth_describe(u->w, u->description, sizeof u->description);
}

/* ---- the benchmark ladder ---- */

#define ATTR(k) (1u << SYNTH_##k)
/* Bradley-Terry temperatures for a Bayes-optimal accuracy of 0.9 (see
 * docs/populations.md). Gaps of 1 only (one active attribute): sigmoid(1/T)
 * = 0.9, T = 1/ln 9. Gaps 1 and 2 in proportion 4:1 (two active attributes
 * of +-1, uniform answers, ties redrawn): 0.8 sigmoid(1/T) + 0.2
 * sigmoid(2/T) = 0.9. Dense r4: the mean of sigmoid(|dr|/T) over the
 * rung's pairs, by bisection on simulated users. */
#define T_ONE_GAP 0.45512
#define T_TWO_GAPS 0.50286
#define T_DENSE6 0.18467

const SynthPopulation synth_populations[] = {
    { "r1", "sanity: bullets, emoji; 1 active (4 user types); pairs differ only there",
      { .attrs = ATTR(BULLETS) | ATTR(EMOJI), .n_active = 1, .minimal_pairs = 1, .contrastive = 1,
        .temperature = T_ONE_GAP } },
    { "r2", "bullets, emoji, enthusiastic; 1 active (6 user types); not contrastive",
      { .attrs = ATTR(BULLETS) | ATTR(EMOJI) | ATTR(ENTHUSIASTIC), .n_active = 1, .minimal_pairs = 1,
        .temperature = T_ONE_GAP } },
    { "r3", "r2 + formal; 2 active (24 user types): reward gaps 1 or 2",
      { .attrs = ATTR(BULLETS) | ATTR(EMOJI) | ATTR(ENTHUSIASTIC) | ATTR(FORMAL), .n_active = 2,
        .minimal_pairs = 1, .temperature = T_TWO_GAPS } },
    { "r4", "dense: Dirichlet(1) over 6 attributes (all but long); interpolated split",
      { .attrs = SYNTH_ALL_ATTRS & ~ATTR(LONG), .dirichlet_alpha = 1.0, .minimal_pairs = 1,
        .temperature = T_DENSE6,
        .interpolated_pairs = { ATTR(BULLETS) | ATTR(EMOJI), ATTR(ENTHUSIASTIC) | ATTR(FORMAL),
                                ATTR(POSITIVE) | ATTR(TECHNICAL) } } },
};
const int synth_n_populations = COUNT(synth_populations);

const SynthPopulation *synth_population_find(const char *name)
{
    for (int i = 0; name && i < synth_n_populations; i++)
        if (!strcmp(synth_populations[i].name, name)) return &synth_populations[i];
    return NULL;
}

/* Draws that fail the "differs where the user cares, and not a tie" test are
 * redrawn; after this many a pair is forced (never happens in practice:
 * each draw passes with probability >= 1/4). */
#define MAX_ATTR_DRAWS 64

void synth_next_pair(const SynthConfig *cfg, SynthUser *u, SynthPair *p)
{
    unsigned m1 = 0, m2 = 0;
    double r1 = 0, r2 = 0;
    unsigned allowed = allowed_attrs(cfg);
    p->redraws = 0;
    for (;; p->redraws++) {
        m1 = rng_below(&u->rng, 1u << SYNTH_K) & allowed;
        m2 = rng_below(&u->rng, 1u << SYNTH_K) & allowed;
        /* contrastive: the answers differ only where the user cares */
        if (cfg->contrastive) m2 = (m1 & ~u->active_mask) | (m2 & u->active_mask);
        r1 = reward_of_mask(u->w, m1);
        r2 = reward_of_mask(u->w, m2);
        if (((m1 ^ m2) & u->active_mask) && r1 != r2) break;
        if (p->redraws + 1 == MAX_ATTR_DRAWS) {
            m2 = m1 ^ (1u << strongest_attr(u->w));
            r2 = reward_of_mask(u->w, m2);
            break;
        }
    }
    char first[SYNTH_MAX_RESPONSE], second[SYNTH_MAX_RESPONSE];
    p->prompt_len = synth_render_prompt(u->flavor, &u->rng, p->prompt);
    SynthWording w1, w2;
    synth_draw_wording(&u->rng, &w1);
    if (cfg->minimal_pairs)
        w2 = w1;
    else
        synth_draw_wording(&u->rng, &w2);
    size_t n1 = synth_render(u->flavor, m1, &w1, first), n2 = synth_render(u->flavor, m2, &w2, second);

    double p1 = synth_bt_prob(r1, r2, cfg->temperature);
    int first_chosen = rng_uniform(&u->rng) < p1;
    memcpy(p->chosen, first_chosen ? first : second, (first_chosen ? n1 : n2) + 1);
    memcpy(p->rejected, first_chosen ? second : first, (first_chosen ? n2 : n1) + 1);
    p->chosen_len = first_chosen ? n1 : n2;
    p->rejected_len = first_chosen ? n2 : n1;
    p->chosen_mask = first_chosen ? m1 : m2;
    p->rejected_mask = first_chosen ? m2 : m1;
    p->chosen_reward = first_chosen ? r1 : r2;
    p->rejected_reward = first_chosen ? r2 : r1;
    p->p_chosen = first_chosen ? p1 : 1 - p1;
}

/* ---- descriptions ---- */

/* Length, sentiment and register have two named poles ("short"/"long") and
 * describe the answers; the markers are liked or disliked. */
static int is_bipolar(int k) { return k == SYNTH_LONG || k == SYNTH_POSITIVE || k == SYNTH_FORMAL; }

const char *synth_attr_phrase(int k, int positive_weight)
{
    switch (k) {
    case SYNTH_LONG: return positive_weight ? "long" : "short";
    case SYNTH_POSITIVE: return positive_weight ? "positive" : "negative";
    case SYNTH_FORMAL: return positive_weight ? "formal" : "casual";
    case SYNTH_ENTHUSIASTIC: return "exclamation marks";
    case SYNTH_TECHNICAL: return "technical terms";
    case SYNTH_BULLETS: return "bullet lists";
    case SYNTH_EMOJI: return "emoji";
    default: return "";
    }
}

/* "a", "a and b", "a, b and c" */
static void put_and_list(Buf *b, const char *const *items, int n)
{
    for (int i = 0; i < n; i++) {
        if (i) put_str(b, i == n - 1 ? " and " : ", ");
        put_str(b, items[i]);
    }
}

size_t synth_describe(const double w[SYNTH_K], char *out, size_t cap)
{
    /* active attributes, strongest first (ties keep attribute order) */
    int order[SYNTH_K], n = 0;
    for (int k = 0; k < SYNTH_K; k++)
        if (fabs(w[k]) >= SYNTH_ACTIVE_MIN) order[n++] = k;
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && fabs(w[order[j]]) > fabs(w[order[j - 1]]); j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    const char *poles[SYNTH_K], *likes[SYNTH_K], *dislikes[SYNTH_K];
    int n_poles = 0, n_likes = 0, n_dislikes = 0;
    for (int i = 0; i < n; i++) {
        int k = order[i], pos = w[k] > 0;
        const char *phrase = synth_attr_phrase(k, pos);
        if (is_bipolar(k)) poles[n_poles++] = phrase;
        else if (pos) likes[n_likes++] = phrase;
        else dislikes[n_dislikes++] = phrase;
    }
    Buf b = { out, 0, cap };
    if (cap == 0) return 0;
    out[0] = '\0';
    if (n_poles || n_likes) {
        put_str(&b, "prefers: ");
        for (int i = 0; i < n_poles; i++) {
            if (i) put_str(&b, ", ");
            put_str(&b, poles[i]);
        }
        put_str(&b, n_poles ? " answers" : "answers");
        if (n_likes) {
            put_str(&b, " with ");
            put_and_list(&b, likes, n_likes);
        }
    }
    if (n_dislikes) {
        if (b.len) put_str(&b, "; ");
        put_str(&b, "dislikes: ");
        put_and_list(&b, dislikes, n_dislikes);
    }
    if (!b.len) put_str(&b, "no preferences");
    return b.len;
}

/* ---- reading a description back ---- */

typedef struct {
    const char *s;
    size_t n, at;
    int bad; /* an attribute was named twice */
} Cursor;

static int eat(Cursor *c, const char *lit)
{
    size_t l = strlen(lit);
    if (c->n - c->at < l || memcmp(c->s + c->at, lit, l) != 0) return 0;
    c->at += l;
    return 1;
}

/* One phrase of the attributes bipolar (1) or not (0), naming attribute k
 * with sign +1/-1 (a marker's sign is the clause's, `marker_sign`); an
 * attribute named twice marks the text bad. */
static int eat_attr(Cursor *c, int bipolar, int marker_sign, int sign[SYNTH_K])
{
    for (int k = 0; k < SYNTH_K; k++) {
        if (is_bipolar(k) != bipolar) continue;
        for (int pos = 1; pos >= 0; pos--) {
            if ((!bipolar && !pos) || !eat(c, synth_attr_phrase(k, pos))) continue;
            if (sign[k]) c->bad = 1;
            sign[k] = bipolar ? (pos ? 1 : -1) : marker_sign;
            return 1;
        }
    }
    return 0;
}

/* put_and_list's "a", "a and b", "a, b and c" of marker phrases. */
static int eat_marker_list(Cursor *c, int marker_sign, int sign[SYNTH_K])
{
    int comma = 0, and = 0;
    for (;;) {
        if (!eat_attr(c, 0, marker_sign, sign)) return 0;
        if (and) return 1; /* the item after " and " is the last */
        if (eat(c, ", ")) comma = 1;
        else if (eat(c, " and ")) and = 1;
        else return !comma;
    }
}

int synth_parse_description(const char *text, size_t n, int sign[SYNTH_K])
{
    memset(sign, 0, sizeof(int) * SYNTH_K);
    Cursor c = { text, n, 0, 0 };
    int ok;
    if (eat(&c, "no preferences")) ok = 1;
    else {
        int prefers = eat(&c, "prefers: ");
        ok = 1;
        if (prefers) {
            int poles = 0;
            while (eat_attr(&c, 1, 0, sign)) {
                poles++;
                if (!eat(&c, ", ")) break;
            }
            ok = eat(&c, poles ? " answers" : "answers");
            if (ok && eat(&c, " with ")) ok = eat_marker_list(&c, 1, sign);
            else if (!poles) ok = 0; /* "prefers: answers" names nothing */
        }
        if (ok && eat(&c, prefers ? "; dislikes: " : "dislikes: ")) ok = eat_marker_list(&c, -1, sign);
        else if (!prefers) ok = 0;
    }
    if (ok && !c.bad && c.at == n) return 0;
    memset(sign, 0, sizeof(int) * SYNTH_K);
    return -1;
}
