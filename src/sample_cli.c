/* placeholder until fspo sample lands */
#include "commands.h"
#include "util.h"
int cmd_sample(int argc, char **argv) { fatal(EXIT_USAGE, "sample: not implemented yet"); }
