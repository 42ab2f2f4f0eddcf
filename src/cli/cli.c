#include "src/cli/cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "src/util.h"

int cli_is_help(const char *arg) { return !strcmp(arg, "--help") || !strcmp(arg, "-h"); }

const char *cli_str(const char *cmd, int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) fatal(EXIT_USAGE, "%s: option %s needs a value (see 'fspo %s --help')", cmd, argv[*i], cmd);
    *i += 1;
    return argv[*i];
}

int cli_int(const char *cmd, int argc, char **argv, int *i, long lo, long hi)
{
    const char *opt = argv[*i];
    const char *s = cli_str(cmd, argc, argv, i);
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0')
        fatal(EXIT_USAGE, "%s: %s: '%s' is not an integer", cmd, opt, s);
    if (v < lo || v > hi) fatal(EXIT_USAGE, "%s: %s: %ld is outside [%ld, %ld]", cmd, opt, v, lo, hi);
    return (int)v;
}

double cli_double(const char *cmd, int argc, char **argv, int *i, double lo, double hi)
{
    const char *opt = argv[*i];
    const char *s = cli_str(cmd, argc, argv, i);
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno == ERANGE || end == s || *end != '\0' || !isfinite(v))
        fatal(EXIT_USAGE, "%s: %s: '%s' is not a number", cmd, opt, s);
    if (v < lo || v > hi) fatal(EXIT_USAGE, "%s: %s: %g is outside [%g, %g]", cmd, opt, v, lo, hi);
    return v;
}
