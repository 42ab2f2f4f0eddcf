#!/usr/bin/env bash
# ZeRO-1 (mpi.shard_optimizer): sharded training against unsharded training
# at 2 and 3 ranks (checkpoints compared with h5py), bit-exact resume after a
# signal, checkpoints crossing between sharded and unsharded runs at other
# world sizes, the same non-finite skips, and the optimizer state per rank.
cd "$(dirname "$0")/.." && source tests/lib.sh
PY=/usr/bin/python3
BUILD=${BUILD:-build}
tmp=$(mktemp -d /tmp/fspo-zero.XXXXXX) && trap 'remove_tmp "$tmp"' EXIT
tiny_train_setup "$tmp" || { fail "make dataset"; exit 1; }
# clipping active (the tiny model's gradient norm is ~0.7), and buckets of
# ~2600 floats, so buckets cross the slice boundaries of 41376 parameters
common=(--set optim.grad_clip=0.3 --set mpi.bucket_mb=0.01 --set train.max_steps=30)
ZERO=(--set mpi.shard_optimizer=true)

# ---- sharded == unsharded, 30 steps ----
for np in 2 3; do
    train $np "$tmp/u$np" "${common[@]}" && train $np "$tmp/s$np" "${common[@]}" "${ZERO[@]}" ||
        fail "train -np $np" "$(tail -3 "$tmp/s$np.log")"
    out=$("$PY" tests/ckpt_compare.py "$tmp/s$np/ckpt_30.h5" "$tmp/u$np/ckpt_30.h5" --tol 1e-6 --optim 2>&1) &&
        m=$(same_losses "$tmp/s$np/metrics.jsonl" "$tmp/u$np/metrics.jsonl" 1e-6 2>&1) &&
        pass "sharded equals unsharded at $np ranks" "params and moments $out; metrics $m" ||
        fail "sharded equals unsharded at $np ranks" "$out $m"
done
grep -q "gradient reduce-scatter" "$tmp/s2.log" && grep -q "gradient allreduce" "$tmp/u2.log" &&
    pass "the sharded run reduce-scatters" "$(grep -o 'gradient reduce-scatter[^:]*' "$tmp/s2.log")" ||
    fail "the sharded run reduce-scatters" "$(tail -2 "$tmp/s2.log")"
train 2 "$tmp/ur" "${common[@]}" --set optim.type=rmsprop && train 2 "$tmp/sr" "${common[@]}" --set optim.type=rmsprop "${ZERO[@]}" &&
    out=$("$PY" tests/ckpt_compare.py "$tmp/sr/ckpt_30.h5" "$tmp/ur/ckpt_30.h5" --tol 1e-6 --optim 2>&1) &&
    pass "sharded RMSprop equals unsharded" "$out" || fail "sharded RMSprop equals unsharded" "$out $(tail -2 "$tmp/sr.log")"
# model.precision auto: bf16 products where the CPU has the units (the parameter all-gather must
# refresh every rank's bf16 copies), else fp32 again
train 2 "$tmp/ub" --set model.precision=auto && train 2 "$tmp/sb" --set model.precision=auto "${ZERO[@]}" &&
    out=$("$PY" tests/ckpt_compare.py "$tmp/sb/ckpt_20.h5" "$tmp/ub/ckpt_20.h5" --tol 1e-6 --optim 2>&1) &&
    pass "sharded equals unsharded with model.precision auto" "$(grep -o -m1 'precision [a-z0-9]*' "$tmp/sb.log" | head -1); $out" ||
    fail "sharded equals unsharded with model.precision auto" "$out $(tail -2 "$tmp/sb.log")"

# ---- optimizer state per rank: all of it unsharded, half at 2 ranks, a third at 3 ----
out=$("$PY" - "$tmp/u2.log" "$tmp/s2.log" "$tmp/s3.log" "$tmp/ur.log" "$tmp/sr.log" <<'PYEOF' 2>&1
import re, sys
def read(path):
    text = open(path).read()
    n = int(re.search(r"(\d+) parameters, global batch", text).group(1))
    m = re.search(r"optimizer state: ([\d.]+) MiB per rank \((\d+) bytes", text)
    assert m, f"{path}: no optimizer state line"
    assert abs(float(m.group(1)) - int(m.group(2)) / 2**20) < 1e-3, m.group(0)
    return n, int(m.group(2))
n, full = read(sys.argv[1])
assert full == 8 * n, (full, n)            # AdamW: m and v, 4 bytes each, every parameter
for path, w in ((sys.argv[2], 2), (sys.argv[3], 3)):
    _, b = read(path)
    # the largest slice: n / w rounded to 16-float lines
    assert 8 * n / w <= b <= 8 * (n / w + 16), (path, b, 8 * n / w)
n, rfull = read(sys.argv[4])
_, rhalf = read(sys.argv[5])
assert rfull == 4 * n and 4 * n / 2 <= rhalf <= 4 * (n / 2 + 16), (rfull, rhalf)   # RMSprop: v only
_, half = read(sys.argv[2])
print(f"{n} params: AdamW {full} bytes per rank unsharded, {half} sharded over 2 ({half / full:.4f}); RMSprop {rfull} -> {rhalf}")
PYEOF
) && pass "optimizer state per rank halves at 2 ranks" "$out" || fail "optimizer state per rank halves at 2 ranks" "$out"

