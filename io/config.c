/* config: the YAML run configuration.
 *
 * One static table, `schema`, says everything about every key: where it
 * lives in Config, its type, default, range and help. Loading, --set
 * overrides, the resolved YAML and docs/config.md are all driven by it, so
 * they cannot disagree. Parsing walks libyaml's event stream (not its
 * document tree) because events carry the marks we need for file:line:col
 * and let us stop at the first error; the config's shape is fixed (mapping
 * of sections, each a mapping of keys, values scalar or a list of scalars),
 * so the walk is three flat loops and never recurses. */
#include "io/config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "src/duration.h"
#include "src/model.h"
#include "src/pack.h"
#include "src/sampler.h"
#include "src/tokenizer.h"
#include "src/util.h"

/* ---------------------------------------------------------------------- */
/* the schema                                                              */

typedef enum { T_INT, T_FLOAT, T_BOOL, T_STR, T_ENUM, T_INT_LIST, T_STR_LIST, T_DURATION } Type;

enum { OPEN_LO = 1, OPEN_HI = 2 }; /* float bounds excluded from the range */

typedef struct {
    const char *section, *key; /* key as written in YAML */
    Type type;
    size_t offset, size;       /* of the Config field */
    const char *def;           /* default, as YAML text */
    double lo, hi;             /* int, float, duration: value range; int list: each entry's range;
                                  string: minimum length in bytes (lo) */
    int open;                  /* float: OPEN_LO | OPEN_HI */
    const char *const *names;  /* enum: its names, NULL-terminated; the field, a C enum of the
                                  domain header that owns the table, holds the index */
    const char *help;
} Key;

#define NO_MAX INFINITY /* ints: up to what the field holds */
#define FIELD(f) offsetof(Config, f), sizeof(((Config *)0)->f)
#define INT(s, k, def, lo, hi, help) { #s, #k, T_INT, FIELD(s.k), def, lo, hi, 0, NULL, help }
#define FLOAT(s, k, def, lo, hi, open, help) { #s, #k, T_FLOAT, FIELD(s.k), def, lo, hi, open, NULL, help }
#define BOOL(s, k, def, help) { #s, #k, T_BOOL, FIELD(s.k), def, 0, 1, 0, NULL, help }
#define STR(s, k, def, minlen, help) { #s, #k, T_STR, FIELD(s.k), def, minlen, 0, 0, NULL, help }
#define ENUM(s, k, def, names, help) { #s, #k, T_ENUM, FIELD(s.k), def, 0, 0, 0, names, help }
#define INT_LIST(s, k, def, lo, hi, help) { #s, #k, T_INT_LIST, FIELD(s.k), def, lo, hi, 0, NULL, help }
#define STR_LIST(s, k, def, help) { #s, #k, T_STR_LIST, FIELD(s.k), def, 0, 0, 0, NULL, help }
#define DURATION(s, k, name, def, hi, help) { #s, name, T_DURATION, FIELD(s.k), def, 0, hi, 0, NULL, help }

#define MAX_DURATION (366.0 * 86400) /* a year: longer is a typo */

