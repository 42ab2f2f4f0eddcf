/* libFuzzer: the tokenizer.json reader on arbitrary bytes. A file is either
 * refused with a message naming it, or read; one that is read encodes any
 * text to ids below its id count, and writing it and reading it back gives
 * a tokenizer that encodes the same. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/tokenizer_json.h"
#include "src/tokenizer.h"

static int32_t *encode(const Bpe *b, const char *s, size_t *k)
{
    int32_t *ids = malloc(sizeof(int32_t) * (strlen(s) + 1));
    *k = bpe_encode(b, s, strlen(s), ids);
    for (size_t i = 0; i < *k; i++)
        if (ids[i] < 0 || ids[i] >= bpe_n_ids(b)) abort();
    return ids;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64], again[80];
    if (!path[0]) {
        snprintf(path, sizeof path, "/tmp/fspo-fuzz-tok-%d.json", (int)getpid());
        snprintf(again, sizeof again, "%s.again.json", path);
    }
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    char err[1024];
    Bpe *b = tokenizer_json_read(path, err, sizeof err);
    if (!b) {
        if (!strstr(err, path)) abort(); /* the message names the file */
        return 0;
    }
    static const char text[] = "Hello  world, it's <|eos|> caf\xc3\xa9 \xf0\x9f\x8e\xac 123\n\xff";
    size_t k1, k2;
    int32_t *ids = encode(b, text, &k1);
    if (tokenizer_json_write(b, again, err, sizeof err) != 0) abort();
    Bpe *b2 = tokenizer_json_read(again, err, sizeof err);
    if (!b2) abort();
    int32_t *ids2 = encode(b2, text, &k2);
    if (k1 != k2 || memcmp(ids, ids2, k1 * sizeof *ids) != 0 || bpe_n_ids(b) != bpe_n_ids(b2)) abort();
    free(ids);
    free(ids2);
    bpe_free(b);
    bpe_free(b2);
    remove(again);
    return 0;
}
