/* `fspo config`: check a config, print it resolved, or print the key
 * reference that docs/config.md is generated from. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/config.h"
#include "src/cli/cli.h"
#include "src/cli/commands.h"
#include "src/train.h"
#include "src/util.h"

static const char usage_text[] =
    "usage: fspo config show CFG.yaml [--set section.key=value]...\n"
    "       fspo config check CFG.yaml [--ranks N] [--set section.key=value]...\n"
    "       fspo config doc\n\n"
    "  show    print the resolved config as YAML: every key, defaults included\n"
    "          (what a checkpoint stores; `fspo config show` of it prints it again)\n"
    "  check   validate the config, including what `fspo train` needs of it (a pref\n"
    "          stage's loss.ref_ckpt, a model.max_seq that holds a meta-example), and\n"
    "          print \"CFG.yaml: ok\"; with --ranks N also what N ranks on this node need:\n"
    "          a meta-example per rank per step (train.batch_size) and the node's memory\n"
    "  doc     print the reference of every key in markdown (docs/config.md)\n\n"
    "  --set section.key=value   override one key (repeatable; the last one wins),\n"
    "                            e.g. --set optim.lr=1e-4 --set eval.n_fewshot=[0,4]\n\n"
    "Errors name their place (cfg.yaml:LINE:COL: ... or --set ...: ...) and exit 2.\n";

static int print_doc(void)
{
    char *buf = malloc(CFG_YAML_MAX);
    if (!buf) fatal(EXIT_RUNTIME, "config doc: out of memory");
    int n = config_doc_markdown(buf, CFG_YAML_MAX);
    if (n < 0) {
        free(buf);
        fatal(EXIT_RUNTIME, "config doc: the reference does not fit its buffer");
    }
    fwrite(buf, 1, (size_t)n, stdout);
    free(buf);
    return EXIT_OK;
}

/* show / check: one config file plus any number of --set. */
static int show_or_check(const char *sub, int argc, char **argv)
{
    const char *path = NULL;
    long ranks = 0;
    const char **sets = malloc(sizeof *sets * (size_t)argc);
    int n_sets = 0;
    if (!sets) fatal(EXIT_RUNTIME, "config: out of memory");
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *problem = NULL;
        if (cli_is_help(a)) {
            free(sets);
            fputs(usage_text, stdout);
            return EXIT_OK;
        }
        if (!strcmp(a, "--set")) {
            if (i + 1 >= argc) {
                free(sets);
                fatal(EXIT_USAGE, "config %s: option --set needs a value: section.key=value", sub);
            }
            sets[n_sets++] = argv[++i];
        } else if (!strcmp(a, "--ranks") && !strcmp(sub, "check")) {
            char *end = NULL;
            ranks = i + 1 < argc ? strtol(argv[i + 1], &end, 10) : 0;
            if (i + 1 >= argc || *end || ranks < 1 || ranks > 1 << 20) {
                free(sets);
                fatal(EXIT_USAGE, "config check: --ranks needs a number of ranks in [1, %d]", 1 << 20);
            }
            i++;
        } else if (!strncmp(a, "--set=", 6))
            sets[n_sets++] = a + 6;
        else if (a[0] == '-' && a[1] != '\0')
            problem = "unknown option";
        else if (path)
            problem = "more than one config file";
        else
            path = a;
        if (problem) {
            free(sets);
            fatal(EXIT_USAGE, "config %s: %s: '%s' (see 'fspo config --help')", sub, problem, a);
        }
    }
    if (!path) {
        free(sets);
        fatal(EXIT_USAGE, "config %s: needs a config file (see 'fspo config --help')", sub);
    }
    Config *cfg = malloc(sizeof *cfg);
    char *buf = malloc(CFG_YAML_MAX);
    char err[1536];
    if (!cfg || !buf) fatal(EXIT_RUNTIME, "config: out of memory");
    /* check: also what a training run needs (config_load_train); show: any valid config */
    int rc = !strcmp(sub, "check") ? config_load_train(path, sets, n_sets, cfg, err, sizeof err)
                                   : config_load(path, sets, n_sets, cfg, err, sizeof err);
    free(sets);
    if (rc == 0 && ranks > 0) rc = train_check_ranks(cfg, (int)ranks, (int)ranks, err, sizeof err);
    int n = rc ? -1 : config_to_yaml(cfg, buf, CFG_YAML_MAX);
    free(cfg);
    if (rc) {
        free(buf);
        fatal(EXIT_USAGE, "%s", err);
    }
    if (n < 0) {
        free(buf);
        fatal(EXIT_RUNTIME, "config: the resolved config does not fit its buffer");
    }
    if (!strcmp(sub, "show")) fwrite(buf, 1, (size_t)n, stdout);
    else {
        char shown[8192];
        printf("%s: ok\n", str_escape(shown, sizeof shown, path));
    }
    free(buf);
    return EXIT_OK;
}

int cmd_config(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    const char *sub = argv[1];
    if (cli_is_help(sub)) {
        fputs(usage_text, stdout);
        return EXIT_OK;
    }
    if (!strcmp(sub, "doc")) {
        if (argc > 2 && cli_is_help(argv[2])) {
            fputs(usage_text, stdout);
            return EXIT_OK;
        }
        if (argc > 2) fatal(EXIT_USAGE, "config doc: unexpected argument '%s'", argv[2]);
        return print_doc();
    }
    if (!strcmp(sub, "show") || !strcmp(sub, "check")) return show_or_check(sub, argc, argv);
    fatal(EXIT_USAGE, "config: unknown subcommand '%s' (show, check or doc; see 'fspo config --help')", sub);
}
