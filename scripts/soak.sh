#!/usr/bin/env bash
# Kill soak: SIGKILL a 2-rank training job at random points, then resume it.
#
# Kinds of fault (SOAK_KINDS, default all three):
#   mpirun  SIGKILL of mpirun itself at a random step
#   rank    SIGKILL of one random rank at a random step
#   ckpt    SIGKILL of rank 0 at a random point inside a checkpoint write
#           (FSPO_FAULT=ckptslow@MS stretches the write so the point is random)
# Every trial asserts, against facts fspo does not report itself:
#   - the job ends within SOAK_HANG_S seconds (no hang) and no rank of it
#     is left running (pgrep on its unique run directory);
#   - every ckpt_*.h5 left in the run directory verifies (`fspo inspect`):
#     never a corrupt "latest";
#   - at most one checkpoint interval of work is lost (last logged step
#     minus the newest checkpoint's step <= checkpoint.every);
#   - a lock left by a killed rank 0 is refused as stale (exit 2, naming
#     the dead pid, nothing changed) until it is removed as the message says;
#   - `train.resume: auto` resumes from that newest checkpoint and ends with
#     parameters, Adam moments (tests/ckpt_compare.py --tol 0 --optim) and
#     the metrics log bit-identical to an uninterrupted run.
# Prints PASS/FAIL per trial and a summary "soak: KIND: T trials, S survived,
# L data lost, M killed mid-write"; exit 1 if any trial failed.
# usage: SOAK_TRIALS=20 [SOAK_SEED=N] [SOAK_KINDS="mpirun rank ckpt"] scripts/soak.sh
# (make soak; tests/test_kill.sh runs 2 trials per kind)
set -u
cd "$(dirname "$0")/.." && source tests/lib.sh
export OPENBLAS_NUM_THREADS=1
PY=/usr/bin/python3
B=${BUILD:-build}
TRIALS=${SOAK_TRIALS:-20}
KINDS=${SOAK_KINDS:-mpirun rank ckpt}
HANG_S=${SOAK_HANG_S:-30}
SEED=${SOAK_SEED:-$(( $(date +%s) % 32768 ))}
RANDOM=$SEED
STEPS=${SOAK_STEPS:-200} EVERY=20
echo "soak: seed $SEED (SOAK_SEED=$SEED reproduces the kill points), $TRIALS trial(s) per kind: $KINDS"

tmp=$(mktemp -d /tmp/fspo-soak.XXXXXX) && trap 'remove_tmp "$tmp"' EXIT
tiny_fixture "$tmp" "max_steps: $STEPS, batch_size: 6, log_every: 1, resume: auto" "warmup_steps: 2" "every: $EVERY, keep: 2" ||
    { fail "soak: make dataset"; exit 1; }
launch() { # launch DIR: starts the job in the background; MPI_PID is mpirun's PID
    "${MPIRUN[@]}" -np 2 "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$1" >>"$1.log" 2>&1 &
    MPI_PID=$!
}
same_metrics() { # A B: every logged value but the timing ones is identical, same steps
    "$PY" - "$1" "$2" <<'PYEOF'
import json, sys
def rows(p):
    return [json.loads(l) for l in open(p)]
a, b = rows(sys.argv[1]), rows(sys.argv[2])
assert [r["step"] for r in a] == [r["step"] for r in b], "different steps logged"
skip = ("tokens_per_sec", "mfu", "meta_examples_per_sec")
bad = [(x["step"], k) for x, y in zip(a, b) for k in x if k not in skip and x[k] != y.get(k)]
assert not bad, f"metrics differ at {bad[:3]}"
print(f"{len(a)} metric rows identical")
PYEOF
}
last_step() { # last complete metrics line's step, 0 if none
    "$PY" -c '
import json, sys
s = 0
for l in open(sys.argv[1]):
    if l.endswith("\n"):
        try: s = json.loads(l)["step"]
        except Exception: pass
print(s)' "$1" 2>/dev/null || echo 0
}
wait_steps() { # wait_steps DIR N: until N metric lines or the job ended
    local i
    for ((i = 0; i < 3000; i++)); do
        [[ -f $1/metrics.jsonl && $(wc -l <"$1/metrics.jsonl") -ge $2 ]] && return 0
        kill -0 "$MPI_PID" 2>/dev/null || return 1
        sleep 0.01
    done
    return 1
}
rank_pid() { # rank_pid R: PID of rank R of the running job
    local p
    for p in $(pgrep -P "$MPI_PID"); do
        tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$1" && { echo "$p"; return; }
    done
}

