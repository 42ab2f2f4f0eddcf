#!/usr/bin/env bash
# `fspo prep` end to end: the exact per-line report on a 100-line fixture
# with every bad-line kind, --strict, flag errors, and round trips
# JSONL -> HDF5 -> text decoded by h5py (independent of our C) that must
# equal the kept input rows, with a split that ignores line order.
cd "$(dirname "$0")/.." && source tests/lib.sh
PY=/usr/bin/python3
tmp=$(mktemp -d) && trap 'rm -rf "$tmp"' EXIT
FIX=tests/data/prep_bad.jsonl

# ---- the fixture: exact stderr, nothing on stdout with --quiet ----
"$FSPO" prep $FIX -o "$tmp/bad.h5" --max-line-bytes 512 --heldout-frac 0.3 --quiet >"$tmp/out" 2>"$tmp/err"
rc=$?
if [[ $rc -eq 0 ]] && diff -u tests/data/prep_bad.expected "$tmp/err" >"$tmp/diff" && [[ ! -s $tmp/out ]]; then
    pass "fixture: exact bad-line report" "$(grep -c "^$FIX:" "$tmp/err") lines reported, summary and warnings equal"
else
    fail "fixture: exact bad-line report" "exit $rc; $(head -c 3000 "$tmp/diff") stdout: $(head -c 300 "$tmp/out")"
fi
n_lines=$(wc -l <$FIX)
[[ $((n_lines + 1)) -eq 100 && $(tail -c 1 $FIX | od -An -c | tr -d ' ') != '\n' ]] &&
    pass "fixture: 100 lines, the last without newline" || fail "fixture: 100 lines" "$((n_lines + 1))"

# ---- counts on stdout ----
out=$("$FSPO" prep $FIX -o "$tmp/bad2.h5" --max-line-bytes 512 --heldout-frac 0.3 2>/dev/null); rc=$?
if [[ $rc -eq 0 && $out == *"users   6: 5 train / 0 validation / 1 test (--val-frac 0, --test-frac 0.3, --seed 1234; 0 by a row's split); 1 dropped with fewer than 5 pairs"* &&
      $out == *"pairs   52: 47 train / 0 validation / 5 test; per user min 5 / median 10 / max 14"* &&
      $out == *"lines   100 read: 54 rows kept, 42 bad lines skipped"* && $out == *"MB/s"* ]]; then
    pass "counts: users, split, dropped, pairs, lines" "$(tr '\n' '|' <<<"$out")"
else
    fail "counts: users, split, dropped, pairs, lines" "exit $rc: $out"
fi

# ---- h5py decoding: the dataset equals the kept rows ----
cat >"$tmp/check.py" <<'PYEOF'
"""check.py DATA.h5 IN.jsonl MIN_PAIRS [BAD_REPORT]: decodes the dataset with
h5py alone and compares it with the input's rows, minus the lines the report
names, grouped by user in first-appearance order, minus users below
MIN_PAIRS. Prints the ids of users not in the train split as JSON."""
import json, re, sys
import h5py, numpy as np

def text(tokens, span):
    o, n = (int(x) for x in span)
    t = tokens[o:o + n]
    assert (t < 256).all(), "special token inside text"
    return t.astype(np.uint8).tobytes()

def from_h5(path):
    with h5py.File(path, "r", locking=False) as f:
        assert f.attrs["format"] == "fspo-dataset"
        tok = f["tokens"][()]
        P, C, R = (f["pairs/" + k][()] for k in ("prompt", "chosen", "rejected"))
        ids = f["users/id"].asstr()[()]
        users = []
        for u, (first, count) in enumerate(f["users/pairs"][()]):
            d = f["users/description"][u]
            desc = text(tok, d) if d[1] else None
            pairs = [(text(tok, P[i]), text(tok, C[i]), text(tok, R[i])) for i in range(first, first + count)]
            users.append((ids[u], bool(f["users/split"][u]), desc, pairs))
        return users