static const Key schema[] = {
    INT(model, vocab, "264", TOKENIZER_VOCAB, 1 << 24,
        "vocabulary size: at least the ids of data.path's tokenizer (264 for the byte tokenizer: 256 bytes + 8 "
        "structure tokens; fspo prep prints a BPE's), checked by train; more rows (an imported model's) are never "
        "targets"),
    INT(model, d_model, "256", 1, 65536, "model width C: a multiple of n_heads, with an even head size C/n_heads"),
    INT(model, n_layers, "4", 1, 4096, "transformer blocks"),
    INT(model, n_heads, "4", 1, 65536, "attention heads"),
    INT(model, ffn_hidden, "0", 0, 1 << 20, "SwiGLU hidden width; 0 = 64*ceil(8*d_model/3/64)"),
    INT(model, max_seq, "1024", 1, 1 << 20, "tokens per packed row: a meta-example's context, prompts and answers"),
    INT(model, n_kv_heads, "0", 0, 65536,
        "key/value heads (grouped-query attention; must divide n_heads); 0 = n_heads. Hugging Face num_key_value_heads"),
    { "model", "tie_embeddings", T_BOOL, FIELD(tie_embeddings), "true", 0, 1, 0, NULL,
      "the output head is the token embedding (tok_emb); false = a separate lm_head. Hugging Face tie_word_embeddings" },
    FLOAT(model, rope_theta, "10000", 0, 1e30, OPEN_LO | OPEN_HI, "RoPE base (freq_i = rope_theta^(-2i/head size))"),
    FLOAT(model, norm_eps, "1e-5", 0, 1, OPEN_LO | OPEN_HI, "RMSNorm epsilon. Hugging Face rms_norm_eps"),
    { "model", "precision", T_ENUM, FIELD(precision), "fp32", 0, 0, 0, PRECISION_CHOICE_NAMES,
      "matmul operands: bf16 rounds them (fp32 accumulation; weights, optimizer state, reductions and checkpoints stay "
      "fp32; needs AMX-BF16 or AVX512-BF16); auto = bf16 where the CPU has those units, else fp32. Training only: "
      "eval and sample run fp32" },
    { "model", "attention", T_ENUM, FIELD(attention), "full", 0, 0, 0, ATTENTION_NAMES,
      "what attention keeps for the backward: full stores every layer's [rows, heads, T, T] probabilities; flash "
      "stores only each query's log-sum-exp (online softmax over 128 x 128 tiles) and recomputes the probabilities in "
      "the backward: the same results to fp32 rounding, memory linear in T, one more QK^T per layer (docs/model.md, "
      "\"Attention memory\"). flash needs model.precision fp32" },
    { "model", "recompute", T_BOOL, FIELD(recompute), "false", 0, 1, 0, NULL,
      "activation checkpointing per block: keep only each block's input and one block's activations, and run each "
      "block's forward again right before its backward: the same gradients bit for bit, activation memory of one "
      "layer instead of n_layers, about a third more compute per step (docs/model.md, \"Recomputing blocks\")" },

    STR(data, path, "", 0, "prepared dataset (.h5) written by `fspo prep`"),
    INT(data, n_fewshot, "4", 0, 256, "N: the user's preference pairs shown in context"),
    INT(data, n_fewshot_min, "-1", -1, 256,
        "-1: always N = n_fewshot; else N is drawn per meta-example from [n_fewshot_min, n_fewshot]"),
    INT(data, n_queries, "4", 1, 256, "Q: query pairs per meta-example that carry the loss"),
    INT(data, fixed_examples, "0", 0, 1e9,
        "> 0: cycle through only meta-examples 0..K-1 (overfitting checks); 0 = the whole dataset"),
    ENUM(data, user_desc, "none", USER_DESC_NAMES,
         "cot: the context ends with the user's description from the dataset (USER_DESC desc EOS, after the pairs); "
         "the SFT stage learns to write it (NLL on its tokens), the pref stage conditions on it; users without one "
         "get no description segment"),

    STR(train, run_dir, "runs/fspo", 1, "directory of checkpoints (`ckpt_<step>.h5`), `metrics.jsonl` and Slurm logs"),
    ENUM(train, stage, "sft", STAGE_NAMES,
         "sft: next-token loss on chosen answers after the context; pref: preference loss against loss.ref_ckpt"),
    INT(train, max_steps, "1000", 1, 1e12, "optimizer steps in total; a resumed run continues up to this step"),
    DURATION(train, max_time_s, "max_time", "0", MAX_DURATION,
             "wall-clock limit, 0 = none: seconds (3600) or \"90s\", \"30m\", \"2h\", \"1h30m\", \"HH:MM:SS\""),
    INT(train, batch_size, "8", 1, 1 << 20, "meta-examples per optimizer step, over all ranks"),
    INT(train, micro_batch, "0", 0, 1 << 20,
        "meta-examples per forward/backward on one rank (gradient accumulation); 0 = the rank's whole share. A "
        "micro-batch pads its rows to its longest: 1 pads none where lengths vary (configs/demo.yaml)"),
    INT(train, seed, "1234", 0, NO_MAX, "seeds the initialization and the sampler (meta-example = f(seed, index))"),
    STR(train, resume, "auto", 1,
        "auto: newest verified checkpoint of run_dir's run, if any; none: start fresh (refused if run_dir holds a "
        "run); else a checkpoint path"),
    STR(train, init_from, "", 0, "weights-only start from this checkpoint or Hugging Face Llama directory (docs/interop.md); empty = random initialization"),
    INT(train, log_every, "10", 1, 1e9, "steps between metrics lines"),
    BOOL(train, sft_include_rejected, "false", "the SFT stage also trains on dispreferred answers (FSPO's option)"),
    BOOL(train, sft_context, "false",
         "the SFT stage also trains on the few-shot pairs' chosen answers, each after the pairs before it"),
    INT(train, max_bad_steps, "5", 1, 1e6, "abort after this many non-finite steps in a row"),

    ENUM(loss, type, "dpo", LOSS_TYPE_NAMES, "preference loss of the pref stage"),
    FLOAT(loss, beta, "0.1", 0, 1000, OPEN_LO, "inverse temperature of the implicit reward"),
    FLOAT(loss, label_smoothing, "0", 0, 0.5, OPEN_HI, "cdpo: assumed probability that a label is flipped"),
    FLOAT(loss, simpo_gamma, "0.5", 0, 1000, 0, "simpo: target reward margin"),
    FLOAT(loss, sft_weight, "0", 0, 1000, 0, "weight of an NLL term on chosen answers added to the preference loss"),
    FLOAT(loss, desc_weight, "1", 0, 1000, 0,
          "data.user_desc cot: the description's weight relative to an answer's; SFT: each description token's "
          "weight in the token mean; pref: a factor on the description term (sft_weight x token-mean NLL per pair)"),
    STR(loss, ref_ckpt, "", 0, "frozen reference (SFT) checkpoint of the pref stage, or a Hugging Face Llama directory"),
    BOOL(loss, ref_cache, "true",
         "keep the reference's answer log-probs of each meta-example and skip its forward when the meta-example comes "
         "again (only data.fixed_examples repeats them: a run draws new ones every step); the same results bit for bit"),

    ENUM(optim, type, "adamw", OPTIM_KIND_NAMES, "optimizer"),
    FLOAT(optim, lr, "3e-4", 0, 10, OPEN_LO, "peak learning rate, reached after warmup"),
    FLOAT(optim, min_lr, "3e-5", 0, 10, 0, "learning rate at the end of a cosine or linear schedule"),
    ENUM(optim, schedule, "cosine", SCHEDULE_NAMES, "decay from lr to min_lr after warmup"),
    INT(optim, warmup_steps, "100", 0, 1e12, "steps of linear warmup up to lr"),
    INT(optim, decay_steps, "0", 0, 1e12,
        "schedule length; 0 = train.max_steps (set it to stop early and later resume on the same schedule)"),
    FLOAT(optim, beta1, "0.9", 0, 1, OPEN_HI, "AdamW first-moment decay"),
    FLOAT(optim, beta2, "0.95", 0, 1, OPEN_HI, "AdamW second-moment decay"),
    FLOAT(optim, eps, "1e-8", 0, 1, OPEN_LO, "denominator epsilon (AdamW and RMSprop)"),
    FLOAT(optim, alpha, "0.99", 0, 1, OPEN_HI, "RMSprop smoothing constant"),
    FLOAT(optim, weight_decay, "0.1", 0, 10, 0, "AdamW: decoupled; RMSprop: L2 (as torch); norm gains never decay"),
    FLOAT(optim, grad_clip, "1.0", 0, 1e6, 0, "clip the global gradient norm to this; 0 = no clipping"),

    INT(mpi, threads_per_rank, "0", 0, 1024,
        "threads per rank (BLAS products and fspo's own loops); 0 = SLURM_CPUS_PER_TASK, else cores / local "
        "ranks, at most the CPUs the rank is bound to"),
    FLOAT(mpi, bucket_mb, "4", 0, 4096, OPEN_LO, "gradient allreduce bucket size in MiB"),
    INT(mpi, checksum_every, "100", 0, 1e9, "steps between parameter checksum comparisons across ranks (also before every checkpoint); 0 = never"),
    BOOL(mpi, shard_optimizer, "false", "ZeRO-1: each rank keeps the optimizer state of its own slice of the parameters; gradients are reduce-scattered and the updated slices all-gathered (same results; checkpoints as without it, resumable at any world size)"),

    INT(checkpoint, every, "200", 1, 1e12, "steps between checkpoints"),
    INT(checkpoint, keep, "3", 1, 1e6, "newest verified checkpoints kept in run_dir"),

    INT_LIST(eval, n_fewshot, "[0, 1, 2, 4, 8]", 0, 256, "few-shot pair counts N to evaluate at"),
    ENUM(eval, split, "validation", EVAL_SPLIT_NAMES,
         "users evaluated: validation to choose settings on, test once per finished design (`fspo eval --split`)"),
    INT(eval, max_users, "0", 0, 1e9, "users of eval.split evaluated; 0 = all"),
    INT(eval, bootstrap, "1000", 0, 1e7, "bootstrap resamples for the 95% confidence intervals; 0 = none"),
    INT(eval, max_new_tokens, "160", 1, 1 << 20, "generation length limit"),
    FLOAT(eval, temperature, "0.7", 0, 100, 0, "sampling temperature; 0 = greedy"),
    FLOAT(eval, top_p, "0.9", 0, 1, OPEN_LO, "nucleus sampling mass"),
    STR(eval, sft_ckpt, "", 0, "SFT checkpoint trained with context (default loss.ref_ckpt), shown the context: the win rate's head-to-head baseline and the sft_plain accuracy column"),
    STR(eval, pooled_ckpt, "", 0, "checkpoint trained without user context: the no-personalization baseline"),
    STR(eval, anchor_ckpt, "", 0,
        "non-personalizing model (e.g. SFT without context), shown no context: every method's win rate is measured "
        "against it, the oracle's is the ceiling; empty = no anchor rows"),
    ENUM(eval, user_desc, "none", EVAL_DESC_NAMES,
         "description in the context: none; oracle: the user's true one from the dataset (upper bound); generated: "
         "the policy writes it (greedy) after the N pairs, then answers with it; reports description accuracy"),

    STR(slurm, job_name, "fspo", 1, "--job-name"),
    INT(slurm, nodes, "1", 1, 100000, "--nodes"),
    INT(slurm, ntasks_per_node, "2", 1, 4096, "--ntasks-per-node: MPI ranks per node"),
    INT(slurm, cpus_per_task, "1", 1, 4096, "--cpus-per-task: cores per rank (its OpenBLAS threads)"),
    STR(slurm, mem, "", 0, "--mem, e.g. 64G (0 = all of a node's memory); empty = the partition's default"),
    STR(slurm, time, "01:00:00", 1, "--time: the job's limit in Slurm's format (MM, HH:MM:SS, D-HH:MM:SS)"),
    STR(slurm, partition, "", 0, "--partition; empty = the cluster's default"),
    STR(slurm, account, "", 0, "--account; empty = your default"),
    STR(slurm, qos, "", 0, "--qos; empty = none"),
    STR(slurm, constraint, "", 0, "--constraint (node features); empty = none"),
    STR_LIST(slurm, extra_sbatch, "[]", "extra #SBATCH options, one per entry, e.g. \"--exclusive\""),
    STR_LIST(slurm, setup, "[]", "shell lines run before the job step (module load ..., export ...)"),
    INT(slurm, signal_lead_s, "120", 0, 65535,
        "seconds before the time limit at which Slurm sends USR1 so the run checkpoints"),
    BOOL(slurm, requeue, "true", "requeue the job after a signal-triggered checkpoint"),
    INT(slurm, failure_requeues, "2", 0, 1000,
        "times a job requeues itself after its step was ended by a signal (a rank or node lost, killed): the next "
        "run resumes from the newest verified checkpoint; 0 = such a step ends the job"),
    INT(slurm, wait_s, "60", 0, 86400,
        "srun --wait: seconds the step lives on once its first rank has ended, then srun kills the rest (the other "
        "ranks of a lost rank wait in a collective for ever); 0 = no limit"),
    ENUM(slurm, launcher, "srun", LAUNCHER_NAMES, "how the job step starts the ranks"),
};

#define N_KEYS (sizeof schema / sizeof schema[0])

static const struct {
    const char *name, *help;
} sections[] = {
    { "model", "Shape of the transformer (docs/model.md)." },
    { "data", "The prepared dataset and the shape of one meta-example." },
    { "train", "The run: where it writes, which stage, how long, how it resumes." },
    { "loss", "The preference loss of the pref stage." },
    { "optim", "Optimizer and learning-rate schedule." },
    { "mpi", "Data-parallel execution." },
    { "checkpoint", "How often checkpoints are written and how many are kept." },
    { "eval", "Evaluation on validation or test users (`fspo eval`) and generation." },
    { "slurm", "The batch job `fspo slurm submit` renders." },
};

#define N_SECTIONS (sizeof sections / sizeof sections[0])

/* Names other tools use, so "learning_rate" gets pointed at optim.lr. */
static const struct {
    const char *name, *section, *key;
} aliases[] = {
    { "learning_rate", "optim", "lr" },     { "warmup", "optim", "warmup_steps" },
    { "max_grad_norm", "optim", "grad_clip" }, { "n_embd", "model", "d_model" },
    { "block_size", "model", "max_seq" },   { "vocab_size", "model", "vocab" },
    { "steps", "train", "max_steps" },
};

#define MAX_FILE_BYTES (1 << 20) /* a config is a page of text; more is a wrong file */

/* ---------------------------------------------------------------------- */
/* small helpers                                                           */

static int streq_n(const char *s, size_t n, const char *lit) { return strlen(lit) == n && !memcmp(s, lit, n); }

static void *field_ptr(Config *c, const Key *k) { return (char *)c + k->offset; }
static const void *field_cptr(const Config *c, const Key *k) { return (const char *)c + k->offset; }

static int find_section(const char *s, size_t n)
{
    for (size_t i = 0; i < N_SECTIONS; i++)
        if (streq_n(s, n, sections[i].name)) return (int)i;
    return -1;
}

