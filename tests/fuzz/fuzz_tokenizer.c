/* libFuzzer: encode/decode is lossless on any bytes, and decode of any ids
 * (specials and out-of-range included) stays within its buffer. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16) return 0;
    uint16_t *ids = malloc(sizeof(uint16_t) * (size + 1));
    char *back = malloc(size + 1);
    tok_encode((const char *)data, size, ids);
    if (tok_decode(ids, size, back, size + 1, 1) != size || memcmp(back, data, size) != 0) abort();
    /* the same bytes read as arbitrary ids */
    size_t n = size / 2;
    memcpy(ids, data, n * 2);
    /* a small buffer gets exactly the first bytes of the full text, NUL-terminated */
    size_t need = tok_decode(ids, n, NULL, 0, 1);
    char *full = malloc(need + 1), small[17];
    if (tok_decode(ids, n, full, need + 1, 1) != need || tok_decode(ids, n, small, sizeof small, 1) != need) abort();
    size_t kept = need < 16 ? need : 16;
    if (memcmp(small, full, kept) != 0 || small[kept] != '\0') abort();
    free(full);
    free(ids);
    free(back);
    return 0;
}