def from_jsonl(path, min_pairs, bad):
    order, rows, desc = [], {}, {}
    with open(path, "rb") as f:
        for no, line in enumerate(f.read().split(b"\n"), 1):
            if no in bad or not line.strip(b" \t\r"):
                continue
            if no == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            r = json.loads(line)
            uid = str(r["user_id"])
            if uid not in rows:
                order.append(uid)
                rows[uid] = []
            enc = lambda s: s.encode("utf-8")
            rows[uid].append((enc(r["prompt"]), enc(r["chosen"]), enc(r["rejected"])))
            if r.get("user_description") and uid not in desc:
                desc[uid] = enc(r["user_description"])
    return [(u, desc.get(u), rows[u]) for u in order if len(rows[u]) >= min_pairs]

h5, jsonl, min_pairs = sys.argv[1], sys.argv[2], int(sys.argv[3])
bad = set()
if len(sys.argv) > 4:
    bad = {int(m.group(1)) for m in re.finditer(r"^[^\n]*\.jsonl:(\d+): ", open(sys.argv[4]).read(), re.M)}
got, want = from_h5(h5), from_jsonl(jsonl, min_pairs, bad)
assert len(got) == len(want), (len(got), len(want))
for (gid, _, gdesc, gpairs), (wid, wdesc, wpairs) in zip(got, want):
    assert gid == wid, (gid, wid)
    assert gdesc == wdesc, (gid, gdesc, wdesc)
    assert gpairs == wpairs, (gid, [p for p in zip(gpairs, wpairs) if p[0] != p[1]][:2])
print(json.dumps(sorted(u for u, held, _, _ in got if held)))
PYEOF
if ! "$PY" -c 'import h5py, numpy' 2>/dev/null; then
    echo "SKIP: h5py round trips: $PY lacks h5py or numpy"
else
    if held=$("$PY" "$tmp/check.py" "$tmp/bad.h5" $FIX 5 tests/data/prep_bad.expected 2>&1); then
        pass "fixture round trip (h5py)" "kept rows of 6 users equal the input; held out: $held"
    else
        fail "fixture round trip (h5py)" "$held"
    fi

    # generated users with hostile text: non-BMP, \u0000, controls, quotes, integer ids
    "$PY" - "$tmp" <<'PYEOF'
import json, random, sys
d = sys.argv[1]
rng = random.Random(11)
alphabet = ["a", "b", " ", "\n", "\t", "\"", "\\", "/", "\u0000", "\u0001", "\u007f", "é", "ß", "中", "\u2028",
            "\ufeff", "😀", "𝄞", "\U0010fffd", "}", "{"]
def text(i):
    return f"{i}:" + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
rows, users = [], []
for u in range(240):
    uid = u * 7 if u % 3 == 0 else f"user-{u}-ü😀"
    users.append(uid)
    desc = text(-u) if u % 4 == 0 else None
    for p in range(rng.randint(5, 9)):
        r = {"user_id": uid, "prompt": text(p), "chosen": "c" + text(p), "rejected": "r" + text(p)}
        if desc and p == rng.randint(0, 2):
            r["user_description"] = desc
        rows.append(r)
line = lambda r: json.dumps(r, ensure_ascii=rng.random() < 0.5)
open(f"{d}/a.jsonl", "w").write("".join(line(r) + "\n" for r in rows))
rng.shuffle(rows)
open(f"{d}/b.jsonl", "w").write("".join(line(r) + "\n" for r in rows))
keep = set(users[::2])
open(f"{d}/c.jsonl", "w").write("".join(line(r) + "\n" for r in rows if r["user_id"] in keep))
PYEOF
    ok=1 detail=""
    for x in a b c; do
        "$FSPO" prep "$tmp/$x.jsonl" -o "$tmp/$x.h5" --quiet 2>"$tmp/$x.err" || { ok=0; detail+="$x: $(cat "$tmp/$x.err") "; }
        h=$("$PY" "$tmp/check.py" "$tmp/$x.h5" "$tmp/$x.jsonl" 5 2>&1) || { ok=0; detail+="$x: $h "; }
        echo "$h" >"$tmp/$x.held"
    done
    [[ $ok -eq 1 ]] && pass "unicode round trip (h5py)" "non-BMP, U+0000, controls, escapes; 2 orders and a subset" ||
        fail "unicode round trip (h5py)" "$detail"
    "$PY" -c 'import json, sys; print(json.dumps(sorted({str(json.loads(l)["user_id"]) for l in open(sys.argv[1])})))' \
        "$tmp/c.jsonl" >"$tmp/c.users"
    if cmp -s "$tmp/a.held" "$tmp/b.held" && "$PY" -c '
