#!/usr/bin/env bash
# fspo slurm against a real one-node Slurm on localhost (tests/slurm_local.sh):
# a 2-rank srun job equals mpirun; two preemptions in one job end where an
# uninterrupted run ends; a time-limited job checkpoints before its limit and
# requeues; the cluster script matches its reviewed form and passes
# `sbatch --test-only`; hostile config values run nothing; bad configs are
# refused before anything is submitted.
cd "$(dirname "$0")/.." && source tests/lib.sh && source tests/slurm_local.sh
PY=/usr/bin/python3
B=${BUILD:-build}
FSPO_ABS=$(readlink -f "$FSPO")
tmp=$(mktemp -d /tmp/fspo-slurmtest.XXXXXX) && trap 'rm -rf "$tmp"' EXIT
T0=$SECONDS
elapsed() { echo "$((SECONDS - T0)) s"; }

"$B/tests/test_pack" --write-dataset "$tmp/data.h5" 8 24 || { fail "make dataset"; exit 1; }
# ~300 steps in 10-30 s on 2 busy cores; checkpoints only at the end or on a signal
cat >"$tmp/cfg.yaml" <<YAML
model: {d_model: 32, n_layers: 2, n_heads: 4, max_seq: 256}
data: {path: $tmp/data.h5, n_fewshot: 2, n_queries: 2}
train: {run_dir: $tmp/run, max_steps: 300, batch_size: 6, log_every: 1}
optim: {warmup_steps: 2}
mpi: {threads_per_rank: 1, checksum_every: 5}
checkpoint: {every: 1000, keep: 2}
slurm: {job_name: fspo-test, ntasks_per_node: 2, cpus_per_task: 1, time: "10:00", signal_lead_s: 30}
YAML
submit() { "$FSPO_ABS" slurm submit "$tmp/cfg.yaml" "$@" 2>>"$tmp/submit.err"; }

# ---------------------------------------------------------------- no Slurm needed

# ---- (4) the cluster script, as reviewed (paths that vary normalized) ----
normalize() { sed -e "s|$FSPO_ABS|<fspo>|g" -e "s|$PWD|<repo>|g"; }
if "$FSPO" slurm submit configs/cluster.yaml --dry-run >"$tmp/cluster.sbatch" 2>"$tmp/cluster.err"; then
    if diff <(normalize <"$tmp/cluster.sbatch") tests/data/slurm_cluster.expected >"$tmp/cluster.diff"; then
        pass "dry-run of configs/cluster.yaml matches tests/data/slurm_cluster.expected" "$(wc -l <"$tmp/cluster.sbatch") lines"
    else
        fail "dry-run of configs/cluster.yaml matches tests/data/slurm_cluster.expected" "$(head -20 "$tmp/cluster.diff")"
    fi
else
    fail "dry-run of configs/cluster.yaml" "$(cat "$tmp/cluster.err")"
fi
[[ ! -e runs/cluster/fspo-fspo-cluster.sbatch ]] && bash -n "$tmp/cluster.sbatch" &&
    pass "dry-run writes nothing and bash -n accepts the script" || fail "dry-run writes nothing and bash -n accepts the script"

# ---- (5) hostile values: quoted into the script, never run ----
evil_name="x'y\"z \$(touch $tmp/pwned1) ; touch $tmp/pwned2 \`touch $tmp/pwned3\` #c \\ %j"
evil_dir="$tmp/r 'q\" \$(touch $tmp/pwned4) ; \`touch $tmp/pwned5\` %x"
evil_set="eval.sft_ckpt=a'b\"c \$(touch $tmp/pwned6); \`touch $tmp/pwned7\`"
hostile=(--set "slurm.job_name=$evil_name" --set "train.run_dir=$evil_dir" --set "$evil_set")
submit --dry-run "${hostile[@]}" >"$tmp/evil.sbatch"
if bash -n "$tmp/evil.sbatch" && grep -qF -- "--job-name=\"x'y\\\"z" "$tmp/evil.sbatch"; then
    pass "hostile job_name, run_dir, --set: bash -n accepts the script" "$(grep -c . "$tmp/evil.sbatch") lines"
