/* The sbatch script renderer (src/slurm_script.h) on a hand-written
 * template, against the script written out by hand: values in place,
 * shell and #SBATCH quoting, a line left out for an empty value, the
 * overrides passed on, and an unknown placeholder refused. */
#include <stdlib.h>
#include <string.h>

#include "src/slurm_script.h"
#include "tests/check.h"

int main(void)
{
    static Config c;
    config_defaults(&c);
    snprintf(c.slurm.job_name, sizeof c.slurm.job_name, "%s", "my job");
    c.slurm.nodes = 2;
    c.slurm.mem[0] = '\0';
    c.train.max_steps = 77;
    const char *sets[] = { "optim.lr=1e-3", "train.run_dir=it's here" };
    JobSpec job = { &c, "/opt/fspo", "/cfg/a b.yaml", "/runs/100%", "/work", sets, 2 };
    const char *tmpl = "#SBATCH --job-name={{JOB_NAME}}\n"
                       "#SBATCH --nodes={{NODES}}\n"
                       "#SBATCH --mem={{MEM}}\n"
                       "#SBATCH --output={{OUTPUT}}\n"
                       "{{FSPO}} train {{CONFIG}} \\\n"
                       "{{TRAIN_ARGS}}\n"
                       "echo {{MAX_STEPS}} {{RUN_DIR}}\n";
    const char *want = "#SBATCH --job-name=\"my job\"\n"
                       "#SBATCH --nodes=2\n"
                       "#SBATCH --output=/runs/100%%/slurm-%j.out\n"
                       "/opt/fspo train '/cfg/a b.yaml' \\\n"
                       "    --set optim.lr=1e-3\n"
                       "    --set 'train.run_dir=it'\\''s here'\n"
                       "    --set train.resume=auto\n"
                       "echo 77 /runs/100%\n";
    char err[256] = "";
    char *got = slurm_render_script(tmpl, &job, err, sizeof err);
    check(got && !strcmp(got, want), "renders the hand-written script", "got:\n%s", got ? got : err);
    free(got);
    got = slurm_render_script("ok\n#SBATCH --x={{NOPE}}\n", &job, err, sizeof err);
    check(!got && strstr(err, "unknown placeholder") && strstr(err, "{{NOPE}}"), "unknown placeholder refused", "%s",
          err);
    free(got);
    return check_status();
}
