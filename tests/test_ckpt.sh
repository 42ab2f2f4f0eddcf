#!/usr/bin/env bash
# Checkpoints as other tools see them: h5dump's header, h5py's tensors and
# attributes, scripts/ckpt_to_torch.py running the checkpoint in the PyTorch
# reference with fspo's logits, and `fspo inspect` on good and bad files.
cd "$(dirname "$0")/.." && source tests/lib.sh
PY=/usr/bin/python3
tmp=$(mktemp -d) && trap 'rm -rf "$tmp"' EXIT
ckpt=$("${BUILD:-build}/tests/test_ckpt" --write "$tmp") || { fail "write sample checkpoint" "$ckpt"; exit 1; }

hdr=$(h5dump -H "$ckpt" 2>&1)
if grep -q 'DATASET "layers.1.mlp.w13"' <<<"$hdr" && grep -A2 'DATASET "tok_emb"' <<<"$hdr" | grep -q '( 264, 32 )' &&
   grep -q 'ATTRIBUTE "format_version"' <<<"$hdr" && grep -q 'GROUP "optim"' <<<"$hdr"; then
    pass "h5dump -H sees the layout" "tensors with real shapes, attributes, /optim"
else
    fail "h5dump -H sees the layout" "$hdr"
fi

if ! "$PY" -c 'import torch, h5py' 2>/dev/null; then
    echo "SKIP: h5py/torch checks: $PY lacks torch or h5py"
    exit 0
fi
out=$("$PY" - "$ckpt" "$tmp" <<'PYEOF' 2>&1
import sys, numpy as np, h5py
sys.path.insert(0, "tests")
from torch_ref import Config, param_shapes
path, d = sys.argv[1], sys.argv[2]
flat = np.fromfile(f"{d}/params.f32", dtype=np.float32)
with h5py.File(path, "r", locking=False) as f:
    cfg = Config(*[int(v) for v in f.attrs["model_shape"]])
    assert f.attrs["format"] == "fspo-checkpoint" and int(f.attrs["format_version"]) == 1
    assert int(f.attrs["step"]) == 7 and int(f.attrs["samples_seen"]) == 56, dict(f.attrs)
    assert "d_model: 32" in f.attrs["config_yaml"], f.attrs["config_yaml"]
    off = 0
    for name, shape, _ in param_shapes(cfg):
        t = f["model"][name][()]
        assert t.shape == shape and t.dtype == np.float32, (name, t.shape, shape)
        n = int(np.prod(shape))
        assert np.array_equal(t.ravel(), flat[off:off + n]), name
        off += n
        assert f["optim/m"][name].shape == shape and f["optim/v"][name].shape == shape
    assert off == flat.size and sorted(f["model"]) == sorted(n for n, _, _ in param_shapes(cfg))
print(f"{off} parameters in {len(param_shapes(cfg))} tensors equal fspo's buffer")
PYEOF
) && pass "h5py reads named tensors and attributes" "$out" || fail "h5py reads named tensors and attributes" "$out"

out=$("$PY" scripts/ckpt_to_torch.py "$ckpt" "$tmp/ckpt.pt" 2>&1 && "$PY" - "$tmp" <<'PYEOF' 2>&1
import sys, numpy as np, torch
sys.path.insert(0, "tests")
from torch_ref import Config, FspoModel
d = sys.argv[1]
blob = torch.load(f"{d}/ckpt.pt")
model = FspoModel(Config(**blob["config"]), dtype=torch.float32)
model.load_state_dict(blob["state_dict"])
tok = torch.from_numpy(np.fromfile(f"{d}/tokens.i32", dtype=np.int32).astype(np.int64))[None]
T = tok.shape[1]
pos, seg, vis = torch.arange(T)[None], torch.zeros(1, T, dtype=torch.long), torch.ones(1, 1, 1, dtype=torch.long)
with torch.no_grad():
    logits = model(tok, pos, seg, vis)[0].numpy()
want = np.fromfile(f"{d}/logits.f32", dtype=np.float32).reshape(logits.shape)
err = np.abs(logits - want).max() / np.abs(want).max()
assert err < 1e-4, err
print(f"logits rel err {err:.2e}")
PYEOF
) && pass "ckpt_to_torch.py state_dict runs in PyTorch with fspo's logits" "$out" ||
    fail "ckpt_to_torch.py state_dict runs in PyTorch with fspo's logits" "$out"

out=$("$FSPO" inspect "$ckpt" 2>&1); rc=$?
[[ $rc -eq 0 && $out == *"step 7"* && $out == *"layers.1.mlp.w2"* && $out == *"verified"* && $out == *"config:"* ]] \
    && pass "fspo inspect" "exit 0, tensor table, verified" || fail "fspo inspect" "exit $rc: $out"