else
    fail "hostile job_name, run_dir, --set: bash -n accepts the script" "$(bash -n "$tmp/evil.sbatch" 2>&1 | head -3)"
fi
# run the whole script in a sandbox: a fake srun records its arguments
mkdir -p "$tmp/fakebin"
# (and leaves the final checkpoint a finished run leaves, which the script checks)
cat >"$tmp/fakebin/srun" <<'SH'
#!/bin/bash
printf '%s\0' "$@" >"$FAKE_ARGS"
mkdir -p "$FAKE_RUN_DIR" && touch "$FAKE_RUN_DIR/ckpt_300.h5"
SH
chmod +x "$tmp/fakebin/srun"
sandbox() { # SCRIPT: runs it as Slurm would, with the fake srun; its output in $tmp/sandbox.out
    (cd "$tmp" && env -i PATH="$tmp/fakebin:/usr/bin:/bin" FAKE_ARGS="$tmp/srun.args" FAKE_RUN_DIR="$evil_dir" SLURM_JOB_ID=7 SLURM_JOB_NAME=sandbox \
        SLURM_JOB_NODELIST=localhost SLURM_NTASKS=2 SLURM_CPUS_PER_TASK=1 bash "$1" >"$tmp/sandbox.out" 2>&1)
}
rm -f "$tmp/srun.args"
sandbox "$tmp/evil.sbatch"
rc=$?
printf '%s\0' --mpi=pmix --cpus-per-task=1 --wait=60 "$FSPO_ABS" train "$tmp/cfg.yaml" --set "slurm.job_name=$evil_name" \
    --set "train.run_dir=$evil_dir" --set "$evil_set" --set train.resume=auto >"$tmp/srun.want"
pwned=$(ls "$tmp" | grep pwned)
if [[ $rc -eq 0 && -z $pwned ]] && cmp -s "$tmp/srun.args" "$tmp/srun.want" && grep -qF "run dir $evil_dir" "$tmp/sandbox.out"; then
    pass "hostile values reach srun intact and run nothing (sandbox)" "srun got exactly the $(tr -cd '\0' <"$tmp/srun.want" | wc -c) arguments"
else
    fail "hostile values reach srun intact and run nothing (sandbox)" "exit $rc, pwned: '$pwned', $(tail -3 "$tmp/sandbox.out")"
fi
# a step that "succeeds" without its final checkpoint (srun failed to launch the ranks) fails the job
submit --dry-run --set train.run_dir="$tmp/never" >"$tmp/plain.sbatch"
sandbox "$tmp/plain.sbatch"
rc=$?
[[ $rc -eq 1 ]] && grep -q "ckpt_300.h5 is missing: the ranks did not run" "$tmp/sandbox.out" &&
    pass "exit 0 without the final checkpoint fails the job" "exit $rc" ||
    fail "exit 0 without the final checkpoint fails the job" "exit $rc: $(tail -2 "$tmp/sandbox.out")"
# the real job below starts it afresh: without the fake srun's empty ckpt_300.h5 (both sandboxes
# leave one there), which a resume now refuses as a checkpoint that does not verify
rm -rf "$evil_dir"
# setup entries are shell code by design; each runs in its own eval, so an
# unbalanced quote or a newline in one cannot reach the rest of the script
submit --dry-run --set "slurm.setup=[\"touch $tmp/setup1_ran\", \"echo 'unbalanced; touch $tmp/pwned8\", \"echo a\\n'\"]" >"$tmp/setup.sbatch"
rm -f "$tmp/srun.args"
sandbox "$tmp/setup.sbatch"
rc=$?
pwned=$(ls "$tmp" | grep pwned)
if bash -n "$tmp/setup.sbatch" && [[ $rc -eq 1 && -f $tmp/setup1_ran && ! -e $tmp/srun.args && -z $pwned ]] &&
    grep -q "slurm.setup entry 2 failed" "$tmp/sandbox.out"; then
    pass "a broken slurm.setup entry stays inside its eval" "bash -n ok; entry 1 ran, entry 2 stopped the job (exit 1), no step started"