import json, sys
a, c, users = (json.load(open(p)) for p in sys.argv[1:4])
assert a and c and set(c) == set(a) & set(users), (a, c)' "$tmp/a.held" "$tmp/c.held" "$tmp/c.users"; then
        pass "split ignores line order and other users" "$(head -c 120 "$tmp/a.held")..."
    else
        fail "split ignores line order and other users" "a $(cat "$tmp/a.held") b $(cat "$tmp/b.held") c $(cat "$tmp/c.held")"
    fi
fi

# ---- --strict: the first bad line is an error, nothing written ----
err=$("$FSPO" prep $FIX -o "$tmp/strict.h5" --strict 2>&1 >/dev/null); rc=$?
if [[ $rc -eq 2 && $err == "fspo: $FIX:2: field 'user_id' is not a string or an integer (it is a boolean) (--strict"* &&
      ! -e $tmp/strict.h5 && ! -e $tmp/strict.h5.tmp ]]; then
    pass "--strict stops at line 2, no output" "$err"
else
    fail "--strict stops at line 2, no output" "exit $rc: $err; $(ls "$tmp")"
fi
cp "$tmp/bad.h5" "$tmp/keep.h5"
"$FSPO" prep $FIX -o "$tmp/keep.h5" --strict 2>/dev/null
cmp -s "$tmp/bad.h5" "$tmp/keep.h5" && pass "a failed run leaves an existing output untouched" ||
    fail "a failed run leaves an existing output untouched" "keep.h5 changed"

# ---- errors and flags ----
expect_error "missing input" 2 "nope.jsonl: cannot open: No such file" -- "$FSPO" prep "$tmp/nope.jsonl" -o "$tmp/x.h5"
expect_error "unwritable output" 2 "/nonexistent/dir/x.h5: cannot write" -- "$FSPO" prep $FIX -o /nonexistent/dir/x.h5
expect_error "no -o" 2 "prep: no output file: add -o OUT.h5" -- "$FSPO" prep $FIX
expect_error "no input" 2 "prep: no input file" -- "$FSPO" prep -o "$tmp/x.h5"
expect_error "two inputs" 2 "more than one input file" -- "$FSPO" prep $FIX $FIX -o "$tmp/x.h5"
expect_error "unknown flag" 2 "prep: unknown option '--bogus'" -- "$FSPO" prep $FIX -o "$tmp/x.h5" --bogus
expect_error "heldout-frac 1" 2 "--heldout-frac: 1 is outside \[0, 1\)" -- "$FSPO" prep $FIX -o "$tmp/x.h5" --heldout-frac 1
expect_error "heldout-frac text" 2 "--heldout-frac: 'abc' is not a number" -- "$FSPO" prep $FIX -o "$tmp/x.h5" --heldout-frac abc
expect_error "val-frac negative" 2 "--val-frac: -0.1 is outside \[0, 1\)" -- "$FSPO" prep $FIX -o "$tmp/x.h5" --val-frac -0.1
expect_error "test-frac 1" 2 "--test-frac: 1 is outside \[0, 1\); --all-test puts every user in the test split" -- \
    "$FSPO" prep $FIX -o "$tmp/x.h5" --test-frac 1
expect_error "val-frac + test-frac 1" 2 "--val-frac 0.6 \+ --test-frac 0.4 = 1 leaves no training user" -- \
    "$FSPO" prep $FIX -o "$tmp/x.h5" --val-frac 0.6 --test-frac 0.4
expect_error "heldout-frac with test-frac" 2 "--heldout-frac F is the old form of --test-frac F --val-frac 0; use one form" -- \
    "$FSPO" prep $FIX -o "$tmp/x.h5" --heldout-frac 0.1 --test-frac 0.2
