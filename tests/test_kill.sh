#!/usr/bin/env bash
# Fast kill soak (make soak runs the long one): one SIGKILL trial each of
# mpirun, of one rank, and of rank 0 inside a checkpoint write; every trial
# must end without a hang or orphan ranks and resume bit-identical to an
# uninterrupted run (scripts/soak.sh says how each is checked).
cd "$(dirname "$0")/.." && source tests/lib.sh
SOAK_TRIALS=${KILL_TRIALS:-1} SOAK_STEPS=100 bash scripts/soak.sh 2>&1 | grep -v ' Killed '
exit "${PIPESTATUS[0]}"
