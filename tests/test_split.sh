#!/usr/bin/env bash
# Train / validation / test users end to end: `fspo prep`'s split read back
# with h5py (disjoint, deterministic, independent of line order and of other
# users, near its fractions, nested: test users ignore --val-frac), the old
# --heldout-frac and a version-1 dataset written by the old code, a row's
# "split" field and its conflicts, `fspo train` never reading a validation or
# test user, and `fspo eval --split` on each split.
cd "$(dirname "$0")/.." && source tests/lib.sh
PY=/usr/bin/python3
export OPENBLAS_NUM_THREADS=1 OMPI_MCA_ess_singleton_isolated=1
tmp=$(mktemp -d /tmp/fspo-split.XXXXXX) && trap 'rm -rf "$tmp"' EXIT
if ! "$PY" -c 'import h5py, numpy' 2>/dev/null; then
    echo "SKIP: split tests: $PY lacks h5py or numpy"
    exit 0
fi

# splits.py DATA.h5: {"user id": "train"|"validation"|"test"} as JSON, from /users/split
# (or a version-1 file's /users/heldout), read with h5py alone
cat >"$tmp/splits.py" <<'PYEOF'
import json, sys
import h5py
names = ["train", "validation", "test"]
with h5py.File(sys.argv[1], "r", locking=False) as f:
    ids = list(f["users/id"].asstr()[()])
    if f.attrs["format_version"] == 1:
        codes = [2 if h else 0 for h in f["users/heldout"][()]]
    else:
        codes = list(f["users/split"][()])
    assert len(ids) == len(set(ids)) == len(codes), "one code per user, ids unique"
    print(json.dumps({i: names[c] for i, c in zip(ids, codes)}))
PYEOF
splits() { "$PY" "$tmp/splits.py" "$1"; }

# ---- many users: one pair each, in four files ----
"$PY" - "$tmp" <<'PYEOF'
import json, random, sys
d = sys.argv[1]
rng = random.Random(4)
row = lambda u: json.dumps({"user_id": u, "prompt": "p", "chosen": "c", "rejected": "r"}) + "\n"
users = [f"user-{i}" if i % 5 else i for i in range(20000)]  # integer ids too
open(f"{d}/a.jsonl", "w").write("".join(row(u) for u in users))
shuffled = users[:]
rng.shuffle(shuffled)
open(f"{d}/b.jsonl", "w").write("".join(row(u) for u in shuffled))
open(f"{d}/c.jsonl", "w").write("".join(row(u) for u in users[::3]))                  # fewer users
open(f"{d}/d.jsonl", "w").write("".join(row(u) for u in [f"extra-{i}" for i in range(5000)] + users))  # more
PYEOF
P=(--min-pairs 1 --quiet)
ok=1
for x in a b c d; do
    "$FSPO" prep "$tmp/$x.jsonl" -o "$tmp/$x.h5" --val-frac 0.15 --test-frac 0.1 "${P[@]}" 2>"$tmp/$x.err" &&
        splits "$tmp/$x.h5" >"$tmp/$x.json" || { ok=0; echo "prep $x: $(cat "$tmp/$x.err")"; }