static int find_key(const char *section, const char *s, size_t n)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (!strcmp(schema[i].section, section) && streq_n(s, n, schema[i].key)) return (int)i;
    return -1;
}

/* User text quoted in a message: control bytes escaped, long text cut, so
 * an error line stays one readable line whatever the input was. */
static const char *shown(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0, limit = n > 60 ? 57 : n;
    for (size_t i = 0; i < limit && o + 5 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f) o += (size_t)snprintf(out + o, cap - o, "\\x%02x", ch);
        else out[o++] = (char)ch;
    }
    if (limit < n && o + 4 < cap) o += (size_t)snprintf(out + o, cap - o, "...");
    out[o] = '\0';
    return out;
}

/* Optimal string alignment distance (edits incl. swapping neighbours),
 * for "did you mean". Names longer than 63 bytes are never close. */
static int edit_distance(const char *a, size_t na, const char *b)
{
    size_t nb = strlen(b);
    if (na > 63 || nb > 63) return 99;
    int d[64][64];
    for (size_t i = 0; i <= na; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= nb; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= na; i++)
        for (size_t j = 1; j <= nb; j++) {
            int cost = a[i - 1] != b[j - 1];
            int best = d[i - 1][j - 1] + cost;
            if (d[i - 1][j] + 1 < best) best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[na][nb];
}

/* How many edits still look like a typo rather than another word. */
static int typo_budget(size_t n) { return n <= 4 ? 1 : n <= 8 ? 2 : 3; }

/* ---------------------------------------------------------------------- */
/* UTF-8                                                                   */

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if invalid
 * (overlong forms, surrogates and code points past U+10FFFF included). */
static size_t utf8_seq(const unsigned char *s, size_t n, unsigned *cp)
{
    unsigned c = s[0];
    size_t len;
    unsigned v, min;
    if (c < 0x80) { *cp = c; return 1; }
    if (c >= 0xc2 && c <= 0xdf) len = 2, v = c & 0x1f, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef) len = 3, v = c & 0x0f, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4) len = 4, v = c & 0x07, min = 0x10000;
    else return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        v = (v << 6) | (s[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return 0;
    *cp = v;
    return len;
}

/* ---------------------------------------------------------------------- */
/* the loader                                                              */

typedef struct {
    Config *cfg;
    const char *path;       /* the config file, for "FILE:LINE:COL: " */
    const char *set_arg;    /* the --set being applied: errors say "--set ARG: " instead */
    const unsigned char *text; /* the file's bytes, to see what libyaml points at */
    size_t text_len;
    yaml_parser_t parser;
    int file_line[N_KEYS], file_col[N_KEYS]; /* where the file set each key, 1-based; 0 = it did not */
    int set_index[N_KEYS];                   /* 1 + index of the last --set of each key; 0 = none */
    const char *const *sets;
    char *err;
    size_t errlen;
    int for_train;          /* config_load_train: also what only training needs */
} Loader;

/* The one error formatter: "FILE:LINE:COL: msg", or "--set ARG: msg" while
 * applying an override, or "FILE: msg" when line is 0. Returns -1. */
static int fail_at(Loader *L, size_t line, size_t col, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail_at(Loader *L, size_t line, size_t col, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (L->set_arg) snprintf(L->err, L->errlen, "--set %s: %s", L->set_arg, msg);
    else if (!L->path) snprintf(L->err, L->errlen, "config: %s", msg);
    else if (line == 0) snprintf(L->err, L->errlen, "%s: %s", L->path, msg);
    else snprintf(L->err, L->errlen, "%s:%zu:%zu: %s", L->path, line, col, msg);
    return -1;
}

#define fail(L, mark, ...) fail_at(L, (mark).line + 1, (mark).column + 1, __VA_ARGS__)

/* 1-based line and column (in characters, as libyaml counts) of a byte
 * offset into the file. */
static void offset_position(const Loader *L, size_t off, size_t *line, size_t *col)
{
    *line = 1, *col = 1;
    for (size_t i = 0; i < off && i < L->text_len; i++) {
        unsigned char ch = L->text[i];
        if (ch == '\n' || (ch == '\r' && (i + 1 >= L->text_len || L->text[i + 1] != '\n'))) (*line)++, *col = 1;
        else if ((ch & 0xc0) != 0x80 && ch != '\r') (*col)++;
    }
}

/* Byte offset of a libyaml mark (0-based line and character column), or
 * text_len if it is past the end. libyaml does not count a BOM. */
static size_t mark_offset(const Loader *L, yaml_mark_t m)
{
    size_t i = 0, line = 0, col = 0;
    if (L->text_len >= 3 && !memcmp(L->text, "\xef\xbb\xbf", 3)) i = 3;
    for (; i < L->text_len; i++) {
        if (line == m.line && col == m.column) return i;
        unsigned char ch = L->text[i];
        if (ch == '\n' || (ch == '\r' && (i + 1 >= L->text_len || L->text[i + 1] != '\n'))) line++, col = 0;
        else if ((ch & 0xc0) != 0x80 && ch != '\r') col++;
    }
    return L->text_len;
}

/* Whether the indentation of the line holding byte `off` has a tab. */
static int leading_tab(const Loader *L, size_t off)
{
    size_t start = off < L->text_len ? off : L->text_len;
    while (start > 0 && L->text[start - 1] != '\n' && L->text[start - 1] != '\r') start--;
    for (size_t i = start; i < L->text_len && (L->text[i] == ' ' || L->text[i] == '\t'); i++)
        if (L->text[i] == '\t') return 1;
    return 0;
}

/* libyaml's reader would complain about bad bytes too, but only at the
 * chunk it happens to read, before earlier structural errors; checking
 * the whole text first gives the exact place and a plain message. */
static int check_text(Loader *L)
{
    size_t line, col;
    for (size_t i = 0; i < L->text_len;) {
        unsigned cp;
        size_t len = utf8_seq(L->text + i, L->text_len - i, &cp);
        if (len == 0) {
            offset_position(L, i, &line, &col);
            return fail_at(L, line, col, "invalid UTF-8 (byte 0x%02x): a config must be UTF-8 text", L->text[i]);
        }
        if ((cp < 0x20 && cp != '\t' && cp != '\n' && cp != '\r') || cp == 0x7f) {
            offset_position(L, i, &line, &col);
            return fail_at(L, line, col, "control character 0x%02x is not allowed in YAML", cp);
        }
        i += len;
    }
    return 0;
}

/* Next event; on a parse error, the message says what libyaml found and
 * where, in words a user can act on. */
static int next_event(Loader *L, yaml_event_t *ev)
{
    if (yaml_parser_parse(&L->parser, ev)) return 0;
    yaml_parser_t *p = &L->parser;
    const char *problem = p->problem ? p->problem : "unknown problem";
    if (p->error == YAML_MEMORY_ERROR) return fail_at(L, 0, 0, "out of memory while parsing");
    if (p->error == YAML_READER_ERROR) {
        size_t line = 0, col = 0;
        if (!L->set_arg) offset_position(L, p->problem_offset, &line, &col);
        return fail_at(L, line, col, "%s (character 0x%02x)", problem, (unsigned)p->problem_value);
    }
    yaml_mark_t m = p->problem_mark;
    if (!L->set_arg) {
        size_t off = mark_offset(L, m);
        if ((off < L->text_len && L->text[off] == '\t') || strstr(problem, "tab") || leading_tab(L, off))
            return fail(L, m, "tab character: YAML indentation must use spaces, not tabs");
    } else if (strchr(L->set_arg, '\t'))
        return fail(L, m, "tab character in the value");
    const char *hint = "";
    if (strstr(problem, "expected key") || strstr(problem, "mapping values are not allowed"))
        hint = "; check the indentation";
    if (p->context && !L->set_arg)
        return fail(L, m, "syntax error: %s (%s that starts at line %zu, column %zu)%s", problem, p->context,
                    p->context_mark.line + 1, p->context_mark.column + 1, hint);
    return fail(L, m, "syntax error: %s%s", problem, hint);
}

static const char *node_kind(const yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_SEQUENCE_START_EVENT: return "a list";
    case YAML_MAPPING_START_EVENT: return "a mapping";
    case YAML_ALIAS_EVENT: return "an alias";
    default: return "a scalar";
    }
}

/* Anchors, aliases and tags are YAML features a config never needs; they
 * would only make the file mean something other than what it shows. */
static int check_plain_node(Loader *L, const yaml_event_t *ev)
{
    const yaml_char_t *anchor = NULL, *tag = NULL;
    switch (ev->type) {
    case YAML_ALIAS_EVENT:
        return fail(L, ev->start_mark, "aliases (*%s) are not supported: write the value out",
                    (const char *)ev->data.alias.anchor);
    case YAML_SCALAR_EVENT: anchor = ev->data.scalar.anchor, tag = ev->data.scalar.tag; break;
    case YAML_SEQUENCE_START_EVENT:
        anchor = ev->data.sequence_start.anchor, tag = ev->data.sequence_start.tag;
        break;
    case YAML_MAPPING_START_EVENT: anchor = ev->data.mapping_start.anchor, tag = ev->data.mapping_start.tag; break;
    default: return 0;
    }
    char buf[80];
    if (anchor)
        return fail(L, ev->start_mark, "anchors (&%s) are not supported",
                    shown((const char *)anchor, strlen((const char *)anchor), buf, sizeof buf));
    if (tag)
        return fail(L, ev->start_mark, "tags (%s) are not supported",
                    shown((const char *)tag, strlen((const char *)tag), buf, sizeof buf));
    return 0;
}

/* ---------------------------------------------------------------------- */
/* scalars                                                                 */

typedef struct {
    const char *s;
    size_t n;
    int quoted;       /* written in quotes or as a block scalar: a string to YAML */
    yaml_mark_t mark; /* where the value starts */
} Scalar;

static Scalar scalar_of(const yaml_event_t *ev)
{
    return (Scalar){ (const char *)ev->data.scalar.value, ev->data.scalar.length,
                     ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE, ev->start_mark };
}

static int is_null(const Scalar *v)
{
    return !v->quoted && (v->n == 0 || streq_n(v->s, v->n, "~") || streq_n(v->s, v->n, "null") ||
                          streq_n(v->s, v->n, "Null") || streq_n(v->s, v->n, "NULL"));
}

static const char *type_phrase(const Key *k, char *buf, size_t cap)
{
    switch (k->type) {
    case T_INT: return "an integer";
    case T_FLOAT: return "a number";
    case T_BOOL: return "true or false (or yes/no)";
    case T_STR: return "a string";
    case T_INT_LIST: return "a list of integers like [0, 1, 2]";
    case T_STR_LIST: return "a list of strings";
    case T_DURATION: return "a duration (3600, \"90s\", \"30m\", \"2h\", \"1h30m\" or \"HH:MM:SS\")";
    case T_ENUM: { /* "a, b or c" */
        size_t o = 0;
        buf[0] = '\0';
        for (int i = 0; k->names[i] && o + 8 < cap; i++)
            o += (size_t)snprintf(buf + o, cap - o, "%s%s", i == 0 ? "" : k->names[i + 1] ? ", " : " or ", k->names[i]);
        return buf;
    }
    }
    return "a value";
}

/* What a message says the user wrote: nothing, 'text', or a quoted string
 * where quotes change the meaning (numbers and booleans). */
static const char *got(const Scalar *v, int quotes_matter, char *buf, size_t cap)
{
    char sb[80];
    shown(v->s, v->n, sb, sizeof sb);
    if (is_null(v)) snprintf(buf, cap, "nothing");
    else if (v->quoted && quotes_matter) snprintf(buf, cap, "the string \"%s\" (write it without quotes)", sb);
    else snprintf(buf, cap, "'%s'", sb);
    return buf;
}

static int wrong_type(Loader *L, const Key *k, const Scalar *v)
{
    char tb[160], gb[128];
    int quotes_matter = k->type == T_INT || k->type == T_FLOAT || k->type == T_BOOL;
    return fail(L, v->mark, "%s.%s: expected %s, got %s", k->section, k->key, type_phrase(k, tb, sizeof tb),
                got(v, quotes_matter, gb, sizeof gb));
}

/* Range as people write it: [1, 10], (0, 1000], >= 0. */
static const char *range_text(const Key *k, char *buf, size_t cap)
{
    if (k->type == T_FLOAT)
        snprintf(buf, cap, "%c%.17g, %.17g%c", k->open & OPEN_LO ? '(' : '[', k->lo, k->hi,
                 k->open & OPEN_HI ? ')' : ']');
    else if (isinf(k->hi) && k->size != sizeof(int)) snprintf(buf, cap, ">= %.0f", k->lo);
    else snprintf(buf, cap, "[%.0f, %.0f]", k->lo, isinf(k->hi) ? (double)INT_MAX : k->hi);
    return buf;
}

/* YAML 1.1 integers as PyYAML reads them, minus the octal/hex/sexagesimal
 * forms: [-+]digits with '_' separators. A leading 0 is refused because
 * YAML 1.1 reads 010 as 8. 0 ok, -1 not an integer, -2 overflow. */
static int parse_long(const char *s, size_t n, int allow_sign, long *out)
{
    size_t i = 0;
    int neg = 0;
    if (allow_sign && i < n && (s[i] == '-' || s[i] == '+')) neg = s[i++] == '-';
    if (i >= n || s[i] < '0' || s[i] > '9') return -1;
    if (s[i] == '0' && i + 1 < n) return -1;
    unsigned long v = 0, limit = neg ? (unsigned long)LONG_MAX + 1 : (unsigned long)LONG_MAX;
    int overflow = 0;
    for (; i < n; i++) {
        if (s[i] == '_') continue;
        if (s[i] < '0' || s[i] > '9') return -1;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (limit - d) / 10) overflow = 1;
        else v = v * 10 + d;
    }
    if (overflow) return -2;
    *out = neg ? (v == (unsigned long)LONG_MAX + 1 ? LONG_MIN : -(long)v) : (long)v;
    return 0;
}

