/* libFuzzer: the byte tokenizer's encode/decode is lossless on any bytes,
 * and decode of any ids (specials and out-of-range included) stays within
 * its buffer; the same for the byte-level BPE (a small one learned once),
 * whose ids must also stay below its id count. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "src/tokenizer.h"

static const Bpe *bpe(void)
{
    static Bpe *b;
    if (!b) {
        static const char *const corpus[] = { "Hello world! It's a test, isn't it? 123 456",
                                              "caf\xc3\xa9 \xf0\x9f\x8e\xac\xf0\x9f\x8e\xac  tabs\t\tand\n\nlines",
                                              "<|bos|>aaaaaaaa bbbb abab<|eos|> \xd0\x9f\xd1\x80\xd0\xb8" };
        BpeCorpus *c = bpe_corpus_new();
        for (int r = 0; r < 3; r++)
            for (size_t i = 0; i < sizeof corpus / sizeof *corpus; i++) bpe_corpus_add(c, corpus[i], strlen(corpus[i]));
        BpeLearnOptions opt = { 340, 1 };
        b = bpe_learn(c, &opt, NULL, NULL, 0);
        bpe_corpus_free(c);
        if (!b) abort();
    }
    return b;
}

static void check_bpe(const uint8_t *data, size_t size)
{
    const Bpe *b = bpe();
    int32_t *ids = malloc(sizeof(int32_t) * (size + 1));
    char *back = malloc(size + 1);
    size_t k = bpe_encode(b, (const char *)data, size, ids);
    if (k > size) abort();
    for (size_t i = 0; i < k; i++)
        if (ids[i] < 0 || ids[i] >= bpe_n_ids(b)) abort();
    if (bpe_decode(b, ids, k, back, size + 1, 0) != size || memcmp(back, data, size) != 0) abort();
    /* the same bytes read as arbitrary ids: a small buffer gets a NUL-terminated prefix */
    size_t n = size / 4;
    memcpy(ids, data, n * 4);
    int skip = size & 1;
    size_t need = bpe_decode(b, ids, n, NULL, 0, skip);
    char *full = malloc(need + 1), small[17];
    if (bpe_decode(b, ids, n, full, need + 1, skip) != need || bpe_decode(b, ids, n, small, sizeof small, skip) != need)
        abort();
    size_t kept = need < 16 ? need : 16;
    if (memcmp(small, full, kept) != 0 || small[kept] != '\0') abort();
    free(full);
    free(ids);
    free(back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16) return 0;
    int32_t *ids = malloc(sizeof(int32_t) * (size + 1));
    char *back = malloc(size + 1);
    if (tok_encode(NULL, (const char *)data, size, ids) != size) abort();
    if (tok_decode(NULL, ids, size, back, size + 1, 1) != size || memcmp(back, data, size) != 0) abort();
    /* the same bytes read as arbitrary ids (any int32: out of range ones too) */
    size_t n = size / 4;
    memcpy(ids, data, n * 4);
    /* a small buffer gets exactly the first bytes of the full text, NUL-terminated */
    size_t need = tok_decode(NULL, ids, n, NULL, 0, 1);
    char *full = malloc(need + 1), small[17];
    if (tok_decode(NULL, ids, n, full, need + 1, 1) != need || tok_decode(NULL, ids, n, small, sizeof small, 1) != need)
        abort();
    size_t kept = need < 16 ? need : 16;
    if (memcmp(small, full, kept) != 0 || small[kept] != '\0') abort();
    free(full);
    free(ids);
    free(back);
    check_bpe(data, size);
    return 0;
}
