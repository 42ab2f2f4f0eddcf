#!/usr/bin/env bash
# Datasets and runs with a BPE tokenizer (fspo prep --tokenizer):
#   - bpe:V is learned from the training users' text only, deterministically;
#   - the dataset's ids equal Hugging Face `tokenizers`' (the Node.js binding,
#     tests/node) on the same texts, for a learned file and for one trained by
#     Hugging Face itself whose structure tokens sit at other ids;
#   - a whole tiny run: SFT, preference stage, eval, sample, on BPE data;
#   - a checkpoint and data with different tokenizers: exit 2, both named;
#   - tokenizer.json files without fspo's structure tokens are refused;
#   - other field names (--prompt-key ..., FSPO's response_x/response_y/label).
cd "$(dirname "$0")/.." && source tests/lib.sh
PY=/usr/bin/python3
tmp=$(mktemp -d /tmp/fspo-bpe.XXXXXX) && trap 'remove_tmp "$tmp"' EXIT

"$FSPO" synth -o "$tmp/u.jsonl" --users 20 --pairs-per-user 8 --population r1 --seed 5 --quiet

# ---- bpe:V from the training users alone ----
# three extra users whose texts repeat one made-up word each: the train
# user's word must become tokens, the validation and test users' never
$PY - "$tmp/u.jsonl" <<'PYEOF'
import json, sys
with open(sys.argv[1], "a") as f:
    for user, split, word in (("w-train", "train", "wvkpwvkp"), ("w-val", "validation", "yhgbyhgb"),
                              ("w-test", "test", "zqxjzqxj")):
        for i in range(6):
            f.write(json.dumps({"user_id": user, "split": split, "prompt": f"{word} {i}?",
                                "chosen": f"{word} {word} yes", "rejected": f"{word} no {i}"}) + "\n")
PYEOF
P=("$FSPO" prep --val-frac 0.2 --test-frac 0.2 --seed 3)
if "${P[@]}" "$tmp/u.jsonl" -o "$tmp/d.h5" --tokenizer bpe:512 >"$tmp/prep.out" 2>&1 &&
    grep -q "model.vocab 512" "$tmp/prep.out" && "$FSPO" inspect "$tmp/d.h5" | grep -q "v3).*" &&
    "$FSPO" inspect "$tmp/d.h5" | grep -q "tokenizer bpe512-"; then
    pass "prep --tokenizer bpe:512" "$(grep -E 'tokens|learned' "$tmp/prep.out" | tr '\n' '|')"
else
    fail "prep --tokenizer bpe:512" "$(cat "$tmp/prep.out")"
fi
"$FSPO" tokenizer export "$tmp/d.h5" -o "$tmp/tok.json"
out=$($PY - "$tmp/tok.json" <<'PYEOF'
import json, sys
vocab = json.load(open(sys.argv[1]))["model"]["vocab"]
has = lambda w: sorted(t for t in vocab if any(w[i:i + 3] in t for i in range(len(w) - 2)))
train, val, test = has("wvkpwvkp"), has("yhgbyhgb"), has("zqxjzqxj")
assert train and not val and not test, (train, val, test)
print(f"{len(train)} tokens from the train user's word (e.g. {train[-1]!r}), none from the others'")
PYEOF
) && pass "bpe:V learns from training users only" "$out" || fail "bpe:V learns from training users only" "$out"
tac "$tmp/u.jsonl" >"$tmp/rev.jsonl"
"${P[@]}" "$tmp/rev.jsonl" -o "$tmp/rev.h5" --tokenizer bpe:512 --quiet && "$FSPO" tokenizer export "$tmp/rev.h5" -o "$tmp/rev.json" &&
    cmp -s "$tmp/tok.json" "$tmp/rev.json" &&
    pass "bpe:V is deterministic (rows in reverse order: the same tokenizer)" "$(wc -c <"$tmp/tok.json") bytes" ||
    fail "bpe:V is deterministic" "the tokenizers differ"
bytes=$("${P[@]}" "$tmp/u.jsonl" -o "$tmp/b.h5" | sed -n 's/^  tokens  \([0-9]*\).*/\1/p')
bpe=$(sed -n 's/^  tokens  \([0-9]*\).*/\1/p' "$tmp/prep.out")
[[ -n $bpe && $bpe -lt $bytes ]] && pass "BPE rows are shorter than bytes" "$bpe tokens vs $bytes bytes" ||
    fail "BPE rows are shorter than bytes" "'$bpe' vs '$bytes'"

