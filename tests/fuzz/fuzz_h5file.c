/* libFuzzer: what stands between a hostile file and libhdf5. Arbitrary
 * bytes go through the signature and seal checks that every fspo reader
 * applies first (checkpoint, dataset, inspect); only a sealed file may
 * reach libhdf5, so here nothing but well-formed fspo output can. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "ckpt.h"
#include "dataset.h"
#include "inspect.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64];
    if (!path[0]) snprintf(path, sizeof path, "/tmp/fspo-fuzz-h5-%d.h5", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    char err[1024];
    ModelConfig c;
    Dataset d;
    ckpt_verify(path, err, sizeof err);
    ckpt_read_model_config(path, &c, err, sizeof err);
    if (dataset_read(path, &d, err, sizeof err) == 0) dataset_free(&d);
    FILE *null = fopen("/dev/null", "w");
    inspect_file(path, null, err, sizeof err);
    fclose(null);
    return 0;
}
