#!/usr/bin/env bash
# `fspo tokenizer` end to end, and the byte-level BPE against Hugging Face
# `tokenizers` itself (the official Node.js binding, installed into
# tests/node/ from its package-lock.json when missing) as the oracle:
#   (a) a tokenizer.json learned by fspo, loaded by Hugging Face, gives the
#       same ids on synthetic and adversarial texts, and decodes them back;
#   (b) a tokenizer.json trained by Hugging Face's own BPE trainer, loaded by
#       fspo, gives the same ids;
#   plus both with model.ignore_merges, merges as pairs and as "a b" strings,
#   and the pre-tokenizer's pieces of every code point of Unicode 14.
# Malformed and unsupported tokenizer.json files must fail cleanly (exit 2,
# the file and the key named).
cd "$(dirname "$0")/.." && source tests/lib.sh
PY=/usr/bin/python3
tmp=$(mktemp -d) && trap 'rm -rf "$tmp"' EXIT
T="$FSPO tokenizer"

# ---- the CLI ----
"$FSPO" synth -o "$tmp/u.jsonl" --users 60 --minimal-pairs --attrs bullets,emoji,enthusiastic --active 1 --quiet
$PY - "$tmp/u.jsonl" "$tmp/synth.txt" <<'PYEOF'
import json, sys
with open(sys.argv[1]) as f, open(sys.argv[2], "w") as out:
    for line in f:
        r = json.loads(line)
        out.write(r["prompt"] + "\n" + r["chosen"] + "\n" + r["rejected"] + "\n")
PYEOF
$T train "$tmp/u.jsonl" --vocab 500 -o "$tmp/tok.json" 2>"$tmp/train.err"; rc=$?
if [[ $rc -eq 0 && -s $tmp/tok.json ]] && grep -q "MB/s of CPU time" "$tmp/train.err"; then
    pass "train on preference JSONL" "$(tr '\n' '|' <"$tmp/train.err")"
else
    fail "train on preference JSONL" "exit $rc: $(cat "$tmp/train.err")"
fi
$T train "$tmp/synth.txt" --vocab 600 -o "$tmp/t1.json" --quiet && tac "$tmp/synth.txt" >"$tmp/rev.txt" &&
    $T train "$tmp/rev.txt" --vocab 600 -o "$tmp/t2.json" --quiet && cmp -s "$tmp/t1.json" "$tmp/t2.json" &&
    pass "train: the same texts in reverse order give the same file" "$(wc -c <"$tmp/t1.json") bytes" ||
    fail "train: order independence" "the files differ"
$PY -c "import sys; sys.stdout.buffer.write(bytes(range(256)) + bytes((i * 7919) % 256 for i in range(5000)) +
    '<|bos|>é🎬 it\'s  <|eos|>'.encode())" >"$tmp/bytes.bin"
$T encode "$tmp/tok.json" - <"$tmp/bytes.bin" >"$tmp/bytes.ids" && $T decode "$tmp/tok.json" - <"$tmp/bytes.ids" >"$tmp/back.bin" &&
    cmp -s "$tmp/bytes.bin" "$tmp/back.bin" &&
    pass "encode | decode round-trips any bytes" "$(wc -c <"$tmp/bytes.bin") bytes, $(wc -w <"$tmp/bytes.ids") ids" ||
    fail "encode | decode round-trip" "$(cmp "$tmp/bytes.bin" "$tmp/back.bin" 2>&1)"
ids=$($T encode "$tmp/tok.json" '<|bos|>Great!<|eos|>')
[[ $ids == "256 "*" 257" ]] && out=$($T decode "$tmp/tok.json" --skip-special $ids) && [[ $out == "Great!" ]] &&
    pass "special tokens: <|bos|> 256 and <|eos|> 257 in text, --skip-special" "$ids" ||
    fail "special tokens" "ids '$ids', decoded '$out'"
out=$($T split "Hello  world's"$'\n') && [[ $out == $'Hello\nĠ\nĠworld\n\'s\nĊ' ]] &&
    pass "split shows pieces in byte-level characters" "$(tr '\n' '|' <<<"$out")" || fail "split" "$out"
out=$($T stats "$tmp/tok.json" "$tmp/u.jsonl") && [[ $out == *"answer"*"bytes/token"* || $out == *"bytes/token"*"answer"* ]] &&
    pass "stats: tokens per text against bytes" "$(tr '\n' '|' <<<"$out")" || fail "stats" "$out"