done
"$FSPO" prep "$tmp/a.jsonl" -o "$tmp/a2.h5" --val-frac 0.15 --test-frac 0.1 "${P[@]}" && splits "$tmp/a2.h5" >"$tmp/a2.json" || ok=0
"$FSPO" prep "$tmp/a.jsonl" -o "$tmp/s2.h5" --val-frac 0.15 --test-frac 0.1 --seed 2 "${P[@]}" && splits "$tmp/s2.h5" >"$tmp/s2.json" || ok=0
"$FSPO" prep "$tmp/a.jsonl" -o "$tmp/v0.h5" --val-frac 0 --test-frac 0.1 "${P[@]}" && splits "$tmp/v0.h5" >"$tmp/v0.json" || ok=0
"$FSPO" prep "$tmp/a.jsonl" -o "$tmp/h.h5" --heldout-frac 0.1 "${P[@]}" && splits "$tmp/h.h5" >"$tmp/h.json" || ok=0
"$FSPO" prep "$tmp/a.jsonl" -o "$tmp/u.h5" --val-frac 0 --test-frac 0.25 "${P[@]}" && splits "$tmp/u.h5" >"$tmp/u.json" || ok=0
if [[ $ok -eq 1 ]]; then
    out=$("$PY" - "$tmp" <<'PYEOF' 2>&1
import json, sys
d = sys.argv[1]
L = lambda n: json.load(open(f"{d}/{n}.json"))
a, a2, b, c, dd, s2, v0, h, u = (L(n) for n in ("a", "a2", "b", "c", "d", "s2", "v0", "h", "u"))
ids = {str(json.loads(l)["user_id"]) for l in open(f"{d}/a.jsonl")}
assert set(a) == ids and len(a) == 20000, "every input user in exactly one split"
assert a == a2, "the same run twice gives the same split"
assert a == b, "shuffled lines: the same split"
assert all(c[k] == a[k] for k in c) and len(c) == 6667, "fewer users: nobody moves"
assert all(dd[k] == a[k] for k in a) and len(dd) == 25000, "more users: nobody moves"
n = {s: sum(v == s for v in a.values()) for s in ("train", "validation", "test")}
# binomial sds: validation 50, test 42 users; 5 of them as the bound
assert abs(n["validation"] - 3000) < 250 and abs(n["test"] - 2000) < 210, n
same = sum(s2[k] == a[k] for k in a)
# an independent hash agrees with probability 0.75^2 + 0.15^2 + 0.1^2 = 0.595 (sd 69 users)
assert abs(same - 11900) < 400, same
test = {k for k in a if a[k] == "test"}
assert {k for k in v0 if v0[k] == "test"} == test, "test users do not depend on --val-frac"
assert h == v0, "--heldout-frac 0.1 = --test-frac 0.1 --val-frac 0"
assert {k for k in u if u[k] == "test"} == {k for k in a if a[k] != "train"}, "validation + test = test of V + T"
print(f"{n['train']} train / {n['validation']} validation / {n['test']} test of 20000; another seed agrees on {same}")
PYEOF
) && pass "split: disjoint, deterministic, order- and population-independent, fractions, nesting" "$out" ||
        fail "split: disjoint, deterministic, order- and population-independent, fractions, nesting" "$out"
else
    fail "split: prep of the generated files" "see above"
fi

# ---- a version-1 dataset, written by the code before the three-way split ----
V1=tests/data/dataset_v1.h5
out=$("$FSPO" inspect $V1 2>&1); rc=$?
[[ $rc -eq 0 && $out == *"v1: held-out users read as test users"* && $out == *"users 16: 10 train / 0 validation / 6 test"* &&
   $out == *"verified"* ]] && pass "inspect: a version-1 dataset" "$(sed -n 3p <<<"$out")" ||
    fail "inspect: a version-1 dataset" "exit $rc: $out"
"$FSPO" prep tests/data/dataset_v1.jsonl -o "$tmp/v1new.h5" --heldout-frac 0.3 --seed 7 --quiet &&
    out=$("$PY" - "$V1" "$tmp/v1new.h5" <<'PYEOF' 2>&1
import sys
import h5py, numpy as np
with h5py.File(sys.argv[1], "r", locking=False) as old, h5py.File(sys.argv[2], "r", locking=False) as new:
    assert old.attrs["format_version"] == 1 and new.attrs["format_version"] == 3
    assert old["tokens"].dtype == np.uint16 and new["tokens"].dtype == np.int32
    held = [i for i, h in zip(old["users/id"].asstr()[()], old["users/heldout"][()]) if h]
    test = [i for i, s in zip(new["users/id"].asstr()[()], new["users/split"][()]) if s == 2]
    assert held == test and len(held) == 6, (held, test)
    assert set(new["users/split"][()]) == {0, 2}
    assert np.array_equal(old["tokens"][()], new["tokens"][()])
print(f"held out then = test now: {held}")
PYEOF
) && pass "--heldout-frac reproduces a version-1 dataset: its held-out users are the test users" "$out" ||
    fail "--heldout-frac reproduces a version-1 dataset: its held-out users are the test users" "$out"