# ---- bit-exact resume with sharding: SIGUSR1 mid-run, resume, compare with the straight run ----
long=(--set train.max_steps=300 --set optim.decay_steps=300 --set checkpoint.every=1000 "${ZERO[@]}")
train 2 "$tmp/straight" "${long[@]}"
interrupt 2 "$tmp/sig" "${long[@]}"
rc=$?
stopped_at=$(ls "$tmp/sig"/ckpt_*.h5 2>/dev/null | sed 's/.*ckpt_\([0-9]*\).h5/\1/')
if [[ $rc -eq 3 && -n $stopped_at && $stopped_at -lt 300 ]]; then
    train 2 "$tmp/sig" "${long[@]}"
    out=$("$PY" tests/ckpt_compare.py "$tmp/sig/ckpt_300.h5" "$tmp/straight/ckpt_300.h5" --tol 0 --optim 2>&1) &&
        pass "sharded resume after a signal is bit-exact" "stopped at step $stopped_at; params and moments $out" ||
        fail "sharded resume after a signal is bit-exact" "$out $(tail -2 "$tmp/sig.log")"
else
    fail "sharded resume after a signal is bit-exact" "exit $rc, checkpoints: $(ls "$tmp/sig") $(tail -3 "$tmp/sig.log")"
fi

# ---- checkpoints cross: sharded 2 ranks -> unsharded 3, unsharded 1 -> sharded 3; against unsharded 2 straight ----
half=(--set train.max_steps=20 --set optim.decay_steps=40)
all=(--set train.max_steps=40 --set optim.decay_steps=40)
train 2 "$tmp/full" "${all[@]}"
train 2 "$tmp/a" "${half[@]}" "${ZERO[@]}" && train 3 "$tmp/a" "${all[@]}" &&
    grep -q "resuming from .*ckpt_20.h5 at step 20" "$tmp/a.log" &&
    out=$("$PY" tests/ckpt_compare.py "$tmp/a/ckpt_40.h5" "$tmp/full/ckpt_40.h5" --tol 1e-5 --optim 2>&1) &&
    pass "a sharded checkpoint resumes unsharded at another world size (2 -> 3)" "$out" ||
    fail "a sharded checkpoint resumes unsharded at another world size (2 -> 3)" "$out $(tail -2 "$tmp/a.log")"
train 1 "$tmp/b" "${half[@]}" && train 3 "$tmp/b" "${all[@]}" "${ZERO[@]}" &&
    grep -q "resuming from .*ckpt_20.h5 at step 20" "$tmp/b.log" &&
    out=$("$PY" tests/ckpt_compare.py "$tmp/b/ckpt_40.h5" "$tmp/full/ckpt_40.h5" --tol 1e-5 --optim 2>&1) &&
    pass "an unsharded checkpoint resumes sharded at another world size (1 -> 3)" "$out" ||
    fail "an unsharded checkpoint resumes sharded at another world size (1 -> 3)" "$out $(tail -2 "$tmp/b.log")"
train 3 "$tmp/c" "${half[@]}" "${ZERO[@]}" && train 2 "$tmp/c" "${all[@]}" "${ZERO[@]}" &&
    grep -q "resuming from .*ckpt_20.h5 at step 20" "$tmp/c.log" &&
    out=$("$PY" tests/ckpt_compare.py "$tmp/c/ckpt_40.h5" "$tmp/full/ckpt_40.h5" --tol 1e-5 --optim 2>&1) &&
    pass "a sharded checkpoint resumes sharded at another world size (3 -> 2)" "$out" ||
    fail "a sharded checkpoint resumes sharded at another world size (3 -> 2)" "$out $(tail -2 "$tmp/c.log")"
# the sharded checkpoint's file: the same datasets and attributes as the unsharded one's
out=$("$PY" - "$tmp/s2/ckpt_30.h5" "$tmp/u2/ckpt_30.h5" <<'PYEOF' 2>&1
import h5py, sys
a, b = (h5py.File(p, "r", locking=False) for p in sys.argv[1:3])
assert sorted(a["optim/m"]) == sorted(b["optim/m"]) and sorted(a["optim/v"]) == sorted(b["optim/v"])
for g in ("optim/m", "optim/v"):
    for n in b[g]:
        assert a[g][n].shape == b[g][n].shape, (g, n)
assert a.attrs["optim_step"] == b.attrs["optim_step"] == 30 and a.attrs["world_size"] == 2
print(f"{len(a['optim/m'])} moment tensors each, optim_step 30")
PYEOF
) && pass "a sharded checkpoint has the unsharded layout" "$out" || fail "a sharded checkpoint has the unsharded layout" "$out"

