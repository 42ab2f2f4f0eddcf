/* rundir: the run directory's lock, lineage record and run files; see rundir.h. */
#include "io/rundir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/ckpt.h"
#include "io/h5util.h"
#include "src/checksum.h"
#include "src/util.h"

/* the lock this process holds: one run directory per process */
static int held_fd = -1;
static char held_path[4200];

/* ---- facts about a process, to recognize it later ---- */

static void read_line_of(const char *path, char *buf, size_t len)
{
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return;
    if (!fgets(buf, (int)len, f)) buf[0] = '\0';
    fclose(f);
    buf[strcspn(buf, "\n")] = '\0';
}

/* The boot id: pids are unique only within one boot of one host. */
static void boot_id(char *buf, size_t len) { read_line_of("/proc/sys/kernel/random/boot_id", buf, len); }

/* Start time of pid in clock ticks after boot (/proc/PID/stat field 22): a
 * pid reused by another process has another start time. -1 if unknown, or
 * if the process has ended and is only waiting to be reaped (a zombie:
 * state Z or X, which kill(pid, 0) still finds). */
static long long pid_start_ticks(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    read_line_of(path, buf, sizeof buf);
    char *p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    if (!p) return -1;
    long long v = -1;
    int field = 2;
    for (char *tok = strtok(p + 1, " "); tok; tok = strtok(NULL, " ")) {
        if (++field == 3 && (*tok == 'Z' || *tok == 'X')) return -1;
        if (field == 22) {
            v = strtoll(tok, NULL, 10);
            break;
        }
    }
    return v;
}

static void host_name(char *buf, size_t len)
{
    if (gethostname(buf, len) != 0) snprintf(buf, len, "?");
    buf[len - 1] = '\0';
}

/* ---- the lock ---- */

typedef struct {
    char host[256], boot[64], started[64];
    char slurm_job[64]; /* SLURM_JOB_ID of the holder's job ("" outside Slurm) */
    long slurm_restart; /* its SLURM_RESTART_COUNT; -1 outside Slurm */
    long pid;
    long long ticks;
} Holder;

/* Parses the "key value" lines of a lock file; 0 if host and pid are there. */
static int parse_lock(const char *text, Holder *h)
{
    memset(h, 0, sizeof *h);
    h->pid = -1, h->ticks = -1, h->slurm_restart = -1;
    char line[512];
    for (const char *p = text; *p;) {
        size_t n = strcspn(p, "\n");
        snprintf(line, sizeof line, "%.*s", (int)(n < sizeof line ? n : sizeof line - 1), p);
        p += n + (p[n] == '\n');
        char *v = strchr(line, ' ');
        if (!v) continue;
        *v++ = '\0';
        if (!strcmp(line, "host")) snprintf(h->host, sizeof h->host, "%s", v);
        else if (!strcmp(line, "boot")) snprintf(h->boot, sizeof h->boot, "%s", v);
        else if (!strcmp(line, "started")) snprintf(h->started, sizeof h->started, "%s", v);
        else if (!strcmp(line, "pid")) h->pid = strtol(v, NULL, 10);
        else if (!strcmp(line, "pid_start_ticks")) h->ticks = strtoll(v, NULL, 10);
        else if (!strcmp(line, "slurm_job")) snprintf(h->slurm_job, sizeof h->slurm_job, "%s", v);
        else if (!strcmp(line, "slurm_restart")) h->slurm_restart = strtol(v, NULL, 10);
    }
    return h->host[0] && h->pid > 0 ? 0 : -1;
}

/* Reads the lock file (a starter may still be writing it: a few tries). */
static int read_holder(const char *path, Holder *h, int *fcntl_pid)
{
    char text[4096];
    *fcntl_pid = 0;
    for (int attempt = 0; attempt < 20; attempt++) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) return -1;
        struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
        if (fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK) *fcntl_pid = fl.l_pid ? fl.l_pid : -1;
        ssize_t n = read(fd, text, sizeof text - 1);
        close(fd);
        text[n > 0 ? n : 0] = '\0';
        if (parse_lock(text, h) == 0) return 0;
        nanosleep(&(struct timespec){ 0, 10000000L }, NULL); /* 10 ms */
    }
    return 1; /* exists, but not (yet) a readable lock */
}