expect_error "all-test with val-frac" 2 "--all-test puts every user in the test split; it takes no --val-frac" -- \
    "$FSPO" prep $FIX -o "$tmp/x.h5" --all-test --val-frac 0.2
expect_error "seed negative" 2 "--seed: '-3' is not a non-negative integer" -- "$FSPO" prep $FIX -o "$tmp/x.h5" --seed -3
expect_error "min-pairs 0" 2 "--min-pairs: 0 is outside" -- "$FSPO" prep $FIX -o "$tmp/x.h5" --min-pairs 0
expect_error "max-line-bytes bad suffix" 2 "--max-line-bytes: '4X' is not" -- "$FSPO" prep $FIX -o "$tmp/x.h5" --max-line-bytes 4X
expect_error "value missing" 2 "option --seed needs a value" -- "$FSPO" prep $FIX -o "$tmp/x.h5" --seed
expect_error "no user left" 2 "no user has at least 50 pairs" -- "$FSPO" prep $FIX -o "$tmp/x.h5" --min-pairs 50
[[ ! -e $tmp/x.h5 ]] && pass "errors leave no output" || fail "errors leave no output" "$tmp/x.h5 exists"
out=$("$FSPO" prep --help); rc=$?
[[ $rc -eq 0 && $out == *"usage: fspo prep IN.jsonl -o OUT.h5"* && $out == *"blank lines are skipped"* &&
   $out == *"--val-frac V"* && $out == *"--all-test"* ]] &&
    pass "fspo prep --help" || fail "fspo prep --help" "exit $rc"

# ---- many bad lines: 50 printed, then a count ----
{ for i in $(seq 60); do echo "{\"user_id\": \"u\", \"prompt\": $i}"; done
  for i in $(seq 5); do echo "{\"user_id\": \"u\", \"prompt\": \"p$i\", \"chosen\": \"c\", \"rejected\": \"r\"}"; done
} >"$tmp/many.jsonl"
"$FSPO" prep "$tmp/many.jsonl" -o "$tmp/many.h5" --heldout-frac 0 --quiet 2>"$tmp/many.err"; rc=$?
n=$(grep -c "^$tmp/many.jsonl:" "$tmp/many.err")
if [[ $rc -eq 0 && $n -eq 50 ]] && grep -qx "... and 10 more bad lines" "$tmp/many.err" &&
   grep -q "60  field 'prompt' is not a string (first: line 1)" "$tmp/many.err"; then
    pass "bad-line printing capped at 50" "50 lines, '... and 10 more bad lines', summary counts 60"
else
    fail "bad-line printing capped at 50" "exit $rc, $n lines: $(tail -n 4 "$tmp/many.err")"
fi

# ---- throughput on ~50 MB (generated here, never committed) ----
"$PY" - "$tmp/big.jsonl" <<'PYEOF'
import json, random, sys
rng = random.Random(3)
words = "the a user prefers short formal answers with lists and no emoji while others like long warm replies".split()
say = lambda n: " ".join(rng.choice(words) for _ in range(n))
with open(sys.argv[1], "w") as f:
    size, u = 0, 0
    while size < 50_000_000:
        for p in range(25):
            line = json.dumps({"user_id": f"u{u}", "prompt": say(40) + f" #{p}", "chosen": say(60),
                               "rejected": say(70)}) + "\n"
            f.write(line)
            size += len(line)
        u += 1
PYEOF
out=$("$FSPO" prep "$tmp/big.jsonl" -o "$tmp/big.h5" 2>"$tmp/big.err"); rc=$?
mbs=$(sed -n 's/.*: \([0-9.]*\) MB\/s$/\1/p' <<<"$out")
if [[ $rc -eq 0 && -n $mbs ]] && grep -q "MB (100%)" "$tmp/big.err"; then
    pass "prep throughput" "$mbs MB/s on $(($(stat -c %s "$tmp/big.jsonl") / 1000000)) MB ($(grep -c '^prep: .* MB/s' "$tmp/big.err") progress lines)"
else
    fail "prep throughput" "exit $rc: $out $(head -c 500 "$tmp/big.err")"
fi
