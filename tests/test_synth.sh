#!/usr/bin/env bash
# `fspo synth`: files a Python user can read, the ground-truth file [eval]
# needs, clear usage errors, byte-identical reruns, the benchmark ladder
# (--population: each rung = the options its help lists, r4's interpolated
# split by its rule), the scorer on the command line, and the 1500 users x
# 40 pairs timing.
cd "$(dirname "$0")/.." && source tests/lib.sh
PY=/usr/bin/python3
T=$(mktemp -d /tmp/fspo-synth.XXXXXX)
trap 'rm -rf "$T"' EXIT

out=$("$FSPO" synth --help); rc=$?
[[ $rc -eq 0 && $out == *"usage: fspo synth -o OUT.jsonl"* && $out == *"--noise T"* ]] \
    && pass "synth --help" "exit 0" || fail "synth --help" "exit $rc"

# a small dataset: both files in place, no temporary left behind
"$FSPO" synth -o "$T/a.jsonl" --users 30 --pairs-per-user 5 --seed 3 >"$T/a.log" 2>&1; rc=$?
if [[ $rc -eq 0 && -s $T/a.jsonl && -s $T/a.truth.jsonl && ! -e $T/a.jsonl.tmp && ! -e $T/a.truth.jsonl.tmp ]]; then
    pass "synth writes OUT.jsonl and OUT.truth.jsonl" "$(head -n 1 "$T/a.log")"
else
    fail "synth writes OUT.jsonl and OUT.truth.jsonl" "exit $rc: $(cat "$T/a.log")"
fi

# every line parses with Python's json module and has the five string fields
if msg=$($PY - "$T/a.jsonl" 2>&1 <<'EOF'
import json, sys, collections
keys = {"user_id", "prompt", "chosen", "rejected", "user_description"}
per_user = collections.Counter()
with open(sys.argv[1], encoding="utf-8") as f:
    for i, line in enumerate(f, 1):
        row = json.loads(line)
        assert set(row) == keys, f"line {i}: keys {sorted(row)}"
        assert all(isinstance(row[k], str) and row[k] for k in keys), f"line {i}: empty or non-string field"
        assert row["chosen"] != row["rejected"], f"line {i}: chosen == rejected"
        per_user[row["user_id"]] += 1
assert i == 150 and len(per_user) == 30 and set(per_user.values()) == {5}, (i, per_user)
print(f"{i} rows, {len(per_user)} users x 5 pairs")
EOF
); then pass "OUT.jsonl parses with python json, required keys" "$msg"; else fail "OUT.jsonl parses with python json, required keys" "$msg"; fi

# the truth file: one line per user, weights of length K, matching the data's users and descriptions
if msg=$($PY - "$T/a.jsonl" "$T/a.truth.jsonl" 2>&1 <<'EOF'
import json, sys
desc = {}
for line in open(sys.argv[1], encoding="utf-8"):
    r = json.loads(line)
    desc[r["user_id"]] = r["user_description"]
truth = [json.loads(line) for line in open(sys.argv[2], encoding="utf-8")]
assert len(truth) == len(desc) == 30, (len(truth), len(desc))
for t in truth:
    K = len(t["attr_names"])
    assert K >= 6 and len(t["weights"]) == K, t
    assert all(isinstance(w, (int, float)) for w in t["weights"]), t
    assert sum(w != 0 for w in t["weights"]) == 2, t      # default: 2 active attributes
    assert t["description"] == desc[t["user_id"]], t
    assert t["flavor"] in ("reviews", "elix", "roleplay") and isinstance(t["scorer_version"], int), t
    assert t["temperature"] == 0.1, t
print(f"{len(truth)} users, K = {K}, e.g. {truth[0]['user_id']}: {truth[0]['weights']} '{truth[0]['description']}'")
EOF
); then pass "truth file: one line per user, weights of length K" "$msg"; else fail "truth file: one line per user, weights of length K" "$msg"; fi

# same command, same bytes; another seed, other bytes
"$FSPO" synth -o "$T/b.jsonl" --users 30 --pairs-per-user 5 --seed 3 --quiet
cmp -s "$T/a.jsonl" "$T/b.jsonl" && cmp -s "$T/a.truth.jsonl" "$T/b.truth.jsonl" \
    && pass "same command twice: identical files" "cmp" || fail "same command twice: identical files" "files differ"
"$FSPO" synth -o "$T/c.jsonl" --users 30 --pairs-per-user 5 --seed 4 --quiet
! cmp -s "$T/a.jsonl" "$T/c.jsonl" && pass "another seed: different data" "--seed 3 vs 4" || fail "another seed: different data" "same bytes"

