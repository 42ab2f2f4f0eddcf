/* duration: the two spellings of a time span fspo reads, in one place.
 *   config durations (train.max_time): "90s", "30m", "2h", "1h30m", "1d12h"
 *     (units d h m s in decreasing order, each once) or "H:MM:SS" (io/config.c
 *     reads plain seconds itself, with its range message);
 *   Slurm's --time (slurm.time): MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM,
 *     D-HH:MM:SS, 0 / INFINITE / UNLIMITED. */
#ifndef FSPO_DURATION_H
#define FSPO_DURATION_H

#include <limits.h>
#include <stddef.h>

/* s[0..n) as a config duration: 0 with *out in seconds, -1 if not one. */
int duration_parse(const char *s, size_t n, long *out);

#define DURATION_UNLIMITED LONG_MAX
/* Seconds in a Slurm --time value; DURATION_UNLIMITED for 0, INFINITE or
 * UNLIMITED; -1 if invalid. Minutes and seconds after the first field must
 * be below 60. */
long duration_slurm_seconds(const char *s);

#endif
