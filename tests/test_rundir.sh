#!/usr/bin/env bash
# Who may write a run directory (io/rundir.h, docs/reliability.md "The run
# directory"): two trainers started together on one directory (one runs,
# the other exits 2 naming the holder, the first loses nothing), a stale
# lock after SIGKILL (taken over only by a later run of the same Slurm
# job), a preference stage started in its SFT run's
# directory, train.resume: none in a used directory, a resume whose
# checkpoints are all damaged, another run's checkpoint in the directory,
# and a run that meets meta-examples too long for model.max_seq. Every
# refusal is checked against a snapshot of the directory taken before
# (SHA-256 of every file): nothing may change. Results are compared with
# runs made apart (tests/ckpt_compare.py, the metrics log) and lengths
# with a separate computation from the dataset (h5py).
cd "$(dirname "$0")/.." && source tests/lib.sh
export OPENBLAS_NUM_THREADS=1 OMPI_MCA_ess_singleton_isolated=1 FSPO_PEAK_GFLOPS=10
PY=/usr/bin/python3
FSPO=$(readlink -f "$FSPO")
tmp=$(mktemp -d /tmp/fspo-rundir.XXXXXX) && trap 'remove_tmp "$tmp"' EXIT
tiny_fixture "$tmp" "max_steps: 12, batch_size: 6, log_every: 1" "warmup_steps: 2, decay_steps: 40" "every: 4, keep: 2" ||
    { fail "make dataset"; exit 1; }
train() { # train DIR [--set ...]: one process; output in DIR.log
    local dir=$1
    shift
    timeout 120 "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$dir" "$@" >"$dir.log" 2>&1
}
snap() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }
same() { "$PY" tests/ckpt_compare.py "$1" "$2" --tol 0 --optim 2>&1; }
refused() { # NAME DIR PATTERN -- CMD...: exit 2, PATTERN in the output, DIR unchanged
    local name=$1 dir=$2 pattern=$3
    shift 4
    local before out rc
    before=$(snap "$dir")
    out=$("$@" 2>&1)
    rc=$?
    if [[ $rc -eq 2 ]] && grep -qE -- "$pattern" <<<"$out" && [[ $(snap "$dir") == "$before" ]]; then
        pass "$name" "exit 2, $(wc -l <<<"$before") files unchanged: $(grep -m1 -E -- "$pattern" <<<"$out" | cut -c1-300)"
    else
        fail "$name" "exit $rc (want 2); changed: $(diff <(echo "$before") <(snap "$dir") | head -3); output: $(tail -2 <<<"$out")"
    fi
}

# ---- two trainers on one directory, started together (2 ranks each, seeds 1 and 2) ----
race=(--set train.max_steps=40 --set checkpoint.every=10)
for seed in 1 2; do
    "${MPIRUN[@]}" -np 2 "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$tmp/ref$seed" --set train.seed=$seed \
        "${race[@]}" >"$tmp/ref$seed.log" 2>&1 || fail "reference run, seed $seed" "$(tail -2 "$tmp/ref$seed.log")"