# users are reproducible individually: fewer users or pairs give a prefix of the same data
"$FSPO" synth -o "$T/d.jsonl" --users 10 --pairs-per-user 5 --seed 3 --quiet
"$FSPO" synth -o "$T/e.jsonl" --users 30 --pairs-per-user 3 --seed 3 --quiet
if cmp -s "$T/d.jsonl" <(head -n 50 "$T/a.jsonl") && cmp -s "$T/d.truth.jsonl" <(head -n 10 "$T/a.truth.jsonl") \
    && cmp -s "$T/e.jsonl" <(awk 'NR % 5 >= 1 && NR % 5 <= 3' "$T/a.jsonl"); then
    pass "users independent of --users, pairs a prefix across --pairs-per-user" "10 of 30 users; 3 of 5 pairs"
else
    fail "users independent of --users, pairs a prefix across --pairs-per-user" "outputs differ"
fi

# flavours and options
"$FSPO" synth -o "$T/f.jsonl" --users 9 --pairs-per-user 2 --flavor elix --dirichlet 0.5 --noise 0 --quiet
if $PY -c '
import json, sys
t = [json.loads(l) for l in open(sys.argv[1])]
assert len(t) == 9 and all(u["flavor"] == "elix" and u["temperature"] == 0 for u in t)
assert all(abs(sum(abs(w) for w in u["weights"]) - 2) < 1e-5 for u in t)
rows = [json.loads(l) for l in open(sys.argv[2])]
assert all("xplain" in r["prompt"] for r in rows), rows[0]
' "$T/f.truth.jsonl" "$T/f.jsonl"; then pass "--flavor elix --dirichlet 0.5 --noise 0" "dense weights sum to 2"
else fail "--flavor elix --dirichlet 0.5 --noise 0" "unexpected truth or prompts"; fi

# usage errors: exit 2 with a message that says what is wrong
expect_error "--users 0" 2 "synth: --users: 0 is outside \[1, " -- "$FSPO" synth -o "$T/x.jsonl" --users 0
expect_error "--flavor bogus" 2 "synth: --flavor: 'bogus' is not reviews, elix, roleplay or all" -- \
    "$FSPO" synth -o "$T/x.jsonl" --flavor bogus
expect_error "missing -o" 2 "synth: -o OUT.jsonl is required" -- "$FSPO" synth --users 3
expect_error "--noise negative" 2 "synth: --noise: -1 is outside \[0, " -- "$FSPO" synth -o "$T/x.jsonl" --noise -1
expect_error "--noise not a number" 2 "synth: --noise: 'abc' is not a number" -- "$FSPO" synth -o "$T/x.jsonl" --noise abc
expect_error "--noise nan" 2 "synth: --noise: 'nan' is not a number" -- "$FSPO" synth -o "$T/x.jsonl" --noise nan
expect_error "--active 8" 2 "synth: --active: 8 is outside \[1, 7\]" -- "$FSPO" synth -o "$T/x.jsonl" --active 8
expect_error "--active with --dirichlet" 2 "exclude each other" -- "$FSPO" synth -o "$T/x.jsonl" --active 2 --dirichlet 1
expect_error "unknown option" 2 "synth: unknown option '--userz'" -- "$FSPO" synth -o "$T/x.jsonl" --userz 3
expect_error "missing value" 2 "option --seed needs a value" -- "$FSPO" synth -o "$T/x.jsonl" --seed
expect_error "unwritable output" 1 "/nonexistent-dir/x.jsonl.tmp: cannot create" -- \
    "$FSPO" synth -o /nonexistent-dir/x.jsonl --users 2
[[ ! -e $T/x.jsonl && ! -e $T/x.truth.jsonl ]] && pass "failed runs leave no output" "no x.jsonl, x.truth.jsonl" \
    || fail "failed runs leave no output" "$(ls "$T")"