else
    fail "a broken slurm.setup entry stays inside its eval" "exit $rc, pwned '$pwned', $(tail -3 "$tmp/sandbox.out")"
fi

# a step a signal ended (a rank or node lost: 128 + N) requeues the job at
# most slurm.failure_requeues times; fspo's own errors (1) do not
mkdir -p "$tmp/failbin"
printf '#!/bin/bash\nexit "$FAKE_CODE"\n' >"$tmp/failbin/srun"
printf '#!/bin/bash\necho "$*" >>"$FAKE_SCONTROL"\n' >"$tmp/failbin/scontrol"
chmod +x "$tmp/failbin/srun" "$tmp/failbin/scontrol"
submit --dry-run --set train.run_dir="$tmp/lost" --set slurm.failure_requeues=1 >"$tmp/lost.sbatch"
mkdir -p "$tmp/lost"
lost_job() { # CODE: runs the script as job 7 with a step that exits CODE; its exit code
    (cd "$tmp" && env -i PATH="$tmp/failbin:/usr/bin:/bin" FAKE_CODE=$1 FAKE_SCONTROL="$tmp/scontrol.calls" SLURM_JOB_ID=7 \
        SLURM_JOB_NAME=lost SLURM_JOB_NODELIST=localhost SLURM_NTASKS=2 SLURM_CPUS_PER_TASK=1 bash "$tmp/lost.sbatch" >>"$tmp/lost.out" 2>&1)
}
rm -f "$tmp/scontrol.calls"
lost_job 1; rc1=$?
lost_job 137; rc2=$?
calls2=$(cat "$tmp/scontrol.calls" 2>/dev/null)
lost_job 137; rc3=$?
if [[ $rc1 -eq 1 && $rc2 -eq 0 && $calls2 == "requeue 7" && $rc3 -eq 137 && $(cat "$tmp/scontrol.calls") == "requeue 7" &&
    $(wc -l <"$tmp/lost/slurm-7.failures") -eq 1 ]] &&
    grep -q "the job step failed with code 137 (a rank ended by signal 9): requeueing job 7 (1 of slurm.failure_requeues 1)" "$tmp/lost.out" &&
    grep -q "the job step failed with code 137; not requeueing (slurm.failure_requeues 1 used up)" "$tmp/lost.out"; then
    pass "a step ended by a signal requeues the job up to slurm.failure_requeues times; fspo's own error does not (sandbox)" \
        "exit 1 -> job exits 1; 137 -> scontrol requeue 7, exits 0; 137 again -> exits 137 (budget of 1 used)"
else
    fail "failure requeues (sandbox)" "exits $rc1 $rc2 $rc3, scontrol: $(tr '\n' ';' <"$tmp/scontrol.calls" 2>/dev/null); $(tail -4 "$tmp/lost.out")"
fi
submit --dry-run --set slurm.requeue=false >"$tmp/noreq.sbatch"
grep -qx "failure_requeues=0" "$tmp/noreq.sbatch" && grep -q -- '--wait="$wait_s"' "$tmp/noreq.sbatch" && grep -qx "wait_s=60" "$tmp/noreq.sbatch" &&
    pass "slurm.requeue false turns failure requeues off; srun gets --wait (slurm.wait_s, default 60)" "" ||
    fail "slurm.requeue false turns failure requeues off" "$(grep -n 'failure_requeues=\|wait' "$tmp/noreq.sbatch")"

# ---------------------------------------------------------------- real Slurm

slurm_start
slurm_rc=$? slurm_up=$((slurm_rc == 0))
((slurm_up)) && echo "slurm: cluster up after $(elapsed)"

