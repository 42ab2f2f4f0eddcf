/* resume: where a training run starts. Rank 0 holds the run directory and
 * decides: fresh weights, the weights of train.init_from, or a resume from a
 * checkpoint (train.resume: auto, none or a path) with its optimizer state.
 * A run never picks, overwrites or prunes another run's files (the lineage
 * record, io/rundir.h), and never resumes against another stage or another
 * reference model. */
#ifndef FSPO_RESUME_H
#define FSPO_RESUME_H

#include <stddef.h>
#include <stdint.h>

#include "io/ckpt.h"
#include "io/config.h"
#include "io/rundir.h"
#include "src/model.h"
#include "src/optim.h"
#include "src/tokenizer.h"

/* What the run starts from. */
typedef struct {
    int resumed;                      /* from a checkpoint, optimizer state included */
    char path[CFG_STR + 64];          /* that checkpoint */
    CkptMeta meta;                    /* ... and its attributes (zero unless resumed) */
    char lineage[RUNDIR_LINEAGE_MAX]; /* the run's lineage id */
} Start;

/* Rank 0: decides where the run of cfg starts and loads it into policy
 * (whose weights are the seed's random ones on entry) and opt; records the
 * run's lineage in train.run_dir. tok is the dataset's tokenizer (every
 * checkpoint must match it), data_checksum the dataset's and ref_checksum
 * the reference model's weights checksum (0 without one; has_ref: the run
 * has one). 0, or an exit code and a message in err. */
int resume_decide(const Config *cfg, const Tokenizer *tok, uint64_t data_checksum, int has_ref,
                  uint64_t ref_checksum, Model *policy, Optimizer *opt, Start *start, char *err, size_t errlen);

#endif
