/* synth: synthetic users with known latent rewards (`fspo synth`), and the
 * scorer that reads the same attributes back from any text.
 *
 * A response is rendered from a small grammar and carries SYNTH_K binary
 * attributes. Every attribute has its own surface markers, and a marker
 * appears in generated text iff its attribute is on, so synth_score()
 * recovers the generator's attribute vector exactly on generated text; on
 * any other text (a model's sample) it applies the same rules and returns
 * its best reading. User u has weights w_u; its reward is r_u(y) = w_u . a(y);
 * labels are Bradley-Terry draws from r_u (docs: DESIGN.md "Synthetic users").
 *
 * Everything is a pure function of (seed, user index): user i draws from its
 * own stream rng_seed(seed, i), so a user comes out the same whatever
 * --users is, and the first M pairs of a user are the same whatever
 * --pairs-per-user is. No I/O here: src/cli/synth_cli.c writes the files. */
#ifndef FSPO_SYNTH_H
#define FSPO_SYNTH_H

#include <stddef.h>
#include <stdint.h>

#include "src/rng.h"

/* Bumped whenever synth_score's reading of a text changes; recorded in the
 * truth file so [eval] never scores with rules the data was not made for. */
#define SYNTH_SCORER_VERSION 1

/* The attributes, bit k of an attribute mask. Bipolar ones (length,
 * sentiment, register) are "on" for the first-named pole. */
enum {
    SYNTH_LONG,         /* 3 sentences (on) vs 1 sentence */
    SYNTH_POSITIVE,     /* positive vs negative sentiment words */
    SYNTH_FORMAL,       /* formal vs casual openers and connectives */
    SYNTH_ENTHUSIASTIC, /* sentences end with '!' instead of '.' */
    SYNTH_TECHNICAL,    /* a jargon term instead of a plain noun phrase */
    SYNTH_BULLETS,      /* one "- " line per sentence instead of prose */
    SYNTH_EMOJI,        /* an emoji at the end */
    SYNTH_K
};
#define SYNTH_ALL_ATTRS ((1u << SYNTH_K) - 1)

/* "long", "positive", ...: the names in the truth file's attr_names. */
extern const char *const synth_attr_names[SYNTH_K];

enum { SYNTH_REVIEWS, SYNTH_ELIX, SYNTH_ROLEPLAY, SYNTH_N_FLAVORS, SYNTH_ALL = SYNTH_N_FLAVORS };
/* "reviews", "elix", "roleplay", "all"; NULL out of range. */
const char *synth_flavor_name(int flavor);
/* The inverse, including "all"; -1 for anything else. */
int synth_flavor_parse(const char *name);

/* Weights at least this large (in magnitude) are a user's "active"
 * attributes: the ones the description names and every pair varies. */
#define SYNTH_ACTIVE_MIN 0.2
/* Dense (Dirichlet) users' |w| sum to this (up to rounding each weight to
 * a multiple of 1e-6, so the truth file's text is exact), the total of a
 * default sparse user (2 active attributes of weight +-1), so --noise
 * means the same for both kinds. */
#define SYNTH_DENSE_TOTAL 2.0

/* Buffer sizes that hold any rendered text with room to spare (the
 * longest possible response is about 190 bytes; tests check the bound). */
#define SYNTH_MAX_PROMPT 128
#define SYNTH_MAX_RESPONSE 320
#define SYNTH_MAX_DESCRIPTION 256

/* Room for held-out attribute pairs of the interpolated split. */
#define SYNTH_MAX_INTERPOLATED 4

typedef struct {
    uint64_t seed;
    int flavor;             /* SYNTH_REVIEWS..SYNTH_ROLEPLAY, or SYNTH_ALL: user i gets flavour i % 3 */
    int n_active;           /* sparse users: this many attributes (1..SYNTH_K), weights +-1; unused when dense */
    double dirichlet_alpha; /* > 0: dense users, |w| = SYNTH_DENSE_TOTAL * Dirichlet(alpha), random signs */
    double temperature;     /* Bradley-Terry temperature T of the labels; 0 = always the higher reward */
    int minimal_pairs;      /* both answers of a pair share their wording and differ only in attributes */
    unsigned attrs;         /* attributes that vary (a mask); the others are always off; 0 = all */
    int contrastive;        /* both answers of a pair share the attributes the user is indifferent to */
    /* The interpolated split (--population r4): attribute pairs (masks of
     * two bits, 0 = unused slot) held out of training. A user whose two
     * strongest attributes form one of them is "interpolated": a test user
     * whose combination no other user has. All zero = no split. */
    unsigned interpolated_pairs[SYNTH_MAX_INTERPOLATED];
} SynthConfig;

typedef struct {
    int index, flavor;
    double w[SYNTH_K];
    unsigned active_mask; /* bit k set iff |w[k]| >= SYNTH_ACTIVE_MIN */
    unsigned top2_mask;   /* its two strongest attributes (ties: the lower index first) */
    int interpolated;     /* top2_mask is one of cfg->interpolated_pairs */
    char id[24];          /* "u00042" */
    char description[SYNTH_MAX_DESCRIPTION];
    size_t description_len;
    Rng rng; /* the user's own stream, positioned after the weights: pairs come next */
} SynthUser;

