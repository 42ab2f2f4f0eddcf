#!/usr/bin/env bash
# Hugging Face Llama interop (docs/interop.md) against an independent
# PyTorch implementation of HF-Llama semantics with its own safetensors
# reader and writer (tests/llama_ref.py):
#  (a) a tiny Llama the test writes in HF layout (GQA, untied head, rope_theta
#      500000, rms_norm_eps 1e-6; F32, BF16, F16, sharded): fspo's logits match
#  (b) `fspo export` of fspo checkpoints (GQA + untied, and the default tied
#      model) read back by the reference: the same logits
#  (c) export -> import -> export is byte-identical
#  (d) malformed safetensors, index and config.json: exit 2 and a message
#  (e) a preference run from an imported directory (init_from and
#      ref_ckpt), then eval and sample on it
cd "$(dirname "$0")/.." && source tests/lib.sh
export OPENBLAS_NUM_THREADS=1 OMPI_MCA_ess_singleton_isolated=1
PY=/usr/bin/python3
REF=tests/llama_ref.py
tmp=$(mktemp -d /tmp/fspo-llama.XXXXXX) && trap 'remove_tmp "$tmp"' EXIT
TOK=256,72,101,108,108,111,32,258,259,1,2,3,200,263,255,254,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20

# same_logits NAME MODEL [REFDIR]: fspo's logits on MODEL against the reference's on
# REFDIR (default MODEL), queued for check_logits (torch loads once, not per case)
n_logits=0
same_logits() {
    local name=$1 model=$2 refdir=${3:-$2} out
    n_logits=$((n_logits + 1))
    if ! out=$("$FSPO" model logits --ckpt "$model" --tokens "$TOK" --out "$tmp/logits$n_logits.bin" 2>&1); then
        fail "$name" "fspo model logits: $out"
        return
    fi
    printf '%s\t%s\t%s\n' "$name" "$tmp/logits$n_logits.bin" "$refdir" >>"$tmp/logits.list"
}
check_logits() {
    "$PY" $REF check "$tmp/logits.list" --tokens "$TOK" --tol 1e-4 || fail "llama: reference check" "tests/llama_ref.py failed"
}

# ---- (a) models written by PyTorch in HF layout ----
"$PY" $REF make "$tmp/f32:F32:1:1:0" "$tmp/bf16:BF16:1:2:0" "$tmp/f16:F16:1:3:0" "$tmp/sharded:BF16:3:4:0" \
    "$tmp/tied:F32:2:5:1" ||
    { fail "llama: reference models" "tests/llama_ref.py make failed"; exit 1; }
same_logits "HF Llama F32 (GQA 4/2, untied, rope_theta 5e5) logits match PyTorch" "$tmp/f32"
same_logits "HF Llama BF16 tensors logits match PyTorch" "$tmp/bf16"
same_logits "HF Llama F16 tensors logits match PyTorch" "$tmp/f16"
same_logits "HF Llama sharded (3 shards + index) logits match PyTorch" "$tmp/sharded"
same_logits "HF Llama tied embeddings, 2 shards, logits match PyTorch" "$tmp/tied"

# ---- (b) fspo checkpoints exported, read by the reference ----
mkdir -p "$tmp/fx"
tiny_fixture "$tmp/fx" "run_dir: $tmp/fx/run, max_steps: 2, batch_size: 4, log_every: 1" "lr: 0.01" "every: 2" ||
    { fail "llama: fixture"; exit 1; }
