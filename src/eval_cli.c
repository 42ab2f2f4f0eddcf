/* placeholder until fspo eval lands */
#include "commands.h"
#include "util.h"
int cmd_eval(int argc, char **argv) { fatal(EXIT_USAGE, "eval: not implemented yet"); }
