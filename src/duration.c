/* duration: see duration.h. */
#include "src/duration.h"

#include <ctype.h>
#include <string.h>

/* ---- the config's units: 90s, 1h30m ---- */

/* "90s", "30m", "2h", "1h30m", "1d12h": units in decreasing order, each once. */
static int parse_units(const char *s, size_t n, long *out)
{
    static const char units[] = "dhms";
    static const long scale[] = { 86400, 3600, 60, 1 };
    long total = 0;
    int next_unit = 0;
    size_t i = 0;
    if (n == 0) return -1;
    while (i < n) {
        long part = 0;
        size_t digits = 0;
        for (; i < n && s[i] >= '0' && s[i] <= '9'; i++, digits++) {
            if (digits >= 9) return -1;
            part = part * 10 + (s[i] - '0');
        }
        if (digits == 0 || i >= n) return -1;
        const char *u = strchr(units, s[i]);
        if (!u || s[i] == '\0' || u - units < next_unit) return -1;
        next_unit = (int)(u - units) + 1;
        total += part * scale[u - units];
        i++;
    }
    *out = total;
    return 0;
}

/* ---- clocks: Slurm's --time ([D-]H:MM:SS, M, M:SS), the config's H:MM:SS ---- */

static int parse_field(const char *s, size_t n, long *v)
{
    if (n == 0 || n > 9) return -1;
    long x = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i])) return -1;
        x = 10 * x + (s[i] - '0');
    }
    *v = x;
    return 0;
}

/* Splits s at ':' into at most 3 numbers; returns how many, -1 if malformed. */
static int parse_colon_fields(const char *s, long f[3])
{
    int n = 0;
    for (;;) {
        const char *colon = strchr(s, ':');
        size_t len = colon ? (size_t)(colon - s) : strlen(s);
        if (n == 3 || parse_field(s, len, &f[n]) != 0) return -1;
        n++;
        if (!colon) return n;
        s = colon + 1;
    }
}

/* The config's "H:MM:SS": Slurm's three-field form with H of 1 to 7 digits
 * and MM, SS of two digits each, below 60. */
static int parse_clock(const char *s, size_t n, long *out)
{
    char buf[40];
    if (n >= sizeof buf || memchr(s, '\0', n)) return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    const char *c1 = strchr(buf, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    long f[3];
    if (!c2 || c1 - buf > 7 || c2 - c1 != 3 || strlen(c2 + 1) != 2) return -1;
    if (parse_colon_fields(buf, f) != 3 || f[1] >= 60 || f[2] >= 60) return -1;
    *out = f[0] * 3600 + f[1] * 60 + f[2];
    return 0;
}

int duration_parse(const char *s, size_t n, long *out) { return parse_units(s, n, out) && parse_clock(s, n, out) ? -1 : 0; }

long duration_slurm_seconds(const char *s)
{
    if (!strcmp(s, "INFINITE") || !strcmp(s, "UNLIMITED") || !strcmp(s, "infinite") || !strcmp(s, "unlimited"))
        return DURATION_UNLIMITED;
    long days = 0, f[3];
    const char *dash = strchr(s, '-');
    if (dash) {
        if (parse_field(s, (size_t)(dash - s), &days) != 0) return -1;
        s = dash + 1;
    }
    int n = parse_colon_fields(s, f);
    if (n < 0) return -1;
    for (int i = 1; i < n; i++)
        if (f[i] >= 60) return -1;
    long secs;
    if (dash) secs = days * 86400 + f[0] * 3600 + (n > 1 ? f[1] * 60 : 0) + (n > 2 ? f[2] : 0);
    else if (n == 1) secs = f[0] * 60;
    else if (n == 2) secs = f[0] * 60 + f[1];
    else secs = f[0] * 3600 + f[1] * 60 + f[2];
    return secs == 0 ? DURATION_UNLIMITED : secs;
}