# ---- a row's "split" field ----
"$PY" - "$tmp" <<'PYEOF'
import json, sys
d = sys.argv[1]
def rows(u, n, split=None, long=False):
    out = []
    for p in range(n):
        r = {"user_id": u, "prompt": f"q{p} " + ("x" * 700 if long else "which one?"), "chosen": f"yes {p}",
             "rejected": f"no {p}"}
        if split and p == n // 2:  # one row is enough
            r["split"] = split
        out.append(json.dumps(r) + "\n")
    return out
# train users have short text; validation and test users a 700-byte prompt, longer than model.max_seq 256
lines = []
for i in range(10): lines += rows(f"t{i}", 12, "train")
for i in range(3): lines += rows(f"v{i}", 12, "validation", long=True)
for i in range(3): lines += rows(f"x{i}", 12, "test", long=True)
open(f"{d}/forced.jsonl", "w").write("".join(lines))
# the control: the same long users in the train split
open(f"{d}/control.jsonl", "w").write("".join(l.replace('"validation"', '"train"').replace('"test"', '"train"') for l in lines))
# for eval: short text everywhere, 3 validation and 2 test users
lines = []
for i in range(4): lines += rows(f"t{i}", 12, "train")
for i in range(3): lines += rows(f"v{i}", 12, "validation")
for i in range(2): lines += rows(f"x{i}", 12, "test")
open(f"{d}/short.jsonl", "w").write("".join(lines))
# conflicts and --all-test
open(f"{d}/conflict.jsonl", "w").write("".join(rows("a", 6, "test") + rows("b", 6) +
    [json.dumps({"user_id": "a", "prompt": "late", "chosen": "c", "rejected": "r", "split": "validation"}) + "\n"]))
PYEOF
out=$("$FSPO" prep "$tmp/forced.jsonl" -o "$tmp/forced.h5" --val-frac 0.5 --test-frac 0.3 2>&1); rc=$?
[[ $rc -eq 0 && $out == *"users   16: 10 train / 3 validation / 3 test (--val-frac 0.5, --test-frac 0.3, --seed 1234; 16 by a row's split)"* ]] &&
    [[ $(splits "$tmp/forced.h5") == '{"t0": "train", "t1": "train", "t2": "train", "t3": "train", "t4": "train", "t5": "train", "t6": "train", "t7": "train", "t8": "train", "t9": "train", "v0": "validation", "v1": "validation", "v2": "validation", "x0": "test", "x1": "test", "x2": "test"}' ]] &&
    pass "prep: a row's split field wins over the hash" "$(grep '^  users' <<<"$out")" ||
    fail "prep: a row's split field wins over the hash" "exit $rc: $out; $(splits "$tmp/forced.h5" 2>&1)"
expect_error "prep: rows of one user naming two splits" 2 \
    "conflict.jsonl:13: the rows of user 'a' disagree on 'split': 'validation' here, 'test' on line 4 \(a user belongs to one split; nothing written\)" \
    -- "$FSPO" prep "$tmp/conflict.jsonl" -o "$tmp/conflict.h5"
[[ ! -e $tmp/conflict.h5 ]] && pass "prep: a conflict writes nothing" || fail "prep: a conflict writes nothing" "conflict.h5 exists"
out=$("$FSPO" prep "$tmp/forced.jsonl" -o "$tmp/alltest.h5" --all-test 2>&1); rc=$?
[[ $rc -eq 0 && $out == *"users   16: 0 train / 0 validation / 16 test (--all-test)"* && $(splits "$tmp/alltest.h5") != *'"train"'* ]] &&
    pass "prep --all-test: every user a test user, a row's \"train\" too" "$(grep '^  users' <<<"$out")" ||
    fail "prep --all-test: every user a test user, a row's \"train\" too" "exit $rc: $out"