# ---- (6) validation: exit 2, a clear message, nothing written or queued ----
touch "$tmp/afile"
refused() { # NAME PATTERN [--set ...]: refused with PATTERN, no run dir, no script
    local name=$1 pattern=$2
    shift 2
    rm -rf "$tmp/val"
    expect_error "refused: $name" 2 "$pattern" -- "$FSPO_ABS" slurm submit "$tmp/cfg.yaml" --set train.run_dir="$tmp/val" "$@"
    [[ -e $tmp/val ]] && fail "refused: $name: nothing written" "$(ls -la "$tmp/val")"
}
rm -rf "$tmp/val"
expect_error "refused: sbatch missing" 2 "sbatch not found on PATH: run this on a Slurm login node" -- \
    env PATH=/nonexistent "$FSPO_ABS" slurm submit "$tmp/cfg.yaml" --set train.run_dir="$tmp/val"
refused "time shorter than the signal lead" "slurm.time 1:30 \(90 s\) is too short for slurm.signal_lead_s = 60" --set slurm.time=1:30 --set slurm.signal_lead_s=60
refused "time not in Slurm's format" "slurm.time '1:2:3:4' is not a Slurm time" --set slurm.time=1:2:3:4
refused "minutes over 59" "slurm.time '1-2:75' is not a Slurm time" --set slurm.time=1-2:75
refused "tasks x cpus" "64 x slurm.cpus_per_task 32 = 2048 CPUs per node" --set slurm.ntasks_per_node=64 --set slurm.cpus_per_task=32
refused "more ranks than the batch" "8 ranks .* but train.batch_size is 6" --set slurm.ntasks_per_node=8
refused "threads over cpus per task" "mpi.threads_per_rank 4 exceeds slurm.cpus_per_task 1" --set mpi.threads_per_rank=4
refused "mpirun on 2 nodes" "mpirun starts ranks on one node only.*use launcher: srun" --set slurm.launcher=mpirun --set slurm.nodes=2
refused "newline in job_name" "slurm.job_name contains a newline" --set $'slurm.job_name=a\nsrun rm -rf /'
refused "extra_sbatch not an option" "entry 1 'exclusive' is not an sbatch option" --set "slurm.extra_sbatch=[exclusive]"
refused "mem not a size" "slurm.mem 'lots' is not a Slurm memory size" --set slurm.mem=lots
rm -rf "$tmp/val"
expect_error "refused: run_dir not writable" 2 "train.run_dir $tmp/afile/run cannot be created: Not a directory" -- \
    "$FSPO_ABS" slurm submit "$tmp/cfg.yaml" --set train.run_dir="$tmp/afile/run"
# the accepted forms of --time
for t in 5 5:00 1:05:00 1-0 1-2:30 0-1:02:03 UNLIMITED; do
    submit --dry-run --set slurm.time=$t --set slurm.signal_lead_s=0 >/dev/null || fail "slurm.time $t accepted" "$(tail -1 "$tmp/submit.err")"
done

n=$(squeue -h 2>/dev/null | wc -l)
((slurm_up)) && { [[ $n -eq 0 ]] && pass "refused submissions queued nothing" "squeue empty" || fail "refused submissions queued nothing" "$(squeue)"; }

case $slurm_rc in
1) exit 0 ;; # SKIP printed
2) exit 1 ;; # FAIL printed
esac

# ---- (4, cont.) sbatch --test-only accepts the cluster script on local resources ----
"$FSPO" slurm submit configs/cluster.yaml --dry-run --set slurm.partition="$SLURM_PARTITION" --set slurm.account= \
    --set slurm.nodes=1 --set slurm.ntasks_per_node=2 --set slurm.cpus_per_task=1 >"$tmp/cluster_local.sbatch"
out=$(sbatch --test-only "$tmp/cluster_local.sbatch" 2>&1) && grep -q "to start at" <<<"$out" &&
    pass "sbatch --test-only accepts the cluster script (partition, account, size set to local ones)" "$out" ||
    fail "sbatch --test-only accepts the cluster script" "$out"

