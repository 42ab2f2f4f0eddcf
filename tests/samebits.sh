#!/usr/bin/env bash
# Same bits: a restructure must not change what training computes. Trains
# fixed-seed runs with this tree's ./fspo and with a reference binary (REF,
# built from an earlier commit) on the same tiny dataset, then compares
#   - every dataset of the final checkpoints byte for byte, and every file
#     attribute (created_unix and lineage, which differ run to run, are
#     skipped; the run directory inside config_yaml is normalized),
#   - metrics.jsonl (every non-timing field exactly),
#   - the console output, stdout and stderr (timing figures masked).
# Not a suite test (it needs REF); run it by hand:
#   git -C . archive 0952ddc | (mkdir -p /tmp/arch-ref && tar x -C /tmp/arch-ref) && make -C /tmp/arch-ref fspo
#   REF=/tmp/arch-ref/fspo bash tests/samebits.sh
cd "$(dirname "$0")/.." && source tests/lib.sh
PY=/usr/bin/python3
B=${BUILD:-build}
REF=${REF:?REF=path of the reference fspo binary}
[[ -x $B/tests/test_pack ]] || { fail "samebits" "$B/tests/test_pack missing (make tests)"; exit 1; }
tmp=$(mktemp -d /tmp/fspo-samebits.XXXXXX) && trap '[[ -n $KEEP ]] || rm -rf "$tmp"' EXIT
tiny_train_setup "$tmp" || { fail "make dataset"; exit 1; }

# run WHICH(new|ref) NAME NP [--set ...]: one training run into $tmp/WHICH/NAME
run() {
    local which=$1 name=$2 np=$3 bin=$FSPO
    shift 3
    [[ $which == ref ]] && bin=$REF
    mkdir -p "$tmp/$which"
    mpirun_np "$np" "$bin" train "$TINY_CFG" --set train.run_dir="$tmp/$which/$name" "$@" >>"$tmp/$which/$name.log" 2>>"$tmp/$which/$name.err"
    echo $? >"$tmp/$which/$name.rc"
}

compare() { # NAME: checkpoints, metrics, console of new vs ref
    local name=$1 out
    if ! cmp -s "$tmp/new/$name.rc" "$tmp/ref/$name.rc"; then
        fail "$name: exit code" "new $(cat "$tmp/new/$name.rc"), ref $(cat "$tmp/ref/$name.rc")"
        return
    fi
    out=$("$PY" - "$tmp/new/$name" "$tmp/ref/$name" <<'PYEOF' 2>&1
import glob, os, sys
import h5py, numpy as np
new, ref = sys.argv[1], sys.argv[2]
names = sorted(os.path.basename(p) for p in glob.glob(ref + "/ckpt_*.h5"))
assert names == sorted(os.path.basename(p) for p in glob.glob(new + "/ckpt_*.h5")), "different checkpoints kept"
skip = {"created_unix", "lineage"}
n_sets = 0
def attrs(o, where, root):
    a, b = dict(o.attrs), dict(root[where].attrs) if where else dict(root.attrs)
    assert sorted(a) == sorted(b), f"{where or '/'}: attribute names differ"
    for k in a:
        if k in skip: continue
        x, y = a[k], b[k]
        if k == "config_yaml":
            x = x.replace(new, "RUN") if isinstance(x, str) else x
            y = y.replace(ref, "RUN") if isinstance(y, str) else y
        assert np.array_equal(np.asarray(x), np.asarray(y)), f"{where or '/'}@{k}: {x!r} != {y!r}"
for n in names:
    with h5py.File(f"{new}/{n}", "r", locking=False) as a, h5py.File(f"{ref}/{n}", "r", locking=False) as b:
        la, lb = [], []
        a.visit(la.append), b.visit(lb.append)
        assert la == lb, f"{n}: objects differ: {set(la) ^ set(lb)}"
        attrs(a, "", b)
        for p in la:
            attrs(a[p], p, b)
            if isinstance(a[p], h5py.Dataset):
                x, y = a[p][()], b[p][()]
                assert x.dtype == y.dtype and x.shape == y.shape, f"{n}:{p}: type/shape differ"
                assert np.asarray(x).tobytes() == np.asarray(y).tobytes(), f"{n}:{p}: bytes differ"
                n_sets += 1
print(f"{len(names)} checkpoint(s), {n_sets} datasets identical")
PYEOF
) && m=$( [[ ! -f $tmp/ref/$name/metrics.jsonl ]] && echo none ||
        same_losses "$tmp/new/$name/metrics.jsonl" "$tmp/ref/$name/metrics.jsonl" 0 2>&1) || {
        fail "$name: same bits" "$out $m"
        return
    }
    # console: timing figures and this run's directory masked
    mask() { sed -E -e "s#$tmp/(new|ref)#TMP#g" -e 's/[0-9.]+ tok\/s/T tok\/s/; s/MFU [0-9.]+%/MFU M%/; s/ETA [0-9hms]+/ETA E/' \
        -e 's/[0-9.]+ GFLOP\/s/G GFLOP\/s/; s/allreduce .*hidden by overlap/allreduce (timing)/' "$1"; }
    # stdout and stderr apart: mpirun forwards them on their own channels, so
    # their interleaving varies from run to run
    if diff <(mask "$tmp/new/$name.log") <(mask "$tmp/ref/$name.log") >"$tmp/$name.diff" &&
        diff <(mask "$tmp/new/$name.err") <(mask "$tmp/ref/$name.err") >>"$tmp/$name.diff"; then
        pass "$name: same bits" "$out; metrics $m; console equal"
    else
        fail "$name: console differs" "$(head -c 600 "$tmp/$name.diff")"
    fi
}

for which in ref new; do
    run "$which" sft1 1
    run "$which" sft2 2
    run "$which" sftctx2 2 --set train.sft_include_rejected=true --set train.sft_context=true
done
# the preference stage starts from the reference binary's SFT checkpoint, so
# both sides share their inputs
sft=$tmp/ref/sft1/ckpt_20.h5
for which in ref new; do
    run "$which" dpo1 1 --set train.stage=pref --set loss.ref_ckpt="$sft" --set train.init_from="$sft"
    run "$which" dpo2 2 --set train.stage=pref --set loss.ref_ckpt="$sft" --set train.init_from="$sft"
    run "$which" ipo2 2 --set train.stage=pref --set loss.type=ipo --set loss.ref_ckpt="$sft" --set loss.sft_weight=0.5 \
        --set optim.type=rmsprop --set optim.schedule=linear
    run "$which" simpo1 1 --set train.stage=pref --set loss.type=simpo --set train.init_from="$sft"
    run "$which" bf16_2 2 --set model.precision=auto --set train.max_steps=10
    # resume: 10 more steps from the 20 above, on a longer schedule
    run "$which" dpo2 2 --set train.stage=pref --set loss.ref_ckpt="$sft" --set train.init_from="$sft" \
        --set train.max_steps=30
done
for name in sft1 sft2 sftctx2 dpo1 dpo2 ipo2 simpo1 bf16_2; do compare "$name"; done
# failure paths keep their messages and exit codes too
for which in ref new; do
    FSPO_FAULT=nan@0:3+9 run "$which" nan2 2
    FSPO_FAULT=ckptfail@10 run "$which" ckptfail2 2
    run "$which" badstage 1 --set train.stage=pref
done
for name in nan2 ckptfail2 badstage; do compare "$name"; done
