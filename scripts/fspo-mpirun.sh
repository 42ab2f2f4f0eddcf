#!/usr/bin/env bash
# mpirun for fspo train, with stop signals that end in a checkpoint:
#
#   scripts/fspo-mpirun.sh -np 4 ./fspo train CFG.yaml [--set ...]
#
# Open MPI's mpirun answers SIGTERM, SIGINT and SIGHUP by aborting the job
# (the ranks get SIGTERM a second later and SIGKILL a second after that;
# mpirun exits 1) and refuses to forward them (ess_base_forward_signals
# rejects SIGTERM/SIGINT/SIGHUP). It does forward SIGUSR1 to every rank,
# and fspo train stops on SIGUSR1 after one verified checkpoint with exit 3.
# This wrapper runs mpirun with the given arguments in its own process group
# (so a terminal's Ctrl-C reaches only the wrapper) and turns TERM, INT and
# HUP into one SIGUSR1 to mpirun. It exits with mpirun's code: 3 after such
# a stop, as `fspo train` under srun or Slurm's batch script
# (docs/reliability.md, "Signals and time limits").
#
# A second TERM/INT/HUP sends SIGUSR1 again (harmless: the stop is already
# on its way). To end the job without a checkpoint, kill mpirun itself.
set -u
[[ $# -gt 0 ]] || { echo "usage: $0 MPIRUN-ARGS... (e.g. -np 2 ./fspo train cfg.yaml)" >&2; exit 2; }
as_root=()
[[ $(id -u) -eq 0 && -z ${OMPI_ALLOW_RUN_AS_ROOT:-} ]] && as_root=(--allow-run-as-root)

set -m # background jobs get their own process group
mpirun "${as_root[@]}" "$@" </dev/null &
pid=$!
set +m
forward() {
    echo "fspo-mpirun: got SIG$1: asking the ranks to checkpoint and stop (SIGUSR1 to mpirun $pid)" >&2
    kill -USR1 "$pid" 2>/dev/null
}
trap 'forward TERM' TERM
trap 'forward INT' INT
trap 'forward HUP' HUP
# a trapped signal ends `wait` early: wait until mpirun is gone, then once
# more for its exit status (bash keeps it)
while kill -0 "$pid" 2>/dev/null; do wait "$pid"; done
wait "$pid"