# --population: each rung is the options --help lists for it (the same rows; the truth file adds the
# population and, for r4, the interpolated marks, the rows the split hints); same command, same bytes
help=$("$FSPO" synth --help)
for r in r1 r2 r3 r4; do
    flags=$($PY -c '
import re, sys
m = re.search(r"^  %s  .*\n((?:      .*\n)+)" % sys.argv[1], sys.stdin.read(), re.M)
spelled = " ".join(l.strip() for l in m.group(1).splitlines())
print(spelled.split("= ", 1)[1].split(" + interpolated split")[0])' "$r" <<<"$help")
    "$FSPO" synth -o "$T/p$r.jsonl" --users 60 --pairs-per-user 6 --seed 2 --population "$r" --quiet; rc=$?
    "$FSPO" synth -o "$T/p${r}b.jsonl" --users 60 --pairs-per-user 6 --seed 2 --population "$r" --quiet
    # shellcheck disable=SC2086
    "$FSPO" synth -o "$T/s$r.jsonl" --users 60 --pairs-per-user 6 --seed 2 $flags --quiet
    if msg=$($PY - "$T/p$r" "$T/s$r" "$r" 2>&1 <<'EOF'
import json, sys
pop, spelled, r = sys.argv[1:4]
def load(path, drop=()):
    return [{k: v for k, v in json.loads(l).items() if k not in drop} for l in open(path, encoding="utf-8")]
rows_p = load(pop + ".jsonl")
assert len(rows_p) == 360 and load(pop + ".jsonl", {"split"}) == load(spelled + ".jsonl")
truth_p = load(pop + ".truth.jsonl")
assert all(t["population"] == r and ("interpolated" in t) == (r == "r4") for t in truth_p)
assert load(pop + ".truth.jsonl", {"population", "interpolated"}) == load(spelled + ".truth.jsonl")
hinted = sorted({x["user_id"] for x in rows_p if "split" in x})
assert all(x["split"] == "test" for x in rows_p if "split" in x)
assert hinted == sorted(t["user_id"] for t in truth_p if t.get("interpolated")), hinted
print(f"{len(rows_p)} rows, {len(hinted)} users with a split field")
EOF
) && [[ $rc -eq 0 ]]; then pass "--population $r = $flags" "$msg"; else fail "--population $r = $flags" "exit $rc: $msg"; fi
    cmp -s "$T/p$r.jsonl" "$T/p${r}b.jsonl" && cmp -s "$T/p$r.truth.jsonl" "$T/p${r}b.truth.jsonl" \
        && pass "--population $r twice: identical files" "cmp" || fail "--population $r twice: identical files" "differ"
done

# r4's interpolated split, by its documented rule computed here: a user is interpolated iff its two
# strongest |w| are bullets+emoji, enthusiastic+formal or positive+technical
"$FSPO" synth -o "$T/split.jsonl" --users 400 --pairs-per-user 6 --seed 9 --population r4 --quiet
if msg=$($PY - "$T/split.truth.jsonl" 2>&1 <<'EOF'
import json, sys
held = [{"bullets", "emoji"}, {"enthusiastic", "formal"}, {"positive", "technical"}]
test, train = set(), set()
n_interp = 0
for line in open(sys.argv[1], encoding="utf-8"):
    t = json.loads(line)
    w = dict(zip(t["attr_names"], t["weights"]))
    assert w["long"] == 0 and sum(abs(x) for x in w.values()) > 1.99, t
    top2 = frozenset(sorted(w, key=lambda k: -abs(w[k]))[:2])
    assert t["interpolated"] == (top2 in held), (t["user_id"], top2, t["interpolated"])
    (test if t["interpolated"] else train).add(top2)
    n_interp += t["interpolated"]
assert not (test & train) and len(test) == 3 and len(train) == 12, (test, train)
print(f"{n_interp} of 400 users interpolated; top-2 pairs: 3 test-only, 12 train-only")
EOF
); then pass "--population r4: interpolated users are exactly the held-out top-2 pairs" "$msg"
else fail "--population r4: interpolated users are exactly the held-out top-2 pairs" "$msg"; fi
# fspo prep puts the interpolated users (their rows' "split": "test") in the test split, whatever the hash
out=$("$FSPO" prep "$T/split.jsonl" -o "$T/split.h5" 2>&1); rc=$?
if [[ $rc -eq 0 && $out == *"2400 read: 2400 rows kept, 0 bad lines"* ]] && msg=$($PY - "$T/split.h5" "$T/split.truth.jsonl" 2>&1 <<'EOF'
import json, sys
import h5py
with h5py.File(sys.argv[1], "r", locking=False) as f:
    split = dict(zip(f["users/id"].asstr()[()], f["users/split"][()]))
interp = {t["user_id"] for t in map(json.loads, open(sys.argv[2], encoding="utf-8")) if t["interpolated"]}
assert interp and all(split[u] == 2 for u in interp), "an interpolated user outside the test split"
others = [s for u, s in split.items() if u not in interp]
assert 0 in others, "no training user"
print(f"{len(interp)} interpolated users, all test; {others.count(0)} of the {len(others)} others train")
EOF
); then pass "fspo prep: --population r4's interpolated users are test users" "$msg"
else fail "fspo prep: --population r4's interpolated users are test users" "exit $rc: $out $msg"; fi
expect_error "--population unknown" 2 "synth: --population: 'r5' is not a rung \(r1, r2, r3, r4\)" -- \
    "$FSPO" synth -o "$T/x.jsonl" --population r5
expect_error "--population with --noise" 2 "synth: --population r2 fixes --noise" -- \
    "$FSPO" synth -o "$T/x.jsonl" --population r2 --noise 0
expect_error "--attrs before --population" 2 "synth: --population r3 fixes --attrs" -- \
    "$FSPO" synth -o "$T/x.jsonl" --attrs emoji,bullets --population r3

# the scorer on the command line, from an argument and from stdin
text=$'- Moreover, the entropy is elegant!\n- Furthermore, the math is neat! \xf0\x9f\x92\xa1'
out=$("$FSPO" synth --score "$text"); rc=$?
[[ $rc -eq 0 && $out == *"a = [1,1,1,1,1,1,1]"* ]] && pass "synth --score TEXT" "a = [1,1,1,1,1,1,1]" \
    || fail "synth --score TEXT" "exit $rc: $out"
out=$(printf 'Tbh the plot was dull.' | "$FSPO" synth --score -); rc=$?
[[ $rc -eq 0 && $out == *"a = [0,0,0,0,0,0,0]"* ]] && pass "synth --score - (stdin)" "a = [0,0,0,0,0,0,0]" \
    || fail "synth --score - (stdin)" "exit $rc: $out"

# the FSPO-scale dataset in seconds
t0=$(date +%s.%N)
sum=$("$FSPO" synth -o "$T/big.jsonl" --users 1500 --pairs-per-user 40 --seed 1 2>&1); rc=$?
secs=$(echo "$(date +%s.%N) - $t0" | bc)
rows=$(wc -l <"$T/big.jsonl")
rate=$(sed -n 's/.* \([0-9]*\) pairs\/s$/\1/p' <<<"$sum")
if [[ $rc -eq 0 && $rows -eq 60000 && $(wc -l <"$T/big.truth.jsonl") -eq 1500 ]] && (( $(echo "$secs < 10" | bc) )); then
    pass "synth 1500 users x 40 pairs" "$rows pairs, $(stat -c %s "$T/big.jsonl") bytes in $(printf %.2f "$secs") s wall ($rate pairs/s)"
else
    fail "synth 1500 users x 40 pairs" "exit $rc, $rows rows, ${secs} s: $sum"
fi

# scripts/desc_bound.py (docs/results.md, experiment 22) on noise-free dense users: labels always pick the
# higher-reward answer, so the true weights score every query pair right (Bayes 1.000), which checks its
# reading of the answers (fspo synth --score) and of the labels; and a fit on 8 pairs beats one on 1
if $PY -c 'import h5py, numpy' 2>/dev/null; then
    "$FSPO" synth -o "$T/db.jsonl" --users 12 --pairs-per-user 20 --seed 5 --dirichlet 1 --minimal-pairs --noise 0 \
        --attrs positive,formal,enthusiastic,technical,bullets,emoji >/dev/null 2>&1 &&
        "$FSPO" prep "$T/db.jsonl" -o "$T/db.h5" --all-test --quiet >/dev/null 2>&1
    out=$(FSPO="$FSPO" $PY scripts/desc_bound.py "$T/db.h5" "$T/db.jsonl" --split test --reps 2 2>&1); rc=$?
    bayes=$(awk '$1 == "bayes" {print $9}' <<<"$out")
    lin1=$(awk '$1 == "linear" {print $3}' <<<"$out") lin8=$(awk '$1 == "linear" {print $9}' <<<"$out")
    if [[ $rc -eq 0 && $bayes == "1.000" && $out == *"test users: 12, 2 draws"* ]] && (( $(echo "$lin8 > $lin1" | bc) )); then
        pass "desc_bound.py on noise-free users" "Bayes $bayes; linear N = 1 $lin1 -> N = 8 $lin8"
    else
        fail "desc_bound.py on noise-free users" "exit $rc, Bayes '$bayes', linear '$lin1' -> '$lin8': $out"
    fi
else
    echo "SKIP: desc_bound.py: no h5py or numpy under $PY (make deps installs them)"
fi
