/* slurm_script: the sbatch script of a training job, rendered from a
 * template (slurm/fspo.sbatch.in) and the config. Pure: it reads no file,
 * runs nothing; `fspo slurm submit` (src/cli/slurm_cli.c) checks the config,
 * finds the template and submits what this renders.
 *
 * The template's {{NAME}} placeholders (JOB_NAME, NODES, NTASKS_PER_NODE,
 * CPUS_PER_TASK, MEM, TIME, PARTITION, ACCOUNT, QOS, CONSTRAINT,
 * EXTRA_SBATCH, SIGNAL_LEAD_S, REQUEUE_FLAG, OUTPUT, WORKDIR, FSPO, CONFIG,
 * RUN_DIR, MAX_STEPS, LAUNCHER, REQUEUE, TRAIN_ARGS, SETUP) take the job's
 * values; a line whose placeholder has an empty value is left out.
 *
 * Safety: every value that reaches the shell is one single-quoted word
 * ('\'' for a quote), every value on an #SBATCH line is quoted in sbatch's
 * own syntax; slurm.setup entries are shell code by design, each inside
 * its own `eval`. */
#ifndef FSPO_SLURM_SCRIPT_H
#define FSPO_SLURM_SCRIPT_H

#include <stddef.h>

/* slurm.launcher, how the job step starts the ranks; Config stores it (so
 * it comes before config.h, which includes this header for it). */
typedef enum { LAUNCHER_SRUN, LAUNCHER_MPIRUN } Launcher;
static const char *const LAUNCHER_NAMES[] = { "srun", "mpirun", NULL };

#include "io/config.h"

/* What the script runs: the config (its slurm section and train.max_steps),
 * this binary, the config file, the run directory and working directory
 * (absolute paths), and the --set overrides passed on to the job. */
typedef struct {
    const Config *cfg;
    const char *exe, *config_path, *run_dir, *cwd;
    const char *const *sets;
    int n_sets;
} JobSpec;

/* The script for job rendered from tmpl: a malloc'd string, or NULL with
 * err naming an unknown placeholder's line. */
char *slurm_render_script(const char *tmpl, const JobSpec *job, char *err, size_t errlen);

#endif