expect_error "train: vocabulary too small" 2 "--vocab: 100 is outside \[264," -- $T train "$tmp/synth.txt" --vocab 100 -o "$tmp/x.json"
expect_error "decode: id out of range" 2 "id 500 is not below 500" -- $T decode "$tmp/tok.json" 5 500
expect_error "unknown subcommand" 2 "unknown subcommand 'frobnicate'" -- $T frobnicate

# ---- malformed and unsupported tokenizer.json: exit 2, file and key named ----
$PY - "$tmp/tok.json" "$tmp" <<'PYEOF'
import copy, json, sys
src, d = sys.argv[1], sys.argv[2]
base = json.load(open(src))
def variant(name, edit):
    j = copy.deepcopy(base)
    edit(j)
    json.dump(j, open(f"{d}/bad_{name}.json", "w"))
def setp(*path_value):
    *path, value = path_value
    def edit(j):
        o = j
        for k in path[:-1]:
            o = o[k]
        o[path[-1]] = value
    return edit
m = base["model"]
merges = m["merges"]
first = {v: k for k, v in m["vocab"].items()}
variant("wordpiece", setp("model", "type", "WordPiece"))
variant("nfc", setp("normalizer", {"type": "NFC"}))
variant("metaspace", setp("pre_tokenizer", {"type": "Metaspace", "replacement": "_"}))
variant("prefix", setp("pre_tokenizer", "add_prefix_space", True))
variant("noregex", setp("pre_tokenizer", "use_regex", False))
variant("nodecoder", setp("decoder", None))
variant("template", setp("post_processor", {"type": "TemplateProcessing", "single": []}))
variant("truncation", setp("truncation", {"max_length": 8}))
variant("unk", setp("model", "unk_token", "<unk>"))
variant("fallback", setp("model", "byte_fallback", True))
variant("dropout", setp("model", "dropout", 0.1))
variant("version", setp("version", "2.0"))
variant("unknownmerge", lambda j: j["model"]["merges"].__setitem__(5, "\u0120 zzzz"))
variant("threeparts", lambda j: j["model"]["merges"].__setitem__(7, "a b c"))
variant("mixedmerges", lambda j: j["model"]["merges"].__setitem__(3, ["a", "b"]))
variant("dupid", setp("model", "vocab", "a", m["vocab"]["b"]))
variant("bigid", setp("model", "vocab", "a", 99999))
variant("negid", setp("model", "vocab", "a", -3))
variant("strid", setp("model", "vocab", "a", "97"))
variant("addedid", setp("added_tokens", 0, "id", 5))
variant("lstrip", setp("added_tokens", 2, "lstrip", True))
variant("novocab", lambda j: j["model"].pop("vocab"))
open(f"{d}/bad_notjson.json", "w").write("{\"version\": \"1.0\", \"model\": {\"type\": \"BPE\",")
open(f"{d}/bad_array.json", "w").write("[1, 2]")
open(f"{d}/bad_dupkey.json", "w").write(open(src).read().replace('"padding": null', '"padding": null, "padding": null'))
open(f"{d}/bad_truncated.json", "wb").write(open(src, "rb").read()[:3000])
PYEOF
B="$tmp/bad"
bad() { expect_error "refused: $1" 2 "$2" -- $T encode "$3" hi; }
bad "model type" "$B"_wordpiece.json": model type 'WordPiece' is not supported \(only BPE\)" "$B"_wordpiece.json
bad "a normalizer" "$B"_nfc.json": normalizer type 'NFC' is not supported" "$B"_nfc.json
bad "another pre-tokenizer" "pre_tokenizer type 'Metaspace' is not supported" "$B"_metaspace.json
bad "add_prefix_space" "pre_tokenizer.add_prefix_space true is not supported" "$B"_prefix.json
bad "use_regex false" "pre_tokenizer.use_regex false is not supported" "$B"_noregex.json
bad "no decoder" "decoder is missing or null" "$B"_nodecoder.json
bad "a post-processor that adds tokens" "post_processor type 'TemplateProcessing' is not supported" "$B"_template.json
bad "truncation" "truncation is not supported" "$B"_truncation.json
bad "an unk token" "model.unk_token is not supported" "$B"_unk.json
bad "byte_fallback" "model.byte_fallback true is not supported" "$B"_fallback.json
bad "dropout" "model.dropout is not supported" "$B"_dropout.json
bad "another version" "version is not \"1.0\"" "$B"_version.json
bad "a merge of an unknown token" "bad_unknownmerge.json: model.merges\[5\]: 'zzzz' is not in the vocabulary" "$B"_unknownmerge.json
bad "a merge of three parts" "model.merges\[7\]: 'a b c' is not two tokens separated by one space" "$B"_threeparts.json
bad "merges in two formats" "model.merges\[3\] is not a string like merges\[0\]" "$B"_mixedmerges.json
bad "a duplicate id" "model.vocab: '(a|b)' and '(a|b)' both have id 98" "$B"_dupid.json
bad "an id out of range" "model.vocab: 'a' has id 99999, outside 0..499" "$B"_bigid.json
bad "a negative id" "model.vocab: 'a' has id -3, outside" "$B"_negid.json
bad "a string id" "model.vocab: 'a' has an id that is not an integer" "$B"_strid.json
bad "an added token's id" "added_tokens\[0\]: '<\|bos\|>' has id 5, but Hugging Face numbers it 256" "$B"_addedid.json
bad "lstrip" "added_tokens\[2\].lstrip true is not supported" "$B"_lstrip.json
bad "no vocabulary" "model.vocab is missing" "$B"_novocab.json
bad "malformed JSON" "bad_notjson.json:1:[0-9]+: malformed JSON" "$B"_notjson.json
bad "a truncated file" "bad_truncated.json:[0-9]+:[0-9]+: malformed JSON" "$B"_truncated.json
bad "an array" "bad_array.json: not a JSON object" "$B"_array.json
bad "a duplicate key" "malformed JSON: duplicate object key" "$B"_dupkey.json
bad "a missing file" "nothere.json: cannot open: No such file" "$tmp/nothere.json"

