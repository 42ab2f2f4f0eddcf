#!/usr/bin/env bash
# The quick demo end to end (synth, prep, SFT, FSPO and pooled preference
# stages and a description stage under mpirun -np 2, eval, plots), then `fspo sample` on its
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
grep -q '^\[demo 10/10 ' "$tmp/demo.log" && grep -qE '^ +N users +model' "$tmp/demo.log" &&
    pass "demo prints progress and the table" "$(grep -c '^\[demo ' "$tmp/demo.log") stage lines" ||
    fail "demo prints progress and the table" "$(head -c 300 "$tmp/demo.log")"

# the self-check ran and said its verdict (quick only reports it; demo exits 1 on FAIL)
grep -qE '^    (PASS: few-shot personalization shows|FAIL: accuracy at the largest N)' "$tmp/demo.log" &&
    pass "demo self-check runs and reports" "$(grep -E '^    (PASS|FAIL):' "$tmp/demo.log")" ||
    fail "demo self-check runs and reports" "$(tail -n 8 "$tmp/demo.log" | tr '\n' ' ')"

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
# population r1: labels follow the true reward 90% of the time (6 users x 8
# queries: a binomial 0.9 lands below 0.7 with probability < 1e-3)
assert min(a["bayes"]["mean"] for a in acc) >= 0.7, [a["bayes"] for a in acc]
# the linear baseline learns from its context
assert acc[3]["linear"]["mean"] > 0.6, acc[3]["linear"]
for k in ("win_rate_sft", "win_rate_pooled"):
    w = r[k]
    assert w and 0 <= w["win"]["lo"] <= w["win"]["mean"] <= w["win"]["hi"] <= 1 and w["samples"] > 0, (k, w)
# the demo trains the anchor, so every method is scored against it, beside the ceiling
assert all(r["win_rate_anchor"][k] for k in ("policy", "pooled", "oracle")), r["win_rate_anchor"]
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

# ---- every method against a non-personalizing anchor, and the oracle's ceiling ----
# The anchor is the pooled model (trained without context, shown none): the
# pooled row then samples the very same answers as the anchor (same model,
# prompt and seed), a known answer of exactly 1/2, all ties.
D=$tmp/demo
SFT=$(ls -v "$D"/sft/ckpt_*.h5 | tail -n 1) POLICY=$(ls -v "$D"/pref/ckpt_*.h5 | tail -n 1)
POOLED=$(ls -v "$D"/pooled/ckpt_*.h5 | tail -n 1)
EV=(configs/demo.yaml --split test --truth "$D/users.truth.jsonl" --set data.path="$D/data.h5" --set model.max_seq=1024
    --set model.d_model=32 --set model.n_layers=2 --set model.n_heads=4 --set eval.max_users=6
    --set eval.bootstrap=200 --set eval.max_new_tokens=24 --quiet)