static int holder_same_boot(const Holder *h)
{
    char my_boot[64];
    boot_id(my_boot, sizeof my_boot);
    return !h->boot[0] || !strcmp(h->boot, "?") || !my_boot[0] || !strcmp(h->boot, my_boot);
}

/* Whether the holder may still run: its fcntl lock is held (released when
 * it dies), or it is on this host and boot and that process still runs
 * (the same start time: not a reused pid; not a zombie). */
static int holder_alive(const Holder *h, int fcntl_pid)
{
    char me[256];
    host_name(me, sizeof me);
    if (fcntl_pid != 0) return 1;
    if (strcmp(h->host, me) || !holder_same_boot(h)) return 0;
    int exists = kill((pid_t)h->pid, 0) == 0 || errno == EPERM;
    return exists && (h->ticks < 0 || pid_start_ticks(h->pid) == h->ticks);
}

/* The one lock fspo takes over: one left by an earlier run of this same
 * Slurm job. Slurm requeues a job only once every process of its previous
 * run has ended (it cancels the job's steps first; a lost node's job is
 * requeued after the node is declared down), so the holder, on whatever
 * node, is gone; a later run of the job has a higher SLURM_RESTART_COUNT.
 * Without this, a job whose rank 0 was killed (a lost node, the OOM
 * killer) would requeue into a stale lock and stop. The holder must also
 * look dead from here: no fcntl lock, and not running on this host. */
static int left_by_earlier_run_of_this_job(const char *path, Holder *h)
{
    const char *job = getenv("SLURM_JOB_ID"), *restart = getenv("SLURM_RESTART_COUNT");
    int fpid;
    if (!job || !job[0] || read_holder(path, h, &fpid) != 0) return 0;
    long now = restart && restart[0] ? strtol(restart, NULL, 10) : 0;
    return !strcmp(h->slurm_job, job) && h->slurm_restart >= 0 && now > h->slurm_restart && !holder_alive(h, fpid);
}

/* Why the lock at path cannot be taken, as a message. */
static void describe_holder(const char *dir, const char *path, char *err, size_t errlen)
{
    Holder h;
    int fpid, rc = read_holder(path, &h, &fpid);
    if (rc < 0) {
        set_err(err, errlen, "%s: the lock vanished while being read (another run was just ending); try again", path);
        return;
    }
    if (rc > 0) {
        if (fpid)
            set_err(err, errlen, "%s is in use by another fspo train (process %d on this host holds %s)", dir, fpid, path);
        else
            set_err(err, errlen, "%s: a lock file that is not fspo's (no host and pid in it): if no fspo run uses %s, "
                                 "remove it and start again", path, dir);
        return;
    }
    char me[256];
    host_name(me, sizeof me);
    int same_host = !strcmp(h.host, me), same_boot = holder_same_boot(&h);
    if (holder_alive(&h, fpid))
        set_err(err, errlen, "%s is in use by another fspo train: pid %ld on host %s, started %s (lock %s). Two runs "
                             "must not write one directory: wait for it to end, stop it, or use another train.run_dir",
                dir, h.pid, h.host, h.started, path);
    else if (same_host)
        set_err(err, errlen, "%s: stale lock of fspo pid %ld on this host (%s), started %s, which is no longer running "
                             "(%s); nothing holds %s now. Check that no run of it is left, then remove the lock and start "
                             "again: rm %s",
                path, h.pid, h.host, h.started,
                same_boot ? "it was killed: SIGKILL, out of memory, or its job aborted" : "the host rebooted since",
                dir, path);
    else
        set_err(err, errlen, "%s is locked by fspo pid %ld on host %s, started %s; from %s fspo cannot tell whether it "
                             "still runs. If it does not (ssh %s ps -p %ld), remove the lock and start again: rm %s",
                dir, h.pid, h.host, h.started, me, h.host, h.pid, path);
}