# ---- a whole tiny run on BPE data ----
cat >"$tmp/cfg.yaml" <<YAML
model: {vocab: 512, d_model: 32, n_layers: 1, n_heads: 2, max_seq: 512}
data: {path: $tmp/d.h5, n_fewshot: 2, n_fewshot_min: 0, n_queries: 2}
train: {run_dir: $tmp/sft, max_steps: 3, batch_size: 2, log_every: 1}
optim: {lr: 1e-3}
mpi: {threads_per_rank: 1}
checkpoint: {every: 3, keep: 1}
eval: {n_fewshot: [0, 2], max_users: 3, max_new_tokens: 12, bootstrap: 50}
YAML
SFT=$tmp/sft/ckpt_3.h5 POL=$tmp/pref/ckpt_3.h5
if "$FSPO" train "$tmp/cfg.yaml" >"$tmp/sft.log" 2>&1 &&
    "$FSPO" train "$tmp/cfg.yaml" --set train.stage=pref --set train.run_dir="$tmp/pref" --set loss.ref_ckpt="$SFT" \
        --set train.init_from="$SFT" >"$tmp/pref.log" 2>&1 &&
    "$FSPO" eval "$tmp/cfg.yaml" --ckpt "$POL" --split test --set loss.ref_ckpt="$SFT" --truth "$tmp/u.truth.jsonl" \
        --json "$tmp/eval.json" --quiet >"$tmp/eval.log" 2>&1; then
    pass "BPE data: SFT, preference stage and eval run" "$(grep -c '"step"' "$tmp/pref/metrics.jsonl") pref steps logged"
else
    fail "BPE data: SFT, preference stage and eval run" "$(tail -n 3 "$tmp"/*.log | tr '\n' ' ')"
fi
"$FSPO" inspect "$POL" | grep -q "tokenizer: $("$FSPO" inspect "$tmp/d.h5" | sed -n 's/.*tokenizer \(bpe[^ ]*\) .*/\1/p')" &&
    pass "the checkpoint carries the dataset's tokenizer" "$("$FSPO" inspect "$POL" | grep tokenizer:)" ||
    fail "the checkpoint carries the dataset's tokenizer" "$("$FSPO" inspect "$POL" | grep tokenizer)"
head -n 3 "$tmp/u.jsonl" >"$tmp/ex.jsonl"
S=("$FSPO" sample --ckpt "$POL" --examples "$tmp/ex.jsonl" --prompt "Which movie should I watch? 🎬" --max-tokens 12 --seed 4)
if "${S[@]}" >"$tmp/s1.txt" 2>"$tmp/s1.err" && "${S[@]}" >"$tmp/s2.txt" 2>/dev/null && cmp -s "$tmp/s1.txt" "$tmp/s2.txt"; then
    pass "sample on a BPE checkpoint: text out, the same for a seed" "$(head -c 80 "$tmp/s1.txt" | tr '\n' ' '); $(cat "$tmp/s1.err")"
else
    fail "sample on a BPE checkpoint" "$(cat "$tmp/s1.err")"
fi
# the prompt's tokens: BPE counts fewer than its bytes (the byte tokenizer's count)
n_bpe=$(sed -n 's/.* \([0-9]*\) prompt tokens.*/\1/p' "$tmp/s1.err")
[[ -n $n_bpe && $n_bpe -lt $(cat "$tmp/ex.jsonl" | wc -c) ]] && pass "sample encodes with the checkpoint's tokenizer" \
    "$n_bpe prompt tokens for $(wc -c <"$tmp/ex.jsonl") bytes of JSONL" || fail "sample encodes with the checkpoint's tokenizer" "'$n_bpe'"

# ---- one tokenizer per checkpoint and data ----
expect_error "eval: checkpoint and data with different tokenizers" 2 \
    "ckpt_3.h5: the model reads the ids of tokenizer bpe512-.*, but .*/b.h5 was tokenized with fspo-byte264-v1" -- \
    "$FSPO" eval "$tmp/cfg.yaml" --ckpt "$POL" --split test --set data.path="$tmp/b.h5" --quiet