if "$FSPO" eval "${EV[@]}" --ckpt "$POLICY" --json "$tmp/anchor.json" --set eval.n_fewshot=[0,2,4] \
    --set loss.ref_ckpt="$SFT" --set eval.sft_ckpt="$SFT" --set eval.pooled_ckpt="$POOLED" \
    --set eval.anchor_ckpt="$POOLED" >"$tmp/anchor.txt" 2>&1; then
    out=$(/usr/bin/python3 - "$tmp/anchor.json" <<'PY' 2>&1
import json, sys
r = json.load(open(sys.argv[1]))
for a in r["accuracy"]:
    for m in ("model", "model_plain", "sft_plain", "pooled", "bayes"):
        assert 0 <= a[m]["lo"] <= a[m]["mean"] <= a[m]["hi"] <= 1, (a["n"], m, a[m])
    # the gap closed, recomputed from the columns it is made of
    den = a["bayes"]["mean"] - a["pooled"]["mean"]
    assert den >= 0.01 and a["gap_closed"] is not None, a
    want = (a["model"]["mean"] - a["pooled"]["mean"]) / den
    g = a["gap_closed"]
    assert abs(g["mean"] - want) < 1e-4 and g["lo"] <= g["mean"] <= g["hi"], (a["n"], g, want)
w = r["win_rate_anchor"]
rows = [w[k] for k in ("policy", "sft", "pooled", "oracle")]
assert all(x and x["baseline"] == "anchor" for x in rows), w
# every method on the same prompts against the same anchor answers
assert len({(x["samples"], x["users"], x["reward_baseline"]) for x in rows}) == 1, rows
pooled, oracle = w["pooled"], w["oracle"]
assert pooled["win"]["mean"] == 0.5 and pooled["tie_frac"] == 1, pooled
# the ideal answer is at least as good as any sample of any model
assert all(oracle["reward_policy"] >= x["reward_policy"] for x in rows), [x["reward_policy"] for x in rows]
# it never loses, so its win rate is 1 - P(tie)/2: the ceiling formula
assert abs(oracle["win"]["mean"] - (1 - oracle["tie_frac"] / 2)) < 1e-4, oracle
for x in rows[:3]:
    assert abs(x["of_ceiling"]["mean"] - x["win"]["mean"] / oracle["win"]["mean"]) < 1e-4, x
assert w["oracle_varied_attrs"] and r["win_rate_sft"]["method"] == "policy" and r["win_rate_pooled"], w
print(f"{oracle['samples']} samples: win vs anchor " + ", ".join(f"{k} {w[k]['win']['mean']:.3f}" for k in
      ("policy", "sft", "pooled", "oracle")) + f"; mean r_u oracle {oracle['reward_policy']:.2f}, anchor "
      f"{oracle['reward_baseline']:.2f}; gap closed N=4 {r['accuracy'][-1]['gap_closed']['mean']:.3f}")
PY
    ) && pass "eval with an anchor: every method and the oracle's ceiling, gap closed" "$out" ||
        fail "eval with an anchor: every method and the oracle's ceiling, gap closed" "$out"
    grep -q '^win rates vs the anchor' "$tmp/anchor.txt" && grep -qE '^ +oracle +w_u' "$tmp/anchor.txt" &&
        pass "eval table: the anchor's rows" "$(grep -c '' "$tmp/anchor.txt") lines" ||
        fail "eval table: the anchor's rows" "$(head -c 600 "$tmp/anchor.txt")"
    bash scripts/plot.sh "$tmp/anchor.json" "$tmp/aplots" >/dev/null 2>&1 && [[ -s $tmp/aplots/accuracy_vs_n.png ]] &&
        pass "plot.sh draws the JSON with the new columns" "$(stat -c %s "$tmp/aplots/accuracy_vs_n.png") bytes" ||
        fail "plot.sh draws the JSON with the new columns" "no accuracy_vs_n.png"
else
    fail "eval with an anchor: every method and the oracle's ceiling, gap closed" "$(tail -n 5 "$tmp/anchor.txt")"
fi
# The SFT model as the policy, its own SFT column from a separate model (the
# reference is another checkpoint): the two plain margins must agree exactly.
if "$FSPO" eval "${EV[@]}" --ckpt "$SFT" --json "$tmp/sft.json" --set eval.n_fewshot=[0,2] \
    --set loss.ref_ckpt="$POOLED" --set eval.sft_ckpt="$SFT" >"$tmp/sft.txt" 2>&1; then
    out=$(/usr/bin/python3 - "$tmp/sft.json" <<'PY' 2>&1
import json, sys
r = json.load(open(sys.argv[1]))
for a in r["accuracy"]:
    assert a["model_plain"] == a["sft_plain"], a
print(" ".join("N=%d: %.3f" % (a["n"], a["sft_plain"]["mean"]) for a in r["accuracy"]))
PY
    ) &&
        pass "sft_plain of the policy's own checkpoint equals its model_plain" "$out" ||
        fail "sft_plain of the policy's own checkpoint equals its model_plain" "$out"
else
    fail "sft_plain of the policy's own checkpoint equals its model_plain" "$(tail -n 5 "$tmp/sft.txt")"
fi

# mpi.threads_per_rank: the forwards on the pool's threads, the same table (without --quiet: the threads line)
EVT=()
for a in "${EV[@]}"; do [[ $a == --quiet ]] || EVT+=("$a"); done
for t in 1 2; do
    "$FSPO" eval "${EVT[@]}" --ckpt "$SFT" --json "$tmp/t$t.json" --set eval.n_fewshot=[0,2] \
        --set mpi.threads_per_rank=$t >"$tmp/t$t.txt" 2>&1
