#!/usr/bin/env bash
# The user-description chain of thought end to end on a tiny model: SFT with
# data.user_desc=cot learns the descriptions (their NLL falls), the
# preference stage runs with them, `fspo eval` with eval.user_desc
# generated/oracle reports which mode it used and (generated) description
# accuracy in its JSON, `fspo sample --describe` shows the description, and
# data without descriptions is refused clearly.
cd "$(dirname "$0")/.." && source tests/lib.sh
tmp=$(mktemp -d /tmp/fspo-cot.XXXXXX) && trap 'rm -rf "$tmp"' EXIT
export FSPO_PEAK_GFLOPS=1 # no start-up sgemm probe

"$FSPO" synth -o "$tmp/users.jsonl" --users 80 --pairs-per-user 12 --attrs bullets,emoji --active 1 \
    --minimal-pairs --contrastive >/dev/null &&
    "$FSPO" prep "$tmp/users.jsonl" -o "$tmp/data.h5" --val-frac 0.2 --test-frac 0 >/dev/null ||
    { fail "cot: synth and prep" "see above"; exit 1; }
C=(configs/demo.yaml --set data.path="$tmp/data.h5" --set model.d_model=32 --set model.n_layers=2
   --set model.n_heads=2 --set model.max_seq=512 --set data.n_fewshot=2 --set data.n_fewshot_min=0
   --set data.n_queries=2 --set train.batch_size=8 --set mpi.threads_per_rank=1 --set checkpoint.every=1000
   --set train.log_every=1 --set optim.warmup_steps=5 --set optim.lr=3e-3 --set data.user_desc=cot
   --set eval.n_fewshot=[0,2] --set eval.max_users=8 --set eval.bootstrap=100 --set eval.max_new_tokens=16)

# ---- SFT: the description is learned ----
if "$FSPO" train "${C[@]}" --set train.run_dir="$tmp/sft" --set train.max_steps=60 >"$tmp/sft.log" 2>&1; then
    pass "cot: SFT with data.user_desc=cot runs" "$(grep -o '[0-9]* of [0-9]* training users have a description' "$tmp/sft.log")"
else
    fail "cot: SFT with data.user_desc=cot runs" "$(tail -n 3 "$tmp/sft.log" | tr '\n' ' ')"
    exit 1
fi
out=$(/usr/bin/python3 - "$tmp/sft/metrics.jsonl" <<'PY' 2>&1
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
nll = [r["desc/nll"] for r in rows]
first, last = sum(nll[:5]) / 5, sum(nll[-5:]) / 5
# from about ln(264) = 5.6 nats per token; the descriptions' few wordings are quickly learned
assert first > 4 and last < first - 2, (first, last)
print(f"desc/nll {first:.2f} -> {last:.2f} nats/token over {len(rows)} steps")
PY
) && pass "cot: the description's NLL is logged and falls" "$out" || fail "cot: the description's NLL is logged and falls" "$out"
# the step line's figure is metrics.jsonl's desc/nll of that step (once it printed another column)
shown=$(sed -nE 's/^step 60\/60 \| loss [0-9.]+ \| desc nll ([0-9.]+) .*/\1/p' "$tmp/sft.log")
logged=$(/usr/bin/python3 -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1])][-1]; print("%.3f" % r["desc/nll"])' "$tmp/sft/metrics.jsonl")
[ -n "$shown" ] && [ "$shown" = "$logged" ] &&
    pass "cot: the step line shows the description's NLL" "step 60: $shown = metrics.jsonl's $logged" ||
    fail "cot: the step line shows the description's NLL" "step line '$shown' vs metrics.jsonl '$logged': $(grep '^step 60/60' "$tmp/sft.log")"

# ---- preference stage, teacher-forced description with loss.sft_weight ----
sft=$tmp/sft/ckpt_60.h5
if "$FSPO" train "${C[@]}" --set train.run_dir="$tmp/pref" --set train.max_steps=3 --set train.stage=pref \
    --set loss.ref_ckpt="$sft" --set train.init_from="$sft" --set loss.sft_weight=0.5 >"$tmp/pref.log" 2>&1 &&
    grep -q '"desc/nll"' "$tmp/pref/metrics.jsonl"; then
    pass "cot: preference stage with the description in context" "$(grep '^step 3/3' "$tmp/pref.log")"
else
    fail "cot: preference stage with the description in context" "$(tail -n 3 "$tmp/pref.log" | tr '\n' ' ')"
fi

# ---- eval: generated and oracle ----
E=("${C[@]}" --ckpt "$tmp/pref/ckpt_3.h5" --set loss.ref_ckpt="$sft" --quiet)
if "$FSPO" eval "${E[@]}" --set eval.user_desc=generated --json "$tmp/gen.json" >"$tmp/gen.txt" 2>&1; then
    pass "cot: eval with eval.user_desc=generated runs" "$(grep -c . "$tmp/gen.txt") lines"
