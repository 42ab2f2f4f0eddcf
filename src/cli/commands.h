/* commands: entry points of the subcommands (argv[0] is the command name). */
#ifndef FSPO_COMMANDS_H
#define FSPO_COMMANDS_H

int cmd_model(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_synth(int argc, char **argv);   /* src/cli/synth_cli.c */
int cmd_prep(int argc, char **argv);    /* src/cli/prep_cli.c */
int cmd_config(int argc, char **argv);  /* src/cli/config_cli.c */
int cmd_train(int argc, char **argv);   /* src/cli/train_cli.c */
int cmd_eval(int argc, char **argv);    /* src/cli/eval_cli.c */
int cmd_sample(int argc, char **argv);  /* src/cli/sample_cli.c */
int cmd_slurm(int argc, char **argv);   /* src/cli/slurm_cli.c */
int cmd_inspect(int argc, char **argv); /* src/cli/inspect_cli.c */
int cmd_tokenizer(int argc, char **argv); /* src/cli/tokenizer_cli.c */
int cmd_export(int argc, char **argv);  /* src/cli/export_cli.c */

#endif

#include "src/model.h"

/* Shape options shared by `model` and `bench`: --preset A|B, --vocab,
 * --d-model, --n-layers, --n-heads, --ffn-hidden, --max-seq, --batch.
 * Returns 1 if argv[*i] was one of them (consuming its value), else 0. */
int model_shape_option(const char *cmd, int argc, char **argv, int *i, ModelConfig *cfg, int *batch);
/* Validates the shape or exits 2 with "CMD: reason". */
void model_shape_check(const char *cmd, ModelConfig *cfg);
#define MODEL_SHAPE_HELP                                                                               \
    "  --preset A|B       benchmark shapes: A = d 256, 4 layers, 4 heads, T 1024, batch 4;\n"          \
    "                     B = d 512, 8 layers, 8 heads, T 1024, batch 2 (vocab 264)\n"                 \
    "  --vocab V          vocabulary size (>= 264: 256 bytes + 8 special tokens)\n"                    \
    "  --d-model C        model width\n"                                                               \
    "  --n-layers L       transformer blocks\n"                                                        \
    "  --n-heads H        attention heads (C/H must be even)\n"                                        \
    "  --n-kv-heads K     key/value heads, dividing H (grouped-query attention; 0 = H)\n"            \
    "  --untied           a separate output head (lm_head) instead of the tied embedding\n"         \
    "  --ffn-hidden F     SwiGLU width (0 = 64*ceil(8C/3/64))\n"                                       \
    "  --max-seq T        tokens per row\n"                                                            \
    "  --batch B          rows per step\n"