# ---- the oracle: Hugging Face tokenizers (Node.js binding) ----
oracle_ready "$tmp" || exit 0
"${ORACLE[@]}" texts "$tmp/texts"
texts=("$tmp"/texts/*.txt)
files=()
for f in "${texts[@]}"; do files+=(--file "$f"); done

# compare NAME TOK.json: Hugging Face's ids against fspo's on every text
compare() {
    local name=$1 tok=$2
    if ! "${ORACLE[@]}" encode "$tok" "${texts[@]}" >"$tmp/hf.ids" 2>"$tmp/hf.err"; then
        fail "$name" "Hugging Face refused the file: $(head -c 500 "$tmp/hf.err")"
        return
    fi
    $T encode "$tok" "${files[@]}" >"$tmp/fspo.ids"
    if cmp -s "$tmp/hf.ids" "$tmp/fspo.ids"; then
        pass "$name" "${#texts[@]} texts, $(wc -w <"$tmp/hf.ids") ids equal"
    else
        local line
        line=$(cmp "$tmp/hf.ids" "$tmp/fspo.ids" | sed -n 's/.* line \([0-9]*\).*/\1/p')
        fail "$name" "text ${texts[$((line - 1))]##*/}: Hugging Face $(sed -n "${line}p" "$tmp/hf.ids" | head -c 300) | fspo $(sed -n "${line}p" "$tmp/fspo.ids" | head -c 300)"
    fi
}