done
for trial in 1 2 3; do
    dir=$tmp/race$trial
    "${MPIRUN[@]}" -np 2 "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$dir" --set train.seed=1 "${race[@]}" >"$dir.1.log" 2>&1 &
    p1=$!
    "${MPIRUN[@]}" -np 2 "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$dir" --set train.seed=2 "${race[@]}" >"$dir.2.log" 2>&1 &
    p2=$!
    holder="" # the pid in the lock while the winner runs, read independently of fspo's messages
    for _ in $(seq 600); do
        [[ -z $holder && -f $dir/fspo.lock ]] && holder=$(sed -n 's/^pid //p' "$dir/fspo.lock")
        kill -0 $p1 2>/dev/null || kill -0 $p2 2>/dev/null || break
        sleep 0.02
    done
    wait $p1; rc1=$?
    wait $p2; rc2=$?
    if [[ $rc1 -eq 0 && $rc2 -eq 2 ]]; then win=1 lose=2; elif [[ $rc1 -eq 2 && $rc2 -eq 0 ]]; then win=2 lose=1; else win=""; fi
    ok=0 out="" why="exits $rc1 and $rc2 (want one 0, one 2)"
    if [[ -n $win ]]; then
        named=$(sed -n 's/.*is in use by another fspo train: pid \([0-9]*\) on host .*/\1/p' "$dir.$lose.log")
        why="loser names pid '$named', the lock held pid '$holder'"
        if [[ -n $named && $named == "$holder" ]] && ! grep -q "^train: \(starting\|resuming\)" "$dir.$lose.log" &&
            out=$(same "$dir/ckpt_40.h5" "$tmp/ref$win/ckpt_40.h5") && m=$(same_losses "$dir/metrics.jsonl" "$tmp/ref$win/metrics.jsonl" 0) &&
            [[ ! -e $dir/fspo.lock ]]; then
            ok=1
        else
            why="$why; $out $m; $(tail -1 "$dir.$lose.log")"
        fi
    fi
    [[ $ok -eq 1 ]] &&
        pass "two trainers on one run directory (trial $trial): one runs, the other exits 2 naming the holder" \
            "seed $win ran (final state and metrics = its uninterrupted reference: $out; $m), seed $lose: $(grep -m1 -o 'is in use.*on host [^,]*' "$dir.$lose.log")" ||
        fail "two trainers on one run directory (trial $trial)" "$why"
done

# ---- a stale lock: the holder was killed (SIGKILL leaves fspo no chance to remove it) ----
dir=$tmp/stale
"$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$dir" --set train.max_steps=100000 >"$dir.log" 2>&1 &
pid=$!
for _ in $(seq 600); do [[ -e $dir/ckpt_8.h5 ]] && break; sleep 0.02; done
kill -9 $pid
wait $pid 2>/dev/null
refused "a stale lock (SIGKILLed holder) is reported with how to clear it, not taken" "$dir" \
    "$dir/fspo.lock: stale lock of fspo pid $pid on this host .* no longer running.* rm $dir/fspo.lock" -- \
    "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$dir"
rm "$dir/fspo.lock"
newest=$(ls "$dir" | sed -n 's/^ckpt_\([0-9]*\)\.h5$/\1/p' | sort -n | tail -1)
train "$dir" --set train.max_steps=$((newest + 4)) && grep -q "resuming from $dir/ckpt_$newest.h5" "$dir.log" &&
    "$FSPO" inspect "$dir/ckpt_$((newest + 4)).h5" >/dev/null &&
    pass "after the lock is removed, the run resumes" "from ckpt_$newest to ckpt_$((newest + 4))" ||
    fail "after the lock is removed, the run resumes" "$(tail -2 "$dir.log")"

# ---- a lock an earlier run of the same Slurm job left: taken over, and only that one ----
# (a requeued job whose rank 0 was killed; test_slurm_nodes.sh does it with
# a real Slurm job, this checks each condition on its own)
dir=$tmp/slurmlock
SLURM_JOB_ID=4242 SLURM_RESTART_COUNT=0 "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$dir" --set train.max_steps=100000 >"$dir.log" 2>&1 &
pid=$!
for _ in $(seq 600); do [[ -e $dir/ckpt_8.h5 ]] && break; sleep 0.02; done
# (the holder keeps writing, so only its lock is compared)
lock_before=$(sha256sum <"$dir/fspo.lock")
out=$(SLURM_JOB_ID=4242 SLURM_RESTART_COUNT=1 "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$dir" 2>&1)
rc=$?
[[ $rc -eq 2 && $(sha256sum <"$dir/fspo.lock") == "$lock_before" ]] && grep -q "$dir is in use by another fspo train: pid $pid" <<<"$out" &&
    pass "the same Slurm job's later run while the holder still runs: refused as in use, the lock untouched" "exit 2" ||
    fail "the same Slurm job's later run while the holder still runs: refused as in use" "exit $rc: $(tail -2 <<<"$out")"
