/* `fspo export CKPT -o DIR`: a checkpoint (or a Hugging Face directory) as
 * a Hugging Face LlamaForCausalLM directory (io/hf.h, docs/interop.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/ckpt.h"
#include "io/hf.h"
#include "src/cli/cli.h"
#include "src/cli/commands.h"
#include "src/frozen.h"
#include "src/util.h"

static void usage(void)
{
    printf("usage: fspo export CKPT -o DIR\n\n"
           "Writes the weights of CKPT (a checkpoint ckpt_<step>.h5, or a Hugging Face Llama\n"
           "directory) as a Hugging Face LlamaForCausalLM directory DIR: config.json,\n"
           "model.safetensors (fp32), tokenizer.json, generation_config.json. transformers\n"
           "(AutoModelForCausalLM.from_pretrained(DIR)) and llama.cpp's convert_hf_to_gguf.py\n"
           "read it; docs/interop.md has the mapping. DIR must not exist or be empty.\n\n"
           "  -o, --out DIR       the directory to write\n");
}

int cmd_export(int argc, char **argv)
{
    const char *cmd = "export", *ckpt = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) {
            usage();
            return EXIT_OK;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--out")) out = cli_str(cmd, argc, argv, &i);
        else if (a[0] == '-') fatal(EXIT_USAGE, "%s: unknown option '%s' (see 'fspo export --help')", cmd, a);
        else if (!ckpt) ckpt = a;
        else fatal(EXIT_USAGE, "%s: one checkpoint only ('%s' and '%s')", cmd, ckpt, a);
    }
    if (!ckpt || !out || !*out) fatal(EXIT_USAGE, "%s: CKPT and -o DIR are required (see 'fspo export --help')", cmd);
    struct stat si, so;
    if (stat(ckpt, &si) == 0 && stat(out, &so) == 0 && si.st_dev == so.st_dev && si.st_ino == so.st_ino)
        fatal(EXIT_USAGE, "%s: -o %s is the input itself", cmd, out);
    char err[2048];
    Model *m = frozen_load(ckpt, &(FrozenSpec){ .max_rows = 1, .max_len = 1 }, err, sizeof err);
    if (!m) fatal(EXIT_USAGE, "%s: %s", cmd, err);
    Tokenizer tok;
    if (ckpt_read_tokenizer(ckpt, &tok, err, sizeof err) != 0) {
        model_free(m);
        fatal(EXIT_USAGE, "%s: %s", cmd, err);
    }
    int rc = hf_export(m, &tok, out, err, sizeof err);
    tok_free(&tok);
    if (rc != 0) {
        model_free(m);
        fatal(EXIT_USAGE, "%s: %s", cmd, err);
    }
    printf("exported %s to %s (%zu parameters)\n", ckpt, out, m->n_params);
    model_free(m);
    return EXIT_OK;
}