# no file locking: fspo reads a checkpoint that another process holds an exclusive HDF5 lock on
# (what matters on filesystems without lock support: fspo never needs one)
out=$("$PY" - "$ckpt" "$FSPO" <<'PYEOF' 2>&1
import fcntl, subprocess, sys
# HDF5 1.10 locks with flock(); hold an exclusive one, as a writer would
# (h5py's own r+ open would rewrite superblock flags and break the seal)
with open(sys.argv[1], "rb") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    r = subprocess.run([sys.argv[2], "inspect", sys.argv[1]], capture_output=True, text=True)
assert r.returncode == 0, r.stderr
print("inspect ok under an exclusive flock")
PYEOF
) && pass "reads without HDF5 file locking" "$out" || fail "reads without HDF5 file locking" "$out"
cp "$ckpt" "$tmp/bad.h5"
off=$("$PY" -c 'import h5py,sys; print(h5py.File(sys.argv[1],"r",locking=False)["model/layers.0.mlp.w2"].id.get_offset())' "$ckpt")
printf '\x55' | dd of="$tmp/bad.h5" bs=1 seek=$((off + 100)) conv=notrunc status=none
expect_error "fspo inspect on a corrupt checkpoint" 2 "bad.h5: file checksum mismatch" -- "$FSPO" inspect "$tmp/bad.h5"
"${BUILD:-build}/tests/test_ckpt" --reseal "$tmp/bad.h5"
expect_error "fspo inspect names the damaged tensor" 2 "bad.h5: tensor /model/layers.0.mlp.w2 fails its checksum" -- \
    "$FSPO" inspect "$tmp/bad.h5"
# damage anywhere (here: near the end, in HDF5's own structures) is still rejected
cp "$ckpt" "$tmp/bad2.h5"
printf '\x55' | dd of="$tmp/bad2.h5" bs=1 seek=$(( $(stat -c %s "$tmp/bad2.h5") - 64 )) conv=notrunc status=none
expect_error "fspo inspect on a damaged index" 2 "bad2.h5: file checksum mismatch" -- "$FSPO" inspect "$tmp/bad2.h5"
expect_error "fspo inspect on a non-HDF5 file" 2 "not an HDF5 file" -- "$FSPO" inspect README.md

# fspo model strip: the weights without the optimizer state, read back by h5py
out=$("$FSPO" model strip "$ckpt" -o "$tmp/w.h5" 2>&1) && "$FSPO" inspect "$tmp/w.h5" >/dev/null 2>&1 &&
out=$("$PY" - "$ckpt" "$tmp/w.h5" <<'PYEOF' 2>&1
import sys, numpy as np, h5py
with h5py.File(sys.argv[1], "r", locking=False) as a, h5py.File(sys.argv[2], "r", locking=False) as b:
    assert "optim" in a and "optim" not in b, (list(a), list(b))
    assert sorted(a["model"]) == sorted(b["model"])
    for n in a["model"]:
        assert np.array_equal(a["model"][n][()], b["model"][n][()]), n
    for k in ("step", "samples_seen", "stage", "config_yaml", "model_shape", "weights_checksum", "lineage"):
        assert np.array_equal(a.attrs[k], b.attrs[k]), k
    assert "optim_type" not in b.attrs
    print(f"{len(a['model'])} tensors equal, attributes kept, no /optim")
PYEOF
) && [ "$(stat -c %s "$tmp/w.h5")" -lt "$(stat -c %s "$ckpt")" ] &&
    pass "fspo model strip keeps the weights and metadata, drops the optimizer" "$out" ||
    fail "fspo model strip keeps the weights and metadata, drops the optimizer" "$out"
# fspo model strip --bf16: h5py (HDF5's own bf16 -> f32 conversion) reads the
# round-to-nearest-even of the float32 weights, computed here in numpy; fspo
# reads back the same values (a second strip, to float32, compared bitwise)
out=$("$FSPO" model strip "$ckpt" -o "$tmp/w16.h5" --bf16 2>&1) && "$FSPO" inspect "$tmp/w16.h5" >/dev/null 2>&1 &&
"$FSPO" model strip "$tmp/w16.h5" -o "$tmp/w16to32.h5" >/dev/null 2>&1 &&
out=$("$PY" - "$tmp/w.h5" "$tmp/w16.h5" "$tmp/w16to32.h5" <<'PYEOF' 2>&1
import sys, numpy as np, h5py
def bf16(x):  # nearest, ties to even, as 32-bit patterns (no NaN among weights)
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return (((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32)
with h5py.File(sys.argv[1], "r", locking=False) as a, h5py.File(sys.argv[2], "r", locking=False) as b, \
     h5py.File(sys.argv[3], "r", locking=False) as c:
    changed = 0
    for n in a["model"]:
        d = b["model"][n]
        assert d.id.get_type().get_size() == 2 and d.compression == "gzip" and d.shuffle, (n, d.compression)
        want = bf16(a["model"][n][()])
        assert np.array_equal(d.astype("f4")[()], want), n
        assert np.array_equal(c["model"][n][()].view(np.uint32), want.view(np.uint32)), n
        changed += int((want != a["model"][n][()]).sum())
    assert changed > 0, "rounding changed nothing: not a test"
    for k in ("step", "stage", "config_yaml", "model_shape", "lineage"):
        assert np.array_equal(a.attrs[k], b.attrs[k]), k
    print(f"{len(a['model'])} tensors: h5py reads the nearest bf16 of each weight ({changed} moved), fspo reads the same")
PYEOF
) && [ "$(stat -c %s "$tmp/w16.h5")" -lt "$(stat -c %s "$tmp/w.h5")" ] &&
    pass "fspo model strip --bf16 stores each weight's nearest bfloat16, read back exactly" "$out" ||
    fail "fspo model strip --bf16 stores each weight's nearest bfloat16, read back exactly" "$out"
expect_error "fspo model strip never overwrites" 2 "w.h5: exists" -- "$FSPO" model strip "$ckpt" -o "$tmp/w.h5"
expect_error "fspo model strip on a non-checkpoint" 2 "not an HDF5 file" -- "$FSPO" model strip README.md -o "$tmp/x.h5"
expect_error "fspo model strip without -o" 2 "usage: fspo model strip CKPT -o OUT.h5" -- "$FSPO" model strip "$ckpt"
