#!/usr/bin/env bash
# fspo train under mpirun: the same result at 1, 2 and 3 ranks, bit-exact
# resume, model.attention flash and model.recompute, a signal cycle, learning on fixed examples, a dead rank, bad input.
cd "$(dirname "$0")/.." && source tests/lib.sh
PY=/usr/bin/python3
B=${BUILD:-build}
tmp=$(mktemp -d /tmp/fspo-train.XXXXXX) && trap 'rm -rf "$tmp"' EXIT
tiny_train_setup "$tmp" || { fail "make dataset"; exit 1; }

# ---- equivalence across world sizes (3 ranks: shares of 2 over a batch of 6; also uneven below) ----
for np in 1 2 3; do train $np "$tmp/np$np" || fail "train -np $np" "$(tail -3 "$tmp/np$np.log")"; done
for np in 2 3; do
    out=$("$PY" tests/ckpt_compare.py "$tmp/np$np/ckpt_20.h5" "$tmp/np1/ckpt_20.h5" --tol 1e-5 2>&1) &&
        m=$(same_losses "$tmp/np$np/metrics.jsonl" "$tmp/np1/metrics.jsonl" 1e-5 2>&1) &&
        pass "np $np equals np 1 after 20 steps" "params $out; metrics $m" || fail "np $np equals np 1 after 20 steps" "$out $m"
done
# ---- model.attention flash (online softmax, probabilities recomputed in the backward): full's run to fp32 rounding ----
train 2 "$tmp/flash" --set model.attention=flash || fail "train model.attention flash" "$(tail -3 "$tmp/flash.log")"
out=$("$PY" tests/ckpt_compare.py "$tmp/flash/ckpt_20.h5" "$tmp/np2/ckpt_20.h5" --tol 1e-5 --optim 2>&1) &&
    m=$(same_losses "$tmp/flash/metrics.jsonl" "$tmp/np2/metrics.jsonl" 1e-6 2>&1) &&
    grep -q "model.attention flash: no" "$tmp/flash.log" &&
    pass "model.attention flash agrees with full (2 ranks, 20 steps)" "params and moments $out; metrics $m; $(grep -o 'arena.*' "$tmp/flash.log")" ||
    fail "model.attention flash agrees with full (2 ranks, 20 steps)" "$out $m"
# ---- model.recompute (each block's forward again in the backward): the same run bit for bit ----
train 2 "$tmp/recompute" --set model.recompute=true || fail "train model.recompute" "$(tail -3 "$tmp/recompute.log")"
out=$("$PY" tests/ckpt_compare.py "$tmp/recompute/ckpt_20.h5" "$tmp/np2/ckpt_20.h5" --tol 0 --optim 2>&1) &&
    m=$(same_losses "$tmp/recompute/metrics.jsonl" "$tmp/np2/metrics.jsonl" 0 2>&1) &&
    grep -q "model.recompute: each block's forward runs again" "$tmp/recompute.log" &&
    pass "model.recompute trains bit for bit as keeping every block (2 ranks, 20 steps)" "params and moments $out; metrics $m; $(grep -o 'arena.*' "$tmp/recompute.log")" ||
    fail "model.recompute trains bit for bit as keeping every block" "$out $m"
train 4 "$tmp/np4" --set train.batch_size=7 && train 1 "$tmp/np1b" --set train.batch_size=7 &&
    out=$("$PY" tests/ckpt_compare.py "$tmp/np4/ckpt_20.h5" "$tmp/np1b/ckpt_20.h5" --tol 1e-5 2>&1) &&
    pass "uneven shares (7 over 4 ranks) equal np 1" "$out" || fail "uneven shares (7 over 4 ranks) equal np 1" "$out"
# ---- train.micro_batch 1 (gradient accumulation over one meta-example at a time, no padding): the whole share's run ----
train 2 "$tmp/mb1" --set train.micro_batch=1 &&
    out=$("$PY" tests/ckpt_compare.py "$tmp/mb1/ckpt_20.h5" "$tmp/np2/ckpt_20.h5" --tol 1e-5 --optim 2>&1) &&
    m=$(same_losses "$tmp/mb1/metrics.jsonl" "$tmp/np2/metrics.jsonl" 1e-5 2>&1) &&
    grep -q "(micro-batch 1)" "$tmp/mb1.log" &&
    pass "train.micro_batch 1 equals the whole share per forward (2 ranks, 20 steps)" "params and moments $out; metrics $m" ||
    fail "train.micro_batch 1 equals the whole share per forward (2 ranks, 20 steps)" "$out $m $(tail -2 "$tmp/mb1.log")"