# the reference: the same config under plain mpirun, 2 ranks
mpirun_np 2 "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$tmp/ref" >"$tmp/ref.log" 2>&1 ||
    fail "reference run under mpirun -np 2" "$(tail -3 "$tmp/ref.log")"
echo "slurm: reference run done after $(elapsed)"

# ---- (1) a 2-rank srun --mpi=pmix job equals mpirun ----
j=$(submit --set train.run_dir="$tmp/job1")
t=$SECONDS
if [[ -n $j ]] && wait_job "$j" 120; then
    log=$tmp/job1/slurm-$j.out
    out=$("$PY" tests/ckpt_compare.py "$tmp/job1/ckpt_300.h5" "$tmp/ref/ckpt_300.h5" --tol 1e-5 2>&1)
    cmp=$?
    bits=$("$PY" tests/ckpt_compare.py "$tmp/job1/ckpt_300.h5" "$tmp/ref/ckpt_300.h5" --tol 0 --optim >/dev/null 2>&1 && echo "bit for bit, moments too" || echo "not bitwise")
    if [[ $cmp -eq 0 && $(job_field "$j" JobState) == COMPLETED ]] && grep -q "job step started: srun" "$log" &&
        grep -q "train: sft stage, 2 rank(s)" "$log"; then
        pass "2-rank job through srun --mpi=pmix equals mpirun -np 2" "job $j in $((SECONDS - t)) s; $out ($bits)"
    else
        fail "2-rank job through srun --mpi=pmix equals mpirun -np 2" "$out; state $(job_field "$j" JobState); $(tail -5 "$log")"
    fi
else
    fail "2-rank job through srun --mpi=pmix" "job '$j' not done in 120 s: $(cat "$tmp/submit.err")"
fi

