#!/usr/bin/env bash
# Stop signals under a real `mpirun -np 2` (docs/reliability.md, "Signals
# and time limits"):
#   - SIGTERM, SIGINT, SIGHUP to rank 0 or rank 1 (as srun, scancel or a
#     node shutdown deliver them): one checkpoint that verifies, exit 3, no
#     rank left, the lock released; resuming reaches the uninterrupted
#     run's final state bit for bit;
#   - the same signals to mpirun itself: Open MPI 4.1 aborts the job (exit
#     1), the ranks get SIGTERM a second later and SIGKILL after another;
#     every checkpoint left verifies, at least one exists, no rank is left,
#     and a lock left behind is reported as stale; the resume is exact;
#   - scripts/fspo-mpirun.sh turns those signals into SIGUSR1: exit 3;
#   - a signal during start-up (before the first step) and one during a
#     checkpoint write (FSPO_FAULT=ckptslow stretches it) end the same way.
# Facts are checked independently of fspo's own report: `fspo inspect`
# re-verifies every file, pgrep looks for processes of the run directory,
# tests/ckpt_compare.py compares with the uninterrupted run.
cd "$(dirname "$0")/.." && source tests/lib.sh
export OPENBLAS_NUM_THREADS=1 FSPO_PEAK_GFLOPS=10
PY=/usr/bin/python3
FSPO=$(readlink -f "$FSPO")
tmp=$(mktemp -d /tmp/fspo-signals.XXXXXX) && trap 'remove_tmp "$tmp"' EXIT
tiny_fixture "$tmp" "max_steps: 200, batch_size: 6, log_every: 1" "warmup_steps: 2, decay_steps: 200" "every: 1000, keep: 3" ||
    { fail "make dataset"; exit 1; }
launch() { # launch DIR [--set ...]: mpirun -np 2 in the background; MPI_PID
    local dir=$1
    shift
    "${MPIRUN[@]}" -np 2 "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$dir" "$@" >"$dir.log" 2>&1 &
    MPI_PID=$!
}
rank_pid() { # rank_pid R: PID of rank R of the job MPI_PID
    local p
    for _ in $(seq 1000); do
        for p in $(pgrep -P "$MPI_PID"); do
            tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$1" && { echo "$p"; return; }
        done
        sleep 0.02
    done
}
logged() { [[ -f $1/metrics.jsonl ]] && wc -l <"$1/metrics.jsonl" || echo 0; }
wait_for() { # wait_for 'CONDITION': until it holds (evaluated each time), at most 30 s
    for _ in $(seq 1500); do eval "$1" && return 0; sleep 0.02; done
    return 1
}
ckpts() { ls "$1" 2>/dev/null | sed -n 's/^ckpt_\([0-9]*\)\.h5$/\1/p' | sort -n | tr '\n' ' '; }
all_verify() { # every ckpt_*.h5 of DIR verifies (fspo inspect); prints the bad ones
    local f bad=""
    for f in "$1"/ckpt_*.h5; do [[ -e $f ]] && { "$FSPO" inspect "$f" >/dev/null 2>&1 || bad="$bad $(basename "$f")"; }; done
    echo "$bad"
    [[ -z $bad ]]
}
left() { # processes of DIR's job still running, after up to 10 s
    for _ in $(seq 100); do pgrep -f -- "$1( |\$)" >/dev/null || return 0; sleep 0.1; done
    pgrep -f -- "$1( |\$)" | tr '\n' ' '
}
same() { "$PY" tests/ckpt_compare.py "$1" "$2" --tol 0 --optim 2>&1; }
resume_exact() { # DIR: resume to the end; the final state equals the uninterrupted run's
    "${MPIRUN[@]}" -np 2 "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$1" >"$1.resume.log" 2>&1 &&
        same "$1/ckpt_200.h5" "$tmp/ref/ckpt_200.h5"
}

