/* rundir: who may write a run directory, and whose files are in it
 * (docs/reliability.md, "The run directory").
 *
 * One writer. `fspo train`'s rank 0 holds <dir>/fspo.lock for the whole
 * run: created with O_CREAT|O_EXCL (atomic on local and network file
 * systems), holding the host, pid, boot id, process start time and start
 * date, plus an fcntl write lock on it where the file system has one. A
 * second trainer finds it and stops, naming the holder. A lock whose
 * holder is provably gone (same host and boot, that pid no longer running
 * that process) is reported as stale, with how to clear it; it is never
 * taken over silently (the one exception, a lock an earlier run of the
 * same Slurm job left, is taken over with a line that says so). A lock from another host is live unless its owner
 * says otherwise: fspo cannot see processes there.
 *
 * One lineage. A run that starts fresh gets a random lineage id, recorded
 * in <dir>/lineage and in every checkpoint it writes (and kept by every
 * resume). A run writes only in a directory of its own lineage, and
 * prunes only checkpoints of its own lineage.
 *
 * The files `fspo train` writes in a run directory ("run files"):
 * ckpt_<step>.h5 (and .tmp), metrics.jsonl (and .tmp), config.yaml
 * (and .tmp), lineage (and .tmp), fspo.lock. */
#ifndef FSPO_RUNDIR_H
#define FSPO_RUNDIR_H

#include <stddef.h>

#define RUNDIR_LOCK "fspo.lock"
#define RUNDIR_LINEAGE "lineage"
#define RUNDIR_LINEAGE_MAX 40 /* bytes of a lineage id, NUL included */

/* Creates dir (and its parents) and takes its lock for this process.
 * 0: held until rundir_unlock() or the process ends. 1: another run holds
 * it, or a stale lock is in the way (err names the holder: host, pid,
 * start, and what to do). The one lock taken over: one an earlier run of
 * the same Slurm job left (its SLURM_JOB_ID, a lower SLURM_RESTART_COUNT,
 * its holder not alive as far as this host can see), with a line on
 * stdout. -1: the directory or the lock cannot be created
 * (err names the file and the reason: read-only, permissions, ...). */
int rundir_lock(const char *dir, char *err, size_t errlen);

/* Releases the lock (removes the file if it is still the one this process
 * created). Idempotent; safe to call from a fatal-error path. */
void rundir_unlock(void);

/* A new random lineage id (16 hex digits). */
void rundir_new_lineage(char *id, size_t len);

/* The lineage recorded in dir: 0 with id set ("" when there is no record),
 * -1 with a message if the record is unreadable or malformed. */
int rundir_read_lineage(const char *dir, char *id, size_t len, char *err, size_t errlen);

/* Writes dir/name atomically (a .tmp, fsync, rename, directory fsync):
 * the lineage record and the config snapshot. 0, or -1 with a message. */
int rundir_write_file(const char *dir, const char *name, const char *text, char *err, size_t errlen);

/* The run files in dir other than the lock: their count, and their names
 * ("ckpt_4.h5, metrics.jsonl, ...", shortened to fit) in list. 0 if dir
 * does not exist. */
int rundir_run_files(const char *dir, char *list, size_t len);

/* 1 if path is (or would be) one of the run files of dir. */
int rundir_is_run_file(const char *dir, const char *path);

#endif
