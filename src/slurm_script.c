/* slurm_script: see slurm_script.h. */
#include "src/slurm_script.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/util.h"

#define LINE_MAX_BYTES (4096 + 256) /* one formatted piece: a path and its words */

/* ---------------------------------------------------------------- text */

/* A growable string: the script is built in one. */
typedef struct {
    char *s;
    size_t len, cap;
} Text;

static void text_addn(Text *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 4096;
        while (cap < t->len + n + 1) cap *= 2;
        char *p = realloc(t->s, cap);
        if (!p) fatal(EXIT_RUNTIME, "slurm: out of memory");
        t->s = p, t->cap = cap;
    }
    memcpy(t->s + t->len, s, n);
    t->len += n;
    t->s[t->len] = '\0';
}

static void text_add(Text *t, const char *s) { text_addn(t, s, strlen(s)); }

static void text_addf(Text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_addf(Text *t, const char *fmt, ...)
{
    char buf[LINE_MAX_BYTES];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf) fatal(EXIT_RUNTIME, "slurm: internal: formatted line too long");
    text_addn(t, buf, (size_t)n);
}

static const char *text_str(const Text *t) { return t->s ? t->s : ""; }

/* ------------------------------------------------------------- quoting */

/* Characters that mean nothing special to bash or to sbatch's #SBATCH parser. */
static int is_plain(const char *s)
{
    if (!*s) return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("_./:=+@%,-", *s)) return 0;
    return 1;
}

/* One shell word: as is when plain, else single-quoted with each ' written
 * as '\'' — nothing inside single quotes is expanded, newlines included. */
static void add_shell_word(Text *t, const char *s)
{
    if (is_plain(s)) {
        text_add(t, s);
        return;
    }
    text_add(t, "'");
    for (; *s; s++) {
        if (*s == '\'') text_add(t, "'\\''");
        else text_addn(t, s, 1);
    }
    text_add(t, "'");
}

/* One #SBATCH argument: sbatch splits those lines at blanks, honours quotes,
 * treats an unquoted # as a comment and a backslash as an escape, so a
 * value that is not plain goes in double quotes with " and \ escaped. The
 * line is a bash comment, so the shell never sees it. */
static void add_sbatch_word(Text *t, const char *s)
{
    if (is_plain(s)) {
        text_add(t, s);
        return;
    }
    text_add(t, "\"");
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') text_add(t, "\\");
        text_addn(t, s, 1);
    }
    text_add(t, "\"");
}

/* ------------------------------------------------------------- rendering */

typedef struct {
    const char *name;
    Text value;
} Slot;

enum {
    S_JOB_NAME, S_NODES, S_NTASKS_PER_NODE, S_CPUS_PER_TASK, S_MEM, S_TIME, S_PARTITION, S_ACCOUNT, S_QOS,
    S_CONSTRAINT, S_EXTRA_SBATCH, S_SIGNAL_LEAD_S, S_REQUEUE_FLAG, S_OUTPUT, S_WORKDIR, S_FSPO, S_CONFIG,
    S_RUN_DIR, S_MAX_STEPS, S_LAUNCHER, S_REQUEUE, S_FAILURE_REQUEUES, S_WAIT_S, S_TRAIN_ARGS, S_SETUP, S_N
};
static const char *const slot_names[S_N] = {
    "JOB_NAME", "NODES", "NTASKS_PER_NODE", "CPUS_PER_TASK", "MEM", "TIME", "PARTITION", "ACCOUNT", "QOS",
    "CONSTRAINT", "EXTRA_SBATCH", "SIGNAL_LEAD_S", "REQUEUE_FLAG", "OUTPUT", "WORKDIR", "FSPO", "CONFIG",
    "RUN_DIR", "MAX_STEPS", "LAUNCHER", "REQUEUE", "FAILURE_REQUEUES", "WAIT_S", "TRAIN_ARGS", "SETUP",
};


/* "--output": the run directory with Slurm's % patterns escaped, then the log name. */
static void output_pattern(const char *run_dir, Text *t)
{
    Text escaped = { 0 };
    for (const char *s = run_dir; *s; s++) {
        if (*s == '%') text_add(&escaped, "%"); /* "%%" is a literal % */
        text_addn(&escaped, s, 1);
    }
    text_add(&escaped, "/slurm-%j.out");
    add_sbatch_word(t, text_str(&escaped));
    free(escaped.s);
}

