/* `fspo model`: what a model shape costs before you train it; `fspo model
 * strip`: a checkpoint's weights without its optimizer state (a shipped model); `fspo
 * model logits`: a checkpoint's logits on given token ids. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/ckpt.h"
#include "io/config.h"
#include "io/hf.h"
#include "src/batch.h"
#include "src/cli/cli.h"
#include "src/cli/commands.h"
#include "src/frozen.h"
#include "src/util.h"

int model_shape_option(const char *cmd, int argc, char **argv, int *i, ModelConfig *cfg, int *batch)
{
    const char *a = argv[*i];
    if (!strcmp(a, "--preset")) {
        const char *p = cli_str(cmd, argc, argv, i);
        if (!strcmp(p, "A") || !strcmp(p, "a")) {
            *cfg = (ModelConfig){ .vocab = 264, .d_model = 256, .n_layers = 4, .n_heads = 4, .max_seq = 1024 };
            *batch = 4;
        } else if (!strcmp(p, "B") || !strcmp(p, "b")) {
            *cfg = (ModelConfig){ .vocab = 264, .d_model = 512, .n_layers = 8, .n_heads = 8, .max_seq = 1024 };
            *batch = 2;
        } else
            fatal(EXIT_USAGE, "%s: --preset: '%s' is not A or B", cmd, p);
    } else if (!strcmp(a, "--vocab")) cfg->vocab = cli_int(cmd, argc, argv, i, -(1L << 30), 1L << 30);
    else if (!strcmp(a, "--d-model")) cfg->d_model = cli_int(cmd, argc, argv, i, -(1L << 30), 1L << 30);
    else if (!strcmp(a, "--n-layers")) cfg->n_layers = cli_int(cmd, argc, argv, i, -(1L << 30), 1L << 30);
    else if (!strcmp(a, "--n-heads")) cfg->n_heads = cli_int(cmd, argc, argv, i, -(1L << 30), 1L << 30);
    else if (!strcmp(a, "--n-kv-heads")) cfg->n_kv_heads = cli_int(cmd, argc, argv, i, -(1L << 30), 1L << 30);
    else if (!strcmp(a, "--untied")) cfg->untied = 1;
    else if (!strcmp(a, "--ffn-hidden")) cfg->ffn_hidden = cli_int(cmd, argc, argv, i, -(1L << 30), 1L << 30);
    else if (!strcmp(a, "--max-seq")) cfg->max_seq = cli_int(cmd, argc, argv, i, -(1L << 30), 1L << 30);
    else if (!strcmp(a, "--batch")) *batch = cli_int(cmd, argc, argv, i, 1, 1 << 16);
    else return 0;
    return 1;
}

void model_shape_check(const char *cmd, ModelConfig *cfg)
{
    char err[256];
    if (model_config_validate(cfg, err, sizeof err) != 0) fatal(EXIT_USAGE, "%s: %s", cmd, err);
}

static int cmd_model_strip(int argc, char **argv)
{
    const char *in = NULL, *out = NULL;
    CkptStore store = CKPT_STORE_F32;
    for (int i = 2; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            printf("usage: fspo model strip CKPT -o OUT.h5 [--bf16]\n\nWrites the weights of checkpoint CKPT, with "
                   "its step, stage, config and\nlineage but without the optimizer state (a third of the size under "
                   "AdamW),\nas a new checkpoint OUT.h5: what eval, sample, train.init_from and\nloss.ref_ckpt read; a "
                   "resume needs the full checkpoint. OUT.h5 must not exist.\nCKPT may be a Hugging Face Llama "
                   "directory: its weights as fspo reads them\n(vocabulary grown for fspo's structure tokens, "
                   "docs/interop.md), step 0,\nstage import, the model section of its config.json.\n\n"
                   "  --bf16   round every weight to bfloat16 (nearest, ties to even) and store\n"
                   "           it in 2 bytes, byte-shuffled and deflated: about 36%% of the\n"
                   "           float32 file (a shipped model). Readers get float32 back;\n"
                   "           the rounding changes the model's outputs slightly, so\n"
                   "           evaluate the stored file, not the checkpoint it came from.\n");
            return EXIT_OK;
        }
        if (!strcmp(argv[i], "--bf16")) store = CKPT_STORE_BF16;
        else if (!strcmp(argv[i], "-o")) out = cli_str("model strip", argc, argv, &i);
        else if (argv[i][0] == '-') fatal(EXIT_USAGE, "model strip: unknown option '%s' (see 'fspo model strip --help')", argv[i]);
        else if (!in) in = argv[i];
        else fatal(EXIT_USAGE, "model strip: one checkpoint only ('%s' and '%s')", in, argv[i]);
    }
    if (!in || !out) fatal(EXIT_USAGE, "model strip: usage: fspo model strip CKPT -o OUT.h5 [--bf16]");
    char err[1024];
    CkptMeta meta;
    Model *m = frozen_load(in, &(FrozenSpec){ .max_rows = 1, .max_len = 1, .meta = &meta }, err, sizeof err);
    Tokenizer tok; /* the shipped model reads the ids it was trained on */
    if (!m || ckpt_read_tokenizer(in, &tok, err, sizeof err) != 0) fatal(EXIT_USAGE, "model strip: %s", err);
    meta.tok = &tok;
    char *yaml = NULL;
    if (hf_is_dir(in)) { /* the config a run training this model would have */
        snprintf(meta.stage, sizeof meta.stage, "import");
        Config c;
        config_defaults(&c);
        c.model = m->cfg;
        size_t cap = CFG_YAML_MAX + 4400;
        yaml = malloc(cap);
        if (!yaml) fatal(EXIT_RUNTIME, "model strip: out of memory");
        int n = snprintf(yaml, cap, "# the Hugging Face Llama directory %s (fspo model strip); defaults otherwise\n", in);
        if (n < 0 || (size_t)n >= cap || config_to_yaml(&c, yaml + n, cap - (size_t)n) < 0)
            fatal(EXIT_RUNTIME, "model strip: the config does not fit");
    } else
        yaml = ckpt_read_config(in, err, sizeof err);
    if (!yaml) fatal(EXIT_USAGE, "model strip: %s", err);
    if (store == CKPT_STORE_BF16) model_round_bf16(m);
    if (ckpt_save_weights(out, m, &meta, yaml, store, err, sizeof err) != 0) fatal(EXIT_USAGE, "model strip: %s", err);
    printf("model strip: %s -> %s (step %lld, stage %s, %zu parameters%s, no optimizer state)\n", in, out,
           (long long)meta.step, meta.stage, m->n_params, store == CKPT_STORE_BF16 ? " stored as bfloat16" : "");
    free(yaml);
    tok_free(&tok);
    model_free(m);
    return EXIT_OK;
}

