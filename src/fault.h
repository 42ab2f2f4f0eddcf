/* fault: the fault hooks of the reliability tests (docs/reliability.md),
 * parsed in one place from the FSPO_FAULT environment variable.
 *
 *   data@R          rank R cannot read the dataset            (train)
 *   nan@R:S[+K]     rank R poisons its loss gradient K steps   (train)
 *   diverge@R:S     rank R nudges a parameter after step S     (train)
 *   ckptfail@S      the checkpoint of step S fails midway      (io/ckpt.c)
 *   ckptslow@MS     MS ms of sleep after each checkpoint tensor (io/ckpt.c)
 *   h5crash, h5hang the HDF5 validation child crashes / hangs  (io/h5util.c)
 *
 * `fspo train` refuses a value that is not exactly one hook (Faults.valid);
 * each hook's field is read the way its user always read it (a value that
 * starts like a hook sets it), so commands that do not check keep their
 * behaviour. */
#ifndef FSPO_FAULT_H
#define FSPO_FAULT_H

typedef struct {
    const char *text;             /* FSPO_FAULT, NULL when unset */
    int valid;                    /* unset, empty or exactly one hook */
    int data_rank;                /* data@R: R, else -1 */
    int nan_rank, nan_steps;      /* nan@R:S[+K]: R (else -1) and K (default 1) */
    long nan_step;                /* ... and S */
    int diverge_rank;             /* diverge@R:S: R, else -1 */
    long diverge_step;            /* ... and S */
    long ckptfail_step;           /* ckptfail@S: S, else -1 */
    int ckptslow_ms;              /* ckptslow@MS: MS (0..10000), else 0 */
    int h5crash, h5hang;          /* the whole value is h5crash / h5hang */
} Faults;

/* FSPO_FAULT's hooks. The value is parsed once and the result cached; the
 * variable is read at each call, so a changed value (tests set and unset it
 * between calls) is parsed afresh. */
Faults fault_from_env(void);

/* nan@R:S[+K] fires on `rank` at `step`. */
int fault_nan_at(const Faults *f, int rank, long step);

/* diverge@R:S fires on `rank` at `step`. */
int fault_diverge_at(const Faults *f, int rank, long step);

#endif