# the padding line: rows padded to their micro-batch's longest. One micro-batch of all 6 rows (1 rank) pads at
# least as much as 2 ranks' 3 each (a longest over more rows); one row per forward pads none
pad() { sed -n 's/^train: \([0-9]*\)% of the tokens computed were padding.*/\1/p' "$1"; }
p1=$(pad "$tmp/np1.log") p2=$(pad "$tmp/np2.log")
[[ -n $p1 && -n $p2 ]] && ((p1 >= p2 && p2 > 0)) && ! grep -q "padding" "$tmp/mb1.log" &&
    pass "train reports the share of padding: 1 rank >= 2 ranks > 0, micro_batch 1 none" "$p1% and $p2%" ||
    fail "train reports the share of padding: 1 rank >= 2 ranks > 0, micro_batch 1 none" \
        "1 rank '$p1', 2 ranks '$p2', micro_batch 1: $(grep padding "$tmp/mb1.log")"

# ---- resume: 40 straight vs 20 + 20 on the same schedule ----
train 2 "$tmp/full" --set train.max_steps=40 --set optim.decay_steps=40
train 2 "$tmp/half" --set train.max_steps=20 --set optim.decay_steps=40
train 2 "$tmp/half" --set train.max_steps=40 --set optim.decay_steps=40
grep -q "resuming from .*ckpt_20.h5 at step 20" "$tmp/half.log" || fail "resume auto picks ckpt_20" "$(head -3 "$tmp/half.log")"
out=$("$PY" tests/ckpt_compare.py "$tmp/half/ckpt_40.h5" "$tmp/full/ckpt_40.h5" --tol 0 --optim 2>&1) &&
    m=$(same_losses "$tmp/half/metrics.jsonl" "$tmp/full/metrics.jsonl" 0 2>&1) &&
    pass "resume is bit-exact (same world size)" "params and moments $out; metrics $m" ||
    fail "resume is bit-exact (same world size)" "$out $m"
train 1 "$tmp/other" --set train.max_steps=20 --set optim.decay_steps=40
train 3 "$tmp/other" --set train.max_steps=40 --set optim.decay_steps=40
out=$("$PY" tests/ckpt_compare.py "$tmp/other/ckpt_40.h5" "$tmp/full/ckpt_40.h5" --tol 1e-5 --optim 2>&1) &&
    pass "resume at another world size (1 -> 3 ranks)" "$out" || fail "resume at another world size (1 -> 3 ranks)" "$out"

# ---- a signal mid-run: one checkpoint, exit 3, resume to the same end ----
long=(--set train.max_steps=300 --set optim.decay_steps=300 --set checkpoint.every=1000)
train 2 "$tmp/straight" "${long[@]}"
interrupt 2 "$tmp/sig" "${long[@]}"
rc=$?
n_ckpt=$(ls "$tmp/sig"/ckpt_*.h5 2>/dev/null | wc -l)
stopped_at=$(ls "$tmp/sig"/ckpt_*.h5 2>/dev/null | sed 's/.*ckpt_\([0-9]*\).h5/\1/')
if [[ $rc -eq 3 && $n_ckpt -eq 1 && $stopped_at -lt 300 ]]; then
    pass "SIGUSR1 to mpirun: one checkpoint, exit 3" "stopped at step $stopped_at"
else
    fail "SIGUSR1 to mpirun: one checkpoint, exit 3" "exit $rc, checkpoints: $(ls "$tmp/sig") $(tail -3 "$tmp/sig.log")"
fi
train 2 "$tmp/sig" "${long[@]}"
out=$("$PY" tests/ckpt_compare.py "$tmp/sig/ckpt_300.h5" "$tmp/straight/ckpt_300.h5" --tol 0 --optim 2>&1) &&
    pass "resume after the signal reaches the uninterrupted result" "$out" ||
    fail "resume after the signal reaches the uninterrupted result" "$out"