# ---- (2) preemption twice in one job: USR1 to the batch shell, requeue, resume ----
j=$(submit --set train.run_dir="$tmp/job2")
t=$SECONDS
d=$tmp/job2 log=$tmp/job2/slurm-$j.out ok=1 stops=() last_stop=0
for round in 1 2; do
    # signal once the run is well past its start (and past its last resume)
    wait_steps "$d" $((last_stop + 40)) 90 || { ok=0; fail "preemption $round: job $j makes progress" "$(tail -3 "$log")"; break; }
    scancel --batch -s USR1 "$j"
    if wait_log "$log" "SLURM_RESTART_COUNT=$round," 90 && wait_log "$log" "resuming from .* at step" 60; then
        last_stop=$(grep -o 'stop signal at step [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
        stops+=("$last_stop")
    else
        ok=0
        fail "preemption $round: job $j checkpoints, requeues and restarts" "$(grep -v '^step' "$log" | tail -5)"
        break
    fi
done
if ((ok)) && wait_job "$j" 120; then
    resumed=$(grep -o 'resuming from .*ckpt_[0-9]*.h5 at step [0-9]*' "$log" | grep -o '[0-9]*$' | tr '\n' ' ')
    out=$("$PY" tests/ckpt_compare.py "$d/ckpt_300.h5" "$tmp/ref/ckpt_300.h5" --tol 0 --optim 2>&1)
    cmp=$?
    if [[ $cmp -eq 0 && $(job_field "$j" JobState) == COMPLETED && $(job_field "$j" Restarts) == 2 &&
        "$resumed" == "${stops[0]} ${stops[1]} " ]] && [[ $(grep -c "requeueing job $j" "$log") -eq 2 ]]; then
        pass "preempted twice (scancel --batch -s USR1), resumed twice, ends bit for bit where mpirun ends" \
            "job $j: stopped at steps ${stops[*]}, SLURM_RESTART_COUNT 1 and 2 in the log, $((SECONDS - t)) s; params and moments $out"
    else
        fail "preempted twice, ends where mpirun ends" "$out; state $(job_field "$j" JobState) restarts $(job_field "$j" Restarts); stops ${stops[*]} resumed $resumed"
    fi
    st=$("$FSPO" slurm status "$d" 2>&1)
    grep -q "COMPLETED, restarts 2" <<<"$st" && grep -q "last step        300 of 300" <<<"$st" && grep -q "ckpt_300.h5" <<<"$st" &&
        pass "fspo slurm status names state, restarts, last step and checkpoint" "$(tr '\n' ';' <<<"$st" | tr -s ' ')" ||
        fail "fspo slurm status" "$st"
fi
echo "slurm: preemption test done after $(elapsed)"

# ---- (5, cont.) hostile job name and run dir through the real sbatch ----
j=$(submit "${hostile[@]}" --set train.max_steps=3)
if [[ -n $j ]] && wait_job "$j" 60; then
    pwned=$(ls "$tmp" | grep pwned)
    if [[ $(job_field "$j" JobState) == COMPLETED && -z $pwned && -f "$evil_dir/slurm-$j.out" && -f "$evil_dir/ckpt_3.h5" ]] &&
        scontrol show job "$j" | grep -qF "JobName=$evil_name"; then
        pass "hostile job name and run dir survive sbatch and the job" "job $j named exactly as configured, its log and checkpoint in the hostile run dir"
    else
        fail "hostile job name and run dir survive sbatch and the job" "state $(job_field "$j" JobState), pwned '$pwned', $(scontrol show job "$j" | grep -E 'JobName|StdOut')"
    fi
else
    fail "hostile job name and run dir through sbatch" "job '$j': $(tail -2 "$tmp/submit.err")"
fi

# ---- (3) a time limit: the job checkpoints before it, requeues and resumes (mpirun launcher) ----
# time 2:00 with a 50 s lead: Slurm signals 50-110 s before the end (its
# timer runs every 30 s and may fire a period early), so 10-70 s in.
j=$(submit --set train.run_dir="$tmp/job3" --set train.max_steps=1000000 --set slurm.time=2:00 \
    --set slurm.signal_lead_s=50 --set slurm.launcher=mpirun)
t=$SECONDS
log=$tmp/job3/slurm-$j.out
if [[ -n $j ]] && wait_log "$log" "SLURM_RESTART_COUNT=1," 150 && wait_log "$log" "resuming from" 60; then
    state=$(job_field "$j" JobState) restarts=$(job_field "$j" Restarts)
    first_run=$(grep -o 'job step exited with code 3 after [0-9]* s' "$log" | head -1 | grep -o '[0-9]* s$')
    stop=$(grep -o 'stop signal at step [0-9]*' "$log" | head -1 | grep -o '[0-9]*$')
    scancel "$j"
    wait_job "$j" 60
    if [[ $state == RUNNING && $restarts == 1 && -n $first_run && ${first_run% s} -lt 120 ]] &&
        grep -q "job step started: mpirun" "$log" && grep -q "got SIGUSR1" "$log" &&
        grep -q "resuming from $tmp/job3/ckpt_$stop.h5 at step $stop" "$log" && ! grep -q "DUE TO TIME LIMIT" "$log" &&
        [[ $(job_field "$j" JobState) == CANCELLED ]] && ! grep -q "SLURM_RESTART_COUNT=2," "$log"; then
        pass "time limit 2:00, lead 50 s: checkpoint before the limit, requeue, resume; scancel then ends it" \
            "job $j: first run stopped by USR1 at step $stop after $first_run (limit 120 s), exit 3, no TIMEOUT; state $state with Restarts=1 after requeue; $((SECONDS - t)) s"
    else
        fail "time-limited job checkpoints before the limit" "state $state restarts $restarts first run ${first_run:-?} stop ${stop:-?}: $(grep -v '^step' "$log" | tail -8)"
    fi
else
    fail "time-limited job requeues after the signal" "job '$j' after $((SECONDS - t)) s: $(grep -v '^step' "$log" 2>/dev/null | tail -6)"
    scancel "$j" 2>/dev/null
fi
echo "slurm: time-limit test done after $(elapsed)"

echo "slurm: all done after $(elapsed)"
