#!/usr/bin/env bash
# The fspo binary's command line: help, dispatch, and clear errors on bad input.
cd "$(dirname "$0")/.." && source tests/lib.sh

out=$("$FSPO" --help); rc=$?
[[ $rc -eq 0 && $out == *"commands:"* && $out == *"model"* && $out == *"bench"* ]] \
    && pass "fspo --help" "lists commands" || fail "fspo --help" "exit $rc: $out"
for c in model bench; do
    out=$("$FSPO" $c --help); rc=$?
    [[ $rc -eq 0 && $out == *"usage: fspo $c"* ]] && pass "fspo $c --help" || fail "fspo $c --help" "exit $rc"
done
expect_error "no command" 2 "usage: fspo COMMAND" -- "$FSPO"
expect_error "unknown command" 2 "unknown command 'trian'" -- "$FSPO" trian
expect_error "unknown option" 2 "model: unknown option '--bogus'" -- "$FSPO" model --bogus
expect_error "missing value" 2 "option --d-model needs a value" -- "$FSPO" model --d-model
expect_error "non-integer" 2 "--d-model: 'abc' is not an integer" -- "$FSPO" model --d-model abc
expect_error "trailing junk" 2 "--n-layers: '4x' is not an integer" -- "$FSPO" model --n-layers 4x
expect_error "heads do not divide" 2 "model.d_model = 30 is not divisible by model.n_heads = 4" -- \
    "$FSPO" model --d-model 30 --n-heads 4
expect_error "zero layers" 2 "model.n_layers = 0 must be positive" -- "$FSPO" model --n-layers 0
expect_error "negative width" 2 "model.d_model = -4 must be positive" -- "$FSPO" model --d-model -4
expect_error "vocab too small" 2 "model.vocab = 100 is too small" -- "$FSPO" model --vocab 100
expect_error "bad preset" 2 "--preset: 'C' is not A or B" -- "$FSPO" model --preset C
expect_error "bench bad steps" 2 "--steps: 0 is outside" -- "$FSPO" bench --steps 0

# parameter count of preset B against the formula V*C + L*(2C + 4C^2 + 3CF) + C, F = 1408
V=264 C=512 L=8 F=1408
want=$(( V*C + L*(2*C + 4*C*C + 3*C*F) + C ))
out=$("$FSPO" model --preset B)
got=$(sed -n 's/^parameters: \([0-9]*\).*/\1/p' <<<"$out")
[[ "$got" == "$want" ]] && pass "preset B parameter count" "$got" || fail "preset B parameter count" "$got vs $want"

# a tiny bench run reports a positive throughput and a finite loss near ln(256)
out=$(OPENBLAS_NUM_THREADS=1 "$FSPO" bench --d-model 32 --n-layers 1 --n-heads 2 --max-seq 64 --batch 2 \
      --steps 2 --sgemm-n 256 --json); rc=$?
if [[ $rc -eq 0 ]] && /usr/bin/python3 -c '
import json, math, sys
r = json.loads(sys.argv[1])
assert r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1.5, r
assert abs(r["final_loss"] - math.log(264)) < 0.5, r
' "$out"; then pass "bench --json" "$out"; else fail "bench --json" "exit $rc: $out"; fi