"${MPIRUN[@]}" -np 2 "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$tmp/ref" >"$tmp/ref.log" 2>&1 ||
    { fail "uninterrupted reference run" "$(tail -2 "$tmp/ref.log")"; exit 1; }

# ---- to a rank: one checkpoint, exit 3 ----
for spec in "TERM 1 resume" "INT 0 -" "HUP 1 -" "TERM 0 -" "INT 1 -" "HUP 0 resume"; do
    read -r sig rank check <<<"$spec"
    dir=$tmp/rank_${sig}_$rank
    launch "$dir"
    wait_for '[ "$(logged "$dir")" -ge 5 ]'
    kill -"$sig" "$(rank_pid "$rank")"
    wait $MPI_PID
    rc=$?
    got=$(ckpts "$dir") bad=$(all_verify "$dir") orphans=$(left "$dir")
    step=$(grep -o "stop signal at step [0-9]*" "$dir.log" | grep -o "[0-9]*$")
    out="-"
    if [[ $rc -eq 3 && -n $step && $got == "$step " && -z $bad && -z $orphans && ! -e $dir/fspo.lock ]] &&
        { [[ $check != resume ]] || out=$(resume_exact "$dir"); }; then
        pass "SIG$sig to rank $rank under mpirun -np 2: one verified checkpoint, exit 3" "stopped at step $step, ckpt_$step.h5 verifies, no rank left, lock released; resumed to 200: $out"
    else
        fail "SIG$sig to rank $rank under mpirun -np 2" "exit $rc, checkpoints '$got' (stop step '$step'), bad '$bad', left '$orphans', resume '$out': $(tail -2 "$dir.log")"
    fi
done

# ---- to mpirun itself: Open MPI aborts the job; what is left must be sound ----
for spec in "TERM resume" "INT -" "HUP -"; do
    read -r sig check <<<"$spec"
    dir=$tmp/mpirun_$sig
    launch "$dir" --set checkpoint.every=20
    wait_for '[ -e "$dir/ckpt_20.h5" ]'
    kill -"$sig" $MPI_PID
    wait $MPI_PID
    rc=$?
    orphans=$(left "$dir") got=$(ckpts "$dir") bad=$(all_verify "$dir")
    lock="released"
    if [[ -e $dir/fspo.lock ]]; then # the ranks were killed before rank 0 could release it
        holder=$(sed -n 's/^pid //p' "$dir/fspo.lock")
        "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$dir" >"$dir.stale.log" 2>&1
        src=$?
        [[ $src -eq 2 ]] && grep -q "stale lock of fspo pid $holder" "$dir.stale.log" && rm "$dir/fspo.lock" &&
            lock="left by the killed rank 0: reported as stale, removed" || lock="left, not reported as stale (exit $src)"
    fi
    out="-"
    if [[ $rc -eq 1 && -z $orphans && -n $got && -z $bad && $lock != left,* ]] && { [[ $check != resume ]] || out=$(resume_exact "$dir"); }; then
        pass "SIG$sig to mpirun: Open MPI aborts (exit 1); checkpoints verify, no rank left" "checkpoints $got; lock $lock; $(grep -o 'stop signal at step [0-9]*' "$dir.log" || echo 'no stop checkpoint'); resumed to 200: $out"
    else
        fail "SIG$sig to mpirun" "exit $rc (documented: 1), left '$orphans', checkpoints '$got', bad '$bad', lock $lock, resume '$out': $(tail -2 "$dir.log")"
    fi
done

