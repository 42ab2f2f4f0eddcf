#!/usr/bin/env bash
# Hostile inputs, table-driven (tests/hostile/cases.tsv): CLI flags of every
# subcommand, YAML, JSONL, dataset and checkpoint HDF5 files, environment.
# Each case must exit with its code, print its message (naming the file,
# line or key), end within the timeout, and not crash: no exit >= 128, no
# sanitizer or segfault report. Then `fspo slurm submit --dry-run` with
# shell metacharacters in every config value a shell sees, and a summary.
cd "$(dirname "$0")/.." && source tests/lib.sh
export OPENBLAS_NUM_THREADS=1
FSPO=$(readlink -f "$FSPO") # the cases run in the fixture directory
# a singleton fspo (no mpirun) need not start an Open MPI daemon: half the start-up time
export OMPI_MCA_ess_singleton_isolated=1
PY=/usr/bin/python3
B=${BUILD:-build}
T=$(mktemp -d /tmp/fspo-hostile.XXXXXX) && trap 'rm -rf "$T"' EXIT
NL=$'\n'

# ---- fixtures ----
"$B/tests/test_pack" --write-dataset "$T/data.h5" 8 24 >/dev/null || { fail "hostile: make dataset"; exit 1; }
CFG=$T/cfg.yaml
cat >"$CFG" <<YAML
model: {d_model: 32, n_layers: 2, n_heads: 4, max_seq: 256}
data: {path: $T/data.h5, n_fewshot: 2, n_queries: 2}
train: {run_dir: $T/run, max_steps: 2, batch_size: 6, log_every: 1}
mpi: {threads_per_rank: 1}
checkpoint: {every: 2, keep: 2}
YAML
timeout 120 "$FSPO" train "$CFG" >"$T/ck.log" 2>&1 && cp "$T/run/ckpt_2.h5" "$T/ck.h5" ||
    { fail "hostile: make a checkpoint" "$(tail -3 "$T/ck.log")"; exit 1; }
