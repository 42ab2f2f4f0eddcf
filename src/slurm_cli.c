/* placeholder until fspo slurm lands */
#include "commands.h"
#include "util.h"
int cmd_slurm(int argc, char **argv) { fatal(EXIT_USAGE, "slurm: not implemented yet"); }
