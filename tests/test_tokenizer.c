/* Tokenizer: lossless on any bytes (random, invalid UTF-8, NUL), specials
 * never produced by text, and decode's snprintf-like bounds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "rng.h"
#include "tokenizer.h"

static int round_trips(const char *s, size_t n)
{
    uint16_t *ids = malloc(sizeof(uint16_t) * (n + 1));
    char *back = malloc(n + 1);
    tok_encode(s, n, ids);
    size_t len = tok_decode(ids, n, back, n + 1, 1);
    int ok = len == n && memcmp(back, s, n) == 0;
    for (size_t i = 0; i < n; i++) ok &= ids[i] < 256;
    free(ids);
    free(back);
    return ok;
}

int main(void)
{
    Rng r = rng_seed(31, 0);
    int bad = 0;
    char buf[4096];
    for (int t = 0; t < 2000; t++) {
        size_t n = rng_below(&r, sizeof buf);
        for (size_t i = 0; i < n; i++) buf[i] = (char)rng_below(&r, 256);
        bad += !round_trips(buf, n);
    }
    check(bad == 0, "random bytes round-trip", "%d of 2000 strings differ", bad);
    static const char *nasty[] = { "\xff\xfe\xfd", "\xc3\x28", "\xe2\x82", "\xf0\x28\x8c\x28", "\xed\xa0\x80",
                                   "caf\xc3\xa9 \xf0\x9f\x8e\xac", "" };
    bad = 0;
    for (size_t i = 0; i < sizeof nasty / sizeof *nasty; i++) bad += !round_trips(nasty[i], strlen(nasty[i]));
    bad += !round_trips("a\0b\0", 4);
    check(bad == 0, "invalid UTF-8, emoji and NUL round-trip", "%d cases differ", bad);
    uint16_t ids[5] = { 'h', TOK_EOS, 'i', TOK_TASK, 300 };
    size_t need = tok_decode(ids, 5, buf, sizeof buf, 1);
    check(!strcmp(buf, "h<|eos|>i<|task|><|?|>") && need == strlen(buf), "special tokens display", "'%s'", buf);
    need = tok_decode(ids, 5, buf, sizeof buf, 0);
    check(!strcmp(buf, "hi") && need == 2, "special tokens hidden", "'%s'", buf);
    char small[4];
    need = tok_decode(ids, 5, small, sizeof small, 1);
    check(need == strlen("h<|eos|>i<|task|><|?|>") && !strcmp(small, "h<|"), "decode truncates like snprintf",
          "needs %zu, wrote '%s'", need, small);
    return check_status();
}
