/* unicode: see unicode.h. */
#include "src/unicode.h"

size_t utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t len;
    uint32_t v, min;
    if (c >= 0xC2 && c <= 0xDF) len = 2, v = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, v = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, v = c & 0x07, min = 0x10000;
    else len = 0, v = 0, min = 0;
    if (len == 0 || len > n) {
        *cp = UTF8_INVALID;
        return 1;
    }
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80) {
            *cp = UTF8_INVALID;
            return 1;
        }
        v = (v << 6) | (s[k] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
        *cp = UTF8_INVALID;
        return 1;
    }
    *cp = v;
    return len;
}

static int in_ranges(const uint32_t (*r)[2], size_t n, uint32_t cp)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < r[mid][0]) hi = mid;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

UcClass uc_class(uint32_t cp)
{
    if (cp < 0x80) { /* ASCII without a search */
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return UC_LETTER;
        if (cp >= '0' && cp <= '9') return UC_NUMBER;
        if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return UC_SPACE;
        return UC_OTHER;
    }
    if (cp == UTF8_INVALID) return UC_OTHER;
    if (in_ranges(uc_letter_ranges, uc_letter_ranges_n, cp)) return UC_LETTER;
    if (in_ranges(uc_number_ranges, uc_number_ranges_n, cp)) return UC_NUMBER;
    if (in_ranges(uc_space_ranges, uc_space_ranges_n, cp)) return UC_SPACE;
    return UC_OTHER;
}