static int out_of_range(Loader *L, const Key *k, const Scalar *v, const char *what)
{
    char rb[96], sb[80];
    return fail(L, v->mark, "%s.%s%s = %s is out of range %s", k->section, k->key, what,
                shown(v->s, v->n, sb, sizeof sb), range_text(k, rb, sizeof rb));
}

static int convert_long(Loader *L, const Key *k, const Scalar *v, const char *what, long *out)
{
    if (v->quoted || is_null(v)) return wrong_type(L, k, v);
    int rc = parse_long(v->s, v->n, 1, out);
    if (rc == -1) return wrong_type(L, k, v);
    double hi = k->hi;
    if ((k->size == sizeof(int) || k->type == T_INT_LIST) && !(hi <= INT_MAX)) hi = INT_MAX;
    if (rc == -2 || (double)*out < k->lo || (double)*out > hi) return out_of_range(L, k, v, what);
    return 0;
}

static int convert_duration(Loader *L, const Key *k, const Scalar *v, long *out)
{
    if (is_null(v)) return wrong_type(L, k, v);
    int rc = parse_long(v->s, v->n, 0, out);
    if (rc == -2) return out_of_range(L, k, v, "");
    if (rc == -1 && (v->n > 32 || duration_parse(v->s, v->n, out) != 0))
        return wrong_type(L, k, v);
    if ((double)*out > k->hi) {
        char sb[80];
        return fail(L, v->mark, "%s.%s = %s is out of range: at most %.0f seconds (366 days)", k->section, k->key,
                    shown(v->s, v->n, sb, sizeof sb), k->hi);
    }
    return 0;
}

/* Decimal or scientific notation, as strtod reads it but without hex
 * floats, inf and nan (no range here admits them). */
static int convert_double(Loader *L, const Key *k, const Scalar *v, double *out)
{
    if (v->quoted || is_null(v) || v->n > 64) return wrong_type(L, k, v);
    char buf[72];
    memcpy(buf, v->s, v->n);
    buf[v->n] = '\0';
    size_t i = 0, mant = 0;
    if (buf[i] == '-' || buf[i] == '+') i++;
    for (; buf[i] >= '0' && buf[i] <= '9'; i++) mant++;
    if (buf[i] == '.')
        for (i++; buf[i] >= '0' && buf[i] <= '9'; i++) mant++;
    if (mant && (buf[i] == 'e' || buf[i] == 'E')) {
        size_t e = ++i;
        if (buf[i] == '-' || buf[i] == '+') e = ++i;
        for (; buf[i] >= '0' && buf[i] <= '9'; i++) {}
        if (i == e) mant = 0;
    }
    if (!mant || buf[i] != '\0') return wrong_type(L, k, v);
    errno = 0;
    *out = strtod(buf, NULL);
    int below = k->open & OPEN_LO ? *out <= k->lo : *out < k->lo;
    int above = k->open & OPEN_HI ? *out >= k->hi : *out > k->hi;
    if (!isfinite(*out) || below || above) return out_of_range(L, k, v, "");
    return 0;
}

static int convert_bool(Loader *L, const Key *k, const Scalar *v, int *out)
{
    static const char *const yes[] = { "true", "True", "TRUE", "yes", "Yes", "YES" };
    static const char *const no[] = { "false", "False", "FALSE", "no", "No", "NO" };
    if (!v->quoted)
        for (int i = 0; i < 6; i++) {
            if (streq_n(v->s, v->n, yes[i])) return *out = 1, 0;
            if (streq_n(v->s, v->n, no[i])) return *out = 0, 0;
        }
    return wrong_type(L, k, v);
}

/* Strings are copied with the rest of the field zeroed, so two configs
 * with equal values are equal bytes (memcmp) too. */
static int convert_string(Loader *L, const Key *k, const Scalar *v, const char *what, char *dst, size_t cap)
{
    size_t n = is_null(v) ? 0 : v->n;
    if (memchr(v->s, '\0', n))
        return fail(L, v->mark, "%s.%s%s: a NUL character is not allowed", k->section, k->key, what);
    if (n >= cap)
        return fail(L, v->mark, "%s.%s%s: string of %zu bytes is too long (at most %zu)", k->section, k->key, what, n,
                    cap - 1);
    if ((double)n < k->lo) return fail(L, v->mark, "%s.%s%s: must not be empty", k->section, k->key, what);
    memset(dst, 0, cap);
    memcpy(dst, v->s, n);
    return 0;
}

