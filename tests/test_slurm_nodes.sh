#!/usr/bin/env bash
# fspo slurm across two Slurm nodes (tests/slurm_local.sh: two slurmd on this
# host, n1 and n2, each its own port, spool and TmpFS): `slurm.nodes: 2`
# places one rank with two threads on each node and ends bit for bit where
# `mpirun -np 2` on one node ends; a preemption (USR1, checkpoint, requeue,
# resume) across the nodes ends the same; a node's rank killed mid-run ends
# the step (srun --wait), requeues the job and resumes from the newest
# verified checkpoint, taking over the lock the killed rank 0 left, and
# still ends bit for bit the same.
cd "$(dirname "$0")/.." && source tests/lib.sh && source tests/slurm_local.sh
PY=/usr/bin/python3
B=${BUILD:-build}
FSPO_ABS=$(readlink -f "$FSPO")
tmp=$(mktemp -d /tmp/fspo-slurmnodes.XXXXXX) && trap 'rm -rf "$tmp"' EXIT
T0=$SECONDS
elapsed() { echo "$((SECONDS - T0)) s"; }

"$B/tests/test_pack" --write-dataset "$tmp/data.h5" 8 24 || { fail "make dataset"; exit 1; }
# 400 steps, a checkpoint every 100; one rank per node, two threads each
# (mpi.threads_per_rank 0 = SLURM_CPUS_PER_TASK); wait_s 5: srun ends the
# other rank 5 s after a rank is lost
cat >"$tmp/cfg.yaml" <<YAML
model: {d_model: 32, n_layers: 2, n_heads: 4, max_seq: 256}
data: {path: $tmp/data.h5, n_fewshot: 2, n_queries: 2}
train: {run_dir: $tmp/run, max_steps: 400, batch_size: 6, log_every: 1}
optim: {warmup_steps: 2}
mpi: {threads_per_rank: 0, checksum_every: 5}
checkpoint: {every: 100, keep: 10}
slurm: {job_name: fspo-nodes, nodes: 2, ntasks_per_node: 1, cpus_per_task: 2, time: "10:00", signal_lead_s: 30, wait_s: 5}
YAML
submit() { "$FSPO_ABS" slurm submit "$tmp/cfg.yaml" "$@" 2>>"$tmp/submit.err"; }

slurm_start 2
case $? in
1) exit 0 ;; # SKIP printed
2) exit 1 ;; # FAIL printed
esac
echo "slurm: two nodes ($SLURM_NODES) up after $(elapsed)"

same_as_ref() { "$PY" tests/ckpt_compare.py "$1/ckpt_400.h5" "$tmp/ref/ckpt_400.h5" --tol 0 --optim 2>&1; }

# the reference: one node, plain mpirun, the same two ranks of two threads
mpirun_np 2 --bind-to none "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$tmp/ref" --set mpi.threads_per_rank=2 \
    >"$tmp/ref.log" 2>&1 || fail "reference run under mpirun -np 2" "$(tail -3 "$tmp/ref.log")"
echo "slurm: reference run done after $(elapsed)"

# ---- (1) two nodes: placement, and the result of one node ----
j=$(submit --set train.run_dir="$tmp/job1")
t=$SECONDS
if [[ -n $j ]] && wait_job "$j" 150; then
    log=$tmp/job1/slurm-$j.out
    out=$(same_as_ref "$tmp/job1")
    cmp=$?
    placement=$(grep -o 'train: placement: .*' "$log")
    if [[ $cmp -eq 0 && $(job_field "$j" JobState) == COMPLETED && $(job_field "$j" NodeList) == "n[1-2]" &&
        $placement == "train: placement: n1 rank 0 x 2 thread(s); n2 rank 1 x 2 thread(s)" ]] &&
        grep -q "train: sft stage, 2 rank(s) x 2 BLAS thread(s) (SLURM_CPUS_PER_TASK)" "$log"; then
        pass "nodes: 2 places one rank of 2 threads on each node and ends bit for bit where mpirun -np 2 on one node ends" \
            "job $j on $(job_field "$j" NodeList) in $((SECONDS - t)) s; '$placement'; params and moments $out"
    else
        fail "two-node job equals one node" "$out; state $(job_field "$j" JobState) nodes $(job_field "$j" NodeList); '$placement'; $(grep -v '^step' "$log" | tail -5)"
    fi
else
    fail "two-node job" "job '$j' not done in 150 s: $(cat "$tmp/submit.err"; grep -v '^step' "$tmp/job1/slurm-$j.out" 2>/dev/null | tail -5)"
fi
echo "slurm: two-node job done after $(elapsed)"

