#!/usr/bin/env bash
# The quick demo end to end (synth, prep, SFT, FSPO and pooled preference
# stages under mpirun -np 2, eval, plots), then `fspo sample` on its
# checkpoint: determinism for a seed, and clear refusals of bad input.
cd "$(dirname "$0")/.." && source tests/lib.sh
tmp=$(mktemp -d /tmp/fspo-eval.XXXXXX) && trap 'rm -rf "$tmp"' EXIT
export FSPO

# ---- the demo, shrunk ----
t0=$SECONDS
if FSPO_DEMO_QUICK=1 FSPO_DEMO_DIR="$tmp/demo" bash scripts/demo.sh >"$tmp/demo.log" 2>&1; then
    pass "quick demo runs end to end" "$((SECONDS - t0)) s"
else
    fail "quick demo runs end to end" "$(tail -n 5 "$tmp/demo.log" | tr '\n' ' ')"
    exit 1
fi
[[ $((SECONDS - t0)) -le 150 ]] && pass "quick demo is quick" "$((SECONDS - t0)) s (limit 150)" ||
    fail "quick demo is quick" "$((SECONDS - t0)) s (limit 150)"
grep -q '^\[demo 7/7 ' "$tmp/demo.log" && grep -qE '^ +N users +model' "$tmp/demo.log" &&
    pass "demo prints progress and the table" "$(grep -c '^\[demo ' "$tmp/demo.log") stage lines" ||
    fail "demo prints progress and the table" "$(head -c 300 "$tmp/demo.log")"

# the JSON: every N, every method, numbers that make sense by construction
out=$(/usr/bin/python3 - "$tmp/demo/eval.json" <<'PY' 2>&1
import json, sys
r = json.load(open(sys.argv[1]))
acc = r["accuracy"]
assert [a["n"] for a in acc] == [0, 1, 2, 4], [a["n"] for a in acc]
for a in acc:
    for m in ("model", "pooled", "linear", "bayes"):
        c = a[m]
        assert c is not None, (a["n"], m)
        assert 0 <= c["lo"] <= c["mean"] <= c["hi"] <= 1, (a["n"], m, c)
# no context, no data: the linear baseline is a coin flip
assert acc[0]["linear"] == {"mean": 0.5, "lo": 0.5, "hi": 0.5}, acc[0]["linear"]
# labels follow the true reward (synth noise 0.1): the oracle is nearly perfect
assert min(a["bayes"]["mean"] for a in acc) >= 0.9, [a["bayes"] for a in acc]
# the linear baseline learns from its context
assert acc[3]["linear"]["mean"] > 0.6, acc[3]["linear"]
for k in ("win_rate_sft", "win_rate_pooled"):
    w = r[k]
    assert w and 0 <= w["win"]["lo"] <= w["win"]["mean"] <= w["win"]["hi"] <= 1 and w["samples"] > 0, (k, w)
print(f"{r['users']} users; linear N=4 {acc[3]['linear']['mean']:.3f}, bayes {acc[0]['bayes']['mean']:.3f}, "
      f"model N=0..4 " + " ".join(f"{a['model']['mean']:.3f}" for a in acc))
PY
) && pass "eval JSON: every N and method, oracle columns as constructed" "$out" ||
    fail "eval JSON: every N and method, oracle columns as constructed" "$out"
for p in accuracy_vs_n training_curves; do
    f=$tmp/demo/plots/$p.png
    [[ -s $f ]] && [[ $(head -c 4 "$f" | od -An -c | tr -d ' ') == "211PNG" ]] && pass "plot $p.png" "$(stat -c %s "$f") bytes" ||
        fail "plot $p.png" "missing or not a PNG"
done

# ---- fspo sample ----
ckpt=$(ls -v "$tmp"/demo/pref/ckpt_*.h5 | tail -n 1)
head -n 3 "$tmp/demo/users.jsonl" >"$tmp/user.jsonl"
prompt="Write a quick review of The Silent Empire."
s() { "$FSPO" sample --ckpt "$ckpt" --examples "$tmp/user.jsonl" --prompt "$prompt" --temperature 1 --top-p 1 --max-tokens 40 "$@" 2>"$tmp/sample.err"; }
a=$(s --seed 3) && b=$(s --seed 3) && c=$(s --seed 4)
[[ -n $a && $a == "$b" ]] && pass "sample: same seed, same text" "$(grep -o '[0-9]* tokens/s' "$tmp/sample.err")" ||
    fail "sample: same seed, same text" "'$a' vs '$b'"
[[ $a != "$c" ]] && pass "sample: another seed, another text" "${#a} vs ${#c} bytes" ||
    fail "sample: another seed, another text" "both '$a'"
grep -qE 'sample: 3 few-shot pair\(s\), [0-9]+ prompt tokens, [0-9]+ generated .* tokens/s' "$tmp/sample.err" &&
    pass "sample: reports tokens/s on stderr" "$(cat "$tmp/sample.err")" || fail "sample: reports tokens/s on stderr" "$(cat "$tmp/sample.err")"

expect_error "sample: missing checkpoint" 2 "nope.h5: cannot open the checkpoint" -- \
    "$FSPO" sample --ckpt "$tmp/nope.h5" --examples "$tmp/user.jsonl" --prompt hi
printf '{"user_id": "u", "prompt": "p", "chosen": "c", "rejected": "r"}\n{"user_id": "u", "prompt": \n' >"$tmp/bad.jsonl"
expect_error "sample: malformed JSONL names file and line" 2 "bad.jsonl:2: malformed JSON" -- \
    "$FSPO" sample --ckpt "$ckpt" --examples "$tmp/bad.jsonl" --prompt hi
printf '{"user_id": "u", "prompt": "p", "chosen": "c"}\n' >"$tmp/field.jsonl"
expect_error "sample: a row without 'rejected'" 2 "field.jsonl:1: missing field 'rejected'" -- \
    "$FSPO" sample --ckpt "$ckpt" --examples "$tmp/field.jsonl" --prompt hi
long=$(head -c 2000 /dev/zero | tr '\0' 'x')
expect_error "sample: prompt longer than the context" 2 "is [0-9]+ tokens; the model's context \(model.max_seq\) is 1536" -- \
    "$FSPO" sample --ckpt "$ckpt" --examples "$tmp/user.jsonl" --prompt "$long"
expect_error "sample: missing --prompt" 2 "required" -- "$FSPO" sample --ckpt "$ckpt" --examples "$tmp/user.jsonl"
expect_error "eval: missing --ckpt" 2 "usage: fspo eval" -- "$FSPO" eval configs/demo.yaml
expect_error "eval: missing checkpoint" 2 "nope.h5: cannot open the checkpoint" -- \
    "$FSPO" eval configs/demo.yaml --ckpt "$tmp/nope.h5" --set data.path="$tmp/demo/data.h5" --split test --quiet