static int convert_enum(Loader *L, const Key *k, const Scalar *v, int *dst)
{
    for (int i = 0; k->names[i]; i++)
        if (streq_n(v->s, v->n, k->names[i])) {
            *dst = i; /* a C enum: the index in its name table */
            return 0;
        }
    return wrong_type(L, k, v);
}

/* Stores one scalar into a non-list key. */
static int store_scalar(Loader *L, const Key *k, const Scalar *v, Config *c)
{
    void *dst = field_ptr(c, k);
    long lv;
    switch (k->type) {
    case T_INT:
        if (convert_long(L, k, v, "", &lv)) return -1;
        if (k->size == sizeof(int)) *(int *)dst = (int)lv;
        else *(long *)dst = lv;
        return 0;
    case T_DURATION:
        if (convert_duration(L, k, v, &lv)) return -1;
        *(long *)dst = lv;
        return 0;
    case T_FLOAT: return convert_double(L, k, v, (double *)dst);
    case T_BOOL: return convert_bool(L, k, v, (int *)dst);
    case T_STR: return convert_string(L, k, v, "", (char *)dst, k->size);
    case T_ENUM: return convert_enum(L, k, v, dst);
    case T_INT_LIST:
    case T_STR_LIST:
        if (is_null(v)) { /* "key:" with nothing after it: an empty list */
            memset(dst, 0, k->size);
            return 0;
        }
        return wrong_type(L, k, v);
    }
    return -1;
}

/* Reads a value whose first event is `ev` (a sequence pulls its entries
 * from the parser) and stores it. The caller deletes `ev`. */
static int store_value(Loader *L, const Key *k, const yaml_event_t *ev)
{
    char tb[160];
    if (check_plain_node(L, ev)) return -1;
    if (ev->type == YAML_SCALAR_EVENT) {
        Scalar v = scalar_of(ev);
        return store_scalar(L, k, &v, L->cfg);
    }
    if (ev->type != YAML_SEQUENCE_START_EVENT || (k->type != T_INT_LIST && k->type != T_STR_LIST))
        return fail(L, ev->start_mark, "%s.%s: expected %s, got %s", k->section, k->key,
                    type_phrase(k, tb, sizeof tb), node_kind(ev));
    CfgIntList *il = k->type == T_INT_LIST ? field_ptr(L->cfg, k) : NULL;
    CfgStrList *sl = k->type == T_STR_LIST ? field_ptr(L->cfg, k) : NULL;
    memset(field_ptr(L->cfg, k), 0, k->size);
    for (int n = 0;; n++) {
        yaml_event_t e;
        if (next_event(L, &e)) return -1;
        if (e.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&e);
            return 0;
        }
        int rc = check_plain_node(L, &e);
        if (!rc && e.type != YAML_SCALAR_EVENT)
            rc = fail(L, e.start_mark, "%s.%s[%d]: expected %s, got %s", k->section, k->key, n,
                      k->type == T_INT_LIST ? "an integer" : "a string", node_kind(&e));
        if (!rc && n == CFG_LIST)
            rc = fail(L, e.start_mark, "%s.%s: too many entries (at most %d)", k->section, k->key, CFG_LIST);
        if (!rc) {
            Scalar v = scalar_of(&e);
            char what[16];
            snprintf(what, sizeof what, "[%d]", n);
            if (il) {
                char gb[128];
                if (v.quoted || is_null(&v) || parse_long(v.s, v.n, 1, &il->v[n]) == -1)
                    rc = fail(L, v.mark, "%s.%s[%d]: expected an integer, got %s", k->section, k->key, n,
                              got(&v, 1, gb, sizeof gb));
                else
                    rc = convert_long(L, k, &v, what, &il->v[n]);
                il->n = n + 1;
            } else {
                rc = convert_string(L, k, &v, what, sl->v[n], CFG_STR);
                sl->n = n + 1;
            }
        }
        yaml_event_delete(&e);
        if (rc) return -1;
    }
}

/* ---------------------------------------------------------------------- */
/* the file                                                                */

static int unknown_section(Loader *L, const yaml_event_t *ev)
{
    const char *s = (const char *)ev->data.scalar.value;
    size_t n = ev->data.scalar.length;
    char sb[80];
    shown(s, n, sb, sizeof sb);
    int best = -1, best_d = 99;
    for (size_t i = 0; i < N_SECTIONS; i++) {
        int d = edit_distance(s, n, sections[i].name);
        if (d < best_d) best = (int)i, best_d = d;
    }
    if (best >= 0 && best_d <= typo_budget(n))
        return fail(L, ev->start_mark, "unknown section '%s' (did you mean '%s'?)", sb, sections[best].name);
    const char *dot = memchr(s, '.', n);
    if (dot) {
        int sec = find_section(s, (size_t)(dot - s));
        if (sec >= 0 && find_key(sections[sec].name, dot + 1, n - (size_t)(dot - s) - 1) >= 0)
            return fail(L, ev->start_mark, "unknown section '%s' (nest it: '%s:' then '  %.*s: ...' below)", sb,
                        sections[sec].name, (int)(n - (size_t)(dot - s) - 1), dot + 1);
    }
    for (size_t i = 0; i < N_KEYS; i++)
        if (streq_n(s, n, schema[i].key))
            return fail(L, ev->start_mark, "unknown section '%s' ('%s' is a key of section '%s')", sb, sb,
                        schema[i].section);
    return fail(L, ev->start_mark,
                "unknown section '%s' (sections: model, data, train, loss, optim, mpi, checkpoint, eval, slurm)", sb);
}

/* "unknown key" with the likeliest meaning: a typo of a key of this
 * section, a key that lives in another section, or another tool's name. */
static int unknown_key(Loader *L, const char *section, const char *s, size_t n, yaml_mark_t mark)
{
    char sb[80];
    shown(s, n, sb, sizeof sb);
    int best = -1, best_d = 99, budget = typo_budget(n);
    for (size_t i = 0; i < N_KEYS; i++) {
        if (strcmp(schema[i].section, section)) continue;
        int d = edit_distance(s, n, schema[i].key);
        if (d < best_d) best = (int)i, best_d = d;
    }
    /* one slip in this section beats an exact name elsewhere; more does not */
    if (best >= 0 && best_d <= 1)
        return fail(L, mark, "unknown key '%s' in section '%s' (did you mean '%s'?)", sb, section, schema[best].key);
    for (size_t i = 0; i < N_KEYS; i++)
        if (streq_n(s, n, schema[i].key))
            return fail(L, mark, "unknown key '%s' in section '%s' ('%s' belongs in section '%s')", sb, section, sb,
                        schema[i].section);
    if (best >= 0 && best_d <= budget)
        return fail(L, mark, "unknown key '%s' in section '%s' (did you mean '%s'?)", sb, section, schema[best].key);
    for (size_t i = 0; i < sizeof aliases / sizeof *aliases; i++)
        if (edit_distance(s, n, aliases[i].name) <= budget) {
            if (!strcmp(aliases[i].section, section))
                return fail(L, mark, "unknown key '%s' in section '%s' (did you mean '%s'?)", sb, section,
                            aliases[i].key);
            return fail(L, mark, "unknown key '%s' in section '%s' (did you mean '%s.%s'?)", sb, section,
                        aliases[i].section, aliases[i].key);
        }
    best = -1, best_d = 99;
    for (size_t i = 0; i < N_KEYS; i++) {
        int d = edit_distance(s, n, schema[i].key);
        if (d < best_d) best = (int)i, best_d = d;
    }
    if (best >= 0 && best_d <= budget)
        return fail(L, mark, "unknown key '%s' in section '%s' (did you mean '%s.%s'?)", sb, section,
                    schema[best].section, schema[best].key);
    char list[512];
    size_t o = 0;
    list[0] = '\0';
    for (size_t i = 0; i < N_KEYS && o + 2 < sizeof list; i++)
        if (!strcmp(schema[i].section, section))
            o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", o ? ", " : "", schema[i].key);
    return fail(L, mark, "unknown key '%s' in section '%s' (its keys: %s)", sb, section, list);
}

/* The keys of one section, after its MAPPING_START. */
static int load_section_keys(Loader *L, const char *section)
{
    for (;;) {
        yaml_event_t key;
        if (next_event(L, &key)) return -1;
        if (key.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&key);
            return 0;
        }
        int rc = check_plain_node(L, &key);
        int idx = -1;
        if (!rc && key.type != YAML_SCALAR_EVENT)
            rc = fail(L, key.start_mark, "expected a key name in section '%s', got %s", section, node_kind(&key));
        if (!rc) {
            idx = find_key(section, (const char *)key.data.scalar.value, key.data.scalar.length);
            if (idx < 0)
                rc = unknown_key(L, section, (const char *)key.data.scalar.value, key.data.scalar.length,
                                 key.start_mark);
            else if (L->file_line[idx])
                rc = fail(L, key.start_mark, "duplicate key '%s' in section '%s' (first at line %d)",
                          schema[idx].key, section, L->file_line[idx]);
            else {
                L->file_line[idx] = (int)key.start_mark.line + 1;
                L->file_col[idx] = (int)key.start_mark.column + 1;
            }
        }
        yaml_event_delete(&key);
        if (rc) return -1;
        yaml_event_t value;
        if (next_event(L, &value)) return -1;
        rc = store_value(L, &schema[idx], &value);
        yaml_event_delete(&value);
        if (rc) return -1;
    }
}

