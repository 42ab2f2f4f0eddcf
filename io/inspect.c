#include "io/inspect.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>

#include "io/ckpt.h"
#include "io/dataset.h"
#include "io/h5util.h"
#include "io/hf.h"
#include "src/util.h"

int inspect_file(const char *path, FILE *out, char *err, size_t errlen)
{
    char why[256], fmt[64] = "";
    if (hf_is_dir(path)) return hf_print(path, out, err, errlen);
    if (h5_check_file(path, why, sizeof why) != 0) return set_err(err, errlen, "%s: %s", path, why);
    hid_t f = h5_open_ro(path);
    if (f < 0) return set_err(err, errlen, "%s: HDF5 cannot open it (truncated or corrupt)", path);
    h5_attr_read_str(f, "format", fmt, sizeof fmt);
    H5Fclose(f);
    if (!strcmp(fmt, "fspo-checkpoint")) return ckpt_print(path, out, err, errlen);
    if (!strcmp(fmt, "fspo-dataset")) return dataset_print(path, out, err, errlen);
    return set_err(err, errlen, "%s: an HDF5 file, but neither an fspo checkpoint nor dataset (format '%s')", path,
                   fmt);
}

void inspect_prevalidate(const char *const *paths, int n, const char *dir)
{
    char why[256];
    for (int i = 0; i < n; i++)
        if (paths[i] && paths[i][0]) h5_check_file(paths[i], why, sizeof why);
    DIR *d = dir && dir[0] ? opendir(dir) : NULL;
    if (!d) return;
    struct dirent *de;
    for (int count = 0; (de = readdir(d)) && count < 256;) {
        long step;
        if (!ckpt_name_step(de->d_name, &step)) continue;
        char p[4400];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        h5_check_file(p, why, sizeof why);
        count++;
    }
    closedir(d);
}