# ---- the wrapper: mpirun's abort turned into a checkpoint and exit 3 ----
set -m # the wrapper must not start with SIGINT ignored, as a background job of a script would
for sig in TERM INT HUP; do
    dir=$tmp/wrap_$sig
    scripts/fspo-mpirun.sh --oversubscribe -q -np 2 "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$dir" >"$dir.log" 2>&1 &
    pid=$!
    wait_for '[ "$(logged "$dir")" -ge 5 ]'
    kill -"$sig" $pid
    wait $pid
    rc=$?
    got=$(ckpts "$dir") bad=$(all_verify "$dir") orphans=$(left "$dir")
    [[ $rc -eq 3 && $(wc -w <<<"$got") -eq 1 && -z $bad && -z $orphans ]] &&
        pass "SIG$sig to scripts/fspo-mpirun.sh: one verified checkpoint, exit 3" "checkpoint $got" ||
        fail "SIG$sig to scripts/fspo-mpirun.sh" "exit $rc, checkpoints '$got', bad '$bad', left '$orphans': $(tail -2 "$dir.log")"
done
set +m

# ---- during start-up: before the first step ----
dir=$tmp/startup
unset FSPO_PEAK_GFLOPS # the start-up sgemm probe: a second or so between the lock and step 1
launch "$dir"
wait_for '[ -e "$dir/fspo.lock" ]'
early=$(logged "$dir")
kill -TERM "$(rank_pid 0)"
wait $MPI_PID
rc=$?
[[ $rc -eq 3 && $early -eq 0 && $(ckpts "$dir") == "0 " ]] && grep -q "stop signal at step 0" "$dir.log" && all_verify "$dir" >/dev/null &&
    pass "SIGTERM during start-up (lock taken, no step yet): exit 3 with a verified checkpoint" "ckpt_0.h5" ||
    fail "SIGTERM during start-up" "exit $rc, $early steps logged at the signal, checkpoints '$(ckpts "$dir")': $(tail -2 "$dir.log")"
# a resumed run stopped during start-up has its checkpoint already: nothing new is written
before=$(cd "$dir" && sha256sum ckpt_*.h5)
launch "$dir"
wait_for '[ -e "$dir/fspo.lock" ]'
kill -HUP "$(rank_pid 0)" # rank 0: in the start-up sgemm probe (rank 1 may be at the first boundary already)
wait $MPI_PID
rc=$?
[[ $rc -eq 3 && $(cd "$dir" && sha256sum ckpt_*.h5) == "$before" ]] && grep -q "step 0 is checkpointed already" "$dir.log" &&
    pass "SIGHUP to rank 0 during a resumed run's start-up: exit 3, its checkpoint kept as it was" "$(grep -m1 'checkpointed already' "$dir.log")" ||
    fail "SIGHUP during a resumed run's start-up" "exit $rc: $(tail -2 "$dir.log")"
export FSPO_PEAK_GFLOPS=10

# ---- during a checkpoint write: the write completes, then the stop ----
# rank 0 (the writer) sees the signal when the write is done: it stops at
# step 20, checkpointed already. Rank 1 has passed step 20's boundary and
# waits for rank 0 there: it stops at the next one, step 21.
for spec in "0 20" "1 20 21"; do
    read -r rank want <<<"$spec"
    dir=$tmp/midwrite_$rank
    FSPO_FAULT=ckptslow@40 launch "$dir" --set checkpoint.every=20
    wait_for '[ -e "$dir/ckpt_20.h5.tmp" ]'
    sleep 0.1
    [[ -e $dir/ckpt_20.h5.tmp ]] && inside=yes || inside=no
    kill -TERM "$(rank_pid $rank)"
    wait $MPI_PID
    rc=$?
    got=$(ckpts "$dir") bad=$(all_verify "$dir")
    last=${want##* }
    [[ $rc -eq 3 && $inside == yes && $got == "$want " && -z $bad && -z $(ls "$dir" | grep tmp) ]] &&
        grep -q "stop signal at step $last" "$dir.log" &&
        pass "SIGTERM to rank $rank inside a checkpoint write: the write completes, exit 3" "checkpoints $got(all verify), no .tmp; stopped at step $last" ||
        fail "SIGTERM to rank $rank inside a checkpoint write" "exit $rc, inside '$inside', checkpoints '$got' (want '$want'), bad '$bad': $(tail -2 "$dir.log")"
done