# ---- fspo train reads only training users ----
cat >"$tmp/cfg.yaml" <<YAML
model: {d_model: 32, n_layers: 2, n_heads: 4, max_seq: 256}
data: {path: $tmp/forced.h5, n_fewshot: 2, n_queries: 2}
train: {run_dir: $tmp/run, max_steps: 4, batch_size: 6, log_every: 1}
optim: {warmup_steps: 1}
mpi: {threads_per_rank: 1}
checkpoint: {every: 4, keep: 1}
YAML
"$FSPO" prep "$tmp/control.jsonl" -o "$tmp/control.h5" --quiet
"$FSPO" prep "$tmp/short.jsonl" -o "$tmp/short.h5" --quiet
timeout 300 nice -n 5 "$FSPO" train "$tmp/cfg.yaml" >"$tmp/train.log" 2>&1; rc=$?
timeout 300 nice -n 5 "$FSPO" train "$tmp/cfg.yaml" --set data.path="$tmp/control.h5" --set train.run_dir="$tmp/control" \
    >"$tmp/control.log" 2>&1; rc2=$?
# a drawn validation or test user (700-byte prompts, max_seq 256) would be a skipped meta-example;
# the control, with the same users in the train split, shows that such a draw is seen
if [[ $rc -eq 0 && $rc2 -eq 0 ]] && grep -q "10 training users" "$tmp/train.log" && ! grep -q "truncation" "$tmp/train.log" &&
    grep -q "16 training users" "$tmp/control.log" && grep -qE "truncation to model.max_seq: [1-9][0-9]* meta-examples skipped" "$tmp/control.log"; then
    pass "train: 24 meta-examples, none of a validation or test user" "control: $(grep -o 'truncation.*skipped' "$tmp/control.log")"
else
    fail "train: 24 meta-examples, none of a validation or test user" "exit $rc/$rc2: $(grep -E 'training users|truncation|fspo:' "$tmp/train.log" "$tmp/control.log" | head -c 600)"
fi

# ---- fspo eval on each split ----
ck=$tmp/run/ckpt_4.h5
E=(--set data.path="$tmp/short.h5" --set eval.n_fewshot=[0,1] --set eval.bootstrap=20 --set eval.max_new_tokens=2 --quiet)
for sp in validation test; do
    timeout 300 nice -n 5 "$FSPO" eval "$tmp/cfg.yaml" --ckpt "$ck" --split $sp --json "$tmp/$sp.json" "${E[@]}" >"$tmp/$sp.txt" 2>&1 ||
        echo "eval $sp: $(tail -3 "$tmp/$sp.txt")"
done
out=$("$PY" - "$tmp" <<'PYEOF' 2>&1
import json, sys
d = sys.argv[1]
v, t = (json.load(open(f"{d}/{s}.json")) for s in ("validation", "test"))
assert v["split"] == "validation" and t["split"] == "test", (v["split"], t["split"])
assert (v["heldout_users"], v["users"], t["heldout_users"], t["users"]) == (3, 3, 2, 2), (v["users"], t["users"])
assert all(r["users"] == 3 for r in v["accuracy"]) and all(r["users"] == 2 for r in t["accuracy"])
print(f"validation {v['users']} users, test {t['users']} users")
PYEOF
)
if [[ $? -eq 0 ]] && grep -q "on 3 validation users" "$tmp/validation.txt" && grep -q "on 2 test users" "$tmp/test.txt"; then
    pass "eval --split: each split's users, named in the table and the JSON" "$out"
else
    fail "eval --split: each split's users, named in the table and the JSON" "$out $(head -c 400 "$tmp/validation.txt")"
fi
timeout 300 "$FSPO" eval "$tmp/cfg.yaml" --ckpt "$ck" --set eval.split=test "${E[@]}" --split validation >"$tmp/both.txt" 2>&1 &&
    grep -q "on 3 validation users" "$tmp/both.txt" && pass "eval: --split wins over --set eval.split" ||
    fail "eval: --split wins over --set eval.split" "$(head -c 300 "$tmp/both.txt")"
expect_error "eval: the default split of a dataset without validation users" 2 \
    "eval: the dataset has no validation users .*fspo eval --split" \
    -- "$FSPO" eval "$tmp/cfg.yaml" --ckpt "$ck" "${E[@]}" --set data.path=$V1
expect_error "eval --split train is refused" 2 "eval.split: expected validation or test, got 'train'" \
    -- "$FSPO" eval "$tmp/cfg.yaml" --ckpt "$ck" --split train
