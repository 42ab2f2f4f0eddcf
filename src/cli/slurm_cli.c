/* `fspo slurm submit CFG.yaml [--set k=v]... [--dry-run]` renders the sbatch
 * template slurm/fspo.sbatch.in from the config's `slurm` section and
 * submits it; `fspo slurm status RUN_DIR` reports on the job and the run.
 *
 * Safety of the rendered script: every config value that reaches the shell
 * is one single-quoted word, and every value on an #SBATCH line is quoted
 * in sbatch's own syntax; values that no #SBATCH line can carry (newlines)
 * are rejected. Only slurm.setup entries are shell code, by design, and
 * each runs inside its own `eval` so it cannot spill into the rest. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "io/ckpt.h"
#include "io/config.h"
#include "src/cli/cli.h"
#include "src/cli/commands.h"
#include "src/duration.h"
#include "src/slurm_script.h"
#include "src/util.h"

#define MAX_SETS 256
#define PATH_LEN 4096
/* Slurm checks time limits every 30 s and sends the --signal warning up to
 * one period early, so the signal may come this long before the lead asks:
 * a job shorter than lead + this could be told to stop as it starts. */
#define SIGNAL_EARLY_S 60
/* ntasks_per_node * cpus_per_task above this is a typo, not a node. */
#define MAX_CPUS_PER_NODE 1024

static const char usage_text[] =
    "usage: fspo slurm submit CFG.yaml [--set section.key=value]... [--dry-run] [--template FILE]\n"
    "       fspo slurm status RUN_DIR\n\n"
    "submit  renders slurm/fspo.sbatch.in from the config's slurm section into\n"
    "        <train.run_dir>/fspo-<job_name>.sbatch, submits it with sbatch and prints\n"
    "        the job id. The job runs this fspo binary (absolute path) as\n"
    "          srun --mpi=pmix fspo train CFG.yaml --set ... --set train.resume=auto\n"
    "        (or mpirun on one node, slurm.launcher) and asks Slurm for USR1\n"
    "        slurm.signal_lead_s seconds before the time limit. On USR1 (also\n"
    "        `scancel --batch -s USR1 JOBID`) the ranks checkpoint, the job requeues\n"
    "        itself and resumes; on TERM (scancel) they checkpoint and the job ends.\n"
    "        Its log is <train.run_dir>/slurm-<jobid>.out, appended across requeues.\n"
    "  --dry-run        print the script; write, create and submit nothing (an\n"
    "                   unwritable run directory is then only a note)\n"
    "  --template FILE  render FILE instead of slurm/fspo.sbatch.in (a site's copy)\n"
    "  --set k=v        override a config key (repeatable), passed on to the job too\n\n"
    "        Checked before anything is submitted (exit 2, nothing submitted):\n"
    "        sbatch on PATH, slurm.time in Slurm's format and longer than\n"
    "        slurm.signal_lead_s + 60 s, tasks x cpus per node, ranks vs\n"
    "        train.batch_size and mpi.threads_per_rank, launcher mpirun only on one\n"
    "        node, #SBATCH values without newlines, a writable run directory.\n\n"
    "status  the last job submitted for RUN_DIR: its Slurm state and restarts,\n"
    "        the last logged step, the newest verified checkpoint, the log's last\n"
    "        job event.\n\n"
    "Exit codes: 0 ok, 1 sbatch or the file system failed, 2 bad usage or config.\n"
    "See docs/slurm.md.\n";

static int has_control_char(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) return 1;
    return 0;
}

/* Slurm's --mem: an integer with an optional K, M, G or T suffix (MB by default). */
static int valid_mem(const char *s)
{
    size_t n = strlen(s), digits = strspn(s, "0123456789");
    if (digits == 0) return 0;
    return digits == n || (digits + 1 == n && strchr("KMGTkmgt", s[n - 1]));
}

/* ---------------------------------------------------------------- paths */

/* This binary's absolute path: the job runs the very same one. */
static void path_of_exe(char *out, size_t len)
{
    ssize_t n = readlink("/proc/self/exe", out, len - 1);
    if (n <= 0 || (size_t)n >= len - 1) fatal(EXIT_RUNTIME, "slurm: cannot resolve this binary's path: %s", strerror(errno));
    out[n] = '\0';
}