# a moment of the last rank's slice altered behind a valid seal: rank 0 reads that slice only to send
# it on, and still checks its tensor's checksum (exit 2, naming the tensor)
cp -r "$tmp/s2" "$tmp/bad" && "$PY" - "$tmp/bad/ckpt_30.h5" <<'PYEOF' &&
import h5py, sys
with h5py.File(sys.argv[1], "r+", locking=False) as f:
    d = f["optim/v/final_norm"]          # near the end of the flat vector: the last rank's slice
    x = d[()]; x[0] += 1.0; d[...] = x
PYEOF
    "$BUILD/tests/test_ckpt" --reseal "$tmp/bad/ckpt_30.h5" &&
    train 2 "$tmp/bad" "${common[@]}" --set train.max_steps=40 --set train.resume="$tmp/bad/ckpt_30.h5" "${ZERO[@]}"
rc=$?
[[ $rc -eq 2 ]] && grep -q "resuming the optimizer slices: .*optim/v/final_norm fails its checksum" "$tmp/bad.log" &&
    pass "a corrupt moment in another rank's slice stops the sharded resume" "exit 2: $(grep -o 'resuming.*' "$tmp/bad.log")" ||
    fail "a corrupt moment in another rank's slice stops the sharded resume" "exit $rc $(tail -3 "$tmp/bad.log")"

# ---- non-finite steps: skipped the same way ----
FSPO_FAULT=nan@1:5 train 2 "$tmp/nanu" "${common[@]}" && FSPO_FAULT=nan@1:5 train 2 "$tmp/nans" "${common[@]}" "${ZERO[@]}" &&
    out=$("$PY" tests/ckpt_compare.py "$tmp/nans/ckpt_30.h5" "$tmp/nanu/ckpt_30.h5" --tol 1e-6 --optim 2>&1) &&
    m=$(same_losses "$tmp/nans/metrics.jsonl" "$tmp/nanu/metrics.jsonl" 1e-6 2>&1) &&
    grep -q '"step":6,.*"grad_norm":null' "$tmp/nans/metrics.jsonl" &&
    pass "a NaN gradient on one rank is skipped alike when sharded" "$out; metrics $m" ||
    fail "a NaN gradient on one rank is skipped alike when sharded" "$out $m $(tail -2 "$tmp/nans.log")"
# a rank's parameters drifting after the all-gather is still caught by the checksum (of step 5, so
# nudged in step 4: a nudge of a parameter another rank owns is overwritten by the next all-gather)
FSPO_FAULT=diverge@1:4 train 2 "$tmp/div" "${ZERO[@]}"
rc=$?
grep -q "parameters differ across ranks at step 5" "$tmp/div.log" && [[ $rc -ne 0 ]] &&
    pass "sharded: a diverged rank is caught by the checksum" "exit $rc" ||
    fail "sharded: a diverged rank is caught by the checksum" "exit $rc $(tail -2 "$tmp/div.log")"

# ---- fspo bench --dp --shard (a make bench row): runs, and counts half the optimizer state ----
dp=(--dp --d-model 64 --n-layers 1 --n-heads 2 --max-seq 32 --batch 1 --threads 1 --steps 1 --bucket-mb 0.05 --json)
mpirun_np 2 "$FSPO" bench "${dp[@]}" >"$tmp/dp.json" 2>"$tmp/dp.err" &&
    mpirun_np 2 "$FSPO" bench "${dp[@]}" --shard >"$tmp/dps.json" 2>>"$tmp/dp.err" &&
    out=$("$PY" - "$tmp/dp.json" "$tmp/dps.json" <<'PYEOF' 2>&1
import json, sys
a, b = (json.loads(open(p).read()) for p in sys.argv[1:3])
assert not a["shard"] and b["shard"], (a["shard"], b["shard"])
full = 8 * a["params"] / 2**20   # AdamW moments of every parameter, MiB
assert abs(a["optim_state_mb_per_rank"] - full) < 1e-3, (a["optim_state_mb_per_rank"], full)
assert abs(b["optim_state_mb_per_rank"] - full / 2) < 1e-3 + 8 * 16 / 2**20, (b["optim_state_mb_per_rank"], full / 2)
print(f"{a['params']} params: {a['optim_state_mb_per_rank']:.3f} MiB per rank -> {b['optim_state_mb_per_rank']:.3f} sharded")
PYEOF
) && pass "bench --dp --shard reports the halved optimizer state" "$out" ||
    fail "bench --dp --shard reports the halved optimizer state" "$out $(tail -3 "$tmp/dp.err")"
