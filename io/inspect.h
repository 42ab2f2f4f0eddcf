/* inspect: describe any fspo HDF5 file (checkpoint or dataset). */
#ifndef FSPO_INSPECT_H
#define FSPO_INSPECT_H

#include <stddef.h>
#include <stdio.h>

/* Prints the file's description; 0 if it verifies, -1 (with err) if not. */
int inspect_file(const char *path, FILE *out, char *err, size_t errlen);

/* Checks the structure of each HDF5 file a command may open (paths, and
 * the ckpt_*.h5 files of dir unless dir is NULL) and remembers the
 * verdicts (h5_validate in io/h5util.h), so the readers later find them
 * decided. fspo train calls it before MPI_Init, so the forked child that
 * isolates libhdf5 is forked from a process without MPI (fork after
 * MPI_Init is unsafe with some transports). Empty, missing, unsealed and
 * non-HDF5 paths are skipped: the readers report them in context. */
void inspect_prevalidate(const char *const *paths, int n, const char *dir);

#endif