kill -9 $pid
wait $pid 2>/dev/null
grep -qx "slurm_job 4242" "$dir/fspo.lock" && grep -qx "slurm_restart 0" "$dir/fspo.lock" &&
    pass "a lock written in a Slurm job names the job and its restart count" "$(grep slurm "$dir/fspo.lock" | tr '\n' ' ')" ||
    fail "a lock written in a Slurm job names the job and its restart count" "$(cat "$dir/fspo.lock")"
SLURM_JOB_ID=4243 SLURM_RESTART_COUNT=1 refused "another Slurm job: the stale lock is refused, not taken" "$dir" \
    "$dir/fspo.lock: stale lock of fspo pid $pid" -- "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$dir"
SLURM_JOB_ID=4242 SLURM_RESTART_COUNT=0 refused "the same Slurm job, not a later run: refused, not taken" "$dir" \
    "$dir/fspo.lock: stale lock of fspo pid $pid" -- "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$dir"
refused "outside Slurm: refused, not taken" "$dir" "$dir/fspo.lock: stale lock of fspo pid $pid" -- \
    "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$dir"
newest=$(ls "$dir" | sed -n 's/^ckpt_\([0-9]*\)\.h5$/\1/p' | sort -n | tail -1)
SLURM_JOB_ID=4242 SLURM_RESTART_COUNT=1 train "$dir" --set train.max_steps=$((newest + 4)) &&
    grep -q "train: $dir/fspo.lock: taking over the lock of Slurm job 4242's run 0 (pid $pid on $(hostname)" "$dir.log" &&
    grep -q "resuming from $dir/ckpt_$newest.h5" "$dir.log" && [[ ! -e $dir/fspo.lock ]] &&
    pass "the same Slurm job's requeued run (SLURM_RESTART_COUNT 1) takes over the dead run's lock, says so and resumes" \
        "$(grep -o 'taking over.*' "$dir.log" | cut -c1-120)...; ckpt_$newest -> ckpt_$((newest + 4))" ||
    fail "the requeued run takes over the lock" "$(tail -3 "$dir.log")"

# ---- a preference stage started in its SFT run's directory ----
sft=$tmp/sft
train "$sft" || fail "SFT run" "$(tail -2 "$sft.log")"
pref=(--set train.stage=pref --set loss.ref_ckpt="$sft/ckpt_12.h5" --set train.init_from="$sft/ckpt_12.h5")
refused "pref stage in the SFT run directory with resume none: refused, the SFT run untouched" "$sft" \
    "loss.ref_ckpt $sft/ckpt_12.h5 is a file of train.run_dir $sft" -- \
    "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$sft" --set train.resume=none "${pref[@]}"
refused "pref stage in the SFT run directory with resume auto: refused" "$sft" "loss.ref_ckpt $sft/ckpt_12.h5 is a file of" -- \
    "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$sft" "${pref[@]}"
before=$(snap "$sft")
train "$tmp/pref" "${pref[@]}" && [[ $(snap "$sft") == "$before" ]] && "$FSPO" inspect "$tmp/pref/ckpt_12.h5" | grep -q "stage pref" &&
    pass "pref stage in its own directory runs; the SFT run is untouched" "$(ls "$tmp/pref" | tr '\n' ' ')" ||
    fail "pref stage in its own directory runs; the SFT run is untouched" "$(tail -2 "$tmp/pref.log")"

# ---- train.resume: none in a directory that holds a run ----
refused "resume none in a used directory: refused" "$sft" "train.resume is none, but $sft already holds a run \(ckpt_12.h5, ckpt_8.h5, config.yaml, lineage, metrics.jsonl\)" -- \
    "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$sft" --set train.resume=none
mkdir -p "$tmp/empty"
train "$tmp/empty" --set train.resume=none && pass "resume none in an empty directory runs" "$(ls "$tmp/empty" | tr '\n' ' ')" ||
    fail "resume none in an empty directory runs" "$(tail -2 "$tmp/empty.log")"