else
    fail "cot: eval with eval.user_desc=generated runs" "$(tail -n 3 "$tmp/gen.txt" | tr '\n' ' ')"
fi
out=$(/usr/bin/python3 - "$tmp/gen.json" <<'PY' 2>&1
import json, sys
r = json.load(open(sys.argv[1]))
assert r["user_desc"] == "generated" and r["desc_max_tokens"] >= 64, (r["user_desc"], r["desc_max_tokens"])
d = r["desc_accuracy"]
assert [x["n"] for x in d] == [0, 2], d
attrs = ["long", "positive", "formal", "enthusiastic", "technical", "bullets", "emoji"]
for x in d:
    assert x["users"] == 8, x
    for k in ("parsed", "truncated"):
        assert 0 <= x[k] <= 1, (k, x)
    for k in ["exact", "active_sign", "attributes"] + [f"per_attribute.{a}" for a in attrs]:
        c = x["per_attribute"][k.split(".")[1]] if "." in k else x[k]
        assert 0 <= c["lo"] <= c["mean"] <= c["hi"] <= 1, (x["n"], k, c)
    # attributes pools the 7 per-attribute means
    assert abs(x["attributes"]["mean"] - sum(x["per_attribute"][a]["mean"] for a in attrs) / 7) < 1e-5, x
    assert x["example"]["user"] and x["example"]["truth"].startswith(("prefers: ", "dislikes: ")), x["example"]
print(" ".join(f"N={x['n']}: parsed {x['parsed']:.2f} exact {x['exact']['mean']:.2f} active {x['active_sign']['mean']:.2f}"
               for x in d) + f"; e.g. '{d[-1]['example']['text']}' for '{d[-1]['example']['truth']}'")
PY
) && pass "cot: eval JSON has description accuracy per N, with CIs" "$out" ||
    fail "cot: eval JSON has description accuracy per N, with CIs" "$out"
grep -q 'user description in context: generated' "$tmp/gen.txt" && grep -qE '^ +N users parsed +exact' "$tmp/gen.txt" &&
    pass "cot: eval text names the mode and prints the accuracy table" "$(grep -A1 -E '^ +N users parsed' "$tmp/gen.txt" | tail -n 1)" ||
    fail "cot: eval text names the mode and prints the accuracy table" "$(head -c 400 "$tmp/gen.txt")"
if "$FSPO" eval "${E[@]}" --set eval.user_desc=oracle --json "$tmp/oracle.json" >"$tmp/oracle.txt" 2>&1 &&
    /usr/bin/python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["user_desc"] == "oracle" and r["desc_accuracy"] is None' "$tmp/oracle.json" &&
    grep -q 'user description in context: oracle' "$tmp/oracle.txt"; then
    pass "cot: eval with eval.user_desc=oracle says so" "$(grep 'user description' "$tmp/oracle.txt")"
else
    fail "cot: eval with eval.user_desc=oracle says so" "$(tail -n 3 "$tmp/oracle.txt" | tr '\n' ' ')"
fi

# ---- sample ----
grep -m 1 '"u00001"' "$tmp/users.jsonl" >"$tmp/user.jsonl"
if "$FSPO" sample --ckpt "$sft" --examples "$tmp/user.jsonl" --prompt "Write a quick review of The Silent Empire." \
    --describe --max-tokens 20 >/dev/null 2>"$tmp/sample.err" && grep -q '^sample: user description (written by the model): ' "$tmp/sample.err"; then
    pass "cot: sample --describe shows the description" "$(head -n 1 "$tmp/sample.err")"
else
    fail "cot: sample --describe shows the description" "$(cat "$tmp/sample.err")"
fi

# ---- data without descriptions ----
/usr/bin/python3 - "$tmp/users.jsonl" "$tmp/plain.jsonl" <<'PY'
import json, sys
with open(sys.argv[2], "w") as out:
    for line in open(sys.argv[1]):
        r = json.loads(line)
        r.pop("user_description", None)
        out.write(json.dumps(r) + "\n")
PY
"$FSPO" prep "$tmp/plain.jsonl" -o "$tmp/plain.h5" --val-frac 0.2 --test-frac 0 >/dev/null
expect_error "cot: training on data without descriptions is refused" 2 \
    "data.user_desc is cot, but no training user of .*plain.h5 has a description" -- \
    "$FSPO" train "${C[@]}" --set data.path="$tmp/plain.h5" --set train.run_dir="$tmp/plain" --set train.max_steps=1
expect_error "cot: an oracle eval on data without descriptions is refused" 2 \
    "eval.user_desc is oracle, but no evaluated user of .*plain.h5 has a description" -- \
    "$FSPO" eval "${E[@]}" --set data.path="$tmp/plain.h5" --set eval.user_desc=oracle --truth "$tmp/users.truth.jsonl"
expect_error "cot: an unknown eval.user_desc is a config error" 2 "eval.user_desc" -- \
    "$FSPO" eval "${E[@]}" --set eval.user_desc=maybe