# ---- train.max_time: the time budget ends the run like a signal does ----
t0=$SECONDS
train 2 "$tmp/timed" --set train.max_time=2 --set train.max_steps=1000000 --set checkpoint.every=1000000
rc=$?
n_ckpt=$(ls "$tmp/timed"/ckpt_*.h5 2>/dev/null | wc -l)
if [[ $rc -eq 3 && $n_ckpt -eq 1 && $((SECONDS - t0)) -lt 30 ]] && grep -q "train.max_time reached" "$tmp/timed.log"; then
    pass "train.max_time checkpoints and exits 3" "$(ls "$tmp/timed" | grep ckpt_) after $((SECONDS - t0)) s"
else
    fail "train.max_time checkpoints and exits 3" "exit $rc, $n_ckpt checkpoints, $((SECONDS - t0)) s: $(tail -2 "$tmp/timed.log")"
fi

# ---- learning: 32 fixed meta-examples, 2 ranks ----
fit=(--set data.fixed_examples=32 --set train.batch_size=8 --set model.d_model=64 --set optim.lr=3e-3
     --set optim.warmup_steps=10 --set checkpoint.every=1000 --set train.log_every=10)
train 2 "$tmp/sft" "${fit[@]}" --set train.max_steps=400
sft_loss=$("$PY" -c 'import json,sys; print(json.loads(open(sys.argv[1]).readlines()[-1])["loss"])' "$tmp/sft/metrics.jsonl")
"$PY" -c 'import sys; sys.exit(0 if float(sys.argv[1]) < 0.1 else 1)' "$sft_loss" &&
    pass "SFT overfits 32 meta-examples" "final loss $sft_loss" || fail "SFT overfits 32 meta-examples" "final loss $sft_loss"
train 2 "$tmp/pref" "${fit[@]}" --set train.max_steps=200 --set train.stage=pref --set loss.beta=0.5 \
    --set loss.ref_ckpt="$tmp/sft/ckpt_400.h5" --set train.init_from="$tmp/sft/ckpt_400.h5"
acc=$("$PY" -c 'import json,sys; print(json.loads(open(sys.argv[1]).readlines()[-1])["rewards/accuracies"])' "$tmp/pref/metrics.jsonl")
"$PY" -c 'import sys; sys.exit(0 if float(sys.argv[1]) == 1.0 else 1)' "$acc" &&
    pass "preference stage reaches accuracy 1.0 on them" "rewards/accuracies $acc" ||
    fail "preference stage reaches accuracy 1.0 on them" "rewards/accuracies $acc; $(tail -2 "$tmp/pref.log")"
# loss.ref_cache (on by default): the 200 steps over 32 fixed meta-examples ran the reference forward
# once per meta-example; with the cache off it runs every time: the same run bit for bit
train 2 "$tmp/prefnc" "${fit[@]}" --set train.max_steps=200 --set train.stage=pref --set loss.beta=0.5 \
    --set loss.ref_ckpt="$tmp/sft/ckpt_400.h5" --set train.init_from="$tmp/sft/ckpt_400.h5" --set loss.ref_cache=false \
    --set checkpoint.every=200
train 2 "$tmp/prefc" "${fit[@]}" --set train.max_steps=200 --set train.stage=pref --set loss.beta=0.5 \
    --set loss.ref_ckpt="$tmp/sft/ckpt_400.h5" --set train.init_from="$tmp/sft/ckpt_400.h5" --set checkpoint.every=200
reused=$(grep -o "loss.ref_cache: [0-9]* of [0-9]* micro-batches" "$tmp/prefc.log")
out=$("$PY" tests/ckpt_compare.py "$tmp/prefc/ckpt_200.h5" "$tmp/prefnc/ckpt_200.h5" --tol 0 --optim 2>&1) &&
    m=$(same_losses "$tmp/prefc/metrics.jsonl" "$tmp/prefnc/metrics.jsonl" 0 2>&1) &&
    [[ $reused =~ ^loss.ref_cache:\ ([0-9]+)\ of\ 200\ micro ]] && ((BASH_REMATCH[1] >= 180)) && ! grep -q "loss.ref_cache" "$tmp/prefnc.log" &&
    pass "loss.ref_cache reuses the reference's log-probs of repeated meta-examples, bit for bit" "$reused (rank 0); params and moments $out; metrics $m" ||
    fail "loss.ref_cache: the same run bit for bit" "'$reused'; $out $m"