done
out=$(/usr/bin/python3 - "$tmp/t1.json" "$tmp/t2.json" <<'PY' 2>&1
import json, sys
a, b = (json.load(open(p))["accuracy"] for p in sys.argv[1:])
assert a == b, (a, b)
print(" ".join("N=%d: %.3f" % (r["n"], r["model"]["mean"]) for r in a))
PY
) && grep -q "^eval: 1 thread(s) (mpi.threads_per_rank)" "$tmp/t1.txt" && grep -q "^eval: 2 thread(s) (mpi.threads_per_rank)" "$tmp/t2.txt" &&
    pass "eval runs mpi.threads_per_rank threads, with the same accuracy table at 1 and 2" "$out" ||
    fail "eval runs mpi.threads_per_rank threads, with the same accuracy table at 1 and 2" "$out $(head -2 "$tmp/t2.txt")"

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
expect_error "sample: prompt longer than the context" 2 "is [0-9]+ tokens; the model's context \(model.max_seq\) is 1024" -- \
    "$FSPO" sample --ckpt "$ckpt" --examples "$tmp/user.jsonl" --prompt "$long"
expect_error "sample: missing --prompt" 2 "required" -- "$FSPO" sample --ckpt "$ckpt" --examples "$tmp/user.jsonl"
expect_error "eval: missing --ckpt" 2 "usage: fspo eval" -- "$FSPO" eval configs/demo.yaml
expect_error "eval: missing checkpoint" 2 "nope.h5: cannot open the checkpoint" -- \
    "$FSPO" eval configs/demo.yaml --ckpt "$tmp/nope.h5" --set data.path="$tmp/demo/data.h5" --split test --quiet

# ---- a shipped model (scripts/ship_model.sh) evaluated on users of a new seed (scripts/eval_model.sh) ----
last() { ls "$1"/ckpt_*.h5 | sort -t_ -k2 -n | tail -1; }
P=$(last "$tmp/demo/pref") R=$(last "$tmp/demo/sft") X=$(last "$tmp/demo/pooled") A=$(last "$tmp/demo/anchor")
if out=$(scripts/ship_model.sh r1 "$tmp/models/r1" --policy "$P" --ref "$R" --pooled "$X" --anchor "$A" \
        --design "the quick demo" --command "FSPO_DEMO_QUICK=1 bash scripts/demo.sh" --test "$tmp/demo/eval.json" 2>&1); then
    pass "ship_model.sh writes a model directory" "$out"
else
    fail "ship_model.sh writes a model directory" "$out"
fi
expect_error "ship_model.sh never overwrites a shipped model" 2 "models/r1: exists and is not empty" -- \
    scripts/ship_model.sh r1 "$tmp/models/r1" --policy "$P" --ref "$R" --pooled "$X" --anchor "$A" --design d --command c
"$FSPO" synth --population r1 --users 5 --pairs-per-user 14 --seed 77 -o "$tmp/new.jsonl" --quiet >/dev/null 2>&1 &&
    "$FSPO" prep "$tmp/new.jsonl" -o "$tmp/new.h5" --all-test >/dev/null 2>&1 || fail "synth + prep of new users" ""
ev=(--set eval.bootstrap=100 --set eval.max_new_tokens=8 --quiet)
scripts/eval_model.sh "$tmp/models/r1" "$tmp/new.h5" "$tmp/shipped.json" "${ev[@]}" >"$tmp/shipped.txt" 2>&1
rc=$?
# the same evaluation from the run's own (full) checkpoints must give the same numbers
"$FSPO" eval "$(dirname "$P")/config.yaml" --ckpt "$P" --split test --json "$tmp/direct.json" --set data.path="$tmp/new.h5" \
    --set loss.ref_ckpt="$R" --set eval.sft_ckpt="$R" --set eval.pooled_ckpt="$X" --set eval.anchor_ckpt="$A" \
    "${ev[@]}" >/dev/null 2>&1
out=$(/usr/bin/python3 - "$tmp/shipped.json" "$tmp/direct.json" "$tmp/models/r1/manifest.json" <<'PY' 2>&1
import json, sys
s, d, m = (json.load(open(p)) for p in sys.argv[1:4])
assert s["split"] == "test" and s["users"] == 5, (s["split"], s["users"])
assert s["accuracy"] == d["accuracy"], "accuracy differs from the full checkpoints"
assert s["win_rate_anchor"]["policy"]["win"] == d["win_rate_anchor"]["policy"]["win"]
assert set(m["models"]) == {"policy", "ref", "pooled", "anchor"} and m["models"]["policy"]["stage"] == "pref"
assert m["test"]["accuracy"]["4"]["model"]["mean"] == json.load(open(sys.argv[3].replace("models/r1/manifest.json", "demo/eval.json")))["accuracy"][3]["model"]["mean"]
print(f"5 new users, accuracy N=0..4 " + " ".join(f"{a['model']['mean']:.3f}" for a in s["accuracy"]) +
      f"; equal to the full checkpoints'; manifest {sum(x['bytes'] for x in m['models'].values())} bytes")
PY
) || rc=1
[[ $rc -eq 0 ]] && pass "eval_model.sh on a new seed's users equals eval of the full checkpoints" "$out" ||
    fail "eval_model.sh on a new seed's users equals eval of the full checkpoints" "exit $rc; $out; $(tail -3 "$tmp/shipped.txt")"
