/* `fspo train CFG.yaml [--set section.key=value]...` */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/config.h"
#include "io/inspect.h"
#include "mpi/dist.h"
#include "src/cli/cli.h"
#include "src/cli/commands.h"
#include "src/train.h"
#include "src/util.h"

static void usage(void)
{
    printf("usage: fspo train CFG.yaml [--set section.key=value]...\n\n"
           "Trains as CFG.yaml says: train.stage sft (next-token loss on preferred answers\n"
           "after the few-shot context) or pref (FSPO's preference loss, loss.type\n"
           "dpo|ipo|cdpo|simpo|hinge, against the frozen loss.ref_ckpt). Runs the same\n"
           "under ./fspo, mpirun -np K ./fspo and srun --mpi=pmix ./fspo: each rank takes\n"
           "its share of train.batch_size meta-examples per step.\n\n"
           "Writes train.run_dir/{config.yaml, metrics.jsonl, ckpt_<step>.h5}. With\n"
           "train.resume: auto it continues from the newest verified checkpoint there.\n\n"
           "One run per directory: rank 0 holds train.run_dir/fspo.lock while it runs; a\n"
           "second train there exits 2 naming the holder. train.resume: none refuses a\n"
           "directory that holds a run already; a run never deletes or overwrites another\n"
           "run's files (docs/reliability.md).\n\n"
           "SIGUSR1, SIGTERM, SIGINT or SIGHUP to the ranks: every rank stops at the next\n"
           "step boundary after one checkpoint and the job exits with code 3 (requeue me);\n"
           "train.max_time does the same. A bare mpirun forwards only SIGUSR1 (it aborts\n"
           "the job on SIGTERM, SIGINT, SIGHUP): use scripts/fspo-mpirun.sh to turn those\n"
           "into SIGUSR1. Exit codes: 0 done, 1 runtime failure, 2 bad config or input, 3 as above.\n");
}

int cmd_train(int argc, char **argv)
{
    train_catch_signals();
    const char *path = NULL;
    const char *sets[256];
    int n_sets = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            usage();
            return EXIT_OK;
        } else if (!strcmp(argv[i], "--set")) {
            if (i + 1 >= argc) fatal(EXIT_USAGE, "train: --set needs section.key=value");
            if (n_sets == 256) fatal(EXIT_USAGE, "train: more than 256 --set overrides");
            sets[n_sets++] = argv[++i];
        } else if (!strncmp(argv[i], "--set=", 6)) {
            if (n_sets == 256) fatal(EXIT_USAGE, "train: more than 256 --set overrides");
            sets[n_sets++] = argv[i] + 6;
        } else if (argv[i][0] == '-')
            fatal(EXIT_USAGE, "train: unknown option '%s' (see 'fspo train --help')", argv[i]);
        else if (path)
            fatal(EXIT_USAGE, "train: one config file expected, got '%s' and '%s'", path, argv[i]);
        else
            path = argv[i];
    }
    if (!path) fatal(EXIT_USAGE, "train: missing CFG.yaml (usage: fspo train CFG.yaml [--set k=v]...)");
    /* the config is checked before MPI starts: a typo costs no MPI start-up */
    static Config cfg;
    char err[1024];
    if (config_load_train(path, sets, n_sets, &cfg, err, sizeof err) != 0) fatal(EXIT_USAGE, "%s", err);
    static char yaml[CFG_YAML_MAX];
    if (config_to_yaml(&cfg, yaml, sizeof yaml) < 0) fatal(EXIT_RUNTIME, "internal: resolved config too long");
    /* the first look at each HDF5 input runs in a forked child (io/h5util.h): fork it before MPI starts */
    const char *inputs[4] = { cfg.data.path, cfg.train.init_from, cfg.loss.ref_ckpt,
                              strcmp(cfg.train.resume, "auto") && strcmp(cfg.train.resume, "none") ? cfg.train.resume : NULL };
    inspect_prevalidate(inputs, 4, strcmp(cfg.train.resume, "auto") ? NULL : cfg.train.run_dir);
    Dist d;
    dist_init(&argc, &argv, &d);
    int code = train_run(&cfg, &d, path, yaml);
    dist_finalize();
    return code;
}