/* The top-level mapping, after its MAPPING_START. */
static int load_sections(Loader *L)
{
    int first_line[N_SECTIONS] = { 0 };
    for (;;) {
        yaml_event_t key;
        if (next_event(L, &key)) return -1;
        if (key.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&key);
            return 0;
        }
        int rc = check_plain_node(L, &key), sec = -1;
        if (!rc && key.type != YAML_SCALAR_EVENT)
            rc = fail(L, key.start_mark, "expected a section name, got %s", node_kind(&key));
        if (!rc) {
            sec = find_section((const char *)key.data.scalar.value, key.data.scalar.length);
            if (sec < 0) rc = unknown_section(L, &key);
            else if (first_line[sec])
                rc = fail(L, key.start_mark, "duplicate section '%s' (first at line %d)", sections[sec].name,
                          first_line[sec]);
            else
                first_line[sec] = (int)key.start_mark.line + 1;
        }
        yaml_event_delete(&key);
        if (rc) return -1;

        yaml_event_t body;
        if (next_event(L, &body)) return -1;
        rc = check_plain_node(L, &body);
        if (!rc && body.type == YAML_MAPPING_START_EVENT) rc = load_section_keys(L, sections[sec].name);
        else if (!rc && body.type == YAML_SCALAR_EVENT) {
            Scalar v = scalar_of(&body);
            char sb[80];
            if (!is_null(&v)) /* "model:" alone is an empty section */
                rc = fail(L, body.start_mark, "section '%s' must be a mapping of keys (key: value), got '%s'",
                          sections[sec].name, shown(v.s, v.n, sb, sizeof sb));
        } else if (!rc)
            rc = fail(L, body.start_mark, "section '%s' must be a mapping of keys (key: value), got %s",
                      sections[sec].name, node_kind(&body));
        yaml_event_delete(&body);
        if (rc) return -1;
    }
}

static int expect_event(Loader *L, yaml_event_type_t type)
{
    yaml_event_t ev;
    if (next_event(L, &ev)) return -1;
    int rc = 0;
    if (ev.type == YAML_DOCUMENT_START_EVENT && type == YAML_STREAM_END_EVENT && !L->set_arg)
        rc = fail(L, ev.start_mark, "a second YAML document ('---'): a config is one document");
    else if (ev.type != type)
        rc = fail(L, ev.start_mark, "expected the end of the %s, found %s", L->set_arg ? "value" : "document",
                  node_kind(&ev));
    yaml_event_delete(&ev);
    return rc;
}

/* The stream: one document whose root is the mapping of sections. */
static int load_stream(Loader *L)
{
    yaml_event_t ev;
    if (expect_event(L, YAML_STREAM_START_EVENT)) return -1;
    if (next_event(L, &ev)) return -1;
    if (ev.type == YAML_STREAM_END_EVENT) {
        yaml_event_delete(&ev);
        return fail_at(L, 1, 1, "empty config (no sections; see `fspo config doc`)");
    }
    yaml_event_delete(&ev); /* DOCUMENT_START */
    if (next_event(L, &ev)) return -1;
    int rc = check_plain_node(L, &ev);
    if (!rc && ev.type == YAML_MAPPING_START_EVENT) rc = load_sections(L);
    else if (!rc && ev.type == YAML_SCALAR_EVENT && is_null(&(Scalar){ .s = (const char *)ev.data.scalar.value,
                                                                        .n = ev.data.scalar.length }))
        rc = fail_at(L, 1, 1, "empty config (no sections; see `fspo config doc`)");
    else if (!rc)
        rc = fail(L, ev.start_mark, "a config must be a mapping of sections (model:, train:, ...), got %s",
                  node_kind(&ev));
    yaml_event_delete(&ev);
    if (rc) return -1;
    if (expect_event(L, YAML_DOCUMENT_END_EVENT)) return -1;
    return expect_event(L, YAML_STREAM_END_EVENT);
}

static int read_file(Loader *L, unsigned char **out, size_t *len)
{
    FILE *f = fopen(L->path, "rb");
    if (!f) return fail_at(L, 0, 0, "cannot read: %s", strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        return fail_at(L, 0, 0, "cannot read: %s", strerror(EISDIR));
    }
    unsigned char *buf = malloc(MAX_FILE_BYTES + 1);
    if (!buf) {
        fclose(f);
        return fail_at(L, 0, 0, "cannot read: out of memory");
    }
    size_t n = fread(buf, 1, MAX_FILE_BYTES + 1, f);
    int bad = ferror(f), saved = errno;
    fclose(f);
    if (bad) {
        free(buf);
        return fail_at(L, 0, 0, "cannot read: %s", strerror(saved ? saved : EIO));
    }
    if (n > MAX_FILE_BYTES) {
        free(buf);
        return fail_at(L, 0, 0, "too large for a config (more than %d bytes)", MAX_FILE_BYTES);
    }
    *out = buf, *len = n;
    return 0;
}

static int load_file(Loader *L)
{
    unsigned char *buf = NULL;
    size_t len = 0;
    if (read_file(L, &buf, &len)) return -1;
    L->text = buf, L->text_len = len;
    int rc = check_text(L);
    if (!rc) {
        if (!yaml_parser_initialize(&L->parser)) rc = fail_at(L, 0, 0, "out of memory");
        else {
            yaml_parser_set_input_string(&L->parser, buf, len);
            rc = load_stream(L);
            yaml_parser_delete(&L->parser);
        }
    }
    free(buf);
    L->text = NULL, L->text_len = 0;
    return rc;
}

/* ---------------------------------------------------------------------- */
/* --set and defaults                                                      */

/* Parses `text` as a single YAML value (scalar or flow list) for key k. */
static int store_yaml_text(Loader *L, const Key *k, const char *text)
{
    if (!yaml_parser_initialize(&L->parser)) return fail_at(L, 0, 0, "out of memory");
    yaml_parser_set_input_string(&L->parser, (const unsigned char *)text, strlen(text));
    yaml_event_t ev;
    int rc = expect_event(L, YAML_STREAM_START_EVENT);
    if (!rc) rc = next_event(L, &ev);
    if (!rc && ev.type == YAML_STREAM_END_EVENT) { /* nothing but blanks or a comment: no value */
        yaml_event_delete(&ev);
        Scalar v = { "", 0, 0, { 0, 0, 0 } };
        rc = store_scalar(L, k, &v, L->cfg);
    } else if (!rc) {
        yaml_event_delete(&ev); /* DOCUMENT_START */
        rc = next_event(L, &ev);
        if (!rc) {
            rc = store_value(L, k, &ev);
            yaml_event_delete(&ev);
        }
        if (!rc) rc = expect_event(L, YAML_DOCUMENT_END_EVENT);
        if (!rc) rc = expect_event(L, YAML_STREAM_END_EVENT);
    }
    yaml_parser_delete(&L->parser);
    return rc;
}

static int valid_utf8(const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        unsigned cp;
        size_t len = utf8_seq((const unsigned char *)s + i, n - i, &cp);
        if (!len) return 0;
        i += len;
    }
    return 1;
}

/* "section.key=value". A string value is taken as written (a path may
 * hold ": " or " #" that YAML would read otherwise) unless it starts with
 * a quote; every other value is read as YAML, with the file's checks. */
static int apply_set(Loader *L, int index)
{
    const char *arg = L->sets[index];
    L->set_arg = arg;
    const char *eq = strchr(arg, '=');
    if (!eq) return fail_at(L, 0, 0, "expected section.key=value (e.g. train.max_steps=100)");
    const char *dot = memchr(arg, '.', (size_t)(eq - arg));
    if (!dot || dot == arg || dot + 1 == eq)
        return fail_at(L, 0, 0, "expected section.key=value (e.g. train.max_steps=100)");
    int sec = find_section(arg, (size_t)(dot - arg));
    if (sec < 0) {
        yaml_event_t fake = { .type = YAML_SCALAR_EVENT };
        fake.data.scalar.value = (yaml_char_t *)arg;
        fake.data.scalar.length = (size_t)(dot - arg);
        return unknown_section(L, &fake);
    }
    const char *name = dot + 1;
    int idx = find_key(sections[sec].name, name, (size_t)(eq - name));
    if (idx < 0) return unknown_key(L, sections[sec].name, name, (size_t)(eq - name), (yaml_mark_t){ 0, 0, 0 });
    const Key *k = &schema[idx];
    const char *value = eq + 1;
    int rc;
    if (k->type == T_STR && value[0] != '"' && value[0] != '\'') {
        if (!valid_utf8(value)) return fail_at(L, 0, 0, "%s.%s: the value is not valid UTF-8", k->section, k->key);
        Scalar v = { value, strlen(value), 1, { 0, 0, 0 } };
        rc = store_scalar(L, k, &v, L->cfg);
    } else {
        if (!valid_utf8(value)) return fail_at(L, 0, 0, "%s.%s: the value is not valid UTF-8", k->section, k->key);
        rc = store_yaml_text(L, k, value);
    }
    if (!rc) L->set_index[idx] = index + 1;
    L->set_arg = NULL;
    return rc;
}