# the same model shipped with --bf16: fewer bytes, and scores like the float32 one
scripts/ship_model.sh r1 "$tmp/models/r1b" --policy "$P" --ref "$R" --pooled "$X" --anchor "$A" --bf16 \
    --design "the quick demo" --command "FSPO_DEMO_QUICK=1 bash scripts/demo.sh" >"$tmp/ship16.txt" 2>&1 &&
scripts/eval_model.sh "$tmp/models/r1b" "$tmp/new.h5" "$tmp/shipped16.json" "${ev[@]}" >>"$tmp/ship16.txt" 2>&1
rc=$?
out=$(/usr/bin/python3 - "$tmp/shipped16.json" "$tmp/shipped.json" "$tmp/models/r1b/manifest.json" "$tmp/models/r1/manifest.json" <<'PY' 2>&1
import json, sys
b, f, mb, mf = (json.load(open(p)) for p in sys.argv[1:5])
assert mb["weights"] == "bfloat16" and mf["weights"] == "float32", (mb["weights"], mf["weights"])
sb, sf = (sum(x["bytes"] for x in m["models"].values()) for m in (mb, mf))
assert 4 * sb < 3 * sf, (sb, sf)  # the quick demo model is tiny: metadata weighs as much as weights
d = [abs(x["model"]["mean"] - y["model"]["mean"]) for x, y in zip(b["accuracy"], f["accuracy"])]
assert len(d) == len(f["accuracy"]) and max(d) <= 0.1, d
print(f"{sb} vs {sf} bytes; accuracy N=0..4 " + " ".join(f"{a['model']['mean']:.3f}" for a in b["accuracy"]) +
      f" (float32: largest difference {max(d):.3f})")
PY
) || rc=1
[[ $rc -eq 0 ]] && pass "ship_model.sh --bf16: under 3/4 of the bytes (tiny model), the same accuracy within 0.1" "$out" ||
    fail "ship_model.sh --bf16: under 3/4 of the bytes (tiny model), the same accuracy within 0.1" "exit $rc; $out; $(tail -3 "$tmp/ship16.txt")"
# --eval-config: eval.yaml is that config, resolved (a COT policy is evaluated with eval.user_desc generated)
printf 'eval: {bootstrap: 123, user_desc: oracle}\n' >"$tmp/evcfg.yaml"
if out=$(scripts/ship_model.sh r1 "$tmp/models/r1c" --policy "$P" --ref "$R" --pooled "$X" --anchor "$A" \
        --design d --command c --eval-config "$tmp/evcfg.yaml" 2>&1) &&
   grep -q "^  bootstrap: 123$" "$tmp/models/r1c/eval.yaml" && grep -q "^  user_desc: oracle$" "$tmp/models/r1c/eval.yaml" &&
   grep -q "^# the config the shipped policy is evaluated with" "$tmp/models/r1c/eval.yaml"; then
    pass "ship_model.sh --eval-config writes that config, resolved, as eval.yaml" "$out"
else
    fail "ship_model.sh --eval-config writes that config, resolved, as eval.yaml" "$out; $(head -3 "$tmp/models/r1c/eval.yaml" 2>&1)"
fi
expect_error "ship_model.sh --eval-config on a bad config" 2 "ship_model.sh: --eval-config: .*nope.yaml" -- \
    scripts/ship_model.sh r1 "$tmp/models/r1d" --policy "$P" --ref "$R" --pooled "$X" --anchor "$A" --design d \
    --command c --eval-config "$tmp/nope.yaml"
expect_error "eval_model.sh on a directory that is not a shipped model" 2 "manifest.json: missing" -- \
    scripts/eval_model.sh "$tmp/demo" "$tmp/new.h5" "$tmp/x.json"
