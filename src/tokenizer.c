/* tokenizer: byte-level encode/decode; see tokenizer.h. */
#include "tokenizer.h"

#include <string.h>

static const char *const special_names[TOKENIZER_VOCAB - 256] = {
    "<|bos|>", "<|eos|>", "<|example|>", "<|question|>", "<|preferred|>", "<|dispreferred|>", "<|task|>",
    "<|user|>",
};

const char *tok_special_name(int id)
{
    return id >= 256 && id < TOKENIZER_VOCAB ? special_names[id - 256] : NULL;
}

void tok_encode(const char *s, size_t n, uint16_t *out)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n; i++) out[i] = u[i];
}

size_t tok_decode(const uint16_t *ids, size_t n, char *out, size_t cap, int show_special)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        char byte = (char)ids[i];
        const char *piece = &byte;
        size_t plen = 1;
        if (ids[i] >= 256) {
            const char *name = tok_special_name(ids[i]);
            piece = show_special ? (name ? name : "<|?|>") : "";
            plen = strlen(piece);
        }
        for (size_t j = 0; j < plen; j++, len++)
            if (cap && len < cap - 1) out[len] = piece[j];
    }
    if (cap) out[len < cap ? len : cap - 1] = '\0';
    return len;
}
