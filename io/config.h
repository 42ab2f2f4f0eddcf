/* config: the YAML run configuration (libyaml), checked against a
 * table-driven schema in io/config.c: one line per key with its type,
 * default, range and help, so adding a key is one line plus a field here.
 * docs/config.md is generated from that table (`fspo config doc`).
 *
 * Every error names the place: "cfg.yaml:12:3: unknown key 'lerning_rate'
 * in section 'train' (did you mean 'learning_rate'?)", or for an override
 * "--set train.lr=abc: ...". All config errors mean exit code 2. */
#ifndef FSPO_CONFIG_H
#define FSPO_CONFIG_H

#include <stddef.h>

#define CFG_STR 512   /* max bytes of a string value, NUL included */
#define CFG_LIST 16   /* max entries of a list value */

/* eval.h and slurm_script.h, which own choices Config stores, include this
 * header in turn: they see these constants and Config as a declared type. */
typedef struct Config Config;

#include "src/bf16.h"
#include "src/eval.h"
#include "src/loss.h"
#include "src/model.h"
#include "src/optim.h"
#include "src/pack.h"
#include "src/slurm_script.h"

/* A buffer this size always holds config_to_yaml's output, even with every
 * string at its longest and every byte escaped (test_config checks). */
#define CFG_YAML_MAX (128 * 1024)

typedef struct { int n; long v[CFG_LIST]; } CfgIntList;
typedef struct { int n; char v[CFG_LIST][CFG_STR]; } CfgStrList;

struct Config {
    ModelConfig model; /* vocab, d_model, n_layers, n_heads, ffn_hidden (0 = auto), max_seq */
    PrecisionChoice precision; /* model.precision: fp32 | bf16 | auto (src/bf16.h; not in ModelConfig, the shape checkpoints compare) */
    int tie_embeddings; /* model.tie_embeddings; config_load sets model.untied = !tie_embeddings */
    AttentionKind attention; /* model.attention: full | flash (src/model.h; not in ModelConfig either) */
    int recompute;           /* model.recompute: rerun each block's forward in the backward (src/model.h ActKeep) */
    struct {
        char path[CFG_STR];   /* prepared dataset (.h5) from `fspo prep` */
        int n_fewshot;        /* N: few-shot pairs in context */
        int n_fewshot_min;    /* < 0: always N; else N drawn uniformly in [n_fewshot_min, n_fewshot] */
        int n_queries;        /* Q: query pairs per meta-example */
        int fixed_examples;   /* > 0: cycle through only meta-examples 0..K-1 (overfitting checks) */
        UserDesc user_desc;   /* none | cot: the user's description written after the pairs, learned in SFT */
    } data;
    struct {
        char run_dir[CFG_STR];
        Stage stage;          /* sft | pref (src/loss.h) */
        long max_steps;
        long max_time_s;      /* 0 = no limit; YAML takes 3600, "90s", "30m", "2h" or "HH:MM:SS" */
        int batch_size;       /* global meta-examples per step */
        int micro_batch;      /* meta-examples per forward/backward on a rank; 0 = the whole share */
        long seed;
        char resume[CFG_STR]; /* auto | none | path to a checkpoint */
        char init_from[CFG_STR]; /* weights-only start; "" = random init */
        int log_every;
        int sft_context;          /* SFT stage also trains on the context's chosen answers (dense supervision) */
        int sft_include_rejected; /* SFT stage also trains on dispreferred answers (FSPO's code option) */
        int max_bad_steps;    /* abort after this many non-finite steps in a row */
    } train;
    struct {
        LossType type;        /* dpo | ipo | cdpo | simpo | hinge (src/loss.h) */
        double beta;
        double label_smoothing; /* cdpo */
        double simpo_gamma;   /* simpo margin */
        double sft_weight;    /* NLL on chosen added to the preference loss */
        double desc_weight;   /* the description's weight relative to an answer's (cot) */
        char ref_ckpt[CFG_STR]; /* frozen reference (SFT) checkpoint for pref */
        int ref_cache;        /* reuse the reference's log-probs of a repeated meta-example */
    } loss;
    struct {
        OptimKind type;       /* adamw | rmsprop (src/optim.h) */
        double lr, min_lr;
        ScheduleKind schedule; /* cosine | linear | constant (src/optim.h) */
        long warmup_steps;
        long decay_steps;     /* schedule length; 0 = train.max_steps (set it to stop early and resume on the same schedule) */
        double beta1, beta2, eps, alpha, weight_decay, grad_clip;
    } optim;
    struct {
        int threads_per_rank; /* OpenBLAS threads per rank; 0 = SLURM_CPUS_PER_TASK or cores / local ranks */
        double bucket_mb;     /* gradient allreduce bucket size */
        int checksum_every;   /* compare parameter checksums across ranks every K steps; 0 = never */
        int shard_optimizer;  /* ZeRO-1: optimizer state sharded over the ranks */
    } mpi;
    struct {
        long every;           /* steps between checkpoints */
        int keep;             /* newest verified checkpoints kept */
    } checkpoint;
    struct {
        CfgIntList n_fewshot; /* N values to evaluate, e.g. [0, 1, 2, 4, 8] */
        EvalSplit split;      /* validation | test: the users evaluated (src/eval.h) */
        int max_users;        /* 0 = every user of the split */
        int bootstrap;        /* resamples for the 95% CI */
        int max_new_tokens;
        double temperature, top_p;
        char sft_ckpt[CFG_STR];    /* SFT with context: win-rate baseline, sft_plain column */
        char pooled_ckpt[CFG_STR]; /* no-context baseline */
        char anchor_ckpt[CFG_STR]; /* non-personalizing model all win rates are measured against */
        EvalDescMode user_desc;    /* none | oracle | generated: the description in the eval context (src/eval.h) */
    } eval;
    struct {
        char job_name[CFG_STR];
        int nodes, ntasks_per_node, cpus_per_task;
        char mem[CFG_STR], time[CFG_STR], partition[CFG_STR], account[CFG_STR], qos[CFG_STR],
            constraint[CFG_STR];
        CfgStrList extra_sbatch; /* extra "#SBATCH" option lines, e.g. "--exclusive" */
        CfgStrList setup;        /* shell lines before the run (module load ..., export ...) */
        int signal_lead_s;
        int requeue;
        int failure_requeues;    /* requeues after a step a signal ended (a lost rank or node) */
        int wait_s;              /* srun --wait: the step's life after its first rank ends */
        Launcher launcher;       /* srun | mpirun (src/slurm_script.h) */
    } slurm;
};