# ---- (2) preemption across the nodes: USR1 to the batch shell, requeue, resume ----
j=$(submit --set train.run_dir="$tmp/job2")
t=$SECONDS
log=$tmp/job2/slurm-$j.out
if [[ -n $j ]] && wait_steps "$tmp/job2" 150 120 && scancel --batch -s USR1 "$j" &&
    wait_log "$log" "SLURM_RESTART_COUNT=1," 90 && wait_job "$j" 150; then
    stop=$(grep -o 'stop signal at step [0-9]*' "$log" | head -1 | grep -o '[0-9]*$')
    out=$(same_as_ref "$tmp/job2")
    cmp=$?
    if [[ $cmp -eq 0 && -n $stop && $(job_field "$j" JobState) == COMPLETED && $(job_field "$j" Restarts) == 1 ]] &&
        grep -q "resuming from $tmp/job2/ckpt_$stop.h5 at step $stop" "$log" &&
        [[ $(grep -c "train: placement: n1 rank 0 x 2 thread(s); n2 rank 1 x 2 thread(s)" "$log") -eq 2 ]]; then
        pass "preempted across two nodes (USR1), requeued, resumed on both nodes, ends bit for bit where mpirun ends" \
            "job $j: stopped and resumed at step $stop, Restarts=1, $((SECONDS - t)) s; params and moments $out"
    else
        fail "two-node preemption" "$out; stop '${stop:-?}', state $(job_field "$j" JobState) restarts $(job_field "$j" Restarts); $(grep -v '^step' "$log" | tail -6)"
    fi
else
    fail "two-node preemption" "job '$j' after $((SECONDS - t)) s: $(grep -v '^step' "$log" 2>/dev/null | tail -6)"
    scancel "$j" 2>/dev/null
fi
echo "slurm: two-node preemption done after $(elapsed)"

# ---- (3) a node lost mid-run: its rank killed; the job requeues from the newest checkpoint ----
rank_pid() { # NODE: the pid of fspo's rank on that node (its environment names the node)
    local env pid
    for env in /proc/[0-9]*/environ; do
        pid=${env#/proc/}
        pid=${pid%/environ}
        if { tr '\0' '\n' <"$env" | grep -qx "SLURMD_NODENAME=$1"; } 2>/dev/null &&
            [[ $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) == "$FSPO_ABS train "* ]]; then
            echo "$pid"
            return 0
        fi
    done
    return 1
}
j=$(submit --set train.run_dir="$tmp/job3")
t=$SECONDS
d=$tmp/job3 log=$tmp/job3/slurm-$j.out
if [[ -n $j ]] && wait_steps "$d" 150 120 && victim=$(rank_pid n2); then
    killed_at=$(steps_logged "$d")
    kill -KILL "$victim"
    if wait_log "$log" "SLURM_RESTART_COUNT=1," 120 && wait_job "$j" 150; then
        resumed=$(grep -o 'resuming from .*ckpt_[0-9]*.h5 at step [0-9]*' "$log" | grep -o '[0-9]*$')
        out=$(same_as_ref "$d")
        cmp=$?
        if [[ $cmp -eq 0 && $(job_field "$j" JobState) == COMPLETED && $(job_field "$j" Restarts) == 1 && -n $resumed ]] &&
            ((resumed % 100 == 0 && resumed <= killed_at)) && grep -q "n2: task 1: Killed" "$log" &&
            grep -q "the job step failed with code 137 (a rank ended by signal 9): requeueing job $j (1 of slurm.failure_requeues 2)" "$log" &&
            grep -q "taking over the lock of Slurm job $j's run 0" "$log" && [[ $(wc -l <"$d/slurm-$j.failures") -eq 1 ]]; then
            pass "a node's rank killed at step ~$killed_at: the step ends, the job requeues, resumes from ckpt_$resumed.h5 and ends bit for bit where mpirun ends" \
                "job $j: exit 137 after srun --wait, lock of the killed rank 0 taken over, Restarts=1, $((SECONDS - t)) s; params and moments $out"
        else
            fail "node lost: requeue from the newest checkpoint" "$out; resumed '${resumed:-?}' killed at $killed_at; state $(job_field "$j" JobState) restarts $(job_field "$j" Restarts); $(grep -v '^step' "$log" | grep -v '^  \|^---' | tail -12)"
        fi
    else
        fail "node lost: the job requeues" "job $j after $((SECONDS - t)) s: $(grep -v '^step' "$log" | grep -v '^  \|^---' | tail -10)"
        scancel "$j" 2>/dev/null
    fi
else
    fail "node lost: a running two-node job" "job '$j', victim '${victim:-none}': $(grep -v '^step' "$log" 2>/dev/null | tail -5)"
    scancel "$j" 2>/dev/null
fi
echo "slurm: node-loss test done after $(elapsed)"
echo "slurm: all done after $(elapsed)"
