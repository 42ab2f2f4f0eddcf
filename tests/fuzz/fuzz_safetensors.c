/* libFuzzer: arbitrary bytes as a .safetensors file through the header
 * checks (io/safetensors.c) and, for what passes them, every tensor read. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64];
    if (!path[0]) snprintf(path, sizeof path, "/tmp/fspo-fuzz-st-%d.safetensors", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    char err[1024];
    StSet s = { 0 };
    if (st_open_file(&s, path, err, sizeof err) == 0)
        for (int i = 0; i < s.n; i++) {
            uint64_t n = st_numel(&s.t[i]);
            float *buf = n <= (1u << 20) ? malloc(sizeof(float) * (n ? n : 1)) : NULL;
            if (buf && st_read_f32(&s, &s.t[i], buf, n, err, sizeof err) == 0 && n && buf[0] != buf[0]) buf[0] = 0;
            free(buf);
        }
    st_close(&s);
    return 0;
}