/* mkdir -p (src/util.h) with the run directory's messages. */
static int make_run_dir(const char *dir, char *err, size_t errlen)
{
    int rc = make_dirs(dir);
    if (rc == MKDIRS_TOO_LONG) return set_err(err, errlen, "%s: path too long", dir);
    if (rc == MKDIRS_NOT_DIR) return set_err(err, errlen, "%s: not a directory", dir);
    if (rc != 0) return set_err(err, errlen, "%s: cannot create the run directory: %s", dir, strerror(errno));
    return 0;
}

int rundir_lock(const char *dir, char *err, size_t errlen)
{
    if (held_fd >= 0) return set_err(err, errlen, "internal: a run directory is locked already (%s)", held_path);
    if (make_run_dir(dir, err, errlen) != 0) return -1;
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, RUNDIR_LOCK);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    Holder prev;
    if (fd < 0 && errno == EEXIST && left_by_earlier_run_of_this_job(path, &prev)) {
        printf("train: %s: taking over the lock of Slurm job %s's run %ld (pid %ld on %s, started %s), which Slurm "
               "ended before this requeued run %s\n",
               path, prev.slurm_job, prev.slurm_restart, prev.pid, prev.host, prev.started,
               getenv("SLURM_RESTART_COUNT") ? getenv("SLURM_RESTART_COUNT") : "?");
        fflush(stdout);
        if (unlink(path) == 0 || errno == ENOENT) fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    }
    if (fd < 0) {
        if (errno != EEXIST) return set_err(err, errlen, "%s: cannot create the lock: %s", path, strerror(errno));
        describe_holder(dir, path, err, errlen);
        return 1;
    }
    /* the fcntl lock first, so a reader that comes before the text sees a holder */
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    int locked = fcntl(fd, F_SETLK, &fl) == 0;
    char host[256], boot[64], date[64], text[1024], slurm[160] = "";
    host_name(host, sizeof host);
    const char *job = getenv("SLURM_JOB_ID"), *restart = getenv("SLURM_RESTART_COUNT");
    if (job && job[0] && strlen(job) < 64 && !strchr(job, '\n'))
        snprintf(slurm, sizeof slurm, "slurm_job %s\nslurm_restart %ld\n", job,
                 restart && restart[0] ? strtol(restart, NULL, 10) : 0L);
    boot_id(boot, sizeof boot);
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    int n = snprintf(text, sizeof text,
                     "# fspo train holds this run directory; remove only if no process below is running\n"
                     "host %s\npid %ld\nboot %s\npid_start_ticks %lld\nstarted %s\nfcntl %s\n%s",
                     host, (long)getpid(), boot[0] ? boot : "?", pid_start_ticks(getpid()), date,
                     locked ? "held" : "unsupported by this file system", slurm);
    if (write(fd, text, (size_t)n) != n || fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(path);
        return set_err(err, errlen, "%s: cannot write the lock: %s", path, strerror(e ? e : EIO));
    }
    fsync_dir_of(path);
    held_fd = fd;
    snprintf(held_path, sizeof held_path, "%s", path);
    return 0;
}

void rundir_unlock(void)
{
    if (held_fd < 0) return;
    struct stat mine, now;
    /* remove it only if it is still ours: someone may have replaced it */
    if (fstat(held_fd, &mine) == 0 && stat(held_path, &now) == 0 && mine.st_dev == now.st_dev && mine.st_ino == now.st_ino)
        unlink(held_path);
    close(held_fd);
    held_fd = -1;
}

/* ---- lineage ---- */

