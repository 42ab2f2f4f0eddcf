/* cli: tiny helpers for subcommand option parsing with clear errors. */
#ifndef FSPO_CLI_H
#define FSPO_CLI_H

/* 1 if arg asks for help: "--help" or "-h". */
int cli_is_help(const char *arg);
/* Parses argv[*i+1] as an int in [lo, hi] for option `opt`; advances *i.
 * Exits with code 2 and "CMD: OPT: reason" on any problem. */
int cli_int(const char *cmd, int argc, char **argv, int *i, long lo, long hi);
/* A finite number in [lo, hi], with the same error style. */
double cli_double(const char *cmd, int argc, char **argv, int *i, double lo, double hi);
/* The same for a string value. */
const char *cli_str(const char *cmd, int argc, char **argv, int *i);

#endif