/* Defaults go through the same conversions as user values, so a default
 * outside its own range cannot slip in (test_config loads them). */
void config_defaults(Config *c)
{
    Loader L;
    char err[512];
    memset(c, 0, sizeof *c); /* padding too: equal configs are equal bytes */
    memset(&L, 0, sizeof L);
    L.cfg = c, L.err = err, L.errlen = sizeof err;
    for (size_t i = 0; i < N_KEYS; i++) {
        const Key *k = &schema[i];
        Scalar v = { k->def, strlen(k->def), 0, { 0, 0, 0 } };
        L.set_arg = k->def;
        int lists = k->type == T_INT_LIST || k->type == T_STR_LIST; /* only lists need the YAML parser */
        if (lists ? store_yaml_text(&L, k, k->def) : store_scalar(&L, k, &v, c)) {
            fprintf(stderr, "fspo: bug: bad schema default for %s.%s: %s\n", schema[i].section, schema[i].key, err);
            abort();
        }
    }
}

OptimConfig config_optim(const Config *c)
{
    return (OptimConfig){ .kind = c->optim.type, .beta1 = (float)c->optim.beta1, .beta2 = (float)c->optim.beta2,
                          .alpha = (float)c->optim.alpha, .eps = (float)c->optim.eps,
                          .weight_decay = (float)c->optim.weight_decay, .max_grad_norm = (float)c->optim.grad_clip };
}

OptimConfig config_optim_default(OptimKind kind)
{
    Config c;
    config_defaults(&c);
    c.optim.type = kind;
    return config_optim(&c);
}

/* ---------------------------------------------------------------------- */
/* checks across keys                                                      */

/* Of two keys that conflict, the one to point at: the later --set, else
 * one the file wrote (a first), else a. */
static int blame(const Loader *L, int a, int b)
{
    if (L->set_index[a] || L->set_index[b]) return L->set_index[b] > L->set_index[a] ? b : a;
    return L->file_line[a] || !L->file_line[b] ? a : b;
}

/* Error at the place that set key `idx`: its --set, its line in the file,
 * or just the file when it kept its default. */
static int fail_key(Loader *L, int idx, const char *msg)
{
    if (idx >= 0 && L->set_index[idx]) {
        L->set_arg = L->sets[L->set_index[idx] - 1];
        fail_at(L, 0, 0, "%s", msg);
        L->set_arg = NULL;
        return -1;
    }
    if (idx >= 0 && L->file_line[idx])
        return fail_at(L, (size_t)L->file_line[idx], (size_t)L->file_col[idx], "%s", msg);
    return fail_at(L, 0, 0, "%s", msg);
}

static int key_index(const char *section, const char *key) { return find_key(section, key, strlen(key)); }

/* Of the model keys a failed model_config_check is about, the one the user
 * most likely just changed: a --set first, else the first from the file. */
static int blamed_model_key(const Loader *L, const char *const *keys)
{
    int from_file = -1, any = -1;
    for (int i = 0; i < 2 && keys[i]; i++) {
        int idx = find_key("model", keys[i], strlen(keys[i]));
        if (idx < 0) continue;
        if (L->set_index[idx]) return idx;
        if (from_file < 0 && L->file_line[idx]) from_file = idx;
        if (any < 0) any = idx;
    }
    return from_file >= 0 ? from_file : any;
}

static int cross_check(Loader *L)
{
    Config *c = L->cfg;
    char msg[512];
    c->model.untied = !c->tie_embeddings;
    ModelConfig m = c->model; /* a copy: ffn_hidden 0 stays "auto" in the config */
    const char *keys[2];
    if (model_config_check(&m, keys, msg, sizeof msg)) return fail_key(L, blamed_model_key(L, keys), msg);
    if (c->attention == ATTENTION_FLASH && c->precision != PRECISION_CHOICE_FP32) {
        snprintf(msg, sizeof msg, "model.attention flash runs fp32 attention only; model.precision is %s: set "
                 "model.precision: fp32 or model.attention: full", PRECISION_CHOICE_NAMES[c->precision]);
        return fail_key(L, blame(L, key_index("model", "attention"), key_index("model", "precision")), msg);
    }
    if (c->data.n_fewshot_min > c->data.n_fewshot) {
        snprintf(msg, sizeof msg, "data.n_fewshot_min = %d is larger than data.n_fewshot = %d",
                 c->data.n_fewshot_min, c->data.n_fewshot);
        return fail_key(L, blame(L, key_index("data", "n_fewshot_min"), key_index("data", "n_fewshot")), msg);
    }
    if (c->optim.schedule != SCHED_CONSTANT && c->optim.min_lr > c->optim.lr) {
        snprintf(msg, sizeof msg, "optim.min_lr = %g is larger than optim.lr = %g (the schedule decays lr to min_lr)",
                 c->optim.min_lr, c->optim.lr);
        return fail_key(L, blame(L, key_index("optim", "min_lr"), key_index("optim", "lr")), msg);
    }
    return 0;
}

/* What only a training run needs of the config (config_load_train). */
static int train_check(Loader *L)
{
    Config *c = L->cfg;
    char msg[512];
    /* the meta-example shape against what the sampler and a row can hold */
    if (c->data.n_fewshot > SAMPLER_MAX_FEWSHOT || c->data.n_queries > SAMPLER_MAX_QUERIES) {
        int few = c->data.n_fewshot > SAMPLER_MAX_FEWSHOT;
        snprintf(msg, sizeof msg, "data.%s = %d is above the sampler's limit of %d", few ? "n_fewshot" : "n_queries",
                 few ? c->data.n_fewshot : c->data.n_queries, few ? SAMPLER_MAX_FEWSHOT : SAMPLER_MAX_QUERIES);
        return fail_key(L, key_index("data", few ? "n_fewshot" : "n_queries"), msg);
    }
    int n_min = c->data.n_fewshot_min >= 0 ? c->data.n_fewshot_min : c->data.n_fewshot;
    int64_t need = pack_len(n_min, c->data.n_queries, 0);
    if (need > c->model.max_seq) {
        snprintf(msg, sizeof msg, "model.max_seq = %d cannot hold a meta-example of %d few-shot and %d query pairs "
                 "(data.n_fewshot%s, data.n_queries): its headers alone take %lld tokens, before any text",
                 c->model.max_seq, n_min, c->data.n_queries, c->data.n_fewshot_min >= 0 ? "_min" : "", (long long)need);
        return fail_key(L, key_index("model", "max_seq"), msg);
    }
    /* memory: one rank with one meta-example per micro-batch is the least any run of this shape needs
     * (fspo train checks its real micro-batch and ranks per node before it creates anything) */
    ModelConfig m = c->model;
    double mem = machine_memory_bytes(), need_mem = 0;
    int pref = c->train.stage == STAGE_PREF && c->loss.type != LOSS_SIMPO;
    if (model_config_validate(&m, msg, sizeof msg) == 0) need_mem = model_train_bytes_keep(&m, 1, pref, (ActKeep){ c->attention, c->recompute });
    if (mem > 0 && need_mem > mem) {
        snprintf(msg, sizeof msg, "this model needs at least %.1f GiB per training rank (%.0f M parameters: 16 bytes "
                 "each for weights, gradients and AdamW moments%s, plus the activations of one meta-example of "
                 "model.max_seq %d tokens); this machine has %.1f GiB",
                 need_mem / (1 << 30), model_param_count(&m) / 1e6, pref ? ", 4 for the reference model" : "",
                 m.max_seq, mem / (1 << 30));
        return fail_key(L, key_index("model", "d_model"), msg);
    }
    /* a pref stage scores against a frozen reference (SimPO needs none) */
    if (c->train.stage == STAGE_PREF && c->loss.type != LOSS_SIMPO && !c->loss.ref_ckpt[0]) {
        snprintf(msg, sizeof msg, "train.stage pref with loss.type %s needs loss.ref_ckpt (the SFT checkpoint)",
                 LOSS_TYPE_NAMES[c->loss.type]);
        return fail_key(L, blame(L, key_index("train", "stage"), key_index("loss", "ref_ckpt")), msg);
    }
    return 0;
}

static int load(const char *path, const char *const *sets, int n_sets, int for_train, Config *c, char *err,
                size_t errlen)
{
    Loader *L = calloc(1, sizeof *L);
    Config *tmp = calloc(1, sizeof *tmp);
    char dummy[1];
    if (!err || !errlen) err = dummy, errlen = sizeof dummy;
    err[0] = '\0';
    if (!L || !tmp) {
        free(L);
        free(tmp);
        snprintf(err, errlen, "config: out of memory");
        return -1;
    }
    config_defaults(tmp);
    L->cfg = tmp, L->path = path, L->sets = sets, L->err = err, L->errlen = errlen, L->for_train = for_train;
    int rc = path ? load_file(L) : 0;
    for (int i = 0; !rc && i < n_sets; i++) rc = apply_set(L, i);
    if (!rc) rc = cross_check(L);
    if (!rc && L->for_train) rc = train_check(L);
    if (!rc) memcpy(c, tmp, sizeof *c);
    free(tmp);
    free(L);
    return rc;
}

