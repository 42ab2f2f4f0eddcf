/* libFuzzer: a hostile HDF5 file against every fspo reader (checkpoint,
 * dataset, inspect). The input is re-sealed exactly as fspo seals
 * (h5_seal: the seal is an unkeyed checksum anyone can recompute), so every
 * mutation gets past the seal and reaches fspo's structure validation and
 * libhdf5, as a crafted file would.
 *
 * The readers run as fspo runs them: the first open of a file goes through
 * the isolated structure check (a forked child, io/h5util.h), and only a
 * file that passed it is read in this process. A crash in this process is
 * a finding. A child killed by a signal is fspo's defence working (libhdf5
 * crashed on the file; the reader returns "libhdf5 crashed while
 * validating"): counted, and the input kept as child-crash-N for study;
 * so is a child that hangs (killed after 3 s here, 10 s in fspo).
 * The child inherits ASan and libFuzzer's death callback; a sanitizer
 * report in the child (libhdf5's memcpy past a buffer, say) must end the
 * child like a crash, not make libFuzzer record it as this process's, so
 * the harness's own death callback aborts there (SIGABRT, counted as a
 * child crash; its report stays in the log) and, in this process, keeps
 * the input as crash-input (run.sh counts crash-* files). A child that
 * exits non-zero without giving a reason is a finding: abort.
 * `FUZZ_H5_INPROCESS=1 build-fuzz/fuzz_h5file child-crash-1` replays one
 * without the isolation, to see the stack. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>

#include <sanitizer/common_interface_defs.h>

#include "io/ckpt.h"
#include "io/dataset.h"
#include "io/h5util.h"
#include "io/inspect.h"

static long child_crashes, runs;
static pid_t parent;
static const uint8_t *cur;
static size_t cur_size;

static void died(void)
{
    if (getpid() != parent) { /* the isolated child */
        signal(SIGABRT, SIG_DFL);
        abort();
    }
    FILE *f = fopen("crash-input", "wb");
    if (f) {
        fwrite(cur, 1, cur_size, f);
        fclose(f);
    }
}

static void report(void)
{
    fprintf(stderr, "fuzz_h5file: %ld inputs, %ld crashed libhdf5 in the isolated child (caught)\n", runs, child_crashes);
}

static void look(const char *err, const uint8_t *data, size_t size)
{
    if (strstr(err, "no reason given")) {
        fprintf(stderr, "validation child failed without a reason (sanitizer report above?): %s\n", err);
        abort();
    }
    if (strstr(err, "libhdf5 crashed") || strstr(err, "libhdf5 hung")) {
        child_crashes++;
        char name[64];
        snprintf(name, sizeof name, "child-crash-%ld", child_crashes);
        if (child_crashes <= 20) {
            FILE *f = fopen(name, "wb");
            if (f) {
                fwrite(data, 1, size, f);
                fclose(f);
            }
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64];
    if (!path[0]) {
        snprintf(path, sizeof path, "/tmp/fspo-fuzz-h5-%d.h5", (int)getpid());
        atexit(report);
        parent = getpid();
        __sanitizer_set_death_callback(died);
        /* FUZZ_H5_INPROCESS=1: no isolation, to see where a kept child-crash input crashes */
        /* a hanging child is killed after 3 s, inside libFuzzer's -timeout=10 (run.sh) */
        h5_set_isolation(!getenv("FUZZ_H5_INPROCESS"), 3000);
    }
    runs++;
    cur = data, cur_size = size;
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    if (h5_seal(path) != 0) return 0;
    char err[1024] = "";
    ModelConfig c;
    Dataset d;
    ckpt_verify(path, err, sizeof err);
    look(err, data, size);
    err[0] = '\0';
    ckpt_read_model_config(path, &c, err, sizeof err);
    if (dataset_read(path, &d, err, sizeof err) == 0) dataset_free(&d);
    FILE *null = fopen("/dev/null", "w");
    inspect_file(path, null, err, sizeof err);
    fclose(null);
    return 0;
}