# (a) learned by fspo from synthetic and adversarial text
cat "$tmp/synth.txt" "${texts[@]}" >"$tmp/corpus_a.txt"
$T train "$tmp/corpus_a.txt" --vocab 1500 --min-count 1 -o "$tmp/fspo.json" --quiet
compare "(a) fspo-learned tokenizer.json: Hugging Face gives fspo's ids" "$tmp/fspo.json"
"${ORACLE[@]}" roundtrip "$tmp/fspo.json" "${texts[@]}" >"$tmp/rt.txt"
n_ok=$(grep -c '^ok$' "$tmp/rt.txt")
[[ $n_ok -eq ${#texts[@]} ]] && pass "(a) Hugging Face decodes each text back" "$n_ok texts" ||
    fail "(a) Hugging Face decode" "$(grep -v '^ok$' "$tmp/rt.txt" | head -n 3)"
bad_rt=0
while IFS= read -r line && IFS= read -r f <&3; do
    $T decode "$tmp/fspo.json" $line | cmp -s - "$f" || bad_rt=$((bad_rt + 1))
done <"$tmp/hf.ids" 3< <(printf '%s\n' "${texts[@]}")
[[ $bad_rt -eq 0 ]] && pass "(a) fspo decodes Hugging Face's ids to the original bytes" "${#texts[@]} texts" ||
    fail "(a) fspo decode" "$bad_rt texts differ"

# the same model with merges as [a, b] pairs, ignore_merges on, and whole
# pieces added to the vocabulary that the merges alone never build
$PY - "$tmp/fspo.json" "$tmp/fspo_im.json" <<'PYEOF'
import json, sys
j = json.load(open(sys.argv[1]))
m = j["model"]
bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
cs, n = bs[:], 0
for b in range(256):
    if b not in bs:
        bs.append(b); cs.append(256 + n); n += 1
byte_level = dict(zip(bs, map(chr, cs)))
extra = ["Hello", " world", " Привет", "aaaaaaaaaaaaaaaa", " tabs", "1234567890", "!!!", "世界", " résumé"]
for w in extra:
    t = "".join(byte_level[b] for b in w.encode())
    if t not in m["vocab"]:
        m["vocab"][t] = len(m["vocab"])
m["ignore_merges"] = True
m["merges"] = [s.split(" ") for s in m["merges"]]
json.dump(j, open(sys.argv[2], "w"))
PYEOF
compare "(a) with ignore_merges, merges as pairs, unreachable whole-piece tokens" "$tmp/fspo_im.json"

# (b) trained by Hugging Face on half the texts: bytes it never saw are
# missing from its vocabulary and dropped by both
cp "$tmp/synth.txt" "$tmp/corpus_b.txt"
for ((i = 0; i < ${#texts[@]}; i += 2)); do cat "${texts[$i]}" >>"$tmp/corpus_b.txt"; done
"${ORACLE[@]}" train "$tmp/corpus_b.txt" "$tmp/hf.json" >"$tmp/hftrain.err" 2>&1 ||
    fail "(b) Hugging Face trains" "$(head -c 500 "$tmp/hftrain.err")"
compare "(b) Hugging Face-trained tokenizer.json: fspo gives Hugging Face's ids" "$tmp/hf.json"
$PY -c "import json,sys; j=json.load(open(sys.argv[1])); j['model']['ignore_merges']=True; json.dump(j,open(sys.argv[2],'w'))" \
    "$tmp/hf.json" "$tmp/hf_im.json"
compare "(b) with ignore_merges" "$tmp/hf_im.json"

# every code point of Unicode 14 (sampled in the large uniform blocks) after
# a letter, between digits and between punctuation: the pieces show its class
$PY - "$tmp/probes.txt" <<'PYEOF'
import sys, unicodedata
def cls(cp):
    c = unicodedata.category(chr(cp))
    return "L" if c[0] == "L" else "N" if c in ("Nd", "Nl", "No") else "S" if c in ("Zs", "Zl", "Zp") or 9 <= cp <= 13 or cp == 0x85 else c
out = []
for cp in range(0x110000):
    c = unicodedata.category(chr(cp))
    if c in ("Cn", "Cs"):
        continue  # unassigned in Unicode 14 (Hugging Face's Oniguruma may know them) or surrogates
    edge = cp == 0 or cls(cp - 1) != cls(cp) or cp == 0x10FFFF or cls(cp + 1) != cls(cp)
    if cp < 0x20000 and c != "Co" or edge or cp % 61 == 0:
        ch = chr(cp)
        out.append("a" + ch + "a1" + ch + "1!" + ch + "!\n")
open(sys.argv[1], "w", encoding="utf-8", newline="").write("".join(out))
PYEOF
"${ORACLE[@]}" split "$tmp/probes.txt" >"$tmp/hf.pieces"
$T split - <"$tmp/probes.txt" >"$tmp/fspo.pieces"
if cmp -s "$tmp/hf.pieces" "$tmp/fspo.pieces"; then
    pass "pre-tokenizer pieces of every Unicode 14 code point equal Hugging Face's" "$(wc -l <"$tmp/probes.txt") code points, $(wc -l <"$tmp/hf.pieces") pieces"
else
    fail "pre-tokenizer pieces" "$(diff "$tmp/hf.pieces" "$tmp/fspo.pieces" | head -n 6 | tr '\n' '|')"
fi
