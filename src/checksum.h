/* checksum: a fast 64-bit content hash of raw bytes.
 * Used for per-tensor checkpoint checksums, dataset checksums and the
 * cross-rank parameter drift check. Not cryptographic: it detects
 * corruption and divergence, not tampering. Words are mixed with a
 * multiply-xorshift (splitmix64's finalizer), ~2 bytes/cycle. */
#ifndef FSPO_CHECKSUM_H
#define FSPO_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint64_t checksum_mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint64_t checksum64(const void *data, size_t n)
{
    const unsigned char *p = data;
    uint64_t h = 0x243F6A8885A308D3ull ^ (uint64_t)n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = checksum_mix(h ^ w) + 0x9E3779B97F4A7C15ull;
    }
    uint64_t tail = 0;
    memcpy(&tail, p + i, n - i);
    return checksum_mix(h ^ tail ^ ((uint64_t)(n - i) << 56));
}

/* Order-dependent combination of two checksums. */
static inline uint64_t checksum_combine(uint64_t a, uint64_t b) { return checksum_mix(a * 0x9E3779B97F4A7C15ull ^ b); }

#endif
