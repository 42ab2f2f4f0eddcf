#!/usr/bin/env bash
# The shipped models (models/<rung>/, docs/results.md "Shipped models"): each
# file is the one its manifest names (sha256) and verifies; each rung's model,
# scored by scripts/eval_model.sh on 24 users of a seed nobody trained or
# chose on, reads their pairs: accuracy at the largest N its manifest
# reports (8; r1: 4) in the manifest's primary column (the implicit
# margin, or the plain one for a policy whose last stage is SFT) well above
# N = 0 and the pooled model, as its manifest claims for the test users.
cd "$(dirname "$0")/.." && source tests/lib.sh
PY=/usr/bin/python3
tmp=$(mktemp -d) && trap 'rm -rf "$tmp"' EXIT
for M in models/*/; do
    M=${M%/}
    out=$("$PY" - "$M" <<'PYEOF' 2>&1
import hashlib, json, os, sys
m = json.load(open(os.path.join(sys.argv[1], "manifest.json")))
for k, v in m["models"].items():
    got = hashlib.sha256(open(os.path.join(sys.argv[1], v["file"]), "rb").read()).hexdigest()
    assert got == v["sha256"], (k, got, v["sha256"])
print(f"{len(m['models'])} files match the manifest ({m.get('weights', 'float32')} weights)")
PYEOF
) && for f in "$M"/{policy,ref,pooled,anchor}.h5; do "$FSPO" inspect "$f" >/dev/null || exit 1; done &&
        pass "$M: the files are the manifest's and verify" "$out" || fail "$M: the files are the manifest's and verify" "$out"
done
for rung in r1 r2 r3 r4; do
    M=models/$rung
    [[ -d $M ]] || continue
    # the largest N its manifest reports (r1, make demo's model, is scored up to N = 4)
    NMAX=$("$PY" -c 'import json, sys; print(max(map(int, json.load(open(sys.argv[1]))["test"]["accuracy"])))' $M/manifest.json)
    "$FSPO" synth --population $rung --users 24 --seed 77 -o "$tmp/$rung.jsonl" --quiet &&
        "$FSPO" prep "$tmp/$rung.jsonl" -o "$tmp/$rung.h5" --all-test --tokenizer $M/policy.h5 --quiet ||
        { fail "$M: synth + prep of seed-77 users" ""; continue; }
    OPENBLAS_NUM_THREADS=1 scripts/eval_model.sh $M "$tmp/$rung.h5" "$tmp/$rung.json" --quiet --set "eval.n_fewshot=[0,$NMAX]" \
        --set eval.bootstrap=200 --set eval.max_new_tokens=1 >"$tmp/$rung.txt" 2>&1 &&
    out=$("$PY" - "$tmp/$rung.json" "$M/manifest.json" "$NMAX" <<'PYEOF' 2>&1
import json, sys
d = json.load(open(sys.argv[1]))
col = json.load(open(sys.argv[2])).get("primary", "model")
acc = {r["n"]: r for r in d["accuracy"]}
n = int(sys.argv[3])
a0, a8, pooled = acc[0][col]["mean"], acc[n][col]["mean"], acc[n]["pooled"]["mean"]
assert d["split"] == "test" and d["users"] == 24, (d["split"], d["users"])
assert a8 >= a0 + 0.1 and a8 >= pooled + 0.1, (col, a0, a8, pooled)
print(f"24 new users ({col}): N = 0 {a0:.3f}, N = {n} {a8:.3f}, pooled {pooled:.3f}")
PYEOF
    ) && pass "$M on seed-77 users: the context lifts accuracy by over 0.1" "$out" ||
        fail "$M on seed-77 users: the context lifts accuracy by over 0.1" "$out; $(tail -3 "$tmp/$rung.txt")"
done