# the uninterrupted reference
mkdir -p "$tmp/ref"
"${MPIRUN[@]}" -np 2 "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$tmp/ref" >"$tmp/ref.log" 2>&1 ||
    { fail "soak: reference run" "$(tail -3 "$tmp/ref.log")"; exit 1; }

any_fail=0
for kind in $KINDS; do
    n=0 survived=0 lost=0 midwrite=0 missed=0
    for ((t = 1; t <= TRIALS; t++)); do
        dir=$tmp/$kind-$t t0=$SECONDS
        name="kill $kind, trial $t"
        fault=""
        [[ $kind == ckpt ]] && fault=ckptslow@20
        FSPO_FAULT=$fault launch "$dir"
        why="" injected=0 detail=""
        case $kind in
        mpirun | rank)
            target=$((3 + RANDOM % (STEPS - 30)))
            if wait_steps "$dir" "$target"; then
                if [[ $kind == mpirun ]]; then
                    kill -9 "$MPI_PID" 2>/dev/null && injected=1
                else
                    r=$((RANDOM % 2)) p=$(rank_pid $r)
                    [[ -n $p ]] && kill -9 "$p" 2>/dev/null && injected=1
                fi
                detail="at step ~$target"
            fi
            ;;
        ckpt)
            c=$((EVERY * (1 + RANDOM % (STEPS / EVERY - 1))))
            for ((i = 0; i < 3000; i++)); do
                [[ -e $dir/ckpt_$c.h5.tmp ]] && break
                kill -0 "$MPI_PID" 2>/dev/null || break
                sleep 0.005
            done
            if [[ -e $dir/ckpt_$c.h5.tmp ]]; then
                sleep "0.$(printf '%03d' $((RANDOM % 500)))"
                p=$(rank_pid 0)
                [[ -n $p ]] && kill -9 "$p" 2>/dev/null && injected=1
                [[ -e $dir/ckpt_$c.h5.tmp ]] && midwrite=$((midwrite + 1)) && detail="inside the write of ckpt_$c" ||
                    detail="just after the write of ckpt_$c"
            fi
            ;;
        esac
        if [[ $injected -eq 0 ]]; then
            # the job ended before the kill point: not a trial; stop it, count it, move on
            kill -9 "$MPI_PID" 2>/dev/null
            wait "$MPI_PID" 2>/dev/null
            missed=$((missed + 1))
            echo "SKIP: $name: missed the kill point (the job ended first); not counted"
            continue
        fi
        n=$((n + 1))
        # the job must end by itself, every rank with it
        for ((i = 0; i < HANG_S * 10; i++)); do kill -0 "$MPI_PID" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$MPI_PID" 2>/dev/null; then
            why="mpirun still running ${HANG_S}s after the kill (hang)"
            kill -9 "$MPI_PID" 2>/dev/null
        fi
        wait "$MPI_PID" 2>/dev/null
        rc=$?
        for ((i = 0; i < HANG_S * 10; i++)); do pgrep -f -- "$dir( |$)" >/dev/null || break; sleep 0.1; done
        orphans=$(pgrep -f -- "$dir( |$)" | tr '\n' ' ')
        if [[ -n $orphans ]]; then
            why="${why:+$why; }orphan ranks left: $orphans"
            for p in $orphans; do kill -9 "$p" 2>/dev/null; done
        fi
        # what is on disk must verify, and lose at most one interval
        data_lost=""
        newest=0
        for f in "$dir"/ckpt_*.h5; do
            [[ -e $f ]] || continue
            out=$("$FSPO" inspect "$f" 2>&1) || data_lost="${data_lost}$(basename "$f") does not verify: $(tail -1 <<<"$out"); "
            s=${f##*/ckpt_}; s=${s%.h5}
            ((s > newest)) && newest=$s
        done
        logged=$(last_step "$dir/metrics.jsonl")
        ((logged - newest > EVERY)) && data_lost="${data_lost}lost steps $newest..$logged (> one interval of $EVERY); "
        # a killed rank 0 leaves its lock (io/rundir.h): the next start must
        # refuse it as stale, naming the dead holder, and change nothing
        lock_note=""
        if [[ -e $dir/fspo.lock ]]; then
            holder=$(sed -n 's/^pid //p' "$dir/fspo.lock")
            before=$(cd "$dir" && sha256sum ckpt_*.h5 metrics.jsonl 2>/dev/null)
            out=$(timeout 60 "${MPIRUN[@]}" -np 2 "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$dir" 2>&1)
            lrc=$?
            if [[ $lrc -eq 2 ]] && grep -q "stale lock of fspo pid $holder on this host" <<<"$out" &&
                [[ $(cd "$dir" && sha256sum ckpt_*.h5 metrics.jsonl 2>/dev/null) == "$before" ]]; then
                rm "$dir/fspo.lock" # what the message says to do
                lock_note="; its stale lock (pid $holder) was refused with exit 2, then removed"
            else
                data_lost="${data_lost}the stale lock of pid $holder was not refused cleanly (exit $lrc: $(tail -1 <<<"$out")); "
            fi
        fi
        # resume to the end
        t_kill=$SECONDS
        timeout 300 "${MPIRUN[@]}" -np 2 "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$dir" >"$dir.resume.log" 2>&1
        rrc=$?
        if [[ $rrc -ne 0 ]]; then
            data_lost="${data_lost}resume exited $rrc: $(tail -2 "$dir.resume.log" | tr '\n' ' '); "
        else
            if ((newest > 0)); then
                grep -q "resuming from $dir/ckpt_$newest.h5 at step $newest" "$dir.resume.log" ||
                    data_lost="${data_lost}resume did not start from ckpt_$newest.h5: $(grep -m1 'resuming\|starting' "$dir.resume.log"); "
            fi
            cmp_out=$("$PY" tests/ckpt_compare.py "$dir/ckpt_$STEPS.h5" "$tmp/ref/ckpt_$STEPS.h5" --tol 0 --optim 2>&1) ||
                data_lost="${data_lost}final state differs from the uninterrupted run: $cmp_out; "
            met_out=$(same_metrics "$dir/metrics.jsonl" "$tmp/ref/metrics.jsonl" 2>&1) ||
                data_lost="${data_lost}metrics differ: $(tail -1 <<<"$met_out"); "
        fi
        t_end=$SECONDS
        [[ -n $data_lost ]] && lost=$((lost + 1))
        why="${why:+$why; }$data_lost"
        if [[ -z $why ]]; then
            survived=$((survived + 1))
            pass "$name" "$((t_end - t0)) s ($((t_kill - t0)) s to kill, check, $((t_end - t_kill)) s to resume and compare): killed $detail (job exit $rc), ended with no orphan$lock_note; newest ckpt $newest, logged to $logged; resumed to step $STEPS bit-identical ($cmp_out; $met_out)"
            rm -rf "$dir" "$dir.log" "$dir.resume.log"
        else
            any_fail=1
            fail "$name" "killed $detail (job exit $rc): $why (logs kept in $dir.log)"
            trap - EXIT # keep the evidence
        fi
    done
    echo "soak: $kind: $n trials, $survived survived, $lost data lost, $midwrite killed mid-write, $missed missed"
    [[ -n ${SOAK_REPORT:-} ]] && echo "$kind $n $survived $lost $midwrite $missed" >>"$SOAK_REPORT"
done
exit $any_fail
