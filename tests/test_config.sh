#!/usr/bin/env bash
# `fspo config` from the command line: show, check, doc, and errors with
# their file:line:col. docs/config.md must be exactly what `config doc` prints.
cd "$(dirname "$0")/.." && source tests/lib.sh
T=$(mktemp -d /tmp/fspo-config.XXXXXX)
trap 'rm -rf "$T"' EXIT

for f in configs/demo.yaml configs/small.yaml configs/cluster.yaml; do
    out=$("$FSPO" config check "$f"); rc=$?
    [[ $rc -eq 0 && $out == "$f: ok" ]] && pass "config check $f" || fail "config check $f" "exit $rc: $out"
    # the resolved YAML reads back to itself
    "$FSPO" config show "$f" >"$T/once.yaml"; rc1=$?
    "$FSPO" config show "$T/once.yaml" >"$T/twice.yaml"; rc2=$?
    if [[ $rc1 -eq 0 && $rc2 -eq 0 && -s $T/once.yaml ]] && cmp -s "$T/once.yaml" "$T/twice.yaml"; then
        pass "config show $f is a fixed point" "$(wc -l <"$T/once.yaml") lines"
    else
        fail "config show $f is a fixed point" "exit $rc1/$rc2; $(diff "$T/once.yaml" "$T/twice.yaml" | head -5)"
    fi
done

out=$("$FSPO" config show configs/demo.yaml --set train.max_steps=77 --set=optim.lr=0.002); rc=$?
[[ $rc -eq 0 && $out == *"max_steps: 77"* && $out == *"lr: 0.002"* ]] \
    && pass "config show --set" || fail "config show --set" "exit $rc"

printf 'model:\n  d_model: 128\ntrain:\n  max_stpes: 10\n' >"$T/bad.yaml"
expect_error "unknown key" 2 "^fspo: $T/bad.yaml:4:3: unknown key 'max_stpes' in section 'train' \(did you mean 'max_steps'\?\)$" \
    -- "$FSPO" config check "$T/bad.yaml"
printf 'optim:\n  lr: fast\n' >"$T/bad2.yaml"
expect_error "wrong type" 2 "^fspo: $T/bad2.yaml:2:7: optim.lr: expected a number, got 'fast'$" \
    -- "$FSPO" config show "$T/bad2.yaml"
expect_error "bad --set" 2 "^fspo: --set train.max_steps=abc: train.max_steps: expected an integer, got 'abc'$" \
    -- "$FSPO" config show configs/demo.yaml --set train.max_steps=abc
expect_error "missing file" 2 "^fspo: $T/none.yaml: cannot read: No such file or directory$" \
    -- "$FSPO" config check "$T/none.yaml"
expect_error "no file given" 2 "config show: needs a config file" -- "$FSPO" config show
expect_error "--set without value" 2 "option --set needs a value" -- "$FSPO" config show configs/demo.yaml --set
expect_error "unknown option" 2 "config check: unknown option: '--bogus'" -- "$FSPO" config check configs/demo.yaml --bogus
expect_error "unknown subcommand" 2 "unknown subcommand 'shwo'" -- "$FSPO" config shwo

out=$("$FSPO" config --help); rc=$?
[[ $rc -eq 0 && $out == *"usage: fspo config show"* ]] && pass "config --help" || fail "config --help" "exit $rc"

"$FSPO" config doc >"$T/config.md"; rc=$?
if [[ $rc -eq 0 ]] && cmp -s "$T/config.md" docs/config.md; then
    pass "docs/config.md is what 'fspo config doc' prints"
else
    fail "docs/config.md is what 'fspo config doc' prints" \
        "exit $rc; regenerate with ./fspo config doc > docs/config.md; $(diff docs/config.md "$T/config.md" | head -5)"
fi