typedef struct {
    char prompt[SYNTH_MAX_PROMPT], chosen[SYNTH_MAX_RESPONSE], rejected[SYNTH_MAX_RESPONSE];
    size_t prompt_len, chosen_len, rejected_len;
    unsigned chosen_mask, rejected_mask; /* attribute vectors as bit masks */
    double chosen_reward, rejected_reward;
    double p_chosen;  /* Bradley-Terry P(chosen preferred) = sigmoid((r_c - r_r) / T): the label's odds */
    int redraws;      /* attribute draws rejected before this pair (ties, no active difference) */
} SynthPair;

/* User `index` of the dataset cfg describes: flavour, weights, id and
 * description; u->rng is left ready for synth_next_pair. */
void synth_user_init(const SynthConfig *cfg, int index, SynthUser *u);

/* A named benchmark population (`fspo synth --population r1..r4`): fixed
 * generator options whose label noise puts the Bayes-optimal accuracy
 * (P(label agrees with the higher true reward) over the rung's pairs) at
 * about 0.9. docs/populations.md describes the ladder. */
typedef struct {
    const char *name;    /* "r1" */
    const char *summary; /* one line for --help */
    SynthConfig cfg;     /* every option but seed and flavor (those stay free) */
} SynthPopulation;

extern const SynthPopulation synth_populations[];
extern const int synth_n_populations;
/* The rung called name; NULL for anything else (NULL included). */
const SynthPopulation *synth_population_find(const char *name);

/* The user's next preference pair. Both answers get independent uniform
 * attribute vectors, redrawn until they differ in at least one active
 * attribute and have different rewards (a tie, or a difference the user
 * does not care about, says nothing about the user); then the label is
 * one Bradley-Terry draw. The label's uniform is drawn even when T = 0, so
 * changing --noise flips labels but never changes which pairs are drawn. */
void synth_next_pair(const SynthConfig *cfg, SynthUser *u, SynthPair *p);

/* The wording of one response: one random draw per grammar slot, fixed in
 * number whatever the attributes, so two responses can share it
 * (minimal pairs) and differ only where an attribute says so. */
enum { SYNTH_N_SLOTS = 10 };
typedef struct { uint32_t slot[SYNTH_N_SLOTS]; } SynthWording;
void synth_draw_wording(Rng *rng, SynthWording *wd);

/* Renders the response with attribute mask `mask` in `flavor` into out
 * (SYNTH_MAX_RESPONSE bytes, NUL-terminated); returns its length (0 for
 * an unknown flavour). [eval]
 * can render the ideal answer for a user: mask = bits where w > 0. */
size_t synth_render(int flavor, unsigned mask, const SynthWording *wd, char *out);
/* A random prompt of the flavour into out (SYNTH_MAX_PROMPT bytes); returns its length. */
size_t synth_render_prompt(int flavor, Rng *rng, char *out);

/* What the scorer counted, for `fspo synth --score` and for debugging a
 * model's samples. */
typedef struct {
    int sentences, exclaimed;   /* sentences, and how many end in '!' */
    int positive, negative;     /* sentiment lexicon hits */
    int formal, casual;         /* register lexicon hits (contractions count as casual) */
    int technical;              /* jargon lexicon hits */
    int bullet_lines, emoji;
} SynthEvidence;

/* The attribute vector a(y) in {0,1}^SYNTH_K of any bytes (NULs, invalid
 * UTF-8 and n = 0 included). One scorer for every flavour: the lexicons are
 * the union of the flavours'. Rules:
 *   long         >= 2 sentences: stretches with a letter, ended by a line
 *                break or a '.', '!', '?' run not followed by a word,
 *                number or lowercase word ("e.g. 3.5" ends nothing)
 *   positive     more positive than negative words
 *   formal       more formal than casual words
 *   enthusiastic at least one sentence, and at least half of them, end in '!'
 *   technical    any jargon term
 *   bullets      any line starting with "- ", "* " or a bullet sign
 *   emoji        any emoji code point */
void synth_score(const char *text, size_t n, double attrs_out[SYNTH_K]);
void synth_score_evidence(const char *text, size_t n, SynthEvidence *ev, double attrs_out[SYNTH_K]);

/* r_u(y) = w . a. */
double synth_reward(const double w[SYNTH_K], const double attrs[SYNTH_K]);
/* Bradley-Terry P(first preferred) = sigmoid((r1 - r2) / T); T = 0 gives 1, 0 or 1/2 on a tie. */
double synth_bt_prob(double r1, double r2, double temperature);

void synth_mask_to_attrs(unsigned mask, double attrs[SYNTH_K]);
unsigned synth_attrs_to_mask(const double attrs[SYNTH_K]);

/* The user's description in words from its weights, strongest first:
 * "prefers: short, formal answers with emoji; dislikes: exclamation marks".
 * Names exactly the active attributes. Writes at most cap-1 bytes plus a
 * NUL; returns the length written. */
size_t synth_describe(const double w[SYNTH_K], char *out, size_t cap);
/* The word(s) a description uses for attribute k with the sign of w:
 * "long"/"short", "positive"/"negative", "formal"/"casual"; the markers
 * ("exclamation marks", "technical terms", "bullet lists", "emoji") are
 * the same for both signs and go under "prefers" or "dislikes". */
const char *synth_attr_phrase(int k, int positive_weight);

/* The inverse of synth_describe: the attributes a description names and
 * their signs, sign[k] = +1 (w_k > 0), -1 (w_k < 0) or 0 (not named).
 * The attributes may come in any order (synth_describe's order only says
 * which is stronger). Returns 0 if the text is exactly a description
 * synth_describe could write, else -1 with every sign 0 (a model's
 * malformed description names nothing). */
int synth_parse_description(const char *text, size_t n, int sign[SYNTH_K]);

#endif
