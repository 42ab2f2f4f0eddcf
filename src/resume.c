/* resume: see resume.h. */
#include "src/resume.h"

#include <stdio.h>
#include <string.h>

#include "src/util.h"

/* Where a run that resumes from train.resume (auto, none or a path)
 * starts. 0 with st->resumed = 1 and st->path set to resume from a
 * checkpoint, st->resumed = 0 to start fresh (st->lineage then set); else
 * an exit code and err. Never picks another run's files (io/rundir.h). */
static int choose_start(const Config *cfg, Start *st, const char *mark, int n_files, const char *files, char *err,
                        size_t errlen)
{
    const char *dir = cfg->train.run_dir, *resume = cfg->train.resume;
    char *path = st->path;
    size_t plen = sizeof st->path;
    int *full = &st->resumed;
    *full = 0;
    if (!strcmp(resume, "none")) {
        if (n_files > 0)
            return set_err(err, errlen, "train.resume is none, but %s already holds a run (%s); fspo never deletes "
                                        "or overwrites a run's files. Continue that run with train.resume: auto, "
                                        "start this one in another train.run_dir, or remove those files yourself",
                           dir, files), EXIT_USAGE;
        rundir_new_lineage(st->lineage, sizeof st->lineage);
        return 0;
    }
    if (strcmp(resume, "auto") != 0) {
        snprintf(path, plen, "%s", resume);
        *full = 1;
        return 0;
    }
    /* auto: the newest checkpoint of this directory's run that verifies */
    int found = ckpt_find_latest(dir, mark[0] ? mark : NULL, path, plen, err, errlen);
    if (found < 0) return EXIT_USAGE;
    if (found) {
        *full = 1;
        return 0;
    }
    if (mark[0]) /* this run, stopped before its first checkpoint */
        snprintf(st->lineage, sizeof st->lineage, "%s", mark);
    else if (n_files > 0)
        return set_err(err, errlen, "%s holds files of a run (%s) but no checkpoint and no lineage record, so fspo "
                                    "cannot tell whose they are and will not overwrite them: remove them, or use "
                                    "another train.run_dir", dir, files), EXIT_USAGE;
    else
        rundir_new_lineage(st->lineage, sizeof st->lineage);
    return 0;
}

/* Rank 0: a run resumed from `path` at meta->step must continue this
 * directory's run (a checkpoint given as train.resume may come from
 * elsewhere) and must not later overwrite a newer checkpoint in it: one
 * that does not verify or is another run's (it is not this run's to
 * replace), nor one of its own (a second history in one directory). 0, or
 * an exit code and err. */
static int check_resume(const Config *cfg, const char *path, const CkptMeta *meta, const char *mark, int n_files,
                        const char *files, char *err, size_t errlen)
{
    const char *dir = cfg->train.run_dir;
    if (mark[0] && strcmp(mark, meta->lineage) != 0)
        return set_err(err, errlen, "%s was written by another run (lineage %s) than the one in train.run_dir %s "
                                    "(lineage %s): resume it into its own run directory or a new one", path,
                       meta->lineage[0] ? meta->lineage : "none", dir, mark), EXIT_USAGE;
    if (!mark[0] && n_files > 0 && !rundir_is_run_file(dir, path))
        return set_err(err, errlen, "%s holds another run's files (%s): resume %s into an empty train.run_dir", dir,
                       files, path), EXIT_USAGE;
    char newer[2048];
    int n = ckpt_newer(dir, meta->step, meta->lineage, newer, sizeof newer);
    if (n > 0)
        return set_err(err, errlen, "%s holds %d checkpoint(s) newer than %s (step %lld), which this run would "
                                    "overwrite as it goes on: %s. fspo does not replace files it did not write on "
                                    "this path: move them out of %s, or resume into a new train.run_dir", dir, n, path,
                       (long long)meta->step, newer, dir), EXIT_USAGE;
    return 0;
}

int resume_decide(const Config *cfg, const Tokenizer *tok, uint64_t data_checksum, int has_ref,
                  uint64_t ref_checksum, Model *policy, Optimizer *opt, Start *st, char *err, size_t errlen)
{
    int code = 0;
    memset(st, 0, sizeof *st);
    CkptMeta *meta = &st->meta;
    const char *path = st->path;
    char mark[RUNDIR_LINEAGE_MAX], files[1024];
    int n_files = rundir_run_files(cfg->train.run_dir, files, sizeof files);
    if (rundir_read_lineage(cfg->train.run_dir, mark, sizeof mark, err, errlen) != 0) code = EXIT_USAGE;
    if (code == 0) code = choose_start(cfg, st, mark, n_files, files, err, errlen);
    if (code == 0 && st->resumed) {
        if (ckpt_check_tokenizer(path, tok, cfg->data.path, err, errlen) != 0 ||
            ckpt_load(path, policy, opt, meta, err, errlen) != 0)
            code = EXIT_USAGE;
        else if (strcmp(meta->stage, STAGE_NAMES[cfg->train.stage]) != 0) {
            code = EXIT_USAGE;
            snprintf(err, errlen, "%s: a %s checkpoint cannot resume a %s stage (start a new stage in its own "
                                  "train.run_dir, with train.init_from = this checkpoint)", path, meta->stage,
                     STAGE_NAMES[cfg->train.stage]);
        } else if (has_ref && meta->ref_checksum != ref_checksum) {
            /* the loss is relative to the reference: another one silently changes the objective */
            code = EXIT_USAGE;
            snprintf(err, errlen, "%s was trained against reference %s (weights checksum %016llx); "
                                  "loss.ref_ckpt %s has checksum %016llx", path, meta->ref_ckpt,
                     (unsigned long long)meta->ref_checksum, cfg->loss.ref_ckpt, (unsigned long long)ref_checksum);
        } else
            code = check_resume(cfg, path, meta, mark, n_files, files, err, errlen);
        if (code == 0) {
            snprintf(st->lineage, sizeof st->lineage, "%s", meta->lineage);
            if (meta->data_checksum != data_checksum)
                report("warning: %s was trained on other data (checksum %016llx, %s has %016llx); continuing "
                       "on the new data", path, (unsigned long long)meta->data_checksum, cfg->data.path,
                       (unsigned long long)data_checksum);
        }
    } else if (code == 0 && cfg->train.init_from[0]) {
        if (ckpt_check_tokenizer(cfg->train.init_from, tok, cfg->data.path, err, errlen) != 0 ||
            ckpt_load(cfg->train.init_from, policy, NULL, NULL, err, errlen) != 0)
            code = EXIT_USAGE;
    }
    /* the directory is this lineage's from now on (a run resumed from a
     * checkpoint written before lineages existed keeps none) */
    char record[RUNDIR_LINEAGE_MAX + 1];
    snprintf(record, sizeof record, "%s\n", st->lineage);
    if (code == 0 && !mark[0] && st->lineage[0] &&
        rundir_write_file(cfg->train.run_dir, RUNDIR_LINEAGE, record, err, errlen) != 0)
        code = EXIT_RUNTIME;
    return code;
}