expect_error "train: init_from with another tokenizer" 2 "ckpt_3.h5: the model reads the ids of tokenizer bpe512-" -- \
    "$FSPO" train "$tmp/cfg.yaml" --set data.path="$tmp/b.h5" --set model.vocab=264 --set train.run_dir="$tmp/x" \
    --set train.init_from="$SFT"
expect_error "train: model.vocab below the tokenizer's ids" 2 "has 512 ids; model.vocab is 264: set model.vocab: 512" -- \
    "$FSPO" train "$tmp/cfg.yaml" --set model.vocab=264 --set train.run_dir="$tmp/y"
# new users prepared with the run's tokenizer (taken from its checkpoint) evaluate fine
"$FSPO" prep "$tmp/u.jsonl" -o "$tmp/new.h5" --all-test --tokenizer "$SFT" --quiet &&
    "$FSPO" eval "$tmp/cfg.yaml" --ckpt "$POL" --split test --set data.path="$tmp/new.h5" --quiet >/dev/null 2>&1 &&
    pass "prep --tokenizer CKPT.h5: new users for a trained model" "$("$FSPO" inspect "$tmp/new.h5" | sed -n 2p)" ||
    fail "prep --tokenizer CKPT.h5" "prep or eval failed"

# ---- Hugging Face directories carry the tokenizer: export, import, a preference run from it ----
HF=$tmp/hfdir
if "$FSPO" export "$SFT" -o "$HF" >/dev/null 2>"$tmp/export.err" && cmp -s "$HF/tokenizer.json" "$tmp/tok.json" &&
    [[ $($PY -c "import json; print(json.load(open('$HF/config.json'))['eos_token_id'])") == 257 ]]; then
    pass "fspo export writes the checkpoint's tokenizer.json" "the dataset's file, byte for byte; eos_token_id 257"
else
    fail "fspo export writes the checkpoint's tokenizer.json" "$(cat "$tmp/export.err")"
fi
if "$FSPO" train "$tmp/cfg.yaml" --set train.stage=pref --set train.run_dir="$tmp/hfpref" --set loss.ref_ckpt="$HF" \
        --set train.init_from="$HF" >"$tmp/hfpref.log" 2>&1 &&
    "$FSPO" eval "$tmp/cfg.yaml" --ckpt "$tmp/hfpref/ckpt_3.h5" --split test --set loss.ref_ckpt="$HF" --quiet \
        >"$tmp/hfeval.log" 2>&1 &&
    "$FSPO" sample --ckpt "$HF" --examples "$tmp/ex.jsonl" --prompt "Hi" --max-tokens 8 >/dev/null 2>"$tmp/hfs.err" &&
    [[ $(sed -n 's/.* \([0-9]*\) prompt tokens.*/\1/p' "$tmp/hfs.err") -lt $(wc -c <"$tmp/ex.jsonl") ]]; then
    pass "a preference run from an imported BPE model, eval and sample" "$(cat "$tmp/hfs.err")"
else
    fail "a preference run from an imported BPE model, eval and sample" "$(tail -n 2 "$tmp"/hf*.log "$tmp/hfs.err" | tr '\n' ' ')"
fi
expect_error "an imported model of another tokenizer is refused" 2 \
    "hfdir: the model reads the ids of tokenizer bpe512-.*, but .*b.h5 was tokenized with fspo-byte264-v1" -- \
    "$FSPO" train "$tmp/cfg.yaml" --set data.path="$tmp/b.h5" --set model.vocab=512 --set train.run_dir="$tmp/z" \
    --set train.init_from="$HF"
"$FSPO" model strip "$POL" -o "$tmp/stripped.h5" >/dev/null && "$FSPO" tokenizer export "$tmp/stripped.h5" -o "$tmp/strip.json" &&
    cmp -s "$tmp/strip.json" "$tmp/tok.json" && pass "fspo model strip keeps the tokenizer" "" ||
    fail "fspo model strip keeps the tokenizer" "differs or missing"
