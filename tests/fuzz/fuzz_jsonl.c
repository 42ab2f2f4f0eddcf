/* libFuzzer: the JSONL preference reader on arbitrary bytes (lines over the
 * limit, broken UTF-8, NUL, deep nesting): every line is a row, a bad line
 * with a FILE:LINE: message, or the end. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/jsonl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64];
    if (!path[0]) snprintf(path, sizeof path, "/tmp/fspo-fuzz-jsonl-%d.jsonl", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    char err[1024];
    JsonlReader *r = jsonl_reader_open(path, 256, err, sizeof err);
    if (!r) return 0;
    PrefRow row;
    long line = 0, last = 0;
    int rc;
    while ((rc = jsonl_next_row(r, &row, &line, err, sizeof err)) != 0 && rc != -2) {
        if (line <= last) abort(); /* always progresses */
        last = line;
        if (rc == 1 && (!row.user_id || !row.prompt || !row.chosen || !row.rejected || row.prompt_len == 0)) abort();
        if (rc == -1 && !strstr(err, path)) abort(); /* a bad line names the file */
    }
    jsonl_reader_close(r);
    return 0;
}