/* `fspo model logits --ckpt PATH --tokens 1,2,3 --out FILE`: the forward of
 * one causal row (the training forward on a forward-only model), logits
 * [T, vocab] as raw little-endian float32, for comparing with other
 * implementations (tests/test_llama.sh). */
static int model_logits(int argc, char **argv)
{
    const char *cmd = "model logits", *ckpt = NULL, *tokens = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) {
            printf("usage: fspo model logits --ckpt PATH --tokens ID,ID,... --out FILE\n\n"
                   "Runs the model of PATH (a checkpoint or a Hugging Face Llama directory) on one row of\n"
                   "token ids at positions 0.. and writes the logits [tokens, vocab] to FILE as raw\n"
                   "little-endian float32.\n");
            return EXIT_OK;
        } else if (!strcmp(a, "--ckpt")) ckpt = cli_str(cmd, argc, argv, &i);
        else if (!strcmp(a, "--tokens")) tokens = cli_str(cmd, argc, argv, &i);
        else if (!strcmp(a, "--out")) out = cli_str(cmd, argc, argv, &i);
        else fatal(EXIT_USAGE, "%s: unknown argument '%s' (see 'fspo model logits --help')", cmd, a);
    }
    if (!ckpt || !tokens || !out) fatal(EXIT_USAGE, "%s: --ckpt, --tokens and --out are required", cmd);
    int cap = 1, T = 0;
    for (const char *p = tokens; *p; p++) cap += *p == ',';
    int32_t *ids = malloc(sizeof *ids * (size_t)cap);
    if (!ids) fatal(EXIT_RUNTIME, "%s: out of memory", cmd);
    for (const char *p = tokens; *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > (1L << 30) || (*end && *end != ','))
            fatal(EXIT_USAGE, "%s: --tokens: '%s' is not a list of token ids", cmd, tokens);
        ids[T++] = (int32_t)v;
        p = *end ? end + 1 : end;
    }
    if (T == 0) fatal(EXIT_USAGE, "%s: --tokens is empty", cmd);
    char err[2048];
    Model *m = frozen_load(ckpt, &(FrozenSpec){ .max_rows = 1, .max_len = T }, err, sizeof err);
    if (!m) fatal(EXIT_USAGE, "%s: %s", cmd, err);
    if (T > m->cfg.max_seq) fatal(EXIT_USAGE, "%s: %d tokens exceed model.max_seq = %d", cmd, T, m->cfg.max_seq);
    for (int t = 0; t < T; t++)
        if (ids[t] >= m->cfg.vocab) fatal(EXIT_USAGE, "%s: token id %d is outside the vocabulary (%d)", cmd, ids[t], m->cfg.vocab);
    Batch b;
    batch_alloc(&b, 1, T, 1, 1);
    batch_reset(&b, 1, T, 1);
    batch_set_causal_row(&b, 0, ids);
    b.targets[0] = (Target){ 0, 0, 1 };
    b.n_targets = 1;
    float logp;
    model_forward(m, &b, &logp);
    FILE *f = fopen(out, "wb");
    size_t n = (size_t)T * m->cfg.vocab;
    if (!f || fwrite(m->logits, sizeof(float), n, f) != n || fclose(f) != 0)
        fatal(EXIT_RUNTIME, "%s: %s: cannot write", cmd, out);
    batch_free(&b);
    model_free(m);
    free(ids);
    return EXIT_OK;
}