# a byte model's export holds the byte tokenizer as a BPE without merges: read back, it is the byte tokenizer
"$FSPO" train "$tmp/cfg.yaml" --set data.path="$tmp/b.h5" --set model.vocab=264 --set train.run_dir="$tmp/bytes" >/dev/null 2>&1 &&
    "$FSPO" export "$tmp/bytes/ckpt_3.h5" -o "$tmp/hfbytes" >/dev/null &&
    "$FSPO" train "$tmp/cfg.yaml" --set data.path="$tmp/b.h5" --set model.vocab=264 --set train.run_dir="$tmp/bytes2" \
        --set train.init_from="$tmp/hfbytes" >/dev/null 2>&1 &&
    pass "an exported byte model imports with byte data" "its tokenizer.json is read as $("$FSPO" inspect "$tmp/b.h5" | sed -n 's/.*tokenizer \([^ ]*\) .*/\1/p')" ||
    fail "an exported byte model imports with byte data" "train, export or init_from failed"

# ---- tokenizer.json files ----
$PY - "$tmp/tok.json" "$tmp/nospecial.json" <<'PYEOF'
import json, sys
j = json.load(open(sys.argv[1]))
j["added_tokens"] = [a for a in j["added_tokens"] if a["content"] != "<|task|>"]
json.dump(j, open(sys.argv[2], "w"))
PYEOF
expect_error "a tokenizer.json without fspo's structure tokens is refused" 2 \
    "nospecial.json: the tokenizer has no special added token '<\|task\|>'" -- \
    "$FSPO" prep "$tmp/u.jsonl" -o "$tmp/z.h5" --tokenizer "$tmp/nospecial.json"
expect_error "bpe:V below 264" 2 "--tokenizer bpe:100: V must be an integer in \[264," -- \
    "$FSPO" prep "$tmp/u.jsonl" -o "$tmp/z.h5" --tokenizer bpe:100
[[ ! -e $tmp/z.h5 ]] && pass "nothing written on a refused tokenizer" "" || fail "nothing written on a refused tokenizer" "z.h5 exists"

