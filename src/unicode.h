/* unicode: strict UTF-8 decoding and the character classes of the GPT-2
 * pre-tokenizer regex (src/tokenizer_bpe.c). The class tables are generated
 * from Python's unicodedata by scripts/gen_unicode_tables.py into
 * src/unicode_tables.c. */
#ifndef FSPO_UNICODE_H
#define FSPO_UNICODE_H

#include <stddef.h>
#include <stdint.h>

/* \p{L}, \p{N}, \s (Oniguruma's Unicode whitespace), or anything else. */
typedef enum { UC_OTHER = 0, UC_LETTER, UC_NUMBER, UC_SPACE } UcClass;

/* The character starting at s[0] (n >= 1 bytes available): its length in
 * bytes and code point. Strict: an overlong form, a surrogate, a value past
 * U+10FFFF, a stray continuation byte or a truncated sequence is not a
 * character; then the length is 1 and *cp = UTF8_INVALID, so a caller that
 * steps by the returned length visits every byte exactly once. */
#define UTF8_INVALID 0xFFFFFFFFu
size_t utf8_next(const unsigned char *s, size_t n, uint32_t *cp);

/* The class of a code point; UTF8_INVALID is UC_OTHER. */
UcClass uc_class(uint32_t cp);

/* Generated tables: sorted, disjoint [first, last] ranges. */
extern const uint32_t uc_letter_ranges[][2], uc_number_ranges[][2], uc_space_ranges[][2];
extern const size_t uc_letter_ranges_n, uc_number_ranges_n, uc_space_ranges_n;

#endif
