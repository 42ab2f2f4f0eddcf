#!/usr/bin/env bash
# Fine-tuning a pretrained Llama with its own tokenizer (docs/interop.md,
# "Fine-tune a pretrained Llama"):
#   - a byte-level BPE trained by Hugging Face `tokenizers` (tests/node) WITHOUT
#     fspo's structure tokens is refused by prep, and taken with
#     --add-structure-tokens: the dataset's ids of ordinary text equal the
#     oracle's on the original file; the oracle, given the same tokens by its
#     own addSpecialTokens, gives the same ids as fspo's augmented file on text
#     that contains them, and reads fspo's augmented file to the same ids;
#   - a tiny Llama of that vocabulary written by PyTorch (tests/llama_ref.py)
#     with that tokenizer.json: SFT and a preference stage from it (the
#     embeddings grow; the first DPO loss is log 2; 2 ranks = 1), eval, sample, export;
#     PyTorch on the export gives fspo's logits; the grown rows are the mean of
#     the original rows, the others unchanged (PyTorch reads both files);
#   - refusals, exit 2: a model.vocab below the directory's vocab_size, and a
#     tokenizer.json that disagrees with the data's on a shared id;
#   - fspo inspect and fspo model strip of the directory.
cd "$(dirname "$0")/.." && source tests/lib.sh
export OPENBLAS_NUM_THREADS=1 OMPI_MCA_ess_singleton_isolated=1
PY=/usr/bin/python3
REF=tests/llama_ref.py
tmp=$(mktemp -d /tmp/fspo-finetune.XXXXXX) && trap 'remove_tmp "$tmp"' EXIT
oracle_ready "$tmp" || exit 0
if ! $PY -c "import torch" 2>/dev/null; then
    echo "SKIP: finetune: PyTorch is missing for tests/llama_ref.py"
    exit 0
fi

"$FSPO" synth -o "$tmp/u.jsonl" --users 20 --pairs-per-user 8 --population r1 --seed 5 --quiet
$PY -c "
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    print(r['prompt']); print(r['chosen']); print(r['rejected'])" "$tmp/u.jsonl" >"$tmp/corpus.txt"
# the "pretrained" tokenizer: Hugging Face's trainer, no added tokens at all
"${ORACLE[@]}" train-plain "$tmp/corpus.txt" "$tmp/plain.json" >/dev/null 2>"$tmp/train.err" ||
    { fail "finetune: the oracle trains a tokenizer" "$(cat "$tmp/train.err")"; exit 0; }
V=$($PY -c "import json, sys; j = json.load(open(sys.argv[1])); assert not j['added_tokens']; print(len(j['model']['vocab']))" "$tmp/plain.json")
G=$((V + 8)) # with fspo's eight structure tokens

# ---- prep with the model's own tokenizer ----
P=("$FSPO" prep "$tmp/u.jsonl" --val-frac 0.2 --test-frac 0.2 --seed 3)
expect_error "a tokenizer.json without the structure tokens is refused, the flag named" 2 \
    "plain.json: the tokenizer has no special added token '<\|bos\|>' .*fspo prep --add-structure-tokens appends those missing" -- \
    "${P[@]}" -o "$tmp/z.h5" --tokenizer "$tmp/plain.json"
expect_error "--add-structure-tokens without a tokenizer.json" 2 "--add-structure-tokens extends a tokenizer.json file" -- \
    "${P[@]}" -o "$tmp/z.h5" --tokenizer bpe:300 --add-structure-tokens
if "${P[@]}" -o "$tmp/d.h5" --tokenizer "$tmp/plain.json" --add-structure-tokens >"$tmp/prep.out" 2>&1 &&
    grep -q "model.vocab $G)" "$tmp/prep.out" && grep -q "added   <|bos|> $V, <|eos|> $((V + 1)), .* <|user|> $((V + 7)) " "$tmp/prep.out"; then
    pass "prep --add-structure-tokens: the eight tokens after the file's $V ids" "$(grep -E 'tokens|added' "$tmp/prep.out" | tr '\n' '|')"
else
    fail "prep --add-structure-tokens" "$(cat "$tmp/prep.out")"
fi
"$FSPO" tokenizer export "$tmp/d.h5" -o "$tmp/aug.json"
# once more on the augmented file: everything is there, nothing added, the same tokenizer
"${P[@]}" -o "$tmp/d2.h5" --tokenizer "$tmp/aug.json" --add-structure-tokens >"$tmp/prep2.out" 2>&1 &&
    grep -q "added   nothing" "$tmp/prep2.out" && "$FSPO" tokenizer export "$tmp/d2.h5" -o "$tmp/aug2.json" &&
    cmp -s "$tmp/aug.json" "$tmp/aug2.json" &&
    pass "tokens already present are reused, not added twice" "$(grep added "$tmp/prep2.out")" ||
    fail "tokens already present are reused, not added twice" "$(cat "$tmp/prep2.out")"