# ---- other field names: FSPO's response_x / response_y / label shape ----
$PY - "$tmp/u.jsonl" "$tmp/fspo_shape.jsonl" "$tmp/keys.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
with open(sys.argv[2], "w") as f, open(sys.argv[3], "w") as g:
    for i, r in enumerate(rows):
        first = i % 3 != 0   # label 1: response_x preferred; 0: response_y; every form of the label
        x, y = (r["chosen"], r["rejected"]) if first else (r["rejected"], r["chosen"])
        label = [first, int(first), "response_x" if first else "response_y"][i % 3 if first else (i // 3) % 3]
        keep = {k: r[k] for k in ("split", "user_description") if k in r}
        f.write(json.dumps({"scorer_level": r["user_id"], "prompt": r["prompt"], "response_x": x,
                            "response_y": y, "label": label, **keep}) + "\n")
        g.write(json.dumps({"who": r["user_id"], "question": r["prompt"], "good": r["chosen"], "bad": r["rejected"],
                            **keep}) + "\n")
PYEOF
sum() { "$FSPO" inspect "$1" | sed -n 's/.*content checksum \([0-9a-f]*\).*/\1/p'; }
"${P[@]}" "$tmp/fspo_shape.jsonl" -o "$tmp/f.h5" --tokenizer bpe:512 --user-key scorer_level --chosen-key response_x \
    --rejected-key response_y --label-key label --strict --quiet &&
    "${P[@]}" "$tmp/keys.jsonl" -o "$tmp/k.h5" --tokenizer bpe:512 --user-key who --prompt-key question \
        --chosen-key good --rejected-key bad --strict --quiet &&
    [[ $(sum "$tmp/f.h5") == "$(sum "$tmp/d.h5")" && $(sum "$tmp/k.h5") == "$(sum "$tmp/d.h5")" ]] &&
    pass "--label-key (response_x/response_y/label) and renamed keys give the same dataset" "checksum $(sum "$tmp/d.h5")" ||
    fail "renamed keys give the same dataset" "$(sum "$tmp/f.h5") / $(sum "$tmp/k.h5") vs $(sum "$tmp/d.h5")"
printf '%s\n' '{"scorer_level": "a", "prompt": "p", "response_x": "x", "response_y": "y", "label": 2}' >"$tmp/badlabel.jsonl"
expect_error "--label-key: a label that names neither response" 2 \
    "badlabel.jsonl:1: field 'label' is not 1/true/'response_x' \(the first response preferred\) or 0/false/'response_y'" -- \
    "$FSPO" prep "$tmp/badlabel.jsonl" -o "$tmp/z.h5" --strict --user-key scorer_level --chosen-key response_x \
    --rejected-key response_y --label-key label
expect_error "a renamed key missing from a row is named" 2 "keys.jsonl:1: missing field 'prompt'" -- \
    "$FSPO" prep "$tmp/keys.jsonl" -o "$tmp/z.h5" --strict --user-key who --chosen-key good --rejected-key bad

# ---- the dataset's ids against Hugging Face's on the same texts ----
oracle_ready "$tmp" || exit 0
hf_equal "dataset ids (bpe:512 learned by prep) equal Hugging Face's" "$tmp/d.h5" "$tmp/tok.json" "$tmp/u.jsonl"
# a tokenizer Hugging Face trained, its structure tokens added after its vocabulary (not at 256..263)
$PY -c "
import json, sys
for l in open('$tmp/u.jsonl'):
    r = json.loads(l)
    print(r['prompt']); print(r['chosen']); print(r['rejected'])" >"$tmp/corpus.txt"
"${ORACLE[@]}" train "$tmp/corpus.txt" "$tmp/hf_raw.json" >/dev/null 2>"$tmp/hftrain.err" || fail "oracle trains a tokenizer" "$(cat "$tmp/hftrain.err")"
# Hugging Face's trainer keeps only the bytes it saw: such a file would drop the others
expect_error "a tokenizer.json that cannot encode every byte is refused" 2 \
    "hf_raw.json: the tokenizer cannot encode byte 0x[0-9a-f]{2} \(its byte-level character is not in model.vocab\)" -- \
    "$FSPO" prep "$tmp/u.jsonl" -o "$tmp/z.h5" --tokenizer "$tmp/hf_raw.json"
# with the missing byte characters added to its vocabulary (added tokens move up), it is accepted
$PY - "$tmp/hf_raw.json" "$tmp/hf.json" <<'PYEOF'
import json, sys
j = json.load(open(sys.argv[1]))
vocab = j["model"]["vocab"]
bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(range(ord("\xae"), ord("\xff") + 1))
cs, n = bs[:], 0
for b in range(256):
    if b not in bs:
        bs.append(b), cs.append(256 + n)
        n += 1
missing = [chr(c) for c in cs if chr(c) not in vocab]
base = len(vocab)
for k, c in enumerate(missing):
    vocab[c] = base + k
for a in j["added_tokens"]:
    if a["id"] >= base:
        a["id"] += len(missing)
json.dump(j, open(sys.argv[2], "w"), ensure_ascii=False)
PYEOF
if "${P[@]}" "$tmp/u.jsonl" -o "$tmp/h.h5" --tokenizer "$tmp/hf.json" >"$tmp/hprep.out" 2>&1; then
    V=$(sed -n 's/.*model.vocab \([0-9]*\).*/\1/p' "$tmp/hprep.out")
    eos=$($PY -c "import json; print([a['id'] for a in json.load(open('$tmp/hf.json'))['added_tokens'] if a['content'] == '<|eos|>'][0])")
    hf_equal "dataset ids (a tokenizer Hugging Face trained, <|eos|> at id $eos) equal Hugging Face's" "$tmp/h.h5" "$tmp/hf.json" \
        "$tmp/u.jsonl"
    "$FSPO" train "$tmp/cfg.yaml" --set data.path="$tmp/h.h5" --set model.vocab="$V" --set train.run_dir="$tmp/h" >"$tmp/h.log" 2>&1 &&
        "$FSPO" sample --ckpt "$tmp/h/ckpt_3.h5" --examples "$tmp/ex.jsonl" --prompt "Hi" --max-tokens 8 >/dev/null 2>"$tmp/hs.err" &&
        pass "train and sample with structure tokens at other ids" "vocab $V, <|eos|> = $eos; $(cat "$tmp/hs.err")" ||
        fail "train and sample with structure tokens at other ids" "$(tail -n 2 "$tmp/h.log" "$tmp/hs.err" | tr '\n' ' ')"
else
    fail "prep --tokenizer with Hugging Face's own file" "$(cat "$tmp/hprep.out")"
fi
