/* inspect: describe any fspo HDF5 file (checkpoint or dataset). */
#ifndef FSPO_INSPECT_H
#define FSPO_INSPECT_H

#include <stddef.h>
#include <stdio.h>

/* Prints the file's description; 0 if it verifies, -1 (with err) if not. */
int inspect_file(const char *path, FILE *out, char *err, size_t errlen);

#endif