hf_equal "dataset ids of ordinary text (augmented tokenizer) equal Hugging Face's on the original file" \
    "$tmp/d.h5" "$tmp/plain.json" "$tmp/u.jsonl"
# text with the structure tokens: fspo's augmented file against the oracle adding them itself
mkdir -p "$tmp/sp"
i=0
for t in '<|bos|><|eos|><|example|><|question|><|preferred|><|dispreferred|><|task|><|user|>' \
    '<|bos|>hello<|eos|>' '<|example|><|question|>What movie?<|preferred|>A comedy!<|dispreferred|>No.<|task|>Q<|user|>likes 🎬' \
    ' <|task|> ' 'text<|user|>more text' '<|bos' 'eos|> <|<|eos|>|>' 'plain text, no special token at all'; do
    printf '%s' "$t" >"$tmp/sp/$i.txt"
    i=$((i + 1))
done
"${ORACLE[@]}" encode-added "$tmp/plain.json" "$tmp"/sp/*.txt >"$tmp/added.ids" 2>"$tmp/o.err"
"${ORACLE[@]}" encode "$tmp/aug.json" "$tmp"/sp/*.txt >"$tmp/augo.ids" 2>>"$tmp/o.err"
files=()
for f in "$tmp"/sp/*.txt; do files+=(--file "$f"); done
"$FSPO" tokenizer encode "$tmp/aug.json" "${files[@]}" >"$tmp/fspo.ids" 2>>"$tmp/o.err"
# line 1 of the oracle's: tokenToId of the eight tokens = fspo's ids of sp/0.txt (the eight in a row)
if [[ $(head -1 "$tmp/added.ids") == "$(head -1 "$tmp/fspo.ids")" ]] && cmp -s <(tail -n +2 "$tmp/added.ids") "$tmp/fspo.ids" &&
    cmp -s "$tmp/augo.ids" "$tmp/fspo.ids"; then
    pass "text with structure tokens: fspo's ids = the oracle's addSpecialTokens on the original = the oracle on fspo's file" \
        "$(head -1 "$tmp/fspo.ids"); $(wc -w <"$tmp/fspo.ids") ids"
else
    fail "text with structure tokens: the oracle agrees" "$(cat "$tmp/o.err"; diff <(tail -n +2 "$tmp/added.ids") "$tmp/fspo.ids" | head -4; diff "$tmp/augo.ids" "$tmp/fspo.ids" | head -4)"
fi

# ---- a "pretrained" Llama of the file's vocabulary ----
$PY $REF make "$tmp/hf:F32:1:7:0:$V" "$tmp/hfpad:F32:1:8:0:$((V + 16))" "$tmp/hft:BF16:1:9:1:$V" ||
    { fail "finetune: reference models" "tests/llama_ref.py make failed"; exit 0; }
for d in hf hfpad hft; do cp "$tmp/plain.json" "$tmp/$d/tokenizer.json"; done
cat >"$tmp/cfg.yaml" <<YAML
model: {vocab: $G, d_model: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, ffn_hidden: 48, max_seq: 256,
        tie_embeddings: false, rope_theta: 500000, norm_eps: 1e-6}
data: {path: $tmp/d.h5, n_fewshot: 2, n_fewshot_min: 0, n_queries: 2}
train: {run_dir: $tmp/sft, max_steps: 3, batch_size: 2, log_every: 1, init_from: $tmp/hf}
optim: {lr: 1e-3}
mpi: {threads_per_rank: 1}
checkpoint: {every: 3, keep: 1}
eval: {n_fewshot: [0, 2], max_users: 3, max_new_tokens: 6, bootstrap: 50}
YAML
GREW="hf: vocabulary grown from $V to $G ids: rows $V..$((G - 1)) of embed_tokens and of lm_head are the mean of its $V rows"
if "$FSPO" train "$tmp/cfg.yaml" >"$tmp/sft.log" 2>&1 && grep -q "$GREW" "$tmp/sft.log"; then
    pass "SFT from the imported directory, embeddings grown" "$(grep -m1 grown "$tmp/sft.log")"
else
    fail "SFT from the imported directory" "$(tail -n 3 "$tmp/sft.log")"
fi
PREF=(--set train.stage=pref --set train.run_dir="$tmp/pref" --set loss.ref_ckpt="$tmp/hf")
if "$FSPO" train "$tmp/cfg.yaml" "${PREF[@]}" >"$tmp/pref.log" 2>&1 && [[ $(grep -c "$GREW" "$tmp/pref.log") == 2 ]]; then
    loss=$($PY -c 'import json, sys; print(json.loads(open(sys.argv[1]).readline())["loss"])' "$tmp/pref/metrics.jsonl")
    # policy and reference are the same grown model at step 1: DPO's loss is log 2
    $PY -c 'import sys, math; sys.exit(abs(float(sys.argv[1]) - math.log(2)) > 1e-5)' "$loss" &&
        pass "preference stage from the directory (init_from = ref_ckpt, both grown): first loss log 2" "$loss" ||
        fail "preference stage from the directory: first loss log 2" "$loss"
else
    fail "preference stage from the directory" "$(tail -n 3 "$tmp/pref.log")"
fi
# 2 ranks like 1: every rank grows its reference the same way (the policy is rank 0's, broadcast);
# relative 1e-4, and 5e-6 absolute below 0.05: the rewards are ~1e-4 here, each beta times the
# difference of two logps near -92, so it keeps only their last bits and the summation order shows
# there (the logps agree to ~1e-8; on an AVX2-only Zen 3 the margins differed by 1.4e-7, 1.5e-3 of
# their size)
if mpirun_np 2 "$FSPO" train "$tmp/cfg.yaml" "${PREF[@]}" --set train.run_dir="$tmp/pref2" --set mpi.bucket_mb=0.01 \
    >"$tmp/pref2.log" 2>&1 && out=$(same_losses "$tmp/pref/metrics.jsonl" "$tmp/pref2/metrics.jsonl" 1e-4 0.05 2>&1); then
    pass "the preference stage from the directory on 2 ranks equals 1 rank" "$out"
else
    fail "the preference stage from the directory on 2 ranks equals 1 rank" "$out $(tail -n 2 "$tmp/pref2.log")"
fi
CK=$tmp/pref/ckpt_3.h5
if "$FSPO" eval "$tmp/cfg.yaml" --ckpt "$CK" --split test --set loss.ref_ckpt="$tmp/hf" --json "$tmp/eval.json" \
    --quiet >"$tmp/eval.log" 2>&1 && $PY -c 'import json, sys; json.load(open(sys.argv[1]))["accuracy"]' "$tmp/eval.json"; then
    pass "eval of the fine-tuned checkpoint against the imported reference" "$(grep -c grown "$tmp/eval.log") grown reference"
else
    fail "eval of the fine-tuned checkpoint" "$(tail -n 3 "$tmp/eval.log")"
fi
echo '{"user_id": "u1", "prompt": "Which movie?", "chosen": "A comedy", "rejected": "A drama"}' >"$tmp/ex.jsonl"
for ck in "$tmp/hf" "$CK"; do
    "$FSPO" sample --ckpt "$ck" --examples "$tmp/ex.jsonl" --prompt "Hello" --max-tokens 8 --seed 3 >"$tmp/s.txt" 2>"$tmp/s.err" &&
        pass "sample from $(basename "$ck")" "$(tail -1 "$tmp/s.err")" || fail "sample from $(basename "$ck")" "$(cat "$tmp/s.err")"
done

# ---- export: PyTorch reads it; the grown rows ----
TOK=$V,$((V + 1)),5,17,300,$((V - 1)),$((V + 2)),$((V + 7)),42,0,255,$((V + 4)),100,200
rm -f "$tmp/logits.list"
for pair in "exp:$CK" "grown:$tmp/hf"; do
    name=${pair%%:*} src=${pair#*:}
    if "$FSPO" export "$src" -o "$tmp/$name" >/dev/null 2>"$tmp/$name.err" &&
        "$FSPO" model logits --ckpt "$src" --tokens "$TOK" --out "$tmp/$name.bin" 2>>"$tmp/$name.err"; then
        printf '%s\t%s\t%s\n' "PyTorch on the export of $(basename "$src") ($G ids) = fspo's logits" "$tmp/$name.bin" "$tmp/$name" >>"$tmp/logits.list"
    else
        fail "export of $src" "$(cat "$tmp/$name.err")"
    fi
done
$PY $REF check "$tmp/logits.list" --tokens "$TOK" --tol 1e-4 || fail "finetune: reference check" "tests/llama_ref.py failed"
cmp -s "$tmp/exp/tokenizer.json" "$tmp/aug.json" && cmp -s "$tmp/grown/tokenizer.json" "$tmp/aug.json" &&
    pass "the exports carry the dataset's (augmented) tokenizer.json" "" || fail "the exports carry the dataset's tokenizer.json" "differs"
$PY $REF grown "$tmp/hf" "$tmp/grown" || fail "grown rows (untied)" "see above"
# Hugging Face's own safetensors parser (@huggingface/hub) on the export: names, dtypes, shapes and
# offsets as it reads them; every tensor's bytes begin with the PyTorch-written original's (the
# grown ones have their extra rows after)
"${ORACLE[@]}" safetensors "$tmp/grown" "$tmp/hf" >"$tmp/st.txt" 2>&1
np=$("$FSPO" export "$tmp/hf" -o "$tmp/grown2" 2>/dev/null | sed -n 's/.*(\([0-9]*\) parameters).*/\1/p') # fspo's count
if [[ $(grep -c "F32 .* begins with ORIG's" "$tmp/st.txt") == 21 ]] && grep -q "^model.embed_tokens.weight F32 \[$G, 32\]" "$tmp/st.txt" &&
    grep -q "^lm_head.weight F32 \[$G, 32\]" "$tmp/st.txt" && grep -q "^parameters {\"F32\":$np}" "$tmp/st.txt"; then
    pass "Hugging Face's safetensors parser (@huggingface/hub) reads the export: 21 tensors, the original's values" \
        "$(grep -E "embed_tokens|parameters" "$tmp/st.txt" | tr '\n' '|')"