int config_load(const char *path, const char *const *sets, int n_sets, Config *c, char *err, size_t errlen)
{
    return load(path, sets, n_sets, 0, c, err, errlen);
}

int config_load_train(const char *path, const char *const *sets, int n_sets, Config *c, char *err, size_t errlen)
{
    return load(path, sets, n_sets, 1, c, err, errlen);
}

/* ---------------------------------------------------------------------- */
/* output                                                                  */

typedef struct {
    char *buf;
    size_t len, cap;
    int overflow;
} Out;

static void emit(Out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void emit(Out *o, const char *fmt, ...)
{
    if (o->overflow) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= o->cap - o->len) o->overflow = 1;
    else o->len += (size_t)n;
}

/* A double-quoted YAML string that reads back byte for byte: escapes for
 * quotes, backslashes, control characters and the code points YAML takes
 * as line breaks or refuses raw (U+0085, U+2028/9, U+FEFF, U+FFFE/F). */
static void emit_quoted(Out *o, const char *s)
{
    emit(o, "\"");
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        unsigned cp;
        size_t len = utf8_seq((const unsigned char *)s + i, n - i, &cp);
        if (len == 0) { /* not from a loaded config; keep the output valid YAML */
            emit(o, "\\x%02x", (unsigned char)s[i]);
            i++;
            continue;
        }
        if (cp == '"') emit(o, "\\\"");
        else if (cp == '\\') emit(o, "\\\\");
        else if (cp == '\n') emit(o, "\\n");
        else if (cp == '\t') emit(o, "\\t");
        else if (cp == '\r') emit(o, "\\r");
        else if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f)) emit(o, "\\x%02x", cp);
        else if (cp == 0x2028 || cp == 0x2029 || cp == 0xfeff || cp == 0xfffe || cp == 0xffff) emit(o, "\\u%04x", cp);
        else emit(o, "%.*s", (int)len, s + i);
        i += len;
    }
    emit(o, "\"");
}

/* Shortest text that reads back as the same double, written with a '.'
 * so that YAML 1.1 readers (PyYAML) also see a float, not a string. */
static void format_double(double v, char *buf, size_t cap)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    if (!isfinite(v) || strchr(buf, '.')) return;
    char *e = strchr(buf, 'e');
    char tail[32];
    snprintf(tail, sizeof tail, "%s", e ? e : "");
    if (e) *e = '\0';
    size_t n = strlen(buf);
    snprintf(buf + n, cap - n, ".0%s", tail);
}

/* " value" after "key:", or the list's lines. */
static void emit_value(Out *o, const Key *k, const Config *c)
{
    const void *p = field_cptr(c, k);
    char num[40];
    if (k->type != T_STR_LIST) emit(o, " ");
    switch (k->type) {
    case T_INT: emit(o, "%ld", k->size == sizeof(int) ? (long)*(const int *)p : *(const long *)p); break;
    case T_DURATION: emit(o, "%ld", *(const long *)p); break;
    case T_FLOAT:
        format_double(*(const double *)p, num, sizeof num);
        emit(o, "%s", num);
        break;
    case T_BOOL: emit(o, "%s", *(const int *)p ? "true" : "false"); break;
    case T_ENUM: emit(o, "%s", k->names[*(const int *)p]); break;
    case T_STR: emit_quoted(o, (const char *)p); break;
    case T_INT_LIST: {
        const CfgIntList *l = p;
        emit(o, "[");
        for (int i = 0; i < l->n && i < CFG_LIST; i++) emit(o, "%s%ld", i ? ", " : "", l->v[i]);
        emit(o, "]");
        break;
    }
    case T_STR_LIST: { /* one entry per line: setup lines read better that way */
        const CfgStrList *l = p;
        if (l->n <= 0) emit(o, " []");
        for (int i = 0; i < l->n && i < CFG_LIST; i++) {
            emit(o, "\n    - ");
            emit_quoted(o, l->v[i]);
        }
        return;
    }
    }
}

int config_to_yaml(const Config *c, char *buf, size_t len)
{
    if (!buf || len == 0) return -1;
    Out o = { buf, 0, len, 0 };
    emit(&o, "# fspo config, every key resolved (`fspo config doc` explains each)\n");
    for (size_t s = 0; s < N_SECTIONS; s++) {
        emit(&o, "%s:\n", sections[s].name);
        for (size_t i = 0; i < N_KEYS; i++) {
            if (strcmp(schema[i].section, sections[s].name)) continue;
            emit(&o, "  %s:", schema[i].key);
            emit_value(&o, &schema[i], c);
            emit(&o, "\n");
        }
    }
    if (o.overflow) {
        buf[0] = '\0';
        return -1;
    }
    return (int)o.len;
}

/* ---------------------------------------------------------------------- */
/* docs/config.md                                                          */

static const char *type_name(Type t)
{
    static const char *const names[] = { "int", "float", "bool", "string", "enum", "int list", "string list",
                                         "duration" };
    return names[t];
}

/* Table cells must not contain '|'. */
static void emit_cell(Out *o, const char *s)
{
    for (; *s; s++) {
        if (*s == '|') emit(o, "\\|");
        else emit(o, "%c", *s);
    }
}

static void emit_constraint(Out *o, const Key *k)
{
    char rb[96];
    switch (k->type) {
    case T_INT:
    case T_FLOAT: emit(o, "%s", range_text(k, rb, sizeof rb)); break;
    case T_DURATION: emit(o, "0 to 366 days"); break;
    case T_BOOL: emit(o, "`true`, `false`"); break;
    case T_STR: emit(o, "%s%zu bytes", k->lo > 0 ? "non-empty, up to " : "up to ", k->size - 1); break;
    case T_ENUM:
        for (int i = 0; k->names[i]; i++) emit(o, "%s`%s`", i ? ", " : "", k->names[i]);
        break;
    case T_INT_LIST: emit(o, "up to %d entries, each in %s", CFG_LIST, range_text(k, rb, sizeof rb)); break;
    case T_STR_LIST: emit(o, "up to %d entries of up to %d bytes", CFG_LIST, CFG_STR - 1); break;
    }
}

int config_doc_markdown(char *buf, size_t len)
{
    if (!buf || len == 0) return -1;
    Out o = { buf, 0, len, 0 };
    emit(&o,
         "# Configuration reference\n\n"
         "<!-- generated by `fspo config doc` from the schema in io/config.c; do not edit -->\n\n"
         "A run is configured by one YAML file with up to nine sections (`model`, `data`, `train`, `loss`,\n"
         "`optim`, `mpi`, `checkpoint`, `eval`, `slurm`), each a mapping of keys. Every key is optional and\n"
         "has the default below; `fspo config show CFG.yaml` prints the resolved config, which is also\n"
         "stored in every checkpoint. Any key can be overridden on the command line with\n"
         "`--set section.key=value` (e.g. `--set optim.lr=1e-4`, `--set eval.n_fewshot=[0,4]`).\n\n"
         "Values are checked strictly, and every error names its place (`cfg.yaml:12:3: ...` or\n"
         "`--set ...: ...`): unknown sections and keys (with a suggestion), wrong types, values out of\n"
         "range, duplicate keys, tabs, invalid UTF-8 and YAML syntax errors. Ranges in `[ ]` include\n"
         "their bounds, in `( )` exclude them.\n\n"
         "- **int**, **float**: written without quotes (`10`, `3e-4`, `1_000_000`).\n"
         "- **bool**: `true`/`false` (also `yes`/`no`).\n"
         "- **string**: quoted or not; an empty value means the empty string. With `--set` a string is\n"
         "  taken as written unless it starts with a quote.\n"
         "- **enum**: one of the listed words.\n"
         "- **int list**, **string list**: a YAML list, `[0, 1, 2]` or one `- entry` per line.\n"
         "- **duration**: seconds (`3600`) or `\"90s\"`, `\"30m\"`, `\"2h\"`, `\"1h30m\"`, `\"HH:MM:SS\"`.\n"
         "- Anchors, aliases, tags and multiple documents are not accepted.\n\n"
         "`train.max_time` is the YAML name of the config field `train.max_time_s`.\n");
    for (size_t s = 0; s < N_SECTIONS; s++) {
        emit(&o, "\n## %s\n\n%s\n\n| key | type | default | range / choices | meaning |\n|---|---|---|---|---|\n",
             sections[s].name, sections[s].help);
        for (size_t i = 0; i < N_KEYS; i++) {
            const Key *k = &schema[i];
            if (strcmp(k->section, sections[s].name)) continue;
            emit(&o, "| `%s` | %s | ", k->key, type_name(k->type));
            if (k->type == T_STR) {
                emit(&o, "`\"");
                emit_cell(&o, k->def);
                emit(&o, "\"`");
            } else {
                emit(&o, "`");
                emit_cell(&o, k->def);
                emit(&o, "`");
            }
            emit(&o, " | ");
            emit_constraint(&o, k);
            emit(&o, " | ");
            emit_cell(&o, k->help);
            emit(&o, " |\n");
        }
    }
    if (o.overflow) {
        buf[0] = '\0';
        return -1;
    }
    return (int)o.len;
}
