#!/usr/bin/env bash
# Faults around checkpoints: a full disk (real tmpfs and injected), a
# read-only run directory, the run directory deleted mid-run, parameters
# diverging on one rank, no HDF5 file locking, and the modes of what fspo
# creates under umask 022/000/077. Each checks the previous checkpoint
# independently (fspo inspect re-verifies; tests/ckpt_compare.py compares
# with an uninterrupted run) and that the job ends (timeout) with the
# documented exit code.
cd "$(dirname "$0")/.." && source tests/lib.sh
export OPENBLAS_NUM_THREADS=1
PY=/usr/bin/python3
B=${BUILD:-build}
tmp=$(mktemp -d /tmp/fspo-faults.XXXXXX)
mounts=()
cleanup() {
    local m
    for m in "${mounts[@]}"; do umount -l "$m" 2>/dev/null; done
    chmod -R u+w "$tmp" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
tiny_fixture "$tmp" "max_steps: 12, batch_size: 6, log_every: 1" "warmup_steps: 2, decay_steps: 40" "every: 4, keep: 2" ||
    { fail "make dataset"; exit 1; }
train() { # train NP DIR [--set ...]: bounded by a timeout; output in DIR.log
    local np=$1 dir=$2
    shift 2
    timeout 120 "${MPIRUN[@]}" -np "$np" "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$dir" "$@" >"$dir.log" 2>&1
}
verifies() { "$FSPO" inspect "$1" >/dev/null 2>&1; }
same() { "$PY" tests/ckpt_compare.py "$1" "$2" --tol 0 --optim 2>&1; }
is_root() { [[ $(id -u) -eq 0 ]]; }

train 2 "$tmp/ref" --set checkpoint.keep=100 || { fail "reference run" "$(tail -3 "$tmp/ref.log")"; exit 1; }

# ---- disk full: a tmpfs with room for one checkpoint, not two ----
if is_root && mkdir -p "$tmp/full" && mount -t tmpfs -o size=900k tmpfs "$tmp/full" 2>/dev/null; then
    mounts+=("$tmp/full")
    train 2 "$tmp/full/run"
    rc=$?
    log=$(cat "$tmp/full/run.log")
    left=$(ls "$tmp/full/run")
    if [[ $rc -eq 1 ]] && grep -qE "checkpoint at step 8 failed: $tmp/full/run/ckpt_8.h5.tmp: .*No space left on device.*previous checkpoints are untouched" <<<"$log" &&
        verifies "$tmp/full/run/ckpt_4.h5" && ! grep -q 'ckpt_8\|tmp' <<<"$left" &&
        out=$(same "$tmp/full/run/ckpt_4.h5" "$tmp/ref/ckpt_4.h5"); then
        pass "disk full during a checkpoint: exit 1, clear error, previous checkpoint intact" "$(grep -m1 'No space' <<<"$log"); left: $(tr '\n' ' ' <<<"$left"); ckpt_4 equals the reference ($out)"
    else
        fail "disk full during a checkpoint: exit 1, clear error, previous checkpoint intact" "exit $rc; left: $left; $(tail -3 <<<"$log")"
    fi
    # room again: resume from the intact checkpoint reaches the uninterrupted result
    mount -o remount,size=8m "$tmp/full"
    train 2 "$tmp/full/run" && grep -q "resuming from $tmp/full/run/ckpt_4.h5 at step 4" "$tmp/full/run.log" &&
        out=$(same "$tmp/full/run/ckpt_12.h5" "$tmp/ref/ckpt_12.h5") &&
        pass "after a full disk, resume from the last good checkpoint is bit-identical" "$out" ||
        fail "after a full disk, resume from the last good checkpoint is bit-identical" "$(tail -3 "$tmp/full/run.log") $out"
else
    echo "SKIP: disk full on a tmpfs: needs root and mount -t tmpfs (the injected failure below still runs)"
fi

# ---- injected write failure (any user): FSPO_FAULT=ckptfail@8 ----
FSPO_FAULT=ckptfail@8 train 2 "$tmp/cf"
rc=$?
if [[ $rc -eq 1 ]] && grep -q "checkpoint at step 8 failed: $tmp/cf/ckpt_8.h5.tmp: writing the checkpoint failed (No space left on device, injected" "$tmp/cf.log" &&
    verifies "$tmp/cf/ckpt_4.h5" && [[ $(ls "$tmp/cf" | grep -c ckpt_) -eq 1 ]]; then
    pass "injected checkpoint write failure: exit 1, names the file, previous checkpoint intact" "$(grep -m1 'failed' "$tmp/cf.log")"
else
    fail "injected checkpoint write failure: exit 1, names the file, previous checkpoint intact" "exit $rc; $(ls "$tmp/cf"); $(tail -2 "$tmp/cf.log")"
fi
train 2 "$tmp/cf" && out=$(same "$tmp/cf/ckpt_12.h5" "$tmp/ref/ckpt_12.h5") &&
    pass "resume after the failed write is bit-identical" "$out" || fail "resume after the failed write is bit-identical" "$out $(tail -2 "$tmp/cf.log")"

# ---- read-only run directory (holding a good checkpoint): clean refusal, nothing touched ----
mkdir -p "$tmp/ro_src" && cp "$tmp/ref/ckpt_12.h5" "$tmp/ro_src/" && cp "$tmp/ref/metrics.jsonl" "$tmp/ro_src/"
sum_before=$(sha256sum "$tmp/ro_src/"* | sha256sum)
ro=""
if is_root; then
    mkdir -p "$tmp/ro" && mount --bind "$tmp/ro_src" "$tmp/ro" 2>/dev/null && mounts+=("$tmp/ro") &&
        mount -o remount,ro,bind "$tmp/ro" 2>/dev/null && ro="$tmp/ro (read-only bind mount)"
else
    chmod 555 "$tmp/ro_src" && ln -s "$tmp/ro_src" "$tmp/ro" && ro="$tmp/ro (chmod 555)"
fi
if [[ -n $ro ]]; then
    train 2 "$tmp/ro" --set train.max_steps=16
    rc=$?
    if [[ $rc -eq 1 ]] && grep -qE "$tmp/ro/fspo.lock: cannot create the lock: (Read-only file system|Permission denied)" "$tmp/ro.log" &&
        [[ $(sha256sum "$tmp/ro_src/"* | sha256sum) == "$sum_before" ]] && verifies "$tmp/ro/ckpt_12.h5"; then
        pass "read-only run directory: exit 1 naming the file, checkpoint untouched" "$ro: $(grep -m1 'fspo:' "$tmp/ro.log")"
    else
        fail "read-only run directory: exit 1 naming the file, checkpoint untouched" "exit $rc: $(tail -3 "$tmp/ro.log")"
    fi
else
    echo "SKIP: read-only run directory: cannot make a read-only bind mount here"
fi

# ---- run directory deleted mid-run: the next checkpoint fails cleanly (no silent re-creation) ----
# (deleted right after the first checkpoint's rename, it can be that one's read-back that fails)
"${MPIRUN[@]}" -np 2 "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$tmp/del" --set train.max_steps=100000 \
    --set train.log_every=1000 --set checkpoint.every=20 >"$tmp/del.log" 2>&1 &
pid=$!
for _ in $(seq 600); do [[ -e $tmp/del/ckpt_20.h5 ]] && break; sleep 0.05; done
rm -rf "$tmp/del"
t0=$SECONDS
for _ in $(seq 600); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
if kill -0 $pid 2>/dev/null; then
    kill -9 $pid
    fail "run directory deleted mid-run" "still running 60 s after the deletion"
else
    wait $pid
    rc=$?
    sleep 1
    orphans=$(pgrep -f -- "$tmp/del( |$)")
    if [[ $rc -eq 1 && -z $orphans && ! -e $tmp/del ]] &&
        grep -qE "checkpoint at step [0-9]+ failed: ($tmp/del: checkpoint directory: No such file or directory|$tmp/del/ckpt_[0-9]+.h5.tmp: .*(No such file|HDF5 write error)|$tmp/del/ckpt_[0-9]+.h5: the new checkpoint does not verify \\($tmp/del/ckpt_[0-9]+.h5: No such file)" "$tmp/del.log"; then
        pass "run directory deleted mid-run: the next checkpoint fails, exit 1, not re-created" "after $((SECONDS - t0)) s: $(grep -m1 'failed' "$tmp/del.log")"
    else
        fail "run directory deleted mid-run: the next checkpoint fails, exit 1, not re-created" "exit $rc, orphans '$orphans': $(tail -3 "$tmp/del.log")"
        for p in $orphans; do kill -9 "$p"; done
    fi
fi

# ---- parameters diverge on one rank: the checksum check catches it before any checkpoint stores it ----
for spec in "0:5 4 8" "1:11 100 15"; do # RANK:STEP checkpoint.every expected-detection-step
    read -r at every want <<<"$spec"
    dir=$tmp/div_${at/:/_}
    FSPO_FAULT=diverge@$at train 2 "$dir" --set checkpoint.every="$every" --set train.max_steps=20
    rc=$?
    newest=$(ls "$dir" | sed -n 's/^ckpt_\([0-9]*\)\.h5$/\1/p' | sort -n | tail -1)
    ok=1 out=""
    [[ $rc -eq 1 ]] && grep -q "parameters differ across ranks at step $want (checksum mismatch)" "$dir.log" || ok=0
    [[ $(grep -c "parameters differ" "$dir.log") -eq 1 ]] || ok=0 # reported once, by rank 0
    if [[ -n $newest ]]; then # the newest checkpoint is the reference's, bit for bit (not the diverged state)
        (( newest < ${at#*:} + 1 )) && out=$(same "$dir/ckpt_$newest.h5" "$tmp/ref/ckpt_$newest.h5") || ok=0
    fi
    [[ $ok -eq 1 ]] &&
        pass "divergence on rank ${at%:*} after step ${at#*:}: caught at step $want (checksum_every 5, checkpoint.every $every), exit 1" \
            "newest checkpoint ${newest:-none} ${out:+= reference ($out)}; $(grep -m1 'parameters differ' "$dir.log")" ||
        fail "divergence on rank ${at%:*} after step ${at#*:}: caught at step $want" "exit $rc, newest ${newest:-none} $out: $(tail -3 "$dir.log")"
done

# ---- no HDF5 file locking: resume reads the newest checkpoint while another process holds an exclusive lock ----
cp -r "$tmp/ref" "$tmp/lock" && rm -f "$tmp/lock/ckpt_12.h5"
out=$("$PY" - "$tmp/lock/ckpt_8.h5" "$tmp/cfg.yaml" "$tmp/lock" "$FSPO" <<'PYEOF' 2>&1
import fcntl, os, subprocess, sys
ck, cfg, run, fspo = sys.argv[1:]
with open(ck, "rb") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    r = subprocess.run(["timeout", "120", "mpirun", "--oversubscribe", "-q", "-np", "2", fspo, "train", cfg,
                        "--set", f"train.run_dir={run}"], capture_output=True, text=True)
assert r.returncode == 0, r.stdout[-500:] + r.stderr[-500:]
assert f"resuming from {ck} at step 8" in r.stdout, r.stdout[:500]
print("resumed from ckpt_8 under an exclusive flock")
PYEOF
) && out2=$(same "$tmp/lock/ckpt_12.h5" "$tmp/ref/ckpt_12.h5") &&
    pass "resume without HDF5 file locking (checkpoint flock'ed by another process)" "$out; $out2" ||
    fail "resume without HDF5 file locking (checkpoint flock'ed by another process)" "$out $out2"

# ---- modes: the user's umask, but never world-writable ----
for spec in "022 755 644" "000 775 664" "077 700 600"; do
    read -r mask dmode fmode <<<"$spec"
    dir=$tmp/umask$mask/a/run # parents created too
    (umask "$mask" && timeout 60 "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$dir" --set train.max_steps=2 \
        --set checkpoint.every=1 >"$tmp/umask$mask.log" 2>&1)
    got="run $(stat -c %a "$dir") parent $(stat -c %a "$tmp/umask$mask/a")"
    for f in ckpt_2.h5 metrics.jsonl config.yaml; do got="$got $f $(stat -c %a "$dir/$f" 2>/dev/null)"; done
    want="run $dmode parent $dmode ckpt_2.h5 $fmode metrics.jsonl $fmode config.yaml $fmode"
    ww=$(find "$tmp/umask$mask" -perm -o+w | head -1)
    [[ $got == "$want" && -z $ww ]] && pass "umask $mask: modes follow it, nothing world-writable" "$got" ||
        fail "umask $mask: modes follow it, nothing world-writable" "got '$got' want '$want'; world-writable: '$ww'; $(tail -2 "$tmp/umask$mask.log")"
done
