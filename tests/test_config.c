/* test_config: the YAML loader's errors (exact place and wording), defaults,
 * --set overrides, and the resolved YAML reading back to the same config. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/config.h"
#include "tests/check.h"

static char dir[64];

static const char *write_temp(const char *name, const char *text, size_t len)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fwrite(text, 1, len, f);
    fclose(f);
    return path;
}

/* ---------------------------------------------------------------------- */
/* bad inputs                                                              */

typedef struct {
    const char *name;
    const char *yaml; /* file content; NULL: no file (path given in `where`) */
    const char *set;  /* one --set, or NULL */
    const char *where; /* "L:C" in the file, "file" for "FILE: ", "set" for "--set ARG: " */
    const char *msg;   /* substring of the message */
} BadCase;

static void check_bad(const BadCase *t, const char *path_override)
{
    char path[160], err[1024], want[1200];
    const char *p = path_override;
    if (!p && t->yaml) p = write_temp("bad.yaml", t->yaml, strlen(t->yaml));
    snprintf(path, sizeof path, "%s", p);
    if (!strcmp(t->where, "set")) snprintf(want, sizeof want, "--set %s: ", t->set);
    else if (!strcmp(t->where, "file")) snprintf(want, sizeof want, "%s: ", path);
    else snprintf(want, sizeof want, "%s:%s: ", path, t->where);
    Config *c = malloc(sizeof *c);
    memset(c, 0xab, sizeof *c);
    Config *untouched = malloc(sizeof *untouched);
    memcpy(untouched, c, sizeof *c);
    const char *sets[1] = { t->set };
    err[0] = '\0';
    int rc = config_load(path, sets, t->set ? 1 : 0, c, err, sizeof err);
    int ok = rc == -1 && !strncmp(err, want, strlen(want)) && strstr(err + strlen(want), t->msg) &&
             !memcmp(c, untouched, sizeof *c);
    check(ok, t->name, "rc %d, got \"%s\", want prefix \"%s\" and \"%s\"%s", rc, err, want, t->msg,
          memcmp(c, untouched, sizeof *c) ? " (config changed on error)" : "");
    free(c);
    free(untouched);
}