void rundir_new_lineage(char *id, size_t len)
{
    uint64_t v = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, &v, sizeof v) != (ssize_t)sizeof v) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t seed[3] = { (uint64_t)ts.tv_sec, (uint64_t)ts.tv_nsec, (uint64_t)getpid() };
        v = checksum64(seed, sizeof seed);
    }
    if (fd >= 0) close(fd);
    snprintf(id, len, "%016llx", (unsigned long long)v);
}

int rundir_read_lineage(const char *dir, char *id, size_t len, char *err, size_t errlen)
{
    char path[4200], line[256];
    snprintf(path, sizeof path, "%s/%s", dir, RUNDIR_LINEAGE);
    id[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return errno == ENOENT ? 0 : set_err(err, errlen, "%s: %s", path, strerror(errno));
    int ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    size_t n = ok ? strspn(line, "0123456789abcdef") : 0;
    if (n == 0 || n >= RUNDIR_LINEAGE_MAX || n >= len || (line[n] != '\n' && line[n] != '\0'))
        return set_err(err, errlen, "%s: not a lineage record (one line of hex digits expected); it names the run "
                                    "that owns %s: restore it, or use another train.run_dir", path, dir);
    memcpy(id, line, n);
    id[n] = '\0';
    return 0;
}

int rundir_write_file(const char *dir, const char *name, const char *text, char *err, size_t errlen)
{
    char path[4200], tmp[4300], why[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return set_err(err, errlen, "%s: %s", tmp, strerror(errno));
    int ok = fputs(text, f) >= 0 && fflush(f) == 0;
    int e = errno;
    if (fclose(f) != 0 && ok) ok = 0, e = errno;
    if (!ok) {
        unlink(tmp);
        return set_err(err, errlen, "%s: %s", tmp, strerror(e));
    }
    if (commit_tmp(tmp, path, why, sizeof why) != 0) return set_err(err, errlen, "%s: %s", path, why);
    return 0;
}

/* ---- run files ---- */

static int is_run_name(const char *name)
{
    static const char *fixed[] = { "metrics.jsonl", "config.yaml", RUNDIR_LINEAGE, RUNDIR_LOCK };
    long step;
    char base[256];
    size_t n = strlen(name);
    if (n >= sizeof base) return 0;
    memcpy(base, name, n + 1);
    if (n > 4 && !strcmp(base + n - 4, ".tmp")) base[n - 4] = '\0';
    if (ckpt_name_step(base, &step)) return 1;
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
        if (!strcmp(base, fixed[i])) return 1;
    return 0;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int rundir_run_files(const char *dir, char *list, size_t len)
{
    list[0] = '\0';
    DIR *d = opendir(dir);
    if (!d) return 0;
    char **names = NULL;
    int count = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!is_run_name(de->d_name) || !strcmp(de->d_name, RUNDIR_LOCK)) continue;
        if (count == cap) {
            char **grown = realloc(names, sizeof *names * (size_t)(cap = cap ? 2 * cap : 16));
            if (!grown) break;
            names = grown;
        }
        if (!(names[count] = strdup(de->d_name))) break;
        count++;
    }
    closedir(d);
    if (count) qsort(names, (size_t)count, sizeof *names, by_name);
    size_t used = 0;
    for (int i = 0; i < count; i++) {
        size_t n = strlen(names[i]);
        if (used + n + 8 < len) used += (size_t)snprintf(list + used, len - used, "%s%s", used ? ", " : "", names[i]);
        else if (used + 6 < len && !strstr(list, "...")) used += (size_t)snprintf(list + used, len - used, ", ...");
        free(names[i]);
    }
    free(names);
    return count;
}

int rundir_is_run_file(const char *dir, const char *path)
{
    char a[4200], b[4200];
    snprintf(a, sizeof a, "%s", path);
    snprintf(b, sizeof b, "%s", path);
    struct stat sd, sp;
    if (!is_run_name(basename(b)) || stat(dir, &sd) != 0 || stat(dirname(a), &sp) != 0) return 0;
    return sd.st_dev == sp.st_dev && sd.st_ino == sp.st_ino;
}