GQA=(--set model.n_kv_heads=2 --set model.tie_embeddings=false --set model.rope_theta=500 --set model.norm_eps=1e-6)
if "$FSPO" train "$tmp/fx/cfg.yaml" "${GQA[@]}" >"$tmp/train1.log" 2>&1 &&
    "$FSPO" train "$tmp/fx/cfg.yaml" --set train.run_dir="$tmp/fx/tied" >"$tmp/train2.log" 2>&1; then
    CK=$tmp/fx/run/ckpt_2.h5 CKT=$tmp/fx/tied/ckpt_2.h5
    "$FSPO" export "$CK" -o "$tmp/exp" >/dev/null 2>"$tmp/exp.err" || fail "export" "$(cat "$tmp/exp.err")"
    "$FSPO" export "$CKT" -o "$tmp/expt" >/dev/null 2>"$tmp/expt.err" || fail "export tied" "$(cat "$tmp/expt.err")"
    same_logits "export of a GQA, untied fspo checkpoint: PyTorch on it = fspo on the checkpoint" "$CK" "$tmp/exp"
    same_logits "export of a default (tied) fspo checkpoint: PyTorch on it = fspo on the checkpoint" "$CKT" "$tmp/expt"
    # the exported tensors, named as HF names them, with the checkpoint's shapes
    out=$("$PY" - "$tmp/exp" <<'PY' 2>&1
import json, struct, sys
d = sys.argv[1]
raw = open(d + "/model.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n])
c = json.load(open(d + "/config.json"))
assert h.pop("__metadata__") == {"format": "pt"}
assert c["architectures"] == ["LlamaForCausalLM"] and c["num_key_value_heads"] == 2 and c["tie_word_embeddings"] is False
assert h["model.layers.1.self_attn.k_proj.weight"]["shape"] == [16, 32], h["model.layers.1.self_attn.k_proj.weight"]
assert "lm_head.weight" in h and len(h) == 3 + 9 * 2, sorted(h)
assert list(h) == sorted(h), "names not sorted"
for f in ("tokenizer.json", "generation_config.json"):
    json.load(open(d + "/" + f))
print(f"{len(h)} tensors, config {c['hidden_size']}/{c['num_attention_heads']}/{c['num_key_value_heads']}")
PY
    ) && pass "export writes HF names, shapes, config.json, tokenizer.json, generation_config.json" "$out" ||
        fail "export writes HF names, shapes, config.json, tokenizer.json, generation_config.json" "$out"

    # the exported tokenizer.json is the byte tokenizer: UTF-8 bytes as ids, special tokens 256..263
    want="72 195 169 108 108 111 32 257 32 119 195 182 114 108 100 32 240 159 153 130 261"
    out=$("$FSPO" tokenizer encode "$tmp/exp/tokenizer.json" 'Héllo <|eos|> wörld 🙂<|dispreferred|>' 2>&1)
    [[ $out == "$want" ]] && pass "exported tokenizer.json encodes text as fspo's byte ids" "$out" ||
        fail "exported tokenizer.json encodes text as fspo's byte ids" "got '$out', want '$want'"

    # ---- (c) export -> import -> export ----
    for src in exp expt; do
        if "$FSPO" export "$tmp/$src" -o "$tmp/$src.again" >/dev/null 2>"$tmp/again.err" &&
            diff -r "$tmp/$src" "$tmp/$src.again" >"$tmp/diff.txt" 2>&1; then
            pass "export -> import -> export is byte-identical ($src)" "$(ls "$tmp/$src" | tr '\n' ' ')"
        else
            fail "export -> import -> export is byte-identical ($src)" "$(cat "$tmp/again.err" "$tmp/diff.txt" | head -5)"
        fi
    done
    "$FSPO" export "$tmp/bf16" -o "$tmp/bf16.a" >/dev/null && "$FSPO" export "$tmp/bf16.a" -o "$tmp/bf16.b" >/dev/null &&
        diff -r "$tmp/bf16.a" "$tmp/bf16.b" && pass "a BF16 HF model exported as F32 re-exports byte-identically" ||
        fail "a BF16 HF model exported as F32 re-exports byte-identically"
    same_logits "a BF16 HF model exported as F32: PyTorch on the original = fspo on the export" "$tmp/bf16.a" "$tmp/bf16"
    # a checkpoint from before the new shape attributes (removed here, file resealed) loads with the defaults
    cp "$CKT" "$tmp/old.h5"
    if "$PY" - "$tmp/old.h5" <<'PY' && "${BUILD:-build}/tests/test_ckpt" --reseal "$tmp/old.h5" &&
import sys, h5py
with h5py.File(sys.argv[1], "r+", locking=False) as f:
    for a in ("model_n_kv_heads", "model_tie_embeddings", "model_rope_theta", "model_norm_eps"):
        del f.attrs[a]
PY
        "$FSPO" model logits --ckpt "$tmp/old.h5" --tokens "$TOK" --out "$tmp/old.bin" &&
        "$FSPO" model logits --ckpt "$CKT" --tokens "$TOK" --out "$tmp/new.bin" && cmp -s "$tmp/old.bin" "$tmp/new.bin"; then
        pass "a checkpoint without the n_kv_heads/tie/rope_theta/norm_eps attributes loads with the defaults" "logits bitwise equal"
    else
        fail "a checkpoint without the n_kv_heads/tie/rope_theta/norm_eps attributes loads with the defaults"
    fi
    expect_error "export refuses a non-empty directory" 2 "exp: directory exists and is not empty" -- \
        "$FSPO" export "$CK" -o "$tmp/exp"
    expect_error "export refuses writing onto its input" 2 "is the input itself" -- "$FSPO" export "$tmp/exp" -o "$tmp/exp"
else
    fail "llama: train fixtures" "$(tail -3 "$tmp/train1.log" "$tmp/train2.log")"
fi

# ---- (d) malformed inputs ----
bad_case() { # NAME SRC CASE PATTERN
    rm -rf "$tmp/bad" && cp -r "$2" "$tmp/bad" && "$PY" $REF bad "$tmp/bad" "$3" &&
        expect_error "$1" 2 "$4" -- "$FSPO" model logits --ckpt "$tmp/bad" --tokens 1,2 --out "$tmp/x.bin"
}
ST="$tmp/bad/model.safetensors"
bad_case "safetensors: truncated header" "$tmp/f32" truncated "$ST: truncated header"
bad_case "safetensors: header length beyond the file" "$tmp/f32" beyond "$ST: header length [0-9]+ is beyond the file"
bad_case "safetensors: bad header JSON" "$tmp/f32" badjson "$ST: header JSON: line 1 column [0-9]+"
bad_case "safetensors: overlapping offsets" "$tmp/f32" overlap "$ST: tensor .*: data_offsets .* overlap tensor"
bad_case "safetensors: dtype/shape vs byte length" "$tmp/f32" shape "$ST: tensor .*: dtype F32 and shape .* need [0-9]+ bytes"
bad_case "safetensors: unknown dtype" "$tmp/f32" dtype "$ST: tensor .*: dtype 'Q7' is not a safetensors dtype"
bad_case "safetensors: unsupported dtype" "$tmp/f32" f64 "dtype 'F64' is not supported"
bad_case "safetensors: duplicate tensor name" "$tmp/f32" duplicate "$ST: header JSON: .*duplicate object key"
bad_case "safetensors: bytes no tensor covers" "$tmp/f32" gap "$ST: the tensors cover [0-9]+ bytes of data"
bad_case "safetensors: a tensor missing" "$tmp/f32" missing "tensor model.norm.weight missing"
bad_case "config.json: shape against the tensors" "$tmp/f32" shape_vs_config "tensor model.layers.0.mlp.gate_proj.weight has shape \[48, 32\]; config.json implies \[56, 32\]"
bad_case "config.json: another architecture" "$tmp/f32" arch "config.json: architectures \[MistralForCausalLM\]: fspo reads only LlamaForCausalLM"
bad_case "index: a tensor in another shard than the map says" "$tmp/sharded" index "model.safetensors.index.json: weight_map.* is not in model-00002-of-00003.safetensors"

# ---- (e) a preference run from an imported model, then eval and sample ----
M=$tmp/f32
HFM=(--set model.vocab=272 --set model.d_model=32 --set model.n_layers=2 --set model.n_heads=4 --set model.n_kv_heads=2
     --set model.ffn_hidden=48 --set model.max_seq=256 --set model.tie_embeddings=false --set model.rope_theta=500000
     --set model.norm_eps=1e-6)
expect_error "init_from a directory of another shape names both" 2 \
    "$M: model shape mismatch: its config.json has .*n_kv_heads 2.*; the config has .*n_kv_heads 4" -- \
    "$FSPO" train "$tmp/fx/cfg.yaml" "${HFM[@]}" --set model.n_kv_heads=4 --set train.run_dir="$tmp/pref0" \
    --set train.init_from="$M"
if "$FSPO" train "$tmp/fx/cfg.yaml" "${HFM[@]}" --set train.run_dir="$tmp/pref" --set train.stage=pref \
    --set train.max_steps=3 --set checkpoint.every=3 --set train.init_from="$M" --set loss.ref_ckpt="$M" \
    >"$tmp/pref.log" 2>&1 && [[ -f $tmp/pref/ckpt_3.h5 ]]; then
    # the same SFT steps on 1 and 2 ranks (small buckets: the untied head's gradient has its own cut)
    S1=(--set train.max_steps=3 --set train.init_from="$M" --set mpi.bucket_mb=0.01)
    if "$FSPO" train "$tmp/fx/cfg.yaml" "${HFM[@]}" "${S1[@]}" --set train.run_dir="$tmp/np1" >"$tmp/np1.log" 2>&1 &&
        mpirun_np 2 "$FSPO" train "$tmp/fx/cfg.yaml" "${HFM[@]}" "${S1[@]}" --set train.run_dir="$tmp/np2" >"$tmp/np2.log" 2>&1 &&
        out=$(same_losses "$tmp/np1/metrics.jsonl" "$tmp/np2/metrics.jsonl" 1e-5); then
        pass "from an imported GQA, untied model: 2 ranks train like 1" "$out"
    else
        fail "from an imported GQA, untied model: 2 ranks train like 1" "$out $(tail -2 "$tmp/np2.log")"
    fi
    loss=$("$PY" -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; print(r[0]["loss"], r[-1]["loss"])' \
        "$tmp/pref/metrics.jsonl" 2>&1)
    # the first step's policy is the reference: DPO's loss is log 2 exactly when both are the imported model
    "$PY" -c 'import sys,math; a=float(sys.argv[1]); sys.exit(abs(a-math.log(2))>1e-5)' ${loss%% *} &&
        pass "pref run from an imported model (init_from = ref_ckpt = HF dir): first loss is log 2" "$loss" ||
        fail "pref run from an imported model (init_from = ref_ckpt = HF dir): first loss is log 2" "$loss"
    if "$FSPO" eval "$tmp/fx/cfg.yaml" "${HFM[@]}" --ckpt "$tmp/pref/ckpt_3.h5" --set loss.ref_ckpt="$M" \
        --set eval.n_fewshot=[0,2] --set eval.max_users=2 --set eval.bootstrap=20 --set eval.max_new_tokens=4 \
        --json "$tmp/eval.json" >"$tmp/eval.log" 2>&1 && "$PY" -c 'import json,sys; json.load(open(sys.argv[1]))["accuracy"]' "$tmp/eval.json"; then
        pass "eval of the run with the imported reference" "$(grep -m1 -E '^ *[0-9]' "$tmp/eval.log")"
    else
        fail "eval of the run with the imported reference" "$(tail -3 "$tmp/eval.log")"
    fi
    # an fspo checkpoint with weights far from the tiny init (RoPE and GQA matter): exported, read by PyTorch
    "$FSPO" export "$tmp/pref/ckpt_3.h5" -o "$tmp/exp3" >/dev/null 2>"$tmp/exp3.err" || fail "export ckpt_3" "$(cat "$tmp/exp3.err")"
    same_logits "export of a trained GQA, untied fspo checkpoint (rope_theta 5e5): PyTorch on it = fspo" \
        "$tmp/pref/ckpt_3.h5" "$tmp/exp3"
    echo '{"user_id": "u1", "prompt": "p", "chosen": "a", "rejected": "b"}' >"$tmp/user.jsonl"
    for ck in "$M" "$tmp/pref/ckpt_3.h5"; do
        if "$FSPO" sample --ckpt "$ck" --examples "$tmp/user.jsonl" --prompt "Hello" --max-tokens 8 --seed 3 \
            >"$tmp/sample.txt" 2>"$tmp/sample.err"; then
            pass "sample from $(basename "$ck")" "$(head -c 60 "$tmp/sample.txt" | tr -c '[:print:]' '.')"
        else
            fail "sample from $(basename "$ck")" "$(tail -2 "$tmp/sample.err")"
        fi
    done
else
    fail "pref run from an imported model" "$(tail -5 "$tmp/pref.log")"
fi

check_logits
