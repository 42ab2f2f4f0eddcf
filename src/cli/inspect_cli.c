/* `fspo inspect FILE.h5`: what a checkpoint or dataset holds, and whether it verifies. */
#include <stdio.h>
#include <string.h>

#include "io/inspect.h"
#include "src/cli/cli.h"
#include "src/cli/commands.h"
#include "src/util.h"

int cmd_inspect(int argc, char **argv)
{
    if (argc == 2 && cli_is_help(argv[1])) {
        printf("usage: fspo inspect FILE.h5|DIR\n\nDescribes an fspo checkpoint (step, metadata, model shape, tensor "
               "table with\nnorms, checksum status, stored config) or dataset (users, split, pairs, tokens),\nor "
               "a Hugging Face Llama directory (config.json, tokenizer, tensors, whether fspo\nreads it).\n"
               "Exit 0 if every checksum verifies, 2 if the file is not valid.\n");
        return EXIT_OK;
    }
    if (argc != 2) fatal(EXIT_USAGE, "inspect: expected one file (usage: fspo inspect FILE.h5)");
    if (argv[1][0] == '-' && argv[1][1]) fatal(EXIT_USAGE, "inspect: unknown option '%s' (usage: fspo inspect FILE.h5)", argv[1]);
    char err[1024];
    if (inspect_file(argv[1], stdout, err, sizeof err) != 0) fatal(EXIT_USAGE, "%s", err);
    return EXIT_OK;
}