static void test_bad_inputs(void)
{
    char long_str[700], long_list[400], long_slist[400], long_set[600];
    snprintf(long_str, sizeof long_str, "train:\n  run_dir: %0600d\n", 0);
    strcpy(long_list, "eval:\n  n_fewshot: [0");
    for (int i = 1; i <= CFG_LIST; i++) sprintf(long_list + strlen(long_list), ", %d", i);
    strcat(long_list, "]\n");
    strcpy(long_slist, "slurm:\n  setup:\n");
    for (int i = 0; i <= CFG_LIST; i++) sprintf(long_slist + strlen(long_slist), "    - echo %d\n", i);
    snprintf(long_set, sizeof long_set, "data.path=%0520d", 7);

    const BadCase cases[] = {
        { "unknown key, other tool's name", "train:\n  lerning_rate: 1\n", NULL, "2:3",
          "unknown key 'lerning_rate' in section 'train' (did you mean 'optim.lr'?)" },
        { "unknown key, typo", "train:\n  max_stpes: 5\n", NULL, "2:3",
          "unknown key 'max_stpes' in section 'train' (did you mean 'max_steps'?)" },
        { "key of another section", "train:\n  lr: 1\n", NULL, "2:3",
          "unknown key 'lr' in section 'train' ('lr' belongs in section 'optim')" },
        { "unknown key, no suggestion", "checkpoint:\n  often: 3\n", NULL, "2:3",
          "unknown key 'often' in section 'checkpoint' (its keys: every, keep)" },
        { "unknown section", "trian:\n  seed: 1\n", NULL, "1:1", "unknown section 'trian' (did you mean 'train'?)" },
        { "dotted section", "train.seed: 3\n", NULL, "1:1", "unknown section 'train.seed' (nest it" },
        { "int: word", "train:\n  max_steps: ten\n", NULL, "2:14", "train.max_steps: expected an integer, got 'ten'" },
        { "int: quoted", "train:\n  max_steps: \"10\"\n", NULL, "2:14",
          "expected an integer, got the string \"10\" (write it without quotes)" },
        { "int: fraction", "train:\n  batch_size: 2.5\n", NULL, "2:15", "expected an integer, got '2.5'" },
        { "int: empty", "train:\n  seed:\n", NULL, "2:8", "train.seed: expected an integer, got nothing" },
        { "float: word", "optim:\n  lr: fast\n", NULL, "2:7", "optim.lr: expected a number, got 'fast'" },
        { "float: nan", "optim:\n  lr: .nan\n", NULL, "2:7", "optim.lr: expected a number, got '.nan'" },
        { "bool: on", "slurm:\n  requeue: on\n", NULL, "2:12", "slurm.requeue: expected true or false (or yes/no)" },
        { "enum", "train:\n  stage: dpo\n", NULL, "2:10", "train.stage: expected sft or pref, got 'dpo'" },
        { "list: scalar", "eval:\n  n_fewshot: 4\n", NULL, "2:14",
          "eval.n_fewshot: expected a list of integers like [0, 1, 2], got '4'" },
        { "list: bad entry", "eval:\n  n_fewshot: [0, two]\n", NULL, "2:18",
          "eval.n_fewshot[1]: expected an integer, got 'two'" },
        { "list: nested", "slurm:\n  setup: [a, [b]]\n", NULL, "2:14", "slurm.setup[1]: expected a string, got a list" },
        { "int out of range", "train:\n  batch_size: 0\n", NULL, "2:15",
          "train.batch_size = 0 is out of range [1, 1048576]" },
        { "int overflow", "train:\n  seed: 99999999999999999999\n", NULL, "2:9", "is out of range >= 0" },
        { "float out of open range", "loss:\n  beta: 0\n", NULL, "2:9", "loss.beta = 0 is out of range (0, 1000]" },
        { "float at open upper bound", "loss:\n  label_smoothing: 0.5\n", NULL, "2:20",
          "loss.label_smoothing = 0.5 is out of range [0, 0.5)" },
        { "list entry out of range", "eval:\n  n_fewshot: [0, 300]\n", NULL, "2:18",
          "eval.n_fewshot[1] = 300 is out of range [0, 256]" },
        { "duplicate key", "train:\n  seed: 1\n  seed: 2\n", NULL, "3:3",
          "duplicate key 'seed' in section 'train' (first at line 2)" },
        { "duplicate section", "train:\n  seed: 1\nloss:\n  beta: 1\ntrain:\n  max_steps: 2\n", NULL, "5:1",
          "duplicate section 'train' (first at line 1)" },
        { "tab indentation", "train:\n\tseed: 1\n", NULL, "2:1",
          "tab character: YAML indentation must use spaces, not tabs" },
        { "tab after spaces", "train:\n  seed: 1\n  \tmax_steps: 2\n", NULL, "3:3", "tab character" },
        { "non-UTF-8", "train:\n  run_dir: caf\xe9\n", NULL, "2:15",
          "invalid UTF-8 (byte 0xe9): a config must be UTF-8 text" },
        { "control character", "train:\n  run_dir: a\x01" "b\n", NULL, "2:13", "control character 0x01 is not allowed" },
        { "empty file", "", NULL, "1:1", "empty config" },
        { "only comments", "# nothing\n\n   # here\n", NULL, "1:1", "empty config" },
        { "only a document marker", "---\n", NULL, "1:1", "empty config" },
        { "syntax: indentation", "train:\n  seed: 1\n max_steps: 3\n", NULL, "3:2",
          "syntax error: did not find expected key (while parsing a block mapping that starts at line 1, column 1)"
          "; check the indentation" },
        { "syntax: open quote", "train:\n  run_dir: \"abc\n", NULL, "3:1",
          "syntax error: found unexpected end of stream (while scanning a quoted scalar" },
        { "scalar where a section is expected", "train: 5\n", NULL, "1:8",
          "section 'train' must be a mapping of keys (key: value), got '5'" },
        { "list at the top", "- model\n- train\n", NULL, "1:1",
          "a config must be a mapping of sections (model:, train:, ...), got a list" },
        { "scalar at the top", "hello\n", NULL, "1:1", "a config must be a mapping of sections" },
        { "list where a scalar is expected", "train:\n  seed: [1, 2]\n", NULL, "2:9",
          "train.seed: expected an integer, got a list" },
        { "mapping where a scalar is expected", "train:\n  seed:\n    a: 1\n", NULL, "3:5",
          "train.seed: expected an integer, got a mapping" },
        { "mapping as a key", "train:\n  ? {a: 1}\n  : 2\n", NULL, "2:5",
          "expected a key name in section 'train', got a mapping" },
        { "string too long", long_str, NULL, "2:12", "train.run_dir: string of 600 bytes is too long (at most 511)" },
        { "string empty where required", "train:\n  run_dir: \"\"\n", NULL, "2:12", "train.run_dir: must not be empty" },
        { "NUL in a string", "train:\n  run_dir: \"a\\0b\"\n", NULL, "2:12", "a NUL character is not allowed" },
        { "int list too long", long_list, NULL, "2:69", "eval.n_fewshot: too many entries (at most 16)" },
        { "string list too long", long_slist, NULL, "19:7", "slurm.setup: too many entries (at most 16)" },
        { "duration: words", "train:\n  max_time: 90 minutes\n", NULL, "2:13",
          "train.max_time: expected a duration (3600, \"90s\", \"30m\", \"2h\", \"1h30m\" or \"HH:MM:SS\")" },
        { "duration: bad clock", "train:\n  max_time: \"1:75:00\"\n", NULL, "2:13", "expected a duration" },
        { "duration: units out of order", "train:\n  max_time: 30m1h\n", NULL, "2:13", "expected a duration" },
        { "duration: too long", "train:\n  max_time: 400d\n", NULL, "2:13",
          "train.max_time = 400d is out of range: at most 31622400 seconds" },
        { "d_model % n_heads", "model:\n  d_model: 100\n  n_heads: 3\n", NULL, "2:3",
          "model.d_model = 100 is not divisible by model.n_heads = 3" },
        { "odd head size", "model:\n  n_heads: 4\n  d_model: 12\n", NULL, "3:3", "must be even (RoPE rotates pairs)" },
        { "vocab too small", "model:\n  vocab: 256\n", NULL, "2:10", "model.vocab = 256 is out of range [264, 16777216]" },
        { "n_fewshot_min > n_fewshot", "data:\n  n_fewshot: 2\n  n_fewshot_min: 3\n", NULL, "3:3",
          "data.n_fewshot_min = 3 is larger than data.n_fewshot = 2" },
        { "min_lr > lr (blames the key in the file)", "optim:\n  lr: 1e-5\n", NULL, "2:3",
          "optim.min_lr = 3e-05 is larger than optim.lr = 1e-05" },
        { "multiple documents", "train:\n  seed: 1\n---\ntrain:\n  seed: 2\n", NULL, "3:1",
          "a second YAML document ('---'): a config is one document" },
        { "anchor", "train:\n  seed: &s 1\n", NULL, "2:9", "anchors (&s) are not supported" },
        { "alias", "train:\n  seed: 1\n  max_steps: *s\n", NULL, "3:14", "aliases (*s) are not supported" },
        { "tag", "train:\n  seed: !!int 1\n", NULL, "2:9", "tags (tag:yaml.org,2002:int) are not supported" },
        { "--set bad value", "train:\n  seed: 1\n", "train.max_steps=abc", "set",
          "train.max_steps: expected an integer, got 'abc'" },
        { "--set unknown key", "train:\n  seed: 1\n", "train.lerning_rate=1", "set",
          "unknown key 'lerning_rate' in section 'train' (did you mean 'optim.lr'?)" },
        { "--set unknown section", "train:\n  seed: 1\n", "trian.seed=1", "set",
          "unknown section 'trian' (did you mean 'train'?)" },
        { "--set missing '='", "train:\n  seed: 1\n", "train.max_steps", "set",
          "expected section.key=value (e.g. train.max_steps=100)" },
        { "--set missing section", "train:\n  seed: 1\n", "max_steps=3", "set", "expected section.key=value" },
        { "--set out of range", "train:\n  seed: 1\n", "loss.beta=-1", "set", "loss.beta = -1 is out of range (0, 1000]" },
        { "--set bad list", "train:\n  seed: 1\n", "eval.n_fewshot=[0,x]", "set",
          "eval.n_fewshot[1]: expected an integer, got 'x'" },
        { "--set string too long", "train:\n  seed: 1\n", long_set, "set", "data.path: string of 520 bytes is too long" },
        { "--set that breaks a cross-check", "model:\n  d_model: 256\n", "model.n_heads=5", "set",
          "model.d_model = 256 is not divisible by model.n_heads = 5" },
        { "--set syntax error", "train:\n  seed: 1\n", "eval.n_fewshot=[0, 1", "set", "syntax error" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_bad(&cases[i], NULL);

    const BadCase missing = { "missing file", NULL, NULL, "file", "cannot read: No such file or directory" };
    char path[128];
    snprintf(path, sizeof path, "%s/no-such.yaml", dir);
    check_bad(&missing, path);
    const BadCase directory = { "directory", NULL, NULL, "file", "cannot read: Is a directory" };
    check_bad(&directory, dir);
}

/* ---------------------------------------------------------------------- */
/* good inputs                                                             */

static int load_text(const char *yaml, const char *const *sets, int n_sets, Config *c, char *err, size_t errlen)
{
    return config_load(write_temp("good.yaml", yaml, strlen(yaml)), sets, n_sets, c, err, errlen);
}

static void test_defaults(void)
{
    Config *d = malloc(sizeof *d), *c = malloc(sizeof *c);
    char err[1024] = "";
    config_defaults(d);
    int rc = load_text("model:\ndata:\ntrain:\nloss:\noptim:\nmpi:\ncheckpoint:\neval:\nslurm: {}\n", NULL, 0, c, err,
                       sizeof err);
    check(rc == 0 && !memcmp(c, d, sizeof *c), "empty sections give the defaults", "rc %d %s", rc, err);
    check(c->model.vocab == 264 && c->model.d_model == 256 && c->model.n_layers == 4 && c->model.n_heads == 4 &&
              c->model.ffn_hidden == 0 && c->model.max_seq == 1024,
          "model defaults", "vocab %d d %d L %d H %d F %d T %d", c->model.vocab, c->model.d_model,
          c->model.n_layers, c->model.n_heads, c->model.ffn_hidden, c->model.max_seq);
    check(c->data.n_fewshot == 4 && c->data.n_fewshot_min == -1 && c->data.n_queries == 4 && !c->data.path[0] &&
              c->data.fixed_examples == 0,
          "data defaults", "N %d min %d Q %d", c->data.n_fewshot, c->data.n_fewshot_min, c->data.n_queries);
    check(!strcmp(c->train.run_dir, "runs/fspo") && c->train.stage == STAGE_SFT && c->train.max_steps == 1000 &&
              c->train.max_time_s == 0 && c->train.batch_size == 8 && c->train.micro_batch == 0 &&
              c->train.seed == 1234 && !strcmp(c->train.resume, "auto") && !c->train.init_from[0] &&
              c->train.log_every == 10 && c->train.sft_include_rejected == 0 && c->train.max_bad_steps == 5,
          "train defaults", "%s %d %ld", c->train.run_dir, (int)c->train.stage, c->train.max_steps);
    check(c->loss.type == LOSS_DPO && c->loss.beta == 0.1 && c->loss.label_smoothing == 0 &&
              c->loss.simpo_gamma == 0.5 && c->loss.sft_weight == 0 && c->loss.desc_weight == 1 &&
              !c->loss.ref_ckpt[0],
          "loss defaults", "%d %g", (int)c->loss.type, c->loss.beta);
    check(c->optim.type == OPTIM_ADAMW && c->optim.lr == 3e-4 && c->optim.min_lr == 3e-5 &&
              c->optim.schedule == SCHED_COSINE && c->optim.warmup_steps == 100 && c->optim.beta1 == 0.9 &&
              c->optim.beta2 == 0.95 && c->optim.eps == 1e-8 && c->optim.alpha == 0.99 &&
              c->optim.weight_decay == 0.1 && c->optim.grad_clip == 1.0,
          "optim defaults", "%d %g %g", (int)c->optim.type, c->optim.lr, c->optim.min_lr);
    check(c->mpi.threads_per_rank == 0 && c->mpi.bucket_mb == 4 && c->mpi.checksum_every == 100 &&
              c->checkpoint.every == 200 && c->checkpoint.keep == 3,
          "mpi and checkpoint defaults", "%d %g %d %ld %d", c->mpi.threads_per_rank, c->mpi.bucket_mb,
          c->mpi.checksum_every, c->checkpoint.every, c->checkpoint.keep);
    const long want_n[] = { 0, 1, 2, 4, 8 };
    check(c->eval.n_fewshot.n == 5 && !memcmp(c->eval.n_fewshot.v, want_n, sizeof want_n) && c->eval.max_users == 0 &&
              c->eval.bootstrap == 1000 && c->eval.max_new_tokens == 160 && c->eval.temperature == 0.7 &&
              c->eval.top_p == 0.9,
          "eval defaults", "n %d", c->eval.n_fewshot.n);
    check(!strcmp(c->slurm.job_name, "fspo") && c->slurm.nodes == 1 && c->slurm.ntasks_per_node == 2 &&
              c->slurm.cpus_per_task == 1 && !strcmp(c->slurm.time, "01:00:00") && !c->slurm.partition[0] &&
              !c->slurm.account[0] && c->slurm.extra_sbatch.n == 0 && c->slurm.setup.n == 0 &&
              c->slurm.signal_lead_s == 120 && c->slurm.requeue == 1 && c->slurm.launcher == LAUNCHER_SRUN,
          "slurm defaults", "%s %d %d %d", c->slurm.time, c->slurm.nodes, c->slurm.ntasks_per_node,
          c->slurm.cpus_per_task);
    rc = config_load(NULL, NULL, 0, c, err, sizeof err);
    check(rc == 0 && !memcmp(c, d, sizeof *c), "no file: the defaults", "rc %d %s", rc, err);
    free(d);
    free(c);
}

/* config_optim copies each optim key to its own field (distinct values set
 * by --set, compared with the numbers written here), and
 * config_optim_default is the schema's defaults (docs/config.md's values). */
static void test_optim(void)
{
    Config *c = malloc(sizeof *c);
    char err[512];
    const char *sets[] = { "optim.type=rmsprop", "optim.beta1=0.5", "optim.beta2=0.25", "optim.alpha=0.75",
                           "optim.eps=0.125", "optim.weight_decay=0.375", "optim.grad_clip=2.5" };
    int rc = config_load(NULL, sets, 7, c, err, sizeof err);
    OptimConfig o = config_optim(c);
    check(rc == 0 && o.kind == OPTIM_RMSPROP && o.beta1 == 0.5f && o.beta2 == 0.25f && o.alpha == 0.75f &&
              o.eps == 0.125f && o.weight_decay == 0.375f && o.max_grad_norm == 2.5f,
          "config_optim: each optim key in its field", "rc %d %s", rc, rc ? err : "");
    OptimConfig a = config_optim_default(OPTIM_ADAMW), r = config_optim_default(OPTIM_RMSPROP);
    check(a.kind == OPTIM_ADAMW && a.beta1 == 0.9f && a.beta2 == 0.95f && a.alpha == 0.99f && a.eps == 1e-8f &&
              a.weight_decay == 0.1f && a.max_grad_norm == 1.0f && r.kind == OPTIM_RMSPROP && r.beta1 == a.beta1 &&
              r.weight_decay == a.weight_decay && r.max_grad_norm == a.max_grad_norm,
          "config_optim_default: the schema's defaults, the kind asked for", "wd %g clip %g", a.weight_decay,
          a.max_grad_norm);
    free(c);
}

static void test_values(void)
{
    Config *c = malloc(sizeof *c);
    char err[1024] = "";
    const char *yaml = "train:\n"
                       "  max_steps: 1_000\n"
                       "  sft_include_rejected: yes\n"
                       "  stage: \"pref\"\n"
                       "  run_dir: runs/x # a comment\n"
                       "optim:\n"
                       "  lr: 1.5E-3\n"
                       "  eps: 1e-6\n"
                       "slurm:\n"
                       "  requeue: False\n"
                       "  partition:\n"
                       "  setup:\n"
                       "    - module load openmpi\n"
                       "    - 'export A=\"1\"'\n"
                       "eval:\n"
                       "  n_fewshot: [-0, +3, 16]\n";
    int rc = load_text(yaml, NULL, 0, c, err, sizeof err);
    check(rc == 0 && c->train.max_steps == 1000 && c->train.sft_include_rejected == 1 &&
              c->train.stage == STAGE_PREF && !strcmp(c->train.run_dir, "runs/x") && c->optim.lr == 1.5e-3 &&
              c->optim.eps == 1e-6 && c->slurm.requeue == 0 && !c->slurm.partition[0] && c->slurm.setup.n == 2 &&
              !strcmp(c->slurm.setup.v[1], "export A=\"1\"") && c->eval.n_fewshot.n == 3 &&
              c->eval.n_fewshot.v[1] == 3,
          "value forms (underscores, yes, quoted enum, comments, null string, lists)", "rc %d %s", rc, err);

    static const struct {
        const char *text;
        long seconds;
    } durations[] = { { "0", 0 },        { "3600", 3600 },        { "\"90s\"", 90 },  { "30m", 1800 },
                      { "2h", 7200 },    { "1h30m", 5400 },       { "1d12h", 129600 }, { "\"01:30:00\"", 5400 },
                      { "100:00:05", 360005 }, { "'2h0m30s'", 7230 } };
    for (size_t i = 0; i < sizeof durations / sizeof *durations; i++) {
        char text[128], name[96];
        snprintf(text, sizeof text, "train:\n  max_time: %s\n", durations[i].text);
        snprintf(name, sizeof name, "duration %s", durations[i].text);
        rc = load_text(text, NULL, 0, c, err, sizeof err);
        check(rc == 0 && c->train.max_time_s == durations[i].seconds, name, "rc %d %s -> %ld (want %ld)", rc, err,
              c->train.max_time_s, durations[i].seconds);
    }

    /* --set wins over the file, the last --set wins, every type */
    const char *sets[] = { "train.max_steps=70",      "train.max_steps=80",        "eval.n_fewshot=[0, 2,4]",
                           "data.path=my data: v2.h5 #1", "slurm.account='quoted\\n'", "slurm.setup=[a, \"b c\"]",
                           "train.max_time=2h",       "slurm.requeue=no",          "optim.schedule=constant",
                           "slurm.partition=",        "optim.lr=0.01" };
    rc = load_text("train:\n  max_steps: 50\nslurm:\n  partition: cpu\n", sets, (int)(sizeof sets / sizeof *sets), c,
                   err, sizeof err);
    check(rc == 0 && c->train.max_steps == 80 && c->eval.n_fewshot.n == 3 && c->eval.n_fewshot.v[2] == 4 &&
              !strcmp(c->data.path, "my data: v2.h5 #1") && !strcmp(c->slurm.account, "quoted\\n") &&
              c->slurm.setup.n == 2 && !strcmp(c->slurm.setup.v[1], "b c") && c->train.max_time_s == 7200 &&
              c->slurm.requeue == 0 && c->optim.schedule == SCHED_CONSTANT && !c->slurm.partition[0] &&
              c->optim.lr == 0.01,
          "--set overrides the file", "rc %d %s; steps %ld path '%s' account '%s'", rc, err, c->train.max_steps,
          c->data.path, c->slurm.account);

    /* every key named by the CLI and config contract (DESIGN.md) exists */
    const char *contract[] = { "model.d_model=128",      "model.n_layers=2",       "model.n_heads=2",
                               "model.max_seq=64",       "data.path=d.h5",         "data.n_fewshot=3",
                               "data.n_queries=2",       "train.run_dir=r",        "train.stage=pref",
                               "train.max_steps=5",      "train.batch_size=2",     "train.seed=7",
                               "train.resume=none",      "train.init_from=a.h5",   "train.max_time=90s",
                               "loss.type=ipo",          "loss.beta=0.5",          "loss.ref_ckpt=s.h5",
                               "checkpoint.every=5",     "checkpoint.keep=1",      "optim.lr=0.001",
                               "slurm.nodes=2",          "slurm.ntasks_per_node=4", "slurm.cpus_per_task=2",
                               "slurm.time=02:00:00",    "slurm.partition=p",      "slurm.account=a",
                               "slurm.signal_lead_s=60", "slurm.requeue=false" };
    rc = config_load(NULL, contract, (int)(sizeof contract / sizeof *contract), c, err, sizeof err);
    check(rc == 0 && c->model.d_model == 128 && c->train.max_time_s == 90 && c->loss.type == LOSS_IPO &&
              c->slurm.signal_lead_s == 60 && !strcmp(c->slurm.time, "02:00:00"),
          "contract keys exist", "rc %d %s", rc, err);

    /* stage pref without a reference checkpoint is the train command's business */
    const char *pref[] = { "train.stage=pref" };
    rc = config_load(NULL, pref, 1, c, err, sizeof err);
    check(rc == 0, "pref without loss.ref_ckpt loads", "rc %d %s", rc, err);
    /* ... which config_load_train (train, slurm submit, config check) refuses, at the key's place */
    rc = config_load_train(NULL, pref, 1, c, err, sizeof err);
    check(rc == -1 && !strcmp(err, "--set train.stage=pref: train.stage pref with loss.type dpo needs loss.ref_ckpt "
                                    "(the SFT checkpoint)"),
          "config_load_train: pref without loss.ref_ckpt", "rc %d %s", rc, err);
    const char *simpo[] = { "train.stage=pref", "loss.type=simpo" };
    rc = config_load_train(NULL, simpo, 2, c, err, sizeof err);
    check(rc == 0, "config_load_train: SimPO needs no reference", "rc %d %s", rc, err);
    /* headers of a meta-example of N = 3, Q = 2 (by hand, pack.h's layout): BOS + 3 x 4 + 2 x 5 = 23 tokens */
    const char *text = "data: {n_fewshot: 3, n_queries: 2}\nmodel:\n  max_seq: 22\n";
    const char *path = write_temp("short.yaml", text, strlen(text));
    char want[256];
    snprintf(want, sizeof want, "%s:3:3: model.max_seq = 22 cannot hold a meta-example of 3 few-shot and 2 query "
                                "pairs (data.n_fewshot, data.n_queries): its headers alone take 23 tokens", path);
    rc = config_load_train(path, NULL, 0, c, err, sizeof err);
    int loads = config_load(path, NULL, 0, c, err + 512, sizeof err - 512) == 0;
    check(rc == -1 && !strncmp(err, want, strlen(want)) && loads, "config_load_train: max_seq below the headers",
          "rc %d %s (config_load %s)", rc, err, loads ? "loads it" : err + 512);
    const char *ok23[] = { "model.max_seq=23" };
    rc = config_load_train(path, ok23, 1, c, err, sizeof err);
    check(rc == 0, "config_load_train: max_seq equal to the headers loads", "rc %d %s", rc, err);
    /* with n_fewshot_min 0 the shortest draw has no context: 1 + 2 x 5 = 11 */
    const char *fewmin[] = { "data.n_fewshot_min=0", "model.max_seq=11" }, *fewmin10[] = { "data.n_fewshot_min=0", "model.max_seq=10" };
    rc = config_load_train(path, fewmin, 2, c, err, sizeof err);
    int rc10 = config_load_train(path, fewmin10, 2, c, err, sizeof err);
    check(rc == 0 && rc10 == -1 && strstr(err, "its headers alone take 11 tokens"),
          "config_load_train: n_fewshot_min sets the shortest shape", "rc %d / %d %s", rc, rc10, err);
    const char *big[] = { "data.n_queries=33" };
    rc = config_load_train(NULL, big, 1, c, err, sizeof err);
    check(rc == -1 && strstr(err, "--set data.n_queries=33: data.n_queries = 33 is above the sampler's limit of 32"),
          "config_load_train: n_queries above the sampler's limit", "rc %d %s", rc, err);
    free(c);
}

/* ---------------------------------------------------------------------- */
/* round trips                                                             */

/* config_to_yaml(a) read back gives the same bytes, and printing that
 * again gives the same text. */
static void check_round_trip(const char *name, const Config *a)
{
    char *y1 = malloc(CFG_YAML_MAX), *y2 = malloc(CFG_YAML_MAX), err[1024] = "";
    Config *b = malloc(sizeof *b);
    int n1 = config_to_yaml(a, y1, CFG_YAML_MAX), rc = -1, n2 = -1;
    if (n1 > 0) rc = config_load(write_temp("round.yaml", y1, (size_t)n1), NULL, 0, b, err, sizeof err);
    if (rc == 0) n2 = config_to_yaml(b, y2, CFG_YAML_MAX);
    check(n1 > 0 && rc == 0 && !memcmp(a, b, sizeof *a) && n2 == n1 && !memcmp(y1, y2, (size_t)n1), name,
          "bytes %d/%d, load rc %d %s, configs %s", n1, n2, rc, err, rc == 0 && memcmp(a, b, sizeof *a) ? "differ" : "");
    free(y1);
    free(y2);
    free(b);
}

static void test_round_trips(void)
{
    Config *c = malloc(sizeof *c);
    char err[1024] = "", name[96];
    const char *files[] = { "configs/demo.yaml", "configs/small.yaml", "configs/cluster.yaml" };
    for (int i = 0; i < 3; i++) {
        int rc = config_load(files[i], NULL, 0, c, err, sizeof err);
        snprintf(name, sizeof name, "%s loads", files[i]);
        check(rc == 0, name, "rc %d %s", rc, err);
        snprintf(name, sizeof name, "%s round trip", files[i]);
        if (rc == 0) check_round_trip(name, c);
    }

    /* strings YAML would misread if written raw, full lists, awkward floats */
    const char *yaml = "data:\n"
                       "  path: \"quote\\\" backslash\\\\ newline\\n tab\\t cr\\r \\x01\\x7f \\u0085\\u2028\\ufeff é ∑ 😀\"\n"
                       "train:\n"
                       "  run_dir: \"  # not a comment: really  \"\n"
                       "  resume: \"'single' and \\\"double\\\"\"\n"
                       "  init_from: \"null\"\n"
                       "  max_time: 1h30m\n"
                       "optim:\n"
                       "  lr: 0.30000000000000004\n"
                       "  eps: 4.9e-324\n"
                       "  min_lr: 0\n"
                       "  weight_decay: 1e-300\n"
                       "eval:\n"
                       "  n_fewshot: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 256]\n"
                       "  sft_ckpt: \"\"\n"
                       "slurm:\n"
                       "  extra_sbatch: []\n"
                       "  setup:\n"
                       "    - \"\"\n"
                       "    - \"- dash\"\n"
                       "    - \"[not, a, list]\"\n"
                       "    - \"key: value\"\n"
                       "    - \"yes\"\n"
                       "    - \"123\"\n"
                       "    - \"&anchor *alias !tag %directive @at `tick`\"\n"
                       "    - \"a\\nb\"\n"
                       "    - \"{}\"\n"
                       "    - \"~\"\n"
                       "    - \"---\"\n"
                       "    - \" lead and trail \"\n"
                       "    - '|'\n"
                       "    - \">\"\n"
                       "    - \"\\\\\"\n"
                       "    - last\n";
    int rc = load_text(yaml, NULL, 0, c, err, sizeof err);
    check(rc == 0 && c->slurm.setup.n == 16 && !strcmp(c->train.init_from, "null") && c->optim.eps > 0 &&
              strstr(c->data.path, "\xc2\x85\xe2\x80\xa8\xef\xbb\xbf"),
          "edge-case config loads", "rc %d %s", rc, err);
    if (rc == 0) check_round_trip("edge-case config round trip", c);

    /* the longest output there can be: every string at CFG_STR - 1 bytes of
     * a byte that needs a 4-character escape, every list full */
    config_defaults(c);
    char *base = (char *)c;
    const size_t strings[] = { offsetof(Config, data.path),       offsetof(Config, train.run_dir),
                               offsetof(Config, train.resume),    offsetof(Config, train.init_from),
                               offsetof(Config, loss.ref_ckpt),   offsetof(Config, eval.sft_ckpt),
                               offsetof(Config, eval.pooled_ckpt), offsetof(Config, eval.anchor_ckpt),
                               offsetof(Config, slurm.job_name),  offsetof(Config, slurm.mem),
                               offsetof(Config, slurm.time),      offsetof(Config, slurm.partition),
                               offsetof(Config, slurm.account),   offsetof(Config, slurm.qos),
                               offsetof(Config, slurm.constraint) };
    for (size_t i = 0; i < sizeof strings / sizeof *strings; i++) memset(base + strings[i], 1, CFG_STR - 1);
    for (int i = 0; i < CFG_LIST; i++) {
        memset(c->slurm.setup.v[i], 1, CFG_STR - 1);
        memset(c->slurm.extra_sbatch.v[i], 1, CFG_STR - 1);
        c->eval.n_fewshot.v[i] = 256;
    }
    c->slurm.setup.n = c->slurm.extra_sbatch.n = c->eval.n_fewshot.n = CFG_LIST;
    check_round_trip("longest config fits CFG_YAML_MAX and round-trips", c);
    char small[64];
    check(config_to_yaml(c, small, sizeof small) == -1, "config_to_yaml: small buffer gives -1", "%s", "");
    free(c);
}

static void test_doc(void)
{
    char *doc = malloc(CFG_YAML_MAX);
    int n = config_doc_markdown(doc, CFG_YAML_MAX);
    int ok = n > 0;
    const char *want[] = { "## model", "## data", "## train", "## loss", "## optim", "## mpi", "## checkpoint",
                           "## eval", "## slurm", "| `max_time` | duration |", "| `beta` | float | `0.1` | (0, 1000] |",
                           "| `stage` | enum | `sft` | `sft`, `pref` |" };
    for (size_t i = 0; ok && i < sizeof want / sizeof *want; i++)
        if (!strstr(doc, want[i])) ok = 0;
    check(ok, "config_doc_markdown has every section and the key rows", "%d bytes", n);
    free(doc);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/fspo-test-config.XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_bad_inputs();
    test_defaults();
    test_values();
    test_optim();
    test_round_trips();
    test_doc();
    char path[128];
    const char *names[] = { "bad.yaml", "good.yaml", "round.yaml" };
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
    return check_status();
}