else
    fail "Hugging Face's safetensors parser (@huggingface/hub) reads the export" "$(head -c 600 "$tmp/st.txt")"
fi
# tied, BF16: only embed_tokens grows (fspo's rows are the BF16 values widened, then the mean)
"$FSPO" export "$tmp/hft" -o "$tmp/grownt" >/dev/null 2>"$tmp/t.err" && $PY $REF grown "$tmp/hft" "$tmp/grownt" ||
    fail "grown rows (tied, BF16)" "$(cat "$tmp/t.err")"

# ---- refusals ----
expect_error "a model.vocab below the directory's vocab_size is refused (no shrinking)" 2 \
    "hfpad: config.json has vocab_size $((V + 16)) \(model.embed_tokens.weight \[$((V + 16)), 32\]\), more than the model's $G ids \(model.vocab\)" -- \
    "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$tmp/z1" --set train.init_from="$tmp/hfpad"
cp -r "$tmp/hf" "$tmp/hfbad"
$PY - "$tmp/hfbad/tokenizer.json" <<'PYEOF'
import json, sys
j = json.load(open(sys.argv[1]))
v = j["model"]["vocab"]
a, b = (t for t, i in v.items() if i in (300, 301))
v[a], v[b] = v[b], v[a]  # two tokens trade ids: still a valid file, another tokenizer
json.dump(j, open(sys.argv[1], "w"), ensure_ascii=False)
PYEOF
expect_error "a directory whose tokenizer.json disagrees with the data's on a shared id is refused" 2 \
    "hfbad: its tokenizer.json and the tokenizer of .*d.h5 \(bpe$G-[0-9a-f]+\) disagree on id 300 " -- \
    "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$tmp/z2" --set train.init_from="$tmp/hfbad"