# a weights-only load (init_from, the reference) may change model.max_seq: no
# tensor depends on it, so one step from the same SFT model at 256 and 512
# scores the same examples alike; a resume keeps its max_seq
for ms in 256 512; do
    train 1 "$tmp/ms$ms" "${fit[@]}" --set train.max_steps=1 --set train.log_every=1 --set train.stage=pref \
        --set loss.ref_ckpt="$tmp/sft/ckpt_400.h5" --set train.init_from="$tmp/sft/ckpt_400.h5" --set model.max_seq=$ms
done
out=$("$PY" - "$tmp/ms256/metrics.jsonl" "$tmp/ms512/metrics.jsonl" <<'PYEOF' 2>&1
import json, sys
a, b = (json.loads(open(p).readline()) for p in sys.argv[1:3])
for k in ("loss", "logps/chosen", "logps/rejected"):
    assert abs(a[k] - b[k]) <= 1e-5 * max(1, abs(a[k])), (k, a[k], b[k])
print(f"step 1 loss {a['loss']:.6f} / {b['loss']:.6f}, logps/chosen {a['logps/chosen']:.4f} / {b['logps/chosen']:.4f}")
PYEOF
) && pass "init_from and ref_ckpt at another max_seq (256 -> 512)" "$out" ||
    fail "init_from and ref_ckpt at another max_seq (256 -> 512)" "$out; $(tail -2 "$tmp/ms512.log")"
expect_error "resume at another max_seq" 2 "model shape mismatch: .*max_seq 256.*max_seq 512" -- mpirun_np 1 "$FSPO" train \
    "$TINY_CFG" --set train.run_dir="$tmp/ms256" "${fit[@]}" --set train.max_steps=2 --set train.stage=pref \
    --set loss.ref_ckpt="$tmp/sft/ckpt_400.h5" --set model.max_seq=512

# ---- a rank that fails ends the whole job quickly ----
t0=$SECONDS
FSPO_FAULT=data@1 timeout 60 "${MPIRUN[@]}" -np 2 "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$tmp/dead" >"$tmp/dead.log" 2>&1
rc=$?
if [[ $rc -ne 0 && $rc -ne 124 && $((SECONDS - t0)) -lt 30 ]] && grep -q "rank 1: .*cannot read the dataset" "$tmp/dead.log"; then
    pass "one failing rank ends the job" "exit $rc after $((SECONDS - t0)) s"
else
    fail "one failing rank ends the job" "exit $rc after $((SECONDS - t0)) s: $(tail -5 "$tmp/dead.log")"
fi

