#!/usr/bin/env bash
# The C model against the PyTorch reference: tests/torch_ref.py (Debian's
# torch under /usr/bin/python3) checks itself, writes a golden file, and
# build/tests/test_golden compares logits, loss, grads and optimizer steps.
cd "$(dirname "$0")/.." && source tests/lib.sh
PY=/usr/bin/python3
if ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "SKIP: torch reference: $PY has no torch (apt-get install python3-torch)"
    exit 0
fi
tmp=$(mktemp -d) && trap 'rm -rf "$tmp"' EXIT
if out=$("$PY" tests/torch_ref.py --selfcheck 2>&1); then
    pass "torch reference selfcheck" "$(tail -n 1 <<<"$out")"
else
    fail "torch reference selfcheck" "$out"
fi
"$PY" tests/torch_ref.py --out "$tmp/golden.bin" >/dev/null || { fail "golden file generation"; exit 1; }
"${BUILD:-build}/tests/test_golden" "$tmp/golden.bin"