# ---- resume auto when every checkpoint is damaged ----
cp -r "$sft" "$tmp/bad"
"$PY" - "$tmp/bad" <<'PYEOF'
import os, sys
d = sys.argv[1]
with open(f"{d}/ckpt_12.h5", "r+b") as f:  # one flipped byte in the middle
    f.seek(os.path.getsize(f.name) // 2); b = f.read(1); f.seek(-1, 1); f.write(bytes([b[0] ^ 0x10]))
os.truncate(f"{d}/ckpt_8.h5", os.path.getsize(f"{d}/ckpt_8.h5") // 2)  # half of it
PYEOF
files=$(cd "$tmp/bad" && ls ckpt_*.h5 | tr '\n' ' ')
refused "resume auto with only damaged checkpoints: exit 2 listing each and why, nothing written" "$tmp/bad" \
    "$tmp/bad holds 2 checkpoint file\(s\) and none can be resumed: $tmp/bad/ckpt_12.h5: file checksum mismatch.*; $tmp/bad/ckpt_8.h5: truncated or extended" -- \
    "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$tmp/bad"
[[ $files == "ckpt_12.h5 ckpt_8.h5 " ]] || fail "damaged checkpoints listed" "ls gave '$files'"

# ---- another run's checkpoint in the directory: neither resumed, nor overwritten, nor pruned ----
train "$tmp/la" --set train.max_steps=8 && train "$tmp/lb" --set train.seed=5 --set train.max_steps=12 ||
    fail "lineage runs" "$(tail -1 "$tmp/la.log") $(tail -1 "$tmp/lb.log")"
cp "$tmp/lb/ckpt_12.h5" "$tmp/la/ckpt_12.h5"
refused "another run's newer checkpoint in the directory: refused before it could be overwritten" "$tmp/la" \
    "$tmp/la holds 1 checkpoint\(s\) newer than $tmp/la/ckpt_8.h5 \(step 8\), which this run would overwrite as it goes on: ckpt_12.h5 is another run's \(lineage $(cat "$tmp/lb/lineage")\)" -- \
    "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$tmp/la" --set train.max_steps=16
mv "$tmp/la/ckpt_12.h5" "$tmp/la/ckpt_2.h5" # the same foreign file, now older than everything of the run
foreign=$(sha256sum <"$tmp/la/ckpt_2.h5")
train "$tmp/la" --set train.max_steps=20
left=$(ls "$tmp/la" | grep ckpt_ | sort -V | tr '\n' ' ')
train "$tmp/lref" --set train.max_steps=20
if grep -q "resuming from $tmp/la/ckpt_8.h5" "$tmp/la.log" && [[ $left == "ckpt_2.h5 ckpt_16.h5 ckpt_20.h5 " ]] &&
    [[ $(sha256sum <"$tmp/la/ckpt_2.h5") == "$foreign" ]] && out=$(same "$tmp/la/ckpt_20.h5" "$tmp/lref/ckpt_20.h5"); then
    pass "another run's older checkpoint is left alone: keep 2 prunes only the run's own" "left: $left; ckpt_2.h5 byte-identical; ckpt_20 = uninterrupted run ($out)"
else
    fail "another run's older checkpoint is left alone" "left: $left; $out; $(grep -m1 'resuming' "$tmp/la.log") $(tail -1 "$tmp/la.log")"
fi

# ---- fspo train RUN/config.yaml: resumes from its own snapshot, never rewrites it with another config ----
before=$(sha256sum <"$tmp/lref/config.yaml")
timeout 60 "$FSPO" train "$tmp/lref/config.yaml" >"$tmp/snap.log" 2>&1 && grep -q "train: done, 20 steps" "$tmp/snap.log" &&
    [[ $(sha256sum <"$tmp/lref/config.yaml") == "$before" ]] &&
    pass "training from the run's own config.yaml" "resumes (done at step 20), snapshot unchanged" ||
    fail "training from the run's own config.yaml" "$(tail -2 "$tmp/snap.log")"
refused "the run's own config.yaml with a change: refused" "$tmp/lref" "$tmp/lref/config.yaml is the config snapshot of train.run_dir" -- \
    "$FSPO" train "$tmp/lref/config.yaml" --set train.max_steps=24

# ---- meta-examples longer than model.max_seq ----
# up front: even the shortest meta-example of the dataset does not fit (computed here from the file with h5py)
shortest=$("$PY" - "$tmp/data.h5" 2 2 <<'PYEOF'
# docs/design.md's layout: BOS; per context pair EXAMPLE QUESTION prompt PREFERRED chosen
# DISPREFERRED rejected; per query TASK QUESTION prompt PREFERRED chosen EOS rejected EOS.
# The shortest meta-example: a training user's N+Q pairs with the fewest tokens.
import sys, h5py, numpy as np
path, n, q = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
f = h5py.File(path, "r", locking=False)
users = f["users/pairs"][()]
train = f["users/split"][()] == 0 if "split" in f["users"] else f["users/heldout"][()] == 0
text = sum(f["pairs/" + k][()][:, 1] for k in ("prompt", "chosen", "rejected"))
print(min(1 + 4 * n + 5 * q + int(np.sort(text[a:a + c])[: n + q].sum())
          for u, (a, c) in enumerate(users) if train[u] and c >= n + q))
PYEOF
)
train "$tmp/short" --set model.max_seq=$((shortest - 1))
rc=$?
[[ $rc -eq 2 && ! -e $tmp/short ]] && grep -q "model.max_seq = $((shortest - 1)) is too short for $tmp/data.h5: the shortest meta-example the sampler can draw (2 few-shot and 2 query pairs, user '[^']*') takes $shortest tokens" "$tmp/short.log" &&
    train "$tmp/short" --set model.max_seq=$shortest --set train.max_steps=2 &&
    pass "max_seq below the dataset's shortest meta-example: refused up front, nothing created" "shortest $shortest tokens (h5py); max_seq $shortest runs" ||
    fail "max_seq below the dataset's shortest meta-example" "exit $rc, shortest $shortest: $(tail -2 "$tmp/short.log")"
# at run time: one user's pairs all exceed max_seq, the other's fit; batch 1, so whole steps have nothing to train on
"$PY" - "$tmp/long.jsonl" <<'PYEOF'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(12):
        f.write(json.dumps({"user_id": "short", "prompt": f"q{i}", "chosen": "yes", "rejected": "no"}) + "\n")
        f.write(json.dumps({"user_id": "long", "prompt": "x" * 300 + str(i), "chosen": "a", "rejected": "b"}) + "\n")
PYEOF
"$FSPO" prep "$tmp/long.jsonl" -o "$tmp/long.h5" --heldout-frac 0 --quiet >/dev/null 2>&1 || fail "prep long.jsonl"
wedge=(--set data.path="$tmp/long.h5" --set train.batch_size=1 --set data.n_fewshot=1 --set data.n_queries=1
       --set checkpoint.every=10 --set checkpoint.keep=5 --set train.max_steps=30)
train "$tmp/wedge" "${wedge[@]}" --set train.max_steps=10 && train "$tmp/wedge" "${wedge[@]}" && train "$tmp/wedge_ref" "${wedge[@]}"
out=$("$PY" - "$tmp/wedge/metrics.jsonl" <<'PYEOF' 2>&1
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
skipped_steps = sum(r["loss"] is None for r in rows)  # batch 1: a skipped meta-example is a skipped step
assert len(rows) == 30, len(rows)
assert 0 < skipped_steps < 30, skipped_steps
assert rows[-1]["skipped_examples"] == skipped_steps, (rows[-1]["skipped_examples"], skipped_steps)
print(f"30 steps, {skipped_steps} without a trainable meta-example skipped and counted")
PYEOF
) && m=$(same_losses "$tmp/wedge/metrics.jsonl" "$tmp/wedge_ref/metrics.jsonl" 0) &&
    c=$(same "$tmp/wedge/ckpt_30.h5" "$tmp/wedge_ref/ckpt_30.h5") && grep -q "none of its 1 meta-examples fits model.max_seq" "$tmp/wedge.log" &&
    pass "meta-examples that cannot fit are skipped and counted, the run goes on (and resumes exactly)" "$out; 10 + 20 steps = 30 straight: $m, $c" ||
    fail "meta-examples that cannot fit are skipped and counted" "$out $m $c $(tail -2 "$tmp/wedge.log")"