# ---- non-finite gradients: skipped on every rank the same step; abort after k in a row ----
FSPO_FAULT=nan@1:5 train 2 "$tmp/nan1" || fail "a NaN step is survivable" "$(tail -3 "$tmp/nan1.log")"
out=$("$PY" - "$tmp/nan1/metrics.jsonl" <<'PYEOF' 2>&1
import json, sys
rows = {r["step"]: r for r in map(json.loads, open(sys.argv[1]))}
# step 6 in the log is the 6th step, the one that ran with step counter 5
# the poisoned gradient (not the loss) is what every rank must refuse to apply
assert rows[6]["grad_norm"] is None and rows[6]["skipped_nonfinite"] == 1, rows[6]
assert rows[5]["grad_norm"] is not None and rows[5]["skipped_nonfinite"] == 0, rows[5]
assert rows[7]["grad_norm"] is not None and rows[20]["skipped_nonfinite"] == 1, rows[20]
print("step 6 skipped (grad_norm null), 1 skipped in total, finished 20 steps")
PYEOF
) && pass "a NaN gradient on one rank is skipped by all" "$out" || fail "a NaN gradient on one rank is skipped by all" "$out"
FSPO_FAULT=nan@0:5+100 train 2 "$tmp/nan3" --set train.max_bad_steps=3
rc=$?
out=$("$PY" -c '
import h5py, numpy as np, sys
f = h5py.File(sys.argv[1], "r", locking=False)
assert all(np.isfinite(f["model"][n][()]).all() for n in f["model"])
print("checkpoint at step", int(f.attrs["step"]), "with finite weights")' "$tmp/nan3/ckpt_7.h5" 2>&1)
if [[ $rc -eq 1 ]] && grep -q "training diverged (non-finite loss or gradients 3 steps in a row" "$tmp/nan3.log" && [[ -n $out ]]; then
    pass "k non-finite steps in a row abort with the last good state" "exit 1, $out"
else
    fail "k non-finite steps in a row abort with the last good state" "exit $rc; $out; $(tail -3 "$tmp/nan3.log")"
fi

# ---- threads against the launcher's binding ----
# mpirun --bind-to core leaves a rank one CPU: an explicit 2 threads per rank
# is warned about, the automatic count drops to the CPUs it may use
if [[ $(nproc) -ge 2 ]]; then
    bind_run() { "${MPIRUN[@]}" -np 1 --bind-to "$1" "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$tmp/bind" \
        --set train.max_steps=1 --set checkpoint.every=1000 --set mpi.threads_per_rank="$2" 2>&1; rm -rf "$tmp/bind"; }
    warned=$(bind_run core 2 | grep -c "threads per rank, but this rank may run on 1 CPU(s) only")
    unwarned=$(bind_run none 2 | grep -c "warning: ")
    auto=$(bind_run core 0 | grep -o "1 rank(s) x [0-9]* BLAS thread(s) ([^)]*)")
    [[ $warned == 1 && $unwarned == 0 && $auto == "1 rank(s) x 1 BLAS thread(s) (the CPUs this rank is bound to)" ]] &&
        pass "threads vs launcher binding" "bound to a core: warned, unbound: not; automatic count: $auto" ||
        fail "threads vs launcher binding" "warned $warned, unbound warnings $unwarned, automatic: '$auto'"
fi

# ---- bad input ----
cp "$tmp/data.h5" "$tmp/other_tok.h5"
"$PY" -c 'import h5py,sys; f=h5py.File(sys.argv[1],"r+",locking=False); f.attrs["tokenizer"]="gpt2-bpe"' "$tmp/other_tok.h5"
"$B/tests/test_ckpt" --reseal "$tmp/other_tok.h5"
bad() { expect_error "$1" 2 "$2" -- mpirun_np "${3:-1}" "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$tmp/bad" "${@:4}"; }
bad "init_from of another shape" "model shape mismatch: the checkpoint has .*d_model 32.*the config has .*d_model 64" 1 \
    --set model.d_model=64 --set train.init_from="$tmp/np1/ckpt_20.h5"
bad "pref without a reference" "train.stage pref with loss.type dpo needs loss.ref_ckpt" 1 --set train.stage=pref
bad "reference missing" "loss.ref_ckpt: $tmp/nope.h5: No such file" 1 --set train.stage=pref --set loss.ref_ckpt="$tmp/nope.h5"
bad "reference of another shape" "loss.ref_ckpt: .*model shape mismatch" 1 --set train.stage=pref \
    --set loss.ref_ckpt="$tmp/sft/ckpt_400.h5"
bad "dataset missing" "$tmp/missing.h5: No such file" 2 --set data.path="$tmp/missing.h5"
bad "dataset of another tokenizer" "tokenizer 'gpt2-bpe' is not the byte tokenizer .*holds no tokenizer_json" 1 --set data.path="$tmp/other_tok.h5"
bad "more ranks than meta-examples" "7 ranks but train.batch_size is 6" 7
bad "resume against another reference" "was trained against reference .*sft/ckpt_400.h5" 1 --set train.stage=pref \
    --set model.d_model=64 --set loss.ref_ckpt="$tmp/pref/ckpt_200.h5" --set train.resume="$tmp/pref/ckpt_200.h5" \
    --set data.fixed_examples=32 --set train.batch_size=8
bad "resume a pref stage from an sft checkpoint" "a sft checkpoint cannot resume a pref stage" 1 --set train.stage=pref \
    --set loss.ref_ckpt="$tmp/np1/ckpt_20.h5" --set train.resume="$tmp/np1/ckpt_20.h5"

# ---- MFU above 100% (a ceiling below what the run achieves) is named once, not printed as a figure to trust ----
FSPO_PEAK_GFLOPS=0.0001 train 1 "$tmp/peak" --set train.max_steps=4 && n=$(grep -c "^train: MFU .* FSPO_PEAK_GFLOPS (0.0001 GFLOP/s) is below" "$tmp/peak.log") &&
    [[ $n -eq 1 && $(grep -c "^step " "$tmp/peak.log") -eq 4 ]] &&
    pass "MFU above 100% is named once" "$(grep '^train: MFU' "$tmp/peak.log" | cut -c1-150)" ||
    fail "MFU above 100% is named once" "$(grep -E '^(train: MFU|step )' "$tmp/peak.log" | head -6)"