expect_error "... also as loss.ref_ckpt of eval" 2 "hfbad: its tokenizer.json and the tokenizer of .* disagree on id 300" -- \
    "$FSPO" eval "$tmp/cfg.yaml" --ckpt "$CK" --split test --set loss.ref_ckpt="$tmp/hfbad" --quiet

# ---- inspect and model strip of the directory ----
if "$FSPO" inspect "$tmp/hf" >"$tmp/inspect.txt" 2>&1 && grep -q "tokenizer.json: $V ids" "$tmp/inspect.txt" &&
    grep -q "fspo adds the structure tokens it lacks: <|bos|> $V" "$tmp/inspect.txt" &&
    grep -q "model.layers.1.mlp.down_proj.weight *F32 *\[32, 48\]" "$tmp/inspect.txt"; then
    pass "fspo inspect of a Hugging Face directory" "$(grep -E "config.json|fspo's model|weights:" "$tmp/inspect.txt" | cut -c1-90 | tr '\n' '|')"
else
    fail "fspo inspect of a Hugging Face directory" "$(head -5 "$tmp/inspect.txt")"
fi
expect_error "fspo inspect of a directory without config.json" 2 "is a directory" -- "$FSPO" inspect "$tmp/sp"
if "$FSPO" model strip "$tmp/hf" -o "$tmp/strip.h5" >"$tmp/strip.out" 2>&1 && "$FSPO" inspect "$tmp/strip.h5" >/dev/null &&
    "$FSPO" tokenizer export "$tmp/strip.h5" -o "$tmp/strip.json" && cmp -s "$tmp/strip.json" "$tmp/aug.json" &&
    "$FSPO" model logits --ckpt "$tmp/strip.h5" --tokens "$TOK" --out "$tmp/strip.bin" && cmp -s "$tmp/strip.bin" "$tmp/grown.bin"; then
    pass "fspo model strip of a Hugging Face directory: an fspo weights file, same logits, the augmented tokenizer" \
        "$(tail -1 "$tmp/strip.out")"
else
    fail "fspo model strip of a Hugging Face directory" "$(cat "$tmp/strip.out")"
fi