CK=$T/ck.h5
echo '{"user_id": "u1", "prompt": "p", "chosen": "a", "rejected": "b"}' >"$T/ex.jsonl"
mkdir -p "$T/dir.h5"
"$PY" - "$T" <<'PYEOF' || { fail "hostile: make fixtures" "h5py missing?"; exit 1; }
import os, shutil, sys
import h5py, numpy as np
T = sys.argv[1]
def w(name, data):
    with open(f"{T}/{name}", "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
base = open(f"{T}/cfg.yaml").read()
# YAML
w("empty.yaml", "")
w("binary.yaml", bytes(range(256)) * 4)
w("nul.yaml", b"model: {d_model: 32}\x00\ntrain: {max_steps: 2}\n")
w("badutf8.yaml", b"train: {run_dir: \"\xff\xfe\"}\n")
w("type.yaml", base.replace("d_model: 32", "d_model: abc"))
w("float_int.yaml", base.replace("max_steps: 2", "max_steps: 2.5"))
w("list_for_int.yaml", base.replace("max_steps: 2", "max_steps: [1, 2]"))
w("map_for_str.yaml", base.replace("run_dir: ", "run_dir: {a: 1}\n#"))
w("huge_int.yaml", base.replace("max_steps: 2", "max_steps: 99999999999999999999999999"))
w("nan.yaml", base + "optim: {lr: .nan}\n")
w("inf.yaml", base + "optim: {lr: .inf}\n")
w("unknown_key.yaml", base + "optim: {lr: 1e-3, lrr: 2}\n")
w("unknown_section.yaml", base + "optimizer: {lr: 1e-3}\n")
w("seq_top.yaml", "- a\n- b\n")
w("scalar_top.yaml", "hello\n")
w("dup.yaml", base + "train: {max_steps: 3}\n")
w("tab.yaml", "model:\n\td_model: 32\n")
w("unclosed.yaml", "model: {d_model: 32\n")
w("bomb.yaml", "eval:\n  n_fewshot: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\n" +
  "".join(f"  k{i}: &a{i} [*a, *a, *a, *a, *a, *a, *a, *a]\n" for i in range(9)))
w("undef_alias.yaml", "model: *nothere\n")
w("deep.yaml", "eval: {n_fewshot: " + "[" * 200000 + "]" * 200000 + "}\n")
w("deepmap.yaml", "eval: " + "{a: " * 50000 + "1" + "}" * 50000 + "\n")
w("merge.yaml", "model: {<<: {d_model: 32}}\n")
w("tags.yaml", "model: {d_model: !!str 32}\n")
w("multi_doc.yaml", "model: {d_model: 32}\n---\nmodel: {d_model: 64}\n")
w("huge.yaml", base + "#" + "x" * (64 << 20) + "\n")
w("long_str.yaml", base.replace(f"run_dir: {T}/run", "run_dir: " + "a" * 100000))
# JSONL
good = '{"user_id": "u1", "prompt": "p", "chosen": "a", "rejected": "b"}\n'
w("badutf8.jsonl", good.encode() + b'{"user_id": "u1", "prompt": "\xff\xfe", "chosen": "a", "rejected": "b"}\n')
w("nul.jsonl", good.encode() + b'{"user_id": "u1", "prompt": "x\x00y", "chosen": "a", "rejected": "b"}\n')
w("hugeline.jsonl", '{"user_id": "u1", "prompt": "' + "x" * (3 << 20) + '", "chosen": "a", "rejected": "b"}\n')
w("types.jsonl", '{"user_id": "u1", "prompt": 5, "chosen": "a", "rejected": "b"}\n')
w("userid_float.jsonl", '{"user_id": 1.5, "prompt": "p", "chosen": "a", "rejected": "b"}\n')
w("missing.jsonl", '{"user_id": "u1", "prompt": "p", "chosen": "a"}\n')
w("notobj.jsonl", "[1, 2, 3]\n")
w("notjson.jsonl", "user_id,prompt\n")
w("deep.jsonl", "[" * 100000 + "]" * 100000 + "\n")
w("empty.jsonl", "")
w("same.jsonl", '{"user_id": "u1", "prompt": "p", "chosen": "a", "rejected": "a"}\n')
w("badsplit.jsonl", good + '{"user_id": "u1", "prompt": "q", "chosen": "a", "rejected": "b", "split": "dev"}\n')
w("arraysplit.jsonl", '{"user_id": "u1", "prompt": "r", "chosen": "a", "rejected": "b", "split": ["test"]}\n')
w("splitconflict.jsonl", '{"user_id": "u1", "prompt": "p", "chosen": "a", "rejected": "b", "split": "test"}\n'
  '{"user_id": "u1", "prompt": "q", "chosen": "a", "rejected": "b", "split": "train"}\n')
w("binary.jsonl", bytes(range(256)) * 4)
w("bigint.jsonl", '{"user_id": 99999999999999999999999, "prompt": "p", "chosen": "a", "rejected": "b"}\n')
# HDF5: not HDF5, truncated, other schemas (made by h5py), wrong shapes
w("text.h5", "this is not hdf5\n")
w("empty.h5", "")
data = open(f"{T}/data.h5", "rb").read()
w("trunc_data.h5", data[: len(data) // 2])
ck = open(f"{T}/ck.h5", "rb").read()
w("trunc_ck.h5", ck[: len(ck) // 3])
w("hdr_only.h5", ck[:600])
flip = bytearray(ck); flip[len(ck) // 2] ^= 0x55
w("flip_ck.h5", bytes(flip))
with h5py.File(f"{T}/schema.h5", "w") as f:
    f["x"] = np.arange(10)
    f.attrs["format"] = "something-else"
# these get fspo's seal below, so the checks behind the seal see them
with h5py.File(f"{T}/fake_ckpt.h5", "w", userblock_size=512) as f:
    f.attrs["format"] = "fspo-checkpoint"
    f.attrs["format_version"] = 1
    f.create_group("model")["tok_emb"] = np.zeros((3, 3), np.float32)
with h5py.File(f"{T}/fake_ds.h5", "w", userblock_size=512) as f:
    f.attrs["format"] = "fspo-dataset"
    f.attrs["format_version"] = 1
    f["tokens"] = np.zeros(5, np.int32)
shutil.copy(f"{T}/ck.h5", f"{T}/shape_ck.h5")
with h5py.File(f"{T}/shape_ck.h5", "r+", locking=False) as f:
    del f["model/tok_emb"]
    f["model/tok_emb"] = np.zeros((7, 3), np.float32)
    f["model/tok_emb"].attrs["checksum"] = np.uint64(0)
shutil.copy(f"{T}/ck.h5", f"{T}/hugeshape_ck.h5")
with h5py.File(f"{T}/hugeshape_ck.h5", "r+", locking=False) as f:
    f.attrs["model_shape"] = np.array([264, 1 << 23, 2, 4, 96, 256], np.int64)
PYEOF
for f in fake_ckpt fake_ds shape_ck hugeshape_ck; do "$B/tests/test_ckpt" --reseal "$T/$f.h5" || fail "hostile: reseal $f"; done
# Hugging Face directories (docs/interop.md): an export of $CK, then damaged copies (tests/llama_ref.py bad)
"$FSPO" export "$CK" -o "$T/hf" >/dev/null || fail "hostile: export"
for c in truncated beyond badjson overlap shape dtype duplicate arch vocab_pad tokswap nonspecial; do
    cp -r "$T/hf" "$T/hf_$c" && "$PY" tests/llama_ref.py bad "$T/hf_$c" "$c" || fail "hostile: make hf_$c"
done
# untrusted HDF5 files: every feature fspo never writes, wrong types, absurd
# sizes, inputs that crash libhdf5 (tests/hostile/make_h5.py), each re-sealed
# as fspo seals, so only the structure validation stands in their way
"$PY" tests/hostile/make_h5.py "$T" >"$T/h5list" 2>"$T/h5list.err" ||
    { fail "hostile: make the untrusted HDF5 files" "$(tail -3 "$T/h5list.err")"; exit 1; }
while read -r f; do "$B/tests/test_ckpt" --reseal "$f" || fail "hostile: reseal $f"; done <"$T/h5list"

# ---- the table ----
n=0 clean=0 i=0
while IFS=$'\t' read -r name code pattern cmd; do
    [[ -z $name || $name == \#* ]] && continue
    i=$((i + 1)) n=$((n + 1))
    RUN=$T/run.$i
    pattern=$(eval "printf '%s' \"$pattern\"") # expand $T, $CK in the pattern
    out=$(cd "$T" && FSPO=$FSPO T=$T CK=$CK CFG=$CFG RUN=$RUN NL=$NL timeout 60 bash -c "$cmd" 2>&1 </dev/null) # no case may eat the table (mpirun reads stdin)
    rc=$?
    why=""
    [[ $rc -eq 124 ]] && why="timed out (hang)"
    [[ $rc -ge 128 ]] && why="killed by signal $((rc - 128))"
    grep -qE 'AddressSanitizer|LeakSanitizer|runtime error:|Segmentation|core dumped|stack smashing|Aborted' <<<"$out" &&
        why="${why:+$why; }crash report: $(grep -m1 -E 'Sanitizer|runtime error|Segmentation|core dumped|stack|Aborted' <<<"$out")"
    [[ -z $why && $rc -ne $code ]] && why="exit $rc, want $code"
    [[ -z $why ]] && ! grep -qE -- "$pattern" <<<"$out" && why="message does not match /$pattern/"
    if [[ -z $why ]]; then
        clean=$((clean + 1))
        pass "hostile $name" "exit $rc: $(grep -m1 -E -- "$pattern" <<<"$out" | cut -c1-200)"
    else
        fail "hostile $name" "$why; output: $(head -c 400 <<<"$out")"
    fi
done <tests/hostile/cases.tsv
[[ -e $T/pwned ]] && fail "hostile: an environment value was executed" "$T/pwned exists"

# ---- slurm submit --dry-run: shell metacharacters in every value a shell sees ----
evil="q'uote\"d \$(touch $T/pwned1) ; touch $T/pwned2 \`touch $T/pwned3\` \\ %j"
evil_dir="$T/r 'a\" \$(touch $T/pwned4);\`touch $T/pwned5\`"
evil_set="$evil${NL}touch $T/pwned6 # a newline: not on an #SBATCH line, so allowed"
mkdir -p "$T/cfg \$(touch $T/pwned7); \`x\`"
evil_cfg="$T/cfg \$(touch $T/pwned7); \`x\`/c.yaml"
cp "$CFG" "$evil_cfg"
n=$((n + 1))
if out=$(cd "$T" && PATH="$T/bin:$PATH" "$FSPO" slurm submit "$evil_cfg" --dry-run --set slurm.job_name="$evil" \
    --set train.run_dir="$evil_dir" --set "eval.sft_ckpt=$evil_set" --set slurm.launcher=mpirun 2>"$T/slurm.err"); then
    printf '%s\n' "$out" >"$T/evil.sbatch"
    # run only the part that assigns the values (everything before the first function), as bash would
    sed -n '1,/^log() {/p' "$T/evil.sbatch" | sed '$d' >"$T/assign.sh"
    printf '%s\n' 'printf "%s\0" "$fspo" "$config" "$run_dir" "${train_args[@]}"' >>"$T/assign.sh"
    got=$(cd "$T" && bash "$T/assign.sh" 2>&1 | tr '\0' '\n')
    pwned=$(ls "$T" | grep pwned)
    if bash -n "$T/evil.sbatch" && [[ -z $pwned ]] && grep -qF -- "$evil_dir" <<<"$got" && grep -qF -- "$evil_cfg" <<<"$got" &&
        grep -qF -- "eval.sft_ckpt=$evil" <<<"$got" && grep -qF -- "touch $T/pwned6 # a newline" <<<"$got"; then
        clean=$((clean + 1))
        pass "hostile slurm dry-run: quotes, \$(), ;, backticks, newlines" "bash -n accepts it; the values come back intact and nothing ran"
    else
        fail "hostile slurm dry-run: quotes, \$(), ;, backticks, newlines" "bash -n: $(bash -n "$T/evil.sbatch" 2>&1 | head -2); pwned: '$pwned'; values: $(head -c 300 <<<"$got")"
    fi
else
    # sbatch missing is checked even for --dry-run on some setups: say so honestly
    if grep -q "sbatch" "$T/slurm.err"; then
        echo "SKIP: hostile slurm dry-run: $(head -1 "$T/slurm.err")"
        n=$((n - 1))
    else
        fail "hostile slurm dry-run: quotes, \$(), ;, backticks, newlines" "$(head -3 "$T/slurm.err")"
    fi
fi
echo "hostile: $n bad inputs tried, $clean clean errors"
