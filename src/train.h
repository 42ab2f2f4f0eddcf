/* train: the data-parallel training loop behind `fspo train`.
 *
 * Every rank runs the same loop on its share of each step's global batch
 * of meta-examples (a pure function of the step, see sampler.h), reduces
 * gradients with the other ranks, and applies the identical optimizer
 * update. Rank 0 alone writes checkpoints, the metrics log and progress. */
#ifndef FSPO_TRAIN_H
#define FSPO_TRAIN_H

#include "io/config.h"
#include "mpi/dist.h"

/* Runs training as configured; returns the process exit code (EXIT_OK when
 * train.max_steps is reached, EXIT_REQUEUE after a signal or
 * train.max_time with a verified checkpoint written). Errors end the job
 * through fatal(), which aborts every rank. config_path is the config file
 * the run was started with (NULL if none), config_yaml the resolved config.
 * Rank 0 holds the run directory's lock (io/rundir.h) while it runs. */
int train_run(const Config *cfg, const Dist *dist, const char *config_path, const char *config_yaml);

/* What a run of `ranks` ranks, `local` of them on this node, checks before it
 * creates anything (also `fspo config check --ranks N`): every rank gets a
 * meta-example per step, and this node's memory holds its ranks' models and
 * micro-batches. 0, or EXIT_USAGE with a message in err. */
int train_check_ranks(const Config *cfg, int ranks, int local, char *err, size_t errlen);

/* SIGUSR1, SIGTERM, SIGINT and SIGHUP set a flag instead of ending the
 * process: the ranks agree on it at the next step boundary, checkpoint and
 * exit with EXIT_REQUEUE. Called first thing by `fspo train`, so a signal
 * during start-up (config, MPI, data) is caught too. */
void train_catch_signals(void);

#endif