/* Every key at its default. */
void config_defaults(Config *c);

/* The optimizer c's optim section asks for: optim.type, beta1, beta2,
 * alpha, eps, weight_decay, grad_clip (the learning rate is the schedule's). */
OptimConfig config_optim(const Config *c);
/* config_optim of the schema's defaults with optim.type = kind: the
 * optimizer of callers without a config (fspo bench, tests). */
OptimConfig config_optim_default(OptimKind kind);

/* Loads `path` over the defaults, then applies each "section.key=value" of
 * sets[0..n_sets), then cross-checks (model shape, stage/loss needs).
 * 0 on success; -1 with err = "file:line:col: message" (or "--set ...: message"). */
int config_load(const char *path, const char *const *sets, int n_sets, Config *c, char *err, size_t errlen);

/* config_load, plus what a training run needs that another command may
 * not: a pref stage names loss.ref_ckpt (unless SimPO), data.n_fewshot and
 * n_queries within the sampler's limits, and model.max_seq long enough for
 * the headers of one meta-example of that shape. `fspo train`, `fspo slurm
 * submit` and `fspo config check` load with it. */
int config_load_train(const char *path, const char *const *sets, int n_sets, Config *c, char *err, size_t errlen);

/* The resolved config as YAML (every key, defaults included) that
 * config_load parses back to the same values. Returns bytes written
 * (excluding NUL) or -1 if buf is too small. Stored in every checkpoint. */
int config_to_yaml(const Config *c, char *buf, size_t len);

/* docs/config.md's content, generated from the schema. */
int config_doc_markdown(char *buf, size_t len);

#endif
