/* placeholder until the config loader lands (replaced by io/config work) */
#include "commands.h"
#include "util.h"
int cmd_config(int argc, char **argv) { fatal(EXIT_USAGE, "config: not implemented yet"); }
