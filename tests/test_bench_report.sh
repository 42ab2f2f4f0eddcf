#!/usr/bin/env bash
# scripts/bench_report.py, the report make bench writes, on synthetic
# `fspo bench --json` lines whose headline figures are known by
# construction: the AMX reference report (docs/benchmarks.md), another
# kind's own report (docs/benchmarks-avx2.md) with its auto rows, and the
# Machines table both carry (one block, a row per report, the reference
# first), also added to an older reference report that has none.
cd "$(dirname "$0")/.." && source tests/lib.sh
tmp=$(mktemp -d /tmp/fspo-bench-report.XXXXXX) && trap 'rm -rf "$tmp"' EXIT
PY=/usr/bin/python3

# lines KIND: three rounds of configs A and B at 1 and 2 threads. Config B's
# best fp32 per round is 610, 620, 630 tokens/s (median 620) and PyTorch's
# tuned fp32 310 (so 2.00x); on amx, bf16 at 2 threads is 1830, 1860, 1890
# (3.00x fp32) and PyTorch's bf16 autocast 700 (fspo's best / PyTorch's
# best, median of rounds, 1860 / 700 = 2.66x); on avx2, auto at 0.99x fp32.
lines() {
    "$PY" - "$1" <<'PYEOF'
import json, sys
kind = sys.argv[1]
def step(cfg, threads, tok, rnd, precision="fp32", **extra):
    d, L = (256, 4) if cfg == "A" else (512, 8)
    r = {"d_model": d, "n_layers": L, "threads": threads, "params": 25.8e6, "tokens_per_s": tok,
         "step_s_median": 2048 / tok, "model_gflops": 100.0, "sgemm_peak_gflops": 150.0, "mfu": 0.6,
         "mfu_causal": 0.5, "rss_peak_mb": 1500, "analytic_mb": 1450, "rss_ratio": 1.03, "precision": precision,
         "round": rnd}
    r.update(extra)
    print(json.dumps(r))
for rnd in (1, 2, 3):
    for cfg in "AB":
        base = 1000 if cfg == "A" else 300
        step(cfg, 1, base + rnd, rnd)
        step(cfg, 2, 2 * base + 10 * rnd, rnd)
        print(json.dumps({"kind": "torch_step", "preset": cfg, "label": "tuned", "precision": "fp32",
                          "tokens_per_s": base + 10, "step_s_median": 1.0, "round": rnd}))
        if kind == "amx":
            step(cfg, 2, 3 * (2 * base + 10 * rnd), rnd, "bf16", bf16_peak_gflops=700.0, kernel="brg:avx512_core_amx_bf16")
            print(json.dumps({"kind": "torch_step", "preset": cfg, "label": "tuned-bf16-autocast",
                              "precision": "bf16-autocast", "tokens_per_s": 700, "step_s_median": 1.0, "round": rnd}))
        elif cfg == "B":
            step(cfg, 2, 0.99 * (2 * base + 10 * rnd), rnd, asked="auto")
PYEOF
}
report() { # KIND MD_NAME: the report of lines KIND into $tmp/docs
    local json=${2%.md}.json
    lines "$1" | "$PY" scripts/bench_report.py "$tmp/docs/$json" "$tmp/docs/$2" "2026-11-30 on 2 cores, Test $1" "$1"
}
mkdir -p "$tmp/docs"
row() { grep -E "^\| $1" "$2"; }

if report amx benchmarks.md 2>"$tmp/err" && r=$(row "AMX-BF16" "$tmp/docs/benchmarks.md") &&
    [[ $r == *"| 620 | 2.00× | 3.00× | 2.66× (fp32, bf16 autocast) | [benchmarks.md](benchmarks.md) |" ]] &&
    grep -q "recorded by hand" "$tmp/docs/benchmarks.md"; then
    pass "the reference report: its Machines row has config B's figures, and the hand-recorded profiles" "$r"
else
    fail "the reference report" "$(cat "$tmp/err") ${r:-no AMX row}"
fi

if report avx2 benchmarks-avx2.md 2>"$tmp/err" && a=$(row "AVX2" "$tmp/docs/benchmarks-avx2.md") &&
    [[ $a == *"| 620 | 2.00× | no bf16 units: \`auto\` runs fp32 | 2.00× (fp32) | [benchmarks-avx2.md](benchmarks-avx2.md) |" ]] &&
    head -1 "$tmp/docs/benchmarks-avx2.md" | grep -q "^# Benchmarks: AVX2" &&
    ! grep -q "^## Kernel work\|What the bf16 step spends" "$tmp/docs/benchmarks-avx2.md" &&
    grep -qE '^\| B \| 2 \| fp32 \| .* \| \*\*0\.99× ' "$tmp/docs/benchmarks-avx2.md"; then
    pass "another kind's report: its own file, generated tables only, auto resolved to fp32 at 0.99x" "$a"
else
    fail "another kind's report" "$(cat "$tmp/err") ${a:-no AVX2 row}"
fi

# the reference report now lists both, itself first, in one block; the avx2 report the same table
both() { grep -A3 '^| matrix units' "$1" | tail -2 | cut -d'|' -f2 | xargs; }
if [[ $(grep -c '<!-- machines -->' "$tmp/docs/benchmarks.md") == 1 &&
    $(both "$tmp/docs/benchmarks.md") == "AMX-BF16 (the reference machine) AVX2, no AVX-512 or bf16 units" &&
    $(both "$tmp/docs/benchmarks-avx2.md") == "$(both "$tmp/docs/benchmarks.md")" ]] &&
    row "AMX-BF16" "$tmp/docs/benchmarks.md" | grep -qF "$r"; then
    pass "another kind's run adds its row to the reference report's Machines table, the reference's row unchanged"
else
    fail "the Machines table after the avx2 run" "$(grep -A5 '^| matrix units' "$tmp/docs/benchmarks.md")"
fi

report avx2 benchmarks-avx2.md 2>/dev/null
if [[ $(cat "$tmp/docs"/benchmarks*.md | grep -c '<!-- machines -->') == 2 &&
    $(grep -c '^| AVX2' "$tmp/docs/benchmarks.md") == 1 ]]; then
    pass "a second run replaces the table, not adds one"
else
    fail "a second run replaces the table" "$(grep -c '<!-- machines -->' "$tmp/docs"/benchmarks*.md)"
fi

# an older reference report (no table yet) gains it before its first section
"$PY" -c 'import re, sys; p = sys.argv[1]; s = open(p).read()
open(p, "w").write(re.sub(r"<!-- machines -->.*?<!-- /machines -->\n\n", "", s, flags=re.S))' "$tmp/docs/benchmarks.md"
report avx2 benchmarks-avx2.md 2>/dev/null
first=$(grep -m1 '^## ' "$tmp/docs/benchmarks.md")
if [[ $first == "## Machines" && $(grep -c '^| AVX2' "$tmp/docs/benchmarks.md") == 1 ]]; then
    pass "an older reference report gains the Machines table as its first section"
else
    fail "an older reference report gains the Machines table" "first section: $first"
fi
