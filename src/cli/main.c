/* fspo: one binary, subcommands dispatched from here. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "src/cli/cli.h"
#include "src/cli/commands.h"
#include "src/util.h"

#define FSPO_VERSION "0.1.0"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} Command;

static const Command commands[] = {
    { "synth", cmd_synth, "write a synthetic preference dataset with known per-user rewards (JSONL)" },
    { "prep", cmd_prep, "tokenize a JSONL preference dataset into an HDF5 dataset with train/validation/test users" },
    { "train", cmd_train, "train with SFT or FSPO preference losses, data parallel over MPI ranks" },
    { "eval", cmd_eval, "score a checkpoint on validation or test users: few-shot accuracy vs N, baselines, win rate" },
    { "sample", cmd_sample, "generate a personalized answer from a user's few-shot pairs" },
    { "slurm", cmd_slurm, "render and submit an sbatch job from the config's slurm section; job status" },
    { "model", cmd_model, "describe a model shape: tensors, parameters, FLOPs and memory" },
    { "bench", cmd_bench, "measure training-step throughput and MFU against this machine's sgemm peak" },
    { "config", cmd_config, "check a YAML config, print it resolved, or print the key reference" },
    { "export", cmd_export, "write a checkpoint as a Hugging Face Llama directory (safetensors)" },
    { "inspect", cmd_inspect, "describe an HDF5 checkpoint or dataset: step, config, tensors, checksums" },
    { "tokenizer", cmd_tokenizer, "learn a byte-level BPE as a Hugging Face tokenizer.json; encode, decode" },
};

static void usage(FILE *f)
{
    fprintf(f, "fspo %s: Few-Shot Preference Optimization trainer (C, MPI, OpenBLAS)\n\n"
               "usage: fspo COMMAND [options]      fspo COMMAND --help for details\n\ncommands:\n",
            FSPO_VERSION);
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nexit codes: 0 done, 1 runtime failure, 2 bad usage/config/input, 3 stopped by a signal\n"
               "after a verified checkpoint (requeue me).\n");
}

int main(int argc, char **argv)
{
    /* run directories, checkpoints and logs honor the user's umask but are
     * never world-writable, even under umask 000 (docs/reliability.md) */
    mode_t mask = umask(0);
    umask(mask | S_IWOTH);
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (cli_is_help(cmd) || !strcmp(cmd, "help")) {
        usage(stdout);
        return EXIT_OK;
    }
    if (!strcmp(cmd, "--version")) {
        printf("fspo %s\n", FSPO_VERSION);
        return EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(cmd, commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    report("unknown command '%s'", cmd);
    fputc('\n', stderr);
    usage(stderr);
    return EXIT_USAGE;
}