/* dir/name into out; a path too long for out is a usage error, not a truncation. */
static void join_path(char *out, size_t len, const char *dir, const char *name)
{
    int n = snprintf(out, len, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= len) fatal(EXIT_USAGE, "slurm: path too long: %s/%s", dir, name);
}

/* p made absolute against the working directory, without touching the
 * file system beyond getcwd (the run directory may not exist yet). */
static void absolute_path(const char *p, char *out, size_t len)
{
    if (p[0] == '/') {
        if ((size_t)snprintf(out, len, "%s", p) >= len) fatal(EXIT_USAGE, "slurm: path too long: %s", p);
        return;
    }
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd)) fatal(EXIT_RUNTIME, "slurm: getcwd: %s", strerror(errno));
    while (p[0] == '.' && p[1] == '/') p += 2;
    if (!strcmp(p, ".")) p = "";
    if ((size_t)snprintf(out, len, "%s%s%s", cwd, *p ? "/" : "", p) >= len) fatal(EXIT_USAGE, "slurm: path too long: %s", p);
    size_t n = strlen(out);
    while (n > 1 && out[n - 1] == '/') out[--n] = '\0';
}

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Whether a file can really be created in dir (access() says yes to root
 * even where a write would fail). */
static int can_create_in(const char *dir, char *why, size_t len)
{
    char probe[PATH_LEN];
    join_path(probe, sizeof probe, dir, ".fspo-write-test.XXXXXX");
    int fd = mkstemp(probe);
    if (fd < 0) return set_err(why, len, "%s", strerror(errno)), 0;
    close(fd);
    unlink(probe);
    return 1;
}

/* For --dry-run: the run directory or, if it does not exist yet, its
 * nearest existing ancestor must be a writable directory. */
static int could_create(const char *dir, char *why, size_t len)
{
    char buf[PATH_LEN];
    snprintf(buf, sizeof buf, "%s", dir);
    struct stat st;
    while (stat(buf, &st) != 0) {
        char *slash = strrchr(buf, '/');
        if (!slash || slash == buf) {
            snprintf(buf, sizeof buf, "/");
            break;
        }
        *slash = '\0';
    }
    if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode)) return set_err(why, len, "%s is not a directory", buf), 0;
    if (access(buf, W_OK | X_OK) != 0) return set_err(why, len, "%s: %s", buf, strerror(errno)), 0;
    return 1;
}

static int on_path(const char *prog)
{
    const char *path = getenv("PATH");
    if (!path) return 0;
    while (*path) {
        size_t n = strcspn(path, ":");
        char cand[PATH_LEN];
        if (snprintf(cand, sizeof cand, "%.*s/%s", (int)n, n ? path : ".", prog) < (int)sizeof cand && access(cand, X_OK) == 0)
            return 1;
        path += n + (path[n] == ':');
    }
    return 0;
}

/* The template's text; NULL with errno set if it cannot be opened or read. */
static char *read_whole_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *s = read_stream(f, NULL);
    int e = errno;
    fclose(f);
    if (!s && e == ENOMEM) fatal(EXIT_RUNTIME, "slurm: out of memory");
    errno = e;
    return s;
}

/* The template ships in slurm/ next to the binary (./fspo) or one level up
 * (build-san/fspo). */
static void find_template(const char *exe, char *out, size_t len)
{
    char dir[PATH_LEN];
    snprintf(dir, sizeof dir, "%s", exe);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    const char *tries[] = { "slurm/fspo.sbatch.in", "../slurm/fspo.sbatch.in" };
    for (int i = 0; i < 2; i++) {
        join_path(out, len, dir, tries[i]);
        if (access(out, R_OK) == 0) return;
    }
    fatal(EXIT_USAGE, "slurm submit: no template at %s/slurm/fspo.sbatch.in (or one level up); give one with --template FILE", dir);
}

/* ------------------------------------------------------------ validation */

typedef struct {
    int problems;
} Problems;

