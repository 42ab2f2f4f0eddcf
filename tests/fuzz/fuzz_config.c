/* libFuzzer: the YAML config loader on arbitrary bytes, with and without a
 * --set override taken from the input's first line. It must never crash,
 * leak or read out of bounds, and a config that loads must round-trip
 * through config_to_yaml to identical values. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64];
    if (!path[0]) snprintf(path, sizeof path, "/tmp/fspo-fuzz-config-%d.yaml", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    static Config a, b;
    static char yaml[CFG_YAML_MAX], err[1024];
    /* first line as an override, when it looks like one */
    char set[256] = "";
    const char *nl = memchr(data, '\n', size);
    size_t n = nl ? (size_t)(nl - (const char *)data) : 0;
    if (n > 0 && n < sizeof set && memchr(data, '=', n)) memcpy(set, data, n);
    const char *sets[1] = { set };
    if (config_load(path, sets, set[0] ? 1 : 0, &a, err, sizeof err) == 0) {
        if (config_to_yaml(&a, yaml, sizeof yaml) < 0) abort();
        FILE *g = fopen(path, "wb");
        fputs(yaml, g);
        fclose(g);
        if (config_load(path, NULL, 0, &b, err, sizeof err) != 0 || memcmp(&a, &b, sizeof a) != 0) abort();
    }
    return 0;
}