static void fill_slots(const JobSpec *j, Slot *slots)
{
    const Config *c = j->cfg;
    for (int i = 0; i < S_N; i++) slots[i] = (Slot){ slot_names[i], { 0 } };
    add_sbatch_word(&slots[S_JOB_NAME].value, c->slurm.job_name);
    text_addf(&slots[S_NODES].value, "%d", c->slurm.nodes);
    text_addf(&slots[S_NTASKS_PER_NODE].value, "%d", c->slurm.ntasks_per_node);
    text_addf(&slots[S_CPUS_PER_TASK].value, "%d", c->slurm.cpus_per_task);
    /* an empty optional value stays empty, and its line is left out */
    const struct { int slot; const char *value; } optional[] = {
        { S_MEM, c->slurm.mem },   { S_TIME, c->slurm.time }, { S_PARTITION, c->slurm.partition },
        { S_ACCOUNT, c->slurm.account }, { S_QOS, c->slurm.qos }, { S_CONSTRAINT, c->slurm.constraint },
    };
    for (size_t i = 0; i < sizeof optional / sizeof *optional; i++)
        if (optional[i].value[0]) add_sbatch_word(&slots[optional[i].slot].value, optional[i].value);
    for (int i = 0; i < c->slurm.extra_sbatch.n; i++)
        text_addf(&slots[S_EXTRA_SBATCH].value, "%s#SBATCH %s", i ? "\n" : "", c->slurm.extra_sbatch.v[i]);
    if (c->slurm.signal_lead_s > 0) text_addf(&slots[S_SIGNAL_LEAD_S].value, "%d", c->slurm.signal_lead_s);
    text_add(&slots[S_REQUEUE_FLAG].value, c->slurm.requeue ? "--requeue" : "--no-requeue");
    output_pattern(j->run_dir, &slots[S_OUTPUT].value);
    add_sbatch_word(&slots[S_WORKDIR].value, j->cwd);
    add_shell_word(&slots[S_FSPO].value, j->exe);
    add_shell_word(&slots[S_CONFIG].value, j->config_path);
    add_shell_word(&slots[S_RUN_DIR].value, j->run_dir);
    text_addf(&slots[S_MAX_STEPS].value, "%ld", c->train.max_steps);
    text_add(&slots[S_LAUNCHER].value, LAUNCHER_NAMES[c->slurm.launcher]);
    text_add(&slots[S_REQUEUE].value, c->slurm.requeue ? "1" : "0");
    text_addf(&slots[S_FAILURE_REQUEUES].value, "%d", c->slurm.requeue ? c->slurm.failure_requeues : 0);
    text_addf(&slots[S_WAIT_S].value, "%d", c->slurm.wait_s);
    Text *args = &slots[S_TRAIN_ARGS].value;
    for (int i = 0; i < j->n_sets; i++) {
        text_add(args, "    --set ");
        add_shell_word(args, j->sets[i]);
        text_add(args, "\n");
    }
    text_add(args, "    --set train.resume=auto");
    for (int i = 0; i < c->slurm.setup.n; i++) {
        Text *setup = &slots[S_SETUP].value;
        text_add(setup, i ? "\neval " : "eval ");
        add_shell_word(setup, c->slurm.setup.v[i]);
        text_addf(setup, " || setup_failed %d $?", i + 1);
    }
}

/* Finds the slot named by the text between "{{" at p and "}}"; -1 if none. */
static int slot_at(const char *p, const Slot *slots, const char **after)
{
    const char *end = strstr(p + 2, "}}");
    if (!end) return -1;
    size_t n = (size_t)(end - p - 2);
    for (int i = 0; i < S_N; i++)
        if (strlen(slots[i].name) == n && !strncmp(p + 2, slots[i].name, n)) {
            *after = end + 2;
            return i;
        }
    return -1;
}

/* One template line: 0 rendered into out, 1 left out (a value is empty),
 * -1 an unknown placeholder (err says which). */
static int render_line(const char *line, size_t len, const Slot *slots, Text *out, char *err, size_t errlen)
{
    Text t = { 0 };
    const char *p = line, *end = line + len;
    while (p < end) {
        const char *open = strstr(p, "{{");
        if (!open || open >= end) {
            text_addn(&t, p, (size_t)(end - p));
            break;
        }
        text_addn(&t, p, (size_t)(open - p));
        const char *after;
        int i = slot_at(open, slots, &after);
        if (i < 0 || after > end) {
            free(t.s);
            return set_err(err, errlen, "unknown placeholder in: %.*s", (int)len, line);
        }
        if (slots[i].value.len == 0) {
            free(t.s);
            return 1;
        }
        text_add(&t, text_str(&slots[i].value));
        p = after;
    }
    text_add(&t, "\n");
    text_add(out, text_str(&t));
    free(t.s);
    return 0;
}

static int render(const char *tmpl, const Slot *slots, Text *out, char *err, size_t errlen)
{
    for (const char *line = tmpl; *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        if (render_line(line, len, slots, out, err, errlen) < 0) return -1;
        line += len + (nl ? 1 : 0);
    }
    return 0;
}

char *slurm_render_script(const char *tmpl, const JobSpec *job, char *err, size_t errlen)
{
    Slot slots[S_N];
    fill_slots(job, slots);
    Text script = { 0 };
    int rc = render(tmpl, slots, &script, err, errlen);
    for (int i = 0; i < S_N; i++) free(slots[i].value.s);
    if (rc != 0) {
        free(script.s);
        return NULL;
    }
    if (!script.s) text_add(&script, "");
    return script.s;
}