static void problem(Problems *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(Problems *p, const char *fmt, ...)
{
    char msg[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    report("slurm submit: %s", msg);
    p->problems++;
}

static void check_time(const Config *c, Problems *p)
{
    long t = duration_slurm_seconds(c->slurm.time);
    if (t < 0) {
        problem(p, "slurm.time '%s' is not a Slurm time: use MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS", c->slurm.time);
        return;
    }
    long need = (long)c->slurm.signal_lead_s + SIGNAL_EARLY_S;
    if (t != DURATION_UNLIMITED && t < need)
        problem(p,
                "slurm.time %s (%ld s) is too short for slurm.signal_lead_s = %d: Slurm may send the stop signal up to %d s "
                "before the lead asks, so the job needs at least %ld s to train before it checkpoints; raise slurm.time or "
                "lower slurm.signal_lead_s",
                c->slurm.time, t, c->slurm.signal_lead_s, SIGNAL_EARLY_S, need);
}

static void check_tasks(const Config *c, Problems *p)
{
    long per_node = (long)c->slurm.ntasks_per_node * c->slurm.cpus_per_task;
    long ranks = (long)c->slurm.nodes * c->slurm.ntasks_per_node;
    if (per_node > MAX_CPUS_PER_NODE)
        problem(p, "slurm.ntasks_per_node %d x slurm.cpus_per_task %d = %ld CPUs per node; no node has more than %d: check both",
                c->slurm.ntasks_per_node, c->slurm.cpus_per_task, per_node, MAX_CPUS_PER_NODE);
    if (ranks > c->train.batch_size)
        problem(p, "%ld ranks (slurm.nodes %d x slurm.ntasks_per_node %d) but train.batch_size is %d: every rank needs a meta-example per step",
                ranks, c->slurm.nodes, c->slurm.ntasks_per_node, c->train.batch_size);
    if (c->mpi.threads_per_rank > c->slurm.cpus_per_task)
        problem(p, "mpi.threads_per_rank %d exceeds slurm.cpus_per_task %d: the ranks would oversubscribe their cores "
                   "(0 takes SLURM_CPUS_PER_TASK)",
                c->mpi.threads_per_rank, c->slurm.cpus_per_task);
    if (c->slurm.launcher == LAUNCHER_MPIRUN && c->slurm.nodes > 1)
        problem(p, "slurm.launcher mpirun starts ranks on one node only, but slurm.nodes is %d: use launcher: srun "
                   "(srun --mpi=pmix starts ranks on every node)",
                c->slurm.nodes);
}

/* Values on #SBATCH lines: one line each, in a form Slurm accepts. */
static void check_sbatch_values(const Config *c, const char *run_dir, const char *cwd, Problems *p)
{
    const struct { const char *key, *value; } fields[] = {
        { "slurm.job_name", c->slurm.job_name }, { "slurm.mem", c->slurm.mem },
        { "slurm.time", c->slurm.time },         { "slurm.partition", c->slurm.partition },
        { "slurm.account", c->slurm.account },   { "slurm.qos", c->slurm.qos },
        { "slurm.constraint", c->slurm.constraint }, { "train.run_dir (the job's log)", run_dir },
        { "the working directory", cwd },
    };
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++)
        if (has_control_char(fields[i].value))
            problem(p, "%s contains a newline or another control character, which no #SBATCH line can carry", fields[i].key);
    for (int i = 0; i < c->slurm.extra_sbatch.n; i++) {
        const char *e = c->slurm.extra_sbatch.v[i];
        if (has_control_char(e)) problem(p, "slurm.extra_sbatch entry %d contains a newline or another control character", i + 1);
        else if (e[0] != '-') problem(p, "slurm.extra_sbatch entry %d '%s' is not an sbatch option (e.g. \"--exclusive\")", i + 1, e);
    }
    if (c->slurm.mem[0] && !valid_mem(c->slurm.mem))
        problem(p, "slurm.mem '%s' is not a Slurm memory size: a number of MB or one with K, M, G or T (0 = all of a node's)", c->slurm.mem);
}

/* A dry run only warns: it may preview a cluster's script on another machine. */
static void check_run_dir(const char *run_dir, int dry_run, Problems *p)
{
    char why[PATH_LEN + 64];
    int rc;
    if (dry_run) {
        if (!could_create(run_dir, why, sizeof why))
            fprintf(stderr, "slurm submit: note: train.run_dir %s cannot be created here: %s\n",
                    str_escape((char[PATH_LEN * 4]){ 0 }, PATH_LEN * 4, run_dir), why);
    } else if ((rc = make_dirs(run_dir)) != 0) {
        problem(p, "train.run_dir %s cannot be created: %s", run_dir,
                strerror(rc == MKDIRS_TOO_LONG ? ENAMETOOLONG : rc == MKDIRS_NOT_DIR ? ENOTDIR : errno));
    } else if (!can_create_in(run_dir, why, sizeof why)) {
        problem(p, "train.run_dir %s is not writable: %s", run_dir, why);
    }
}

/* ------------------------------------------------------------ processes */

/* Runs argv (no shell), its stdout into out (NUL-terminated, truncated to
 * len), stderr passed through. Returns the exit code, or -1 if it could
 * not run or died from a signal. */
static int run_capture(char *const argv[], char *out, size_t len)
{
    int fd[2];
    if (pipe(fd) != 0) return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return close(fd[0]), close(fd[1]), -1;
    if (pid == 0) {
        dup2(fd[1], STDOUT_FILENO);
        close(fd[0]), close(fd[1]);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(fd[1]);
    size_t got = 0;
    char sink[256];
    for (;;) {
        char *dst = got + 1 < len ? out + got : sink;
        size_t room = got + 1 < len ? len - 1 - got : sizeof sink;
        ssize_t n = read(fd[0], dst, room);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        if (dst == out + got) got += (size_t)n;
    }
    close(fd[0]);
    if (len) out[got] = '\0';
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* ---------------------------------------------------------------- submit */

typedef struct {
    const char *config;
    const char *sets[MAX_SETS];
    int n_sets;
    int dry_run;
    const char *template_path;
} SubmitArgs;

static void parse_submit_args(int argc, char **argv, SubmitArgs *a)
{
    memset(a, 0, sizeof *a);
    for (int i = 2; i < argc; i++) {
        const char *s = argv[i];
        if (cli_is_help(s)) {
            fputs(usage_text, stdout);
            exit(EXIT_OK);
        } else if (!strcmp(s, "--set") || !strncmp(s, "--set=", 6)) {
            if (a->n_sets == MAX_SETS) fatal(EXIT_USAGE, "slurm submit: more than %d --set overrides", MAX_SETS);
            if (s[5] == '=') a->sets[a->n_sets++] = s + 6;
            else if (i + 1 < argc) a->sets[a->n_sets++] = argv[++i];
            else fatal(EXIT_USAGE, "slurm submit: --set needs section.key=value");
        } else if (!strcmp(s, "--dry-run")) {
            a->dry_run = 1;
        } else if (!strcmp(s, "--template")) {
            if (i + 1 >= argc) fatal(EXIT_USAGE, "slurm submit: --template needs a file");
            a->template_path = argv[++i];
        } else if (s[0] == '-' && s[1]) {
            fatal(EXIT_USAGE, "slurm submit: unknown option '%s' (see 'fspo slurm --help')", s);
        } else if (a->config) {
            fatal(EXIT_USAGE, "slurm submit: one config file expected, got '%s' and '%s'", a->config, s);
        } else {
            a->config = s;
        }
    }
    if (!a->config) fatal(EXIT_USAGE, "slurm submit: missing CFG.yaml (usage: fspo slurm submit CFG.yaml [--set k=v]... [--dry-run])");
}

/* A file-name-safe form of the job name for fspo-<job_name>.sbatch. */
static void safe_file_part(const char *s, char *out, size_t len)
{
    size_t n = 0;
    for (; *s && n + 1 < len && n < 64; s++) out[n++] = (isalnum((unsigned char)*s) || strchr("._-", *s)) ? *s : '_';
    out[n] = '\0';
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) == EOF || fclose(f) != 0) fatal(EXIT_RUNTIME, "slurm submit: cannot write %s: %s", path, strerror(errno));
}

/* sbatch --parsable prints "JOBID" or "JOBID;CLUSTER". */
static void submit_script(const char *script, const char *run_dir)
{
    char *argv[] = { "sbatch", "--parsable", (char *)script, NULL };
    char out[256];
    int rc = run_capture(argv, out, sizeof out);
    long id = strtol(out, NULL, 10);
    if (rc != 0 || id <= 0)
        fatal(EXIT_RUNTIME, "slurm submit: sbatch %s failed (exit %d)%s%s", script, rc, out[0] ? ": " : "", out);
    char path[PATH_LEN];
    join_path(path, sizeof path, run_dir, "slurm-jobs.txt");
    FILE *f = fopen(path, "a");
    time_t now = time(NULL);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", localtime(&now));
    if (f) fprintf(f, "%ld\t%s\t%s\n", id, when, script), fclose(f);
    printf("%ld\n", id);
    fprintf(stderr, "slurm submit: job %ld queued; script %s, log %s/slurm-%ld.out; 'fspo slurm status %s' follows it\n", id,
            script, run_dir, id, run_dir);
}

static int cmd_submit(int argc, char **argv)
{
    SubmitArgs a;
    parse_submit_args(argc, argv, &a);
    static Config cfg;
    char err[1536];
    if (config_load_train(a.config, a.sets, a.n_sets, &cfg, err, sizeof err) != 0) fatal(EXIT_USAGE, "%s", err);

    char exe[PATH_LEN], config_path[PATH_LEN], run_dir[PATH_LEN], cwd[PATH_LEN], tmpl_path[PATH_LEN];
    path_of_exe(exe, sizeof exe);
    absolute_path(a.config, config_path, sizeof config_path);
    absolute_path(cfg.train.run_dir, run_dir, sizeof run_dir);
    absolute_path(".", cwd, sizeof cwd);
    if (a.template_path) snprintf(tmpl_path, sizeof tmpl_path, "%s", a.template_path);
    else find_template(exe, tmpl_path, sizeof tmpl_path);

    Problems p = { 0 };
    if (!a.dry_run && !on_path("sbatch"))
        problem(&p, "sbatch not found on PATH: run this on a Slurm login node (or use --dry-run to see the script)");
    check_time(&cfg, &p);
    check_tasks(&cfg, &p);
    check_sbatch_values(&cfg, run_dir, cwd, &p);
    if (p.problems == 0) check_run_dir(run_dir, a.dry_run, &p); /* creates it: only once all else is right */
    if (p.problems) fatal(EXIT_USAGE, "slurm submit: %d problem%s above; nothing submitted", p.problems, p.problems > 1 ? "s" : "");
    if (strcmp(cfg.train.resume, "auto") != 0)
        fprintf(stderr, "slurm submit: note: the job runs with train.resume=auto (not '%s') so that a requeued job resumes\n",
                str_escape((char[CFG_STR * 4]){ 0 }, CFG_STR * 4, cfg.train.resume));

    char *tmpl = read_whole_file(tmpl_path);
    if (!tmpl) fatal(EXIT_USAGE, "slurm submit: template %s: %s", tmpl_path, strerror(errno));
    JobSpec job = { &cfg, exe, config_path, run_dir, cwd, a.sets, a.n_sets };
    char *script = slurm_render_script(tmpl, &job, err, sizeof err);
    free(tmpl);
    if (!script) fatal(EXIT_USAGE, "slurm submit: template %s: %s", tmpl_path, err);

    if (a.dry_run) {
        fputs(script, stdout);
    } else {
        char name[80], file[100], path[PATH_LEN];
        safe_file_part(cfg.slurm.job_name, name, sizeof name);
        snprintf(file, sizeof file, "fspo-%s.sbatch", name);
        join_path(path, sizeof path, run_dir, file);
        write_file(path, script);
        submit_script(path, run_dir);
    }
    free(script);
    return EXIT_OK;
}

/* ---------------------------------------------------------------- status */

/* The value of "Key=" in scontrol's one-line output, up to the next blank. */
static int field_of(const char *line, const char *key, char *out, size_t len)
{
    char pat[64];
    size_t n = (size_t)snprintf(pat, sizeof pat, "%s=", key);
    const char *p = line;
    while ((p = strstr(p, pat)) && p != line && p[-1] != ' ') p += n; /* "Key=" must start a field */
    if (!p) return 0;
    p += n;
    snprintf(out, len, "%.*s", (int)strcspn(p, " \n"), p);
    return 1;
}

/* The last non-empty line of a file containing needle (any line if NULL),
 * or "" if none. */
static void last_line_matching(const char *path, const char *needle, char *out, size_t len)
{
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[4096];
    while (fgets(line, sizeof line, f))
        if (line[0] != '\n' && (!needle || strstr(line, needle))) {
            line[strcspn(line, "\n")] = '\0';
            snprintf(out, len, "%s", line);
        }
    fclose(f);
}

static long last_job_id(const char *run_dir)
{
    char path[PATH_LEN], line[PATH_LEN];
    join_path(path, sizeof path, run_dir, "slurm-jobs.txt");
    last_line_matching(path, NULL, line, sizeof line);
    return strtol(line, NULL, 10);
}

static long last_logged_step(const char *run_dir)
{
    char path[PATH_LEN], line[4096];
    join_path(path, sizeof path, run_dir, "metrics.jsonl");
    last_line_matching(path, "\"step\"", line, sizeof line);
    const char *p = strstr(line, "\"step\"");
    if (!p) return -1;
    p += 6;
    while (*p == ' ' || *p == ':') p++;
    return strtol(p, NULL, 10);
}

static void print_job(long id, const char *run_dir)
{
    char idstr[32], out[8192], state[64] = "", restarts[32] = "", exitc[32] = "", runtime[32] = "", limit[32] = "",
                                   reason[128] = "";
    snprintf(idstr, sizeof idstr, "%ld", id);
    char *argv[] = { "scontrol", "show", "job", "-o", idstr, NULL };
    int known = on_path("scontrol") && run_capture(argv, out, sizeof out) == 0 && field_of(out, "JobState", state, sizeof state);
    if (known) {
        field_of(out, "Restarts", restarts, sizeof restarts);
        field_of(out, "ExitCode", exitc, sizeof exitc);
        field_of(out, "RunTime", runtime, sizeof runtime);
        field_of(out, "TimeLimit", limit, sizeof limit);
        field_of(out, "Reason", reason, sizeof reason);
        printf("job              %ld: %s%s%s, restarts %s, run time %s of %s, exit code %s\n", id, state,
               strcmp(reason, "None") && reason[0] ? " " : "", strcmp(reason, "None") && reason[0] ? reason : "", restarts,
               runtime, limit, exitc);
    } else {
        printf("job              %ld: not known to Slurm now (it forgets ended jobs after MinJobAge, 300 s by default)\n", id);
    }
    char log[PATH_LEN], name[64], line[4096];
    snprintf(name, sizeof name, "slurm-%ld.out", id);
    join_path(log, sizeof log, run_dir, name);
    printf("log              %s%s\n", log, access(log, R_OK) == 0 ? "" : " (not written yet)");
    last_line_matching(log, "SLURM_RESTART_COUNT=", line, sizeof line);
    const char *rc = strstr(line, "SLURM_RESTART_COUNT=");
    if (rc && !known) printf("restarts         %ld (from the log)\n", strtol(rc + 20, NULL, 10));
    last_line_matching(log, "fspo-sbatch:", line, sizeof line);
    if (line[0]) printf("last job event   %s\n", line + strlen("fspo-sbatch: "));
}

static int cmd_status(int argc, char **argv)
{
    if (argc >= 3 && cli_is_help(argv[2])) {
        fputs(usage_text, stdout);
        return EXIT_OK;
    }
    if (argc != 3) fatal(EXIT_USAGE, "slurm status: one RUN_DIR expected (usage: fspo slurm status RUN_DIR)");
    char run_dir[PATH_LEN];
    absolute_path(argv[2], run_dir, sizeof run_dir);
    if (!is_dir(run_dir)) fatal(EXIT_USAGE, "slurm status: %s is not a directory", argv[2]);
    printf("run dir          %s\n", run_dir);
    long id = last_job_id(run_dir);
    if (id > 0) print_job(id, run_dir);
    else printf("job              none submitted from here (no slurm-jobs.txt)\n");

    long step = last_logged_step(run_dir);
    static Config cfg;
    char path[PATH_LEN], err[1536];
    join_path(path, sizeof path, run_dir, "config.yaml");
    int have_cfg = access(path, R_OK) == 0 && config_load(path, NULL, 0, &cfg, err, sizeof err) == 0;
    if (step < 0) printf("last step        none logged yet (metrics.jsonl)\n");
    else if (have_cfg) printf("last step        %ld of %ld\n", step, cfg.train.max_steps);
    else printf("last step        %ld\n", step);

    char ckpt[PATH_LEN];
    int found = ckpt_find_latest(run_dir, NULL, ckpt, sizeof ckpt, err, sizeof err);
    if (found > 0) printf("last checkpoint  %s\n", ckpt);
    else if (found == 0) printf("last checkpoint  none\n");
    else printf("last checkpoint  ? (%s)\n", err);
    return EXIT_OK;
}

int cmd_slurm(int argc, char **argv)
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
    if (!strcmp(sub, "submit")) return cmd_submit(argc, argv);
    if (!strcmp(sub, "status")) return cmd_status(argc, argv);
    fatal(EXIT_USAGE, "slurm: unknown subcommand '%s' (submit or status; see 'fspo slurm --help')", sub);
}