int cmd_model(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "strip")) return cmd_model_strip(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "logits")) return model_logits(argc - 1, argv + 1);
    ModelConfig cfg = { .vocab = 264, .d_model = 256, .n_layers = 4, .n_heads = 4, .max_seq = 1024 };
    int batch = 4, ranks = 1, shard = 0, json = 0, recompute = 0;
    AttentionKind attn = ATTENTION_FULL;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            printf("usage: fspo model [options]\n       fspo model strip CKPT -o OUT.h5   (see fspo model strip --help)\n"
                   "       fspo model logits --ckpt PATH --tokens IDS --out FILE\n\n"
                   "Prints the tensor table, parameter count, training FLOPs per "
                   "token and the\nmemory a training step needs for a model shape (default: preset A).\n"
                   "'fspo model logits --help': a checkpoint's logits on token ids.\n\n"
                   "%s"
                   "  --attention K      full (default) or flash: model.attention, what the backward keeps\n"
                   "  --recompute        model.recompute: one block's activations kept instead of n_layers\n"
                   "  --ranks R --shard  the memory of one of R ranks with mpi.shard_optimizer (ZeRO-1:\n"
                   "                     each rank keeps 1/R of the AdamW moments)\n"
                   "  --json             the figures as one JSON object (no tensor table)\n",
                   MODEL_SHAPE_HELP);
            return EXIT_OK;
        }
        if (model_shape_option("model", argc, argv, &i, &cfg, &batch)) continue;
        if (!strcmp(argv[i], "--attention")) {
            const char *k = cli_str("model", argc, argv, &i);
            if (!strcmp(k, "full")) attn = ATTENTION_FULL;
            else if (!strcmp(k, "flash")) attn = ATTENTION_FLASH;
            else fatal(EXIT_USAGE, "model --attention: '%s': expected full or flash", k);
        } else if (!strcmp(argv[i], "--recompute")) recompute = 1;
        else if (!strcmp(argv[i], "--ranks")) ranks = cli_int("model", argc, argv, &i, 1, 1 << 20);
        else if (!strcmp(argv[i], "--shard")) shard = 1;
        else if (!strcmp(argv[i], "--json")) json = 1;
        else fatal(EXIT_USAGE, "model: unknown option '%s' (see 'fspo model --help')", argv[i]);
    }
    if (shard && ranks < 2) fatal(EXIT_USAGE, "model --shard: give --ranks R (R >= 2), the ranks the moments are sharded over");
    model_shape_check("model", &cfg);
    /* the layout only: no weights or arena, so any shape can be asked about */
    Model *m = model_layout(&cfg);
    double arena = (double)model_arena_bytes_keep(&cfg, 1, batch, cfg.max_seq, (ActKeep){ attn, recompute });
    /* params and grads, then the AdamW moments (ZeRO-1: this rank's slice) */
    double moments = 8.0 * (double)m->n_params / (shard ? ranks : 1), state = 8.0 * (double)m->n_params + moments;
    if (json) {
        printf("{\"vocab\": %d, \"d_model\": %d, \"n_layers\": %d, \"n_heads\": %d, \"ffn_hidden\": %d, \"seq\": %d, "
               "\"batch\": %d, \"params\": %zu, \"flops_per_token\": %.0f, \"attention\": \"%s\", \"ranks\": %d, "
               "\"shard\": %s, \"recompute\": %s, \"state_bytes\": %.0f, \"activation_bytes\": %.0f}\n",
               cfg.vocab, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.ffn_hidden, cfg.max_seq, batch, m->n_params,
               model_flops_per_token(&cfg, cfg.max_seq), ATTENTION_NAMES[attn], ranks, shard ? "true" : "false", recompute ? "true" : "false", state,
               arena);
        model_free(m);
        return EXIT_OK;
    }
    printf("model: vocab %d, d_model %d, n_layers %d, n_heads %d, n_kv_heads %d, ffn_hidden %d, max_seq %d, %s head\n\n",
           cfg.vocab, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads ? cfg.n_kv_heads : cfg.n_heads,
           cfg.ffn_hidden, cfg.max_seq, cfg.untied ? "untied" : "tied");
    printf("%-24s %-14s %12s  %s\n", "tensor", "shape", "params", "decay");
    for (int i = 0; i < m->n_tensors; i++) {
        const TensorInfo *t = &m->tensors[i];
        char shape[32];
        if (t->ndim == 2) snprintf(shape, sizeof shape, "[%d, %d]", t->shape[0], t->shape[1]);
        else snprintf(shape, sizeof shape, "[%d]", t->shape[0]);
        if (i < model_layer_tensor(1) || i >= model_layer_tensor(cfg.n_layers)) printf("%-24s %-14s %12zu  %s\n", t->name, shape, t->numel,
                                                   t->decay ? "yes" : "no");
        else if (i == 7) printf("%-24s (layers 1..%d repeat layer 0)\n", "...", cfg.n_layers - 1);
    }
    printf("\nparameters: %zu (%.2f M)\n", m->n_params, m->n_params / 1e6);
    printf("training FLOPs per token at T=%d: %.1f M (6 x matmul weights + 12 x L x T x C)\n", cfg.max_seq,
           model_flops_per_token(&cfg, cfg.max_seq) / 1e6);
    printf("training memory for batch %d x %d: %.1f MiB state (params, grads, AdamW%s) + %.1f MiB activations "
           "(model.attention %s%s)\n",
           batch, cfg.max_seq, state / (1 << 20), shard ? " moments sharded over the ranks" : "", arena / (1 << 20),
           ATTENTION_NAMES[attn], recompute ? ", model.recompute" : "");
    model_free(m);
    return EXIT_OK;
}
