"""Turns `fspo bench --json` lines (stdin) into docs/benchmarks.json and docs/benchmarks.md.

Usage: bench_report.py OUT_JSON OUT_MD MACHINE [KIND]. KIND is the machine's
kind by its matrix units (scripts/bench.sh: amx, avx512bf16, avx512, avx2).
amx is the reference machine the issues' targets are set on: its report is
docs/benchmarks.md and carries the profiles recorded by hand there; another
kind's report is its own file (docs/benchmarks-KIND.md) with the generated
tables only. Every run also rewrites the "Machines" table at the top of
docs/benchmarks.md: one row of headline figures per report beside it.
"""
import glob
import json
import os
import re
import statistics
import sys

out_json, out_md, machine = sys.argv[1], sys.argv[2], sys.argv[3]
kind = sys.argv[4] if len(sys.argv) > 4 else "amx"
primary = kind == "amx"
REFERENCE_MD = os.path.join(os.path.dirname(out_md), "benchmarks.md")
lines = [json.loads(line) for line in sys.stdin if line.strip()]
step_runs = [r for r in lines if "kind" not in r]
runs = [r for r in step_runs if r.get("precision", "fp32") == "fp32" and not r.get("asked")]
auto_runs = [r for r in step_runs if r.get("asked") == "auto"]  # --precision auto where the CPU has no bf16 units
runs16 = [r for r in step_runs if r.get("precision") == "bf16" and not r.get("isa_cap")]
noamx = [r for r in step_runs if r.get("precision") == "bf16" and r.get("isa_cap")]
all_torch = [r for r in lines if r.get("kind") == "torch_step"]
torch_runs = [r for r in all_torch if r.get("precision", "fp32") == "fp32"]
torch16 = [r for r in all_torch if r.get("precision") == "bf16-autocast"]
data = next((r for r in lines if r.get("kind") == "data"), None)
tok = next((r for r in lines if r.get("kind") == "tokenizer"), None)
pref = [r for r in lines if r.get("kind") == "pref_step"]
pack = next((r for r in lines if r.get("kind") == "pref_pack"), None)
torch_pref = next((r for r in lines if r.get("kind") == "torch_pref"), None)
ckpt = next((r for r in lines if r.get("kind") == "ckpt"), None)
dp = next((r for r in lines if r.get("kind") == "dp_overlap" and not r.get("shard")), None)
dp_shard = next((r for r in lines if r.get("kind") == "dp_overlap" and r.get("shard")), None)
sweep = [r for r in lines if r.get("kind") == "allreduce_sweep"]
attn_mem = [r for r in lines if r.get("kind") == "attn_memory"]
json.dump({"machine": machine, "kind": kind, "step_runs": step_runs, "torch_steps": all_torch, "data": data, "pref_steps": pref,
           "pref_pack": pack, "torch_pref": torch_pref, "ckpt": ckpt, "dp_overlap": dp, "dp_shard": dp_shard,
           "tokenizer": tok, "allreduce_sweep": sweep, "attn_memory": attn_mem},
          open(out_json, "w"), indent=1)

name = {(256, 4): "A", (512, 8): "B"}


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def spread(xs, fmt="{:.0f}"):
    """'median (min–max, n runs)' or just the value for one run."""
    if len(xs) < 2:
        return fmt.format(median(xs))
    return f"{fmt.format(median(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))}, {len(xs)} runs)"


# ---- the Machines table: a row of headline figures per report in docs/ ----
KIND_NAMES = {"amx": "AMX-BF16 (the reference machine)", "avx512bf16": "AVX512-BF16, no AMX",
              "avx512": "AVX-512, no bf16 units", "avx2": "AVX2, no AVX-512 or bf16 units"}
BLOCK = re.compile(r"<!-- machines -->.*?<!-- /machines -->\n", re.S)


def headline(d):
    """Config B in one report: per round, the best of 1 and 2 threads of fspo fp32, fspo bf16, PyTorch
    tuned fp32 and PyTorch bf16 autocast; returns fspo fp32's median and the medians of same-round ratios."""
    def best(rs):
        by = {}
        for r in rs:
            by[r.get("round", 1)] = max(by.get(r.get("round", 1), 0), r["tokens_per_s"])
        return by

    def ratio(num, den):
        return median([num[k] / den[k] for k in num if k in den])
    b = [r for r in d["step_runs"] if (r["d_model"], r["n_layers"]) == (512, 8) and not r.get("isa_cap")
         and not r.get("asked")]
    f32 = best([r for r in b if r.get("precision", "fp32") == "fp32"])
    b16 = best([r for r in b if r.get("precision") == "bf16"])
    tb = [r for r in d["torch_steps"] if r["preset"] == "B"]
    t32 = best([r for r in tb if r["label"] == "tuned"])
    t16 = best([r for r in tb if r["label"] == "tuned-bf16-autocast"])
    ours = {k: max(v, b16.get(k, 0)) for k, v in f32.items()}
    theirs = {k: max(t32.get(k, 0), t16.get(k, 0)) for k in set(t32) | set(t16)}
    return {"fp32": median(list(f32.values())), "vs_torch32": ratio(f32, t32), "bf16": ratio(b16, f32) if b16 else None,
            "best": ratio(ours, theirs), "torch_modes": "fp32, bf16 autocast" if t16 else "fp32"}


def machines_block(docs):
    """The Machines table over every docs/benchmarks*.json (the one just written included)."""
    rows = []
    reports = [(path, json.load(open(path))) for path in glob.glob(os.path.join(docs, "benchmarks*.json"))]
    # the reference first; reports from before kinds were recorded are the AMX machine's
    for path, d in sorted(reports, key=lambda pd: (pd[1].get("kind", "amx") != "amx", pd[0])):
        k, h = d.get("kind", "amx"), headline(d)
        b16 = f"{h['bf16']:.2f}×" if h["bf16"] else "no bf16 units: `auto` runs fp32"
        rows.append(f"| {KIND_NAMES.get(k, k)} | {d['machine']} | {h['fp32']:.0f} | {h['vs_torch32']:.2f}× | {b16} | "
                    f"{h['best']:.2f}× ({h['torch_modes']}) | [{os.path.basename(path)[:-5]}.md]({os.path.basename(path)[:-5]}.md) |")
    return f"""<!-- machines -->
## Machines

`make bench` writes one report per kind of machine (by its matrix units):
`docs/benchmarks.md` for the AMX machine the issues' targets are set on,
`docs/benchmarks-KIND.md` for another kind. Config B, fspo's and PyTorch's
best of 1 and 2 threads per round; ratios are medians of same-round ratios.
"PyTorch's best mode" is the faster of the modes run there.

| matrix units | measured | fspo fp32 tokens/s | fspo fp32 / PyTorch fp32 (tuned) | fspo bf16 / fspo fp32 | fspo's best / PyTorch's best mode | report |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}
<!-- /machines -->
"""


# make bench runs the comparisons several rounds; every table quotes medians over rounds
groups = {}
for r in runs:
    groups.setdefault((name.get((r["d_model"], r["n_layers"]), "?"), r["threads"]), []).append(r)
rows = []
for (cfg, threads), rs in sorted(groups.items()):
    m = lambda k: median([r[k] for r in rs if k in r])
    rows.append(f"| {cfg} | {threads} | {rs[0]['params'] / 1e6:.2f} M | {spread([r['tokens_per_s'] for r in rs])} | "
                f"{m('step_s_median'):.3f} | {m('model_gflops'):.1f} | {m('sgemm_peak_gflops'):.1f} | "
                f"{100 * m('mfu'):.1f}% | {100 * m('mfu_causal'):.1f}% | "
                f"{m('rss_peak_mb'):.0f} / {m('analytic_mb'):.0f} MB = {m('rss_ratio'):.2f}× |")

block = machines_block(os.path.dirname(out_md))  # this report's JSON is written: its row is in
other_kind = "" if primary else f""" This is the report
for a machine of kind `{kind}` ({KIND_NAMES.get(kind, kind)}): the
generated tables only. `docs/benchmarks.md` is the reference machine's
report (Intel with AMX-BF16), with the profiles recorded by hand there."""
md = f"""# Benchmarks{'' if primary else ': ' + KIND_NAMES.get(kind, kind)}

Regenerated by `make bench` (`scripts/bench.sh`); raw numbers in
`docs/{os.path.basename(out_json)}`. Measured {machine}.{other_kind} Figures on a shared 2-core VM
are noisy: each step time is the median of several steps, MFU is a ratio
against the peak of the products the step runs — the sgemm peak for fp32
rows, the bf16 product peak for bf16 rows — measured **in the same process,
at the same thread count**, right before the steps, and the comparisons that carry targets run
`BENCH_ROUNDS` (default 3) interleaved rounds: tables quote the median over
rounds with the range.

{block}
## Training step (forward + backward + AdamW), single process

Config A: vocab 264, d_model 256, 4 layers, 4 heads, T 1024, batch 4.
Config B: vocab 264, d_model 512, 8 layers, 8 heads, T 1024, batch 2.
SwiGLU width F = 64·ceil(8C/3/64) (704 for A, 1408 for B). Random byte
tokens, one plain causal row per batch row, next-token loss on every
position (command: `fspo bench --preset A|B --threads 1|2 --json`).

| config | threads | params | tokens/s (median, range) | step s (median) | model GFLOP/s | sgemm peak GFLOP/s | MFU | MFU (causal) | peak RSS / analytic |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

**FLOPs per token** (`model_flops_per_token`, also printed by `fspo model`):
`6 · W + 12 · L · T · C`, where W counts every weight that takes part in a
matmul — the layer matrices (`4C² + 3CF` per layer; `2C² + 2C·Ckv + 3CF`
with grouped-query attention) plus the output head (`V·C`: the tied
embedding or `lm_head`; the embedding lookup itself is free) —
and `12·L·T·C` is attention's QKᵀ and PV (forward 4·T·C per layer and
token, backward twice that), the PaLM convention that counts the full T×T
square. That convention is what the PyTorch figures in the issues use, so
it is the MFU column. Our kernel computes only query-block × earlier-keys
tiles (about half of the square at T = 1024), so the **MFU (causal)**
column counts attention as the causal half it is (`6·L·T·C`): the
useful-work figure, and the honest one to compare kernels by.

**sgemm peak**: median GFLOP/s of a 2048×2048×2048 `cblas_sgemm` at the
same OpenBLAS thread count (`--sgemm-n`).

Target of the [core] issue: MFU ≥ 35% on config B. The [perf] issue raises
it to ≥ 60% (stretch 70%) and adds the PyTorch comparison.

**Peak RSS / analytic**: `VmHWM` of the process after the steps against
params + grads + AdamW m and v (4 × 4 bytes per parameter) + the activation
arena (`model_arena_bytes`); the difference is the binary, its libraries and
OpenBLAS's buffers. Target of the [perf] issue: ≤ 1.3×.
"""

# ---- bf16 (model.precision bf16) ----
fp32_by = {(name.get((r["d_model"], r["n_layers"]), "?"), r["threads"], r.get("round", 1)): r["tokens_per_s"] for r in runs}
g16 = {}
for r in runs16:
    g16.setdefault((name.get((r["d_model"], r["n_layers"]), "?"), r["threads"]), []).append(r)
rows16 = []
for (cfg, threads), rs in sorted(g16.items()):
    m = lambda k: median([r[k] for r in rs if k in r])
    vs = [r["tokens_per_s"] / fp32_by[(cfg, threads, r.get("round", 1))] for r in rs
          if (cfg, threads, r.get("round", 1)) in fp32_by]
    rows16.append(f"| {cfg} | {threads} | {spread([r['tokens_per_s'] for r in rs])} | {m('step_s_median'):.3f} | "
                  f"{m('model_gflops'):.1f} | {m('bf16_peak_gflops'):.0f} | {100 * m('mfu'):.1f}% | "
                  f"{100 * m('mfu_causal'):.1f}% | {m('model_gflops') / m('sgemm_peak_gflops'):.2f}× | "
                  f"**{spread(vs, '{:.2f}×')}** | {m('rss_peak_mb'):.0f} / {m('analytic_mb'):.0f} MB |")
kernels = sorted({r.get("kernel", "?") for r in runs16})
if rows16:
    table16 = f"""Kernels (oneDNN's implementation names, as `fspo train` prints them): {'; '.join(kernels)}.

| config | threads | tokens/s (median, range) | step s (median) | model GFLOP/s | bf16 peak GFLOP/s | MFU (vs bf16 peak) | MFU (causal) | model / sgemm peak | vs fp32 (same round) | peak RSS / analytic |
|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows16)}"""
else:
    table16 = ("No bf16 rows in this report: `make bench` adds them where the CPU has AMX-BF16 or AVX512-BF16 "
               "units (and `FSPO_CPU_NO_BF16` is not set).")


def vs_fp32_by_threads(variant):
    """A variant of the fp32 step (auto, bf16 capped) per thread count: (config, threads, its runs, their
    ratios to the fp32 row of the same config, threads and round)."""
    out = []
    for threads in sorted({r["threads"] for r in variant}):
        rs = [r for r in variant if r["threads"] == threads]
        cfg = name.get((rs[0]["d_model"], rs[0]["n_layers"]), "?")
        out.append((cfg, threads, rs, [r["tokens_per_s"] / fp32_by[(cfg, threads, r.get("round", 1))] for r in rs
                                       if (cfg, threads, r.get("round", 1)) in fp32_by]))
    return out


if auto_runs:
    rows_auto = []
    for cfg, threads, rs, vs in vs_fp32_by_threads(auto_runs):
        rows_auto.append(f"| {cfg} | {threads} | {', '.join(sorted({r['precision'] for r in rs}))} | "
                         f"{spread([r['tokens_per_s'] for r in rs])} | **{spread(vs, '{:.2f}×')}** |")
    table16 += f"""

**`model.precision: auto` without bf16 units.** Config B with `--precision
auto` in the same rounds (`fspo bench --preset B --precision auto`): the
precision it resolved to, and its tokens/s against the fp32 row of the same
threads and round (the same code runs, so this is the noise between runs):

| config | threads | ran as | tokens/s (median, range) | vs fp32 (same round) |
|---|---|---|---|---|
{chr(10).join(rows_auto)}"""
rows_noamx = []
for cfg, threads, rs, vs in vs_fp32_by_threads(noamx):
    rows_noamx.append(f"| {cfg} | {threads} | {spread([r['tokens_per_s'] for r in rs])} | "
                      f"{median([r['bf16_peak_gflops'] for r in rs]):.0f} | {median([r['sgemm_peak_gflops'] for r in rs]):.0f} | "
                      f"{100 * median([r['mfu'] for r in rs]):.1f}% | **{spread(vs, '{:.2f}×')}** |")
if rows_noamx:
    all_vs = [r["tokens_per_s"] / fp32_by[(name.get((r["d_model"], r["n_layers"]), "?"), r["threads"], r.get("round", 1))]
              for r in noamx if (name.get((r["d_model"], r["n_layers"]), "?"), r["threads"], r.get("round", 1)) in fp32_by]
    verdict_noamx = (f"In this run the capped bf16 step ran at {median(all_vs):.2f}× fp32 (median over threads and rounds), "
                     + ("slower than fp32." if median(all_vs) < 1 else "not slower than fp32 this time."))
    table16 = table16 + f"""

**bf16 without AMX.** The same config B step with oneDNN capped at
AVX512-BF16 (`DNNL_MAX_CPU_ISA=AVX512_CORE_BF16 fspo bench --preset B --precision bf16`:
the kernels a Zen 4-like CPU with AVX512-BF16 and no AMX gets, `{noamx[0].get('kernel', '?')}`), in
the same rounds; "vs fp32" against the fp32 row of the same threads and round:

| config | threads | tokens/s (median, range) | bf16 peak GFLOP/s | sgemm peak GFLOP/s | MFU (vs bf16 peak) | vs fp32 (same round) |
|---|---|---|---|---|---|---|
{chr(10).join(rows_noamx)}

{verdict_noamx}
`model.precision: auto` on a CPU with AVX512-BF16 and no AMX measures a bf16
product against sgemm on one core at start and takes bf16 only at ≥ 1.3×
(`bf16_auto` in `src/bf16.c`; `bf16` runs them when asked for). This is an
emulation on the AMX machine's cores, where these kernels trail sgemm; a
Zen 4 may differ, which is why auto measures rather than assumes."""
md += f"""
## bf16 products (`model.precision: bf16`)

The same step with `--precision bf16` (`fspo bench --preset A|B --threads 1|2 --precision bf16 --json`):
every matmul (layer products and their input and weight gradients, attention's
QKᵀ and PV and their backward, the tied output head) rounds its operands to
bf16 and accumulates in fp32 through oneDNN; weights, optimizer state,
reductions and gradients stay fp32 (`docs/model.md`, "Precision"). **MFU here
is against the bf16 product peak**, not the sgemm peak: the median GFLOP/s of
a 2048×2048×2048 product through the same path the layer products take
(operands already rounded, weights in oneDNN's blocked layout, rows in
256-row tiles over the pool) at the same thread count, measured in the same
process right before the steps. "model / sgemm peak" is the same model
GFLOP/s over the fp32 sgemm peak of that process, for comparison with the
fp32 table; "vs fp32" is the ratio to the fp32 row of the same config,
threads and round. The analytic memory adds the bf16 weight copies (the
rounded matrix and its two blocked layouts), the rounded activations the
backward reuses and the rounding scratch (`Model.bf16_bytes`).

{table16}
"""
# the profiles and passes below were recorded by hand on the AMX machine: its report only
if primary:
    md += """
**What the bf16 step spends its time on** (recorded by hand, not
regenerated): `perf record` of `fspo bench --preset A --threads 1 --steps 5`
minus the same with `--steps 1` (so start-up and the warm-up step drop out),
2026-11-29 on the Intel Xeon with AMX that the bf16 work was done on, while
the machine was loaded (load average 10–12 on 2 cores: shares and ratios
only, no absolute times). "First version" rounded every product's operands
in a separate pass; "now" fuses the rounding into the loops that produce
the operands (RMSNorm and SwiGLU forward, SwiGLU backward, the attention
backward's softmax pass, which rounds P and dS while it reads P) and keeps
the forward's rounded inputs and q, k, v for the backward. Weights are
rounded (and laid out for oneDNN) once per optimizer step, not per product.

| share of the step's CPU samples | fp32 | bf16, first version | bf16, now |
|---|---|---|---|
| matrix products (OpenBLAS / oneDNN kernels) | 77.5% | 51.1% | 55.4% |
| operand rounding (`bf16_round`) | – | 17.4% | 5.4% |
| attention loops (softmax, its backward; in bf16 also rounding P, dS) | 5.5% | 9.6% | 14.3% |
| SwiGLU forward + backward | 4.0% | 6.2% | 8.0% |
| RMSNorm forward + backward | 3.1% | 5.4% | 5.0% |
| RoPE | 1.4% | 2.3% | 2.6% |
| AdamW, clipping, residual adds, memset | 6.5% | 4.9% | 5.5% |
| step's CPU samples (fp32 = 1) | 1 | 0.55 | 0.53 |

Once the products run in bf16 (about 2.6× fewer product samples than
OpenBLAS's on this loaded machine), the fp32 loops around them — the
attention softmax and its backward, SwiGLU, RMSNorm, RoPE — are close to
half of the step: they are the next bottleneck, not the products.

**The loops around the bf16 products, second pass** (recorded by hand, not
regenerated; the figures above predate it): `perf record -F 999` of `fspo
bench --preset B --threads 1 --precision bf16 --steps 8` minus the same
with `--steps 1`, the previous binary and this one back to back, with
`DNNL_JIT_PROFILE=2` so perf names oneDNN's jitted kernels; 2026-11-30 on
the AMX machine while a training run held both cores (load average ~6 on 2
cores: CPU-sample shares only, and two repetitions gave 0.75 and 0.86 for
the whole ratio). Shares are of the previous binary's step samples, so a
column's sum is that binary's step (the previous = 1).

| share of the previous bf16 step's CPU samples (config B) | previous | now |
|---|---|---|
| oneDNN brgemm (layer products `X W^T`, `dY W`) | 17.6% | 16.6% |
| oneDNN gemm:jit (weight gradients, attention's products), its packing, post-ops, the rest of libdnnl | 39.0% | 28.1% |
| attention loops (softmax, its backward's pass) | 12.4% | 10.1% |
| AdamW and gradient clipping | 8.9% | 4.8% |
| operand rounding (`bf16_round`) and the weights' oneDNN reorders | 6.3% | 3.6% |
| SwiGLU forward + backward | 5.6% | 4.7% |
| RMSNorm forward + backward | 3.7% | 2.2% |
| RoPE | 2.2% | 1.2% |
| residual adds, memset | 3.0% | 2.4% |
| step's CPU samples (previous = 1) | 1 | 0.75 |

What changed (`src/ops.c`, `src/vecmath.h`, `src/bf16.c`, `src/model.c`,
`src/optim.c`): (1) attention's scores go to the worker's block, which stays
in cache, and the softmax writes the probabilities rounded to bf16 into
the saved attention array: the `q k^T` products no longer write 64 MB per
layer of fp32 scores into cold memory (oneDNN's gemm samples fell by a
third), and the backward reads half the bytes and no longer rounds P
(`docs/model.md`, "Precision"); (2) RoPE and the rounding of q, k, v are
one pass in the forward, and the rotation back and the rounding of dq, dk,
dv one pass in the backward; (3) on AVX-512 builds the exp-bound and
elementwise loops (softmax, its backward pass, SwiGLU, RMSNorm's backward,
residual adds, RoPE, rounding) run 16 lanes, keeping the 8-lane summation
order, so fp32 results are bitwise unchanged; without AVX-512 the same code
runs 8 lanes (`VEC16` in `src/vecmath.h`; the build is `-march=native`);
(4) AdamW and the clipping scale run on the thread pool, vectorized
(elementwise, so bitwise equal at every pool size; the global norm stays a
serial sum in double); (5) after these figures, the gradient buffers
between steps are zeroed on the pool rather than by one thread's `memset`
(it shows at 2 threads). fp32 runs are bitwise the same as before
(checkpoints, moments and metrics of SFT and preference runs compared with
`--tol 0`). What is left: oneDNN's runtime-shape `gemm:jit` runs
attention's head-size-64 products at 250–650 GFLOP/s (each shape measured
alone, one thread, on the loaded machine) against the 0.8–1.0 TFLOP/s of
the layer products' brgemm, and it is now the largest share (oneDNN 2.6's
fixed-shape primitives pick the same `gemm:jit` for these shapes, and
query blocks of 256 or 512 rows were no faster); the softmax and its backward are bound by
writing and reading the saved bf16 P (a fused, recomputing attention would
not save it); the global gradient norm is a serial double sum (kept for
bitwise fp32 results) (summed on the pool since the fourth pass, below).

**Attention's products on brgemm, third pass** (recorded by hand, not
regenerated; session 9, `src/ops.c`'s bf16 attention, `docs/model.md`
"Precision"): in oneDNN 2.6 the brgemm kernels take only dense operands
(no row stride beyond the width, for A, B and C alike), which is why the
fixed-shape primitives of the second pass still came out `gemm:jit`. Now
the rounding pass writes q, k, v (and the backward dO) head-major, `[3H,
N, hd]`; each key range of a query block gets a dense tile for its scores,
P, dP and dS; PV and dQ go to a per-thread `[m, hd]` tile and dK, dV to
per-thread `[T, hd]` blocks, added into their rows after; and the key
ranges are widened to multiples of 32 keys (the added keys are masked
ones, with P = 0 and dS = 0), so a table of fixed shapes, made before the
step loop (128 primitives for T 1024, head size 64), covers every range.
All six products then run `brg:avx512_core_amx_bf16` (`fspo train`
prints the attention kernel apart from the weight gradients'). Measured
back to back against the previous binary (`fspo bench --preset B
--precision bf16 --threads 1 --steps 8`, 6 pairs alternating, the host
very noisy that hour: one binary's step medians ranged 1.38–2.71 s): the
fastest step median 1.38 s against 1.67 s (0.83×), the median of the
pair ratios 0.80; under a training run's load (a helper's 4–5 pairs) the
pair ratio was 0.90 (B) and 0.92 (A). Attention alone at B's shape
(forward and backward of one layer): 80–90 ms → 47–55 ms. What is left in
attention is its fp32 loops (the softmax and the dS pass), not its
products; the weight gradients still run `gemm:jit`. That session's make
bench (2026-11-30) gave config B in bf16 2.33× / 2.57× its
fp32 step at 1 / 2 threads (the previous run 2.10× / 2.17×), 2.00× PyTorch's
bf16 autocast (previous 1.70×). A table is made for the model's longest
row, but a training micro-batch is as long as its longest row, which is
almost never that length; so the trainer now pads bf16 micro-batches to a
multiple of 32 tokens and one table (4 query block sizes × the key
lengths) serves every batch. On r3's preference stage (d 256, 4 layers,
2 ranks, 16 steps of `prefD2.yaml`, twice each, alternating) the padded
binary, the unpadded one and the previous one ran 6.9k / 6.4k, 6.0k /
7.7k and 6.3k / 7.7k tokens/s: no difference shows above this hour's
noise at that size, where attention is a small share of the step.

**The gradient norm, and the weight gradients, fourth pass** (recorded by
hand, not regenerated; session 11). A `perf record` of `fspo bench
--preset B --threads 1 --precision bf16` (steps 8 minus steps 1, under a
training run's load, sample shares only) put 3.7% of the step in
`optim_step` itself: the global gradient norm, a serial sum in double
over B's 25.7M parameters (about 55 ms a step on one core, and at two
threads the worker waited through it). It now sums on the pool in 64
fixed parts of 8 lanes each, the parts added in order (`src/optim.c`), so
it vectorizes and the result does not depend on the thread count
(`test_optim`: bitwise equal at 1, 2 and 3 threads, and equal to a serial
long-double sum within 2e-16). fp32 runs are not bitwise the previous
binary's (the norm's last bits moved); resume and world-size equivalence
are unchanged. Measured on an idle machine, this binary against the
previous one (8350b11), pairs alternating, 5 counted pairs after a
warm-up, `fspo bench --preset B --precision bf16 --steps 5`, each run's
step median: 1 thread 1.028–1.043 s against 1.042–1.078 s (whole-process
ratio 0.98, 0.97–0.99); 2 threads 0.525–0.568 s against 0.575–0.610 s
(0.94, 0.92–0.99). In the same hour, fp32 against bf16 with this binary
(3 pairs): 1 thread 2.71–2.75 s against 1.00–1.06 s, **2.64×** (2.60–2.70×);
2 threads 1.35–1.46 s against 0.52–0.55 s, **2.64×** (2.59–2.70×); MFU
against the bf16 product peak of the same process 46.5–50.0% (1 thread,
peak 840–854 GFLOP/s) and 39.8–44.3% (2 threads). This host ran both
precisions about a third faster than the one the table above was made on
(bf16 B at 1 thread: 1.03 s against 1.58 s), so only same-hour ratios
compare.

The weight gradients were measured for a move to brgemm: a fixed-shape
primitive (`dY^T X` with dY transposed, over 256- or 512-token chunks,
accumulating) against the runtime-shape `gemm:jit` they run on, one
thread, the best of 25 calls under load: 650–730 against 640–710 GFLOP/s
for the shapes 1408×512, 512×1408, 1536×512 and 512×512 over 2048 tokens.
No gain worth a per-thread transposed copy of dY (brgemm takes dense
operands only), so they stay on `gemm:jit`. The products are now about
45% of a bf16 step at one thread; the rest, by share of the step:
attention's
softmax and its backward pass (about 17%, a sixth of it the store of P in
bf16 to memory), SwiGLU (6%), AdamW (3.4%, memory-bound), the operand
rounding (3.3%) and the weights' reorders into oneDNN's layout (2%).

**The loops around the products, fifth pass** (recorded by hand, not
regenerated; session 12). Six changes to the bf16 step, each measured
against the binary before it (`fspo bench --preset B --precision bf16
--threads 1 --steps 5`, 9 pairs of whole runs alternating, the median of
the pair ratios of their step medians; this host's step medians moved
by 10-30% between minutes, so no single pair means much):
(1) the softmax backward's row sum `sum P dP` is taken as `dO . O` per
head and row, in the pass that rounds dO (hd products per row instead of
one per key; the two are equal but for fp32 summation order, docs/model.md
"Precision"), and AdamW clips the gradient as it reads it instead of
scaling it in a pass of its own (fp32 runs bitwise unchanged): 0.96;
(2) the weights' reorders into oneDNN's layouts go to the least-loaded
thread rather than to matrix j % threads (one of two threads had 2.3×
the other's bytes); (3) w13's product writes h13 in bf16 (oneDNN's bf16
destination), which SwiGLU reads: 0.976; (4) bf16 rounding by
`VCVTNEPS2BF16` where the build has AVX512-BF16, a vector holding a
subnormal taking the bit-pattern path so the bits are the same: 0.963;
(5) the attention backward writes dq, dk rotated back and dq, dk, dv
rounded straight into the qkv product's operand, so the fp32 `d_qkv` of a
layer is neither zeroed, written nor read (bitwise the same training): 0.98;
(6) w2's input gradient is written in bf16 for SwiGLU's backward: 0.984.
Tried and dropped (no gain above the noise): product tiles of up to 2048
rows, one call per thread's share (1.002); wqkv's output in bf16 (1.011);
a fused-multiply-add exp for the loops whose results are rounded to bf16
(1.003). The profile had misled on (1): the row-sum pass read P and dP
first, so it took their cache misses, which then moved to the dS pass.
Together, in the same rounds (4 interleaved rounds of fp32, the previous
binary in bf16, this one in bf16; 2026-11-30): at 1 thread fp32 3.26–3.45 s
a step against 1.02–1.13 s, **3.09×** (2.90–3.26×), where the previous
binary made 2.55×; at 2 threads 1.66–1.85 s against 0.53–0.57 s, **3.09×**
(2.96–3.23×) against 2.57×; this binary's step 0.83× (1 thread) and 0.84×
(2 threads) the previous one's. MFU against the bf16 product peak of the
same process: 48.7% median at 1 thread (45–62%, the peak itself 668–827
GFLOP/s between runs) and 45.6% at 2 (44.5–46.6%).
"""

if primary:
    md += """
## Kernel work ([perf] issue): profile before and after

Recorded by hand (not regenerated): `perf record fspo bench --preset A
--threads 1 --steps 4`, the previous binary and this one back to back on
2026-11-23 while the shared machine was loaded (load average 6–9 on 2
cores, so only ratios mean anything). Shares of the step's samples
(start-up — arena first touch, RoPE tables, init — left out):

| | before | after |
|---|---|---|
| OpenBLAS sgemm (kernel, packing, beta) | 79% | 89% |
| masked softmax + libm `expf` | 11.6% | 4.5% |
| SwiGLU forward + backward | 3.8% | 2.2% |
| attention backward's own loops | 2.2% | 0.7% |
| RMSNorm forward + backward | 1.8% | 1.4% |
| RoPE | 1.1% | 1.3% |
| AdamW | 0.7% | 0.7% |
| **all non-BLAS work** | **21%** | **11%** |

What changed (`src/ops.c`, `src/pool.c`, `src/vecmath.h`): an 8-lane
vectorized `exp` (Cephes, ~1 ulp) and vectorized softmax/SwiGLU/RMSNorm/
log-softmax loops; a fork-join pool (`mpi.threads_per_rank` threads, no
OpenMP, no allocation per dispatch) running every non-BLAS loop, split by
rows or columns so results are bitwise equal at any pool size; attention
over (row, head) pairs on the pool with single-threaded sgemms; query
blocks skip key ranges no query of theirs may see (tree-packed rows);
beta = 0 sgemms instead of memset + accumulate in the backward. Same-run
throughput, old → new binary: config A 1 thread 1151 → 1531 tokens/s
(1.33×); config B 2 threads 138 → 204 and 161 → 223 tokens/s (1.4–1.5×),
where tuned PyTorch did 133–141 tokens/s in the same minutes. After the
change sgemm is ~90% of a 1-thread step, so MFU is now bounded by how well
OpenBLAS runs our shapes (N×C×3C, N×C×2F with C = 256–512), not by our loops.

Then (session 3): the layer products split their output rows over the same
pool, each part a single-threaded sgemm, instead of using OpenBLAS's own
threads, whose workers busy-wait ~0.1 s after every call and so competed
with the pool for the two cores. Same minutes, config A at 2 threads: 5,002
and 5,051 tokens/s against 4,873 and 3,899 with OpenBLAS threading; config
B 812 / 772 against 804 / 678 (steadier rather than faster). And the
preference stage's "1 rank × 2 threads no faster than 1 × 1" of earlier
reports was `mpirun` binding the one rank to one core (its default for
np ≤ 2): the rows below run 2-thread layouts with `--bind-to none`, and
`fspo train` now warns when a rank's threads exceed the CPUs it is bound to.
"""

if torch_runs:
    # fspo's best thread count per config and round, against PyTorch in the same round
    best = {}
    for r in runs:
        key = (name.get((r["d_model"], r["n_layers"]), "?"), r.get("round", 1))
        best[key] = max(best.get(key, 0), r["tokens_per_s"])
    tgroups = {}
    for r in torch_runs:
        tgroups.setdefault((r["preset"], r["label"]), []).append(r)
    trows = []
    for (preset, label), rs in sorted(tgroups.items()):
        ours = [best[(preset, r.get("round", 1))] for r in rs if (preset, r.get("round", 1)) in best]
        ratios = [best[(preset, r.get("round", 1))] / r["tokens_per_s"] for r in rs if (preset, r.get("round", 1)) in best]
        trows.append(f"| {preset} | {label} | {spread([r['tokens_per_s'] for r in rs])} | "
                     f"{median([r['step_s_median'] for r in rs]):.2f} | {spread(ours)} | "
                     f"**{spread(ratios, '{:.2f}×')}** |")
md += f"""
## Against PyTorch on the same step

`scripts/bench_torch.py`: tests/torch_ref.py's model (the same network,
float32) doing the same step (forward, next-token loss on every position,
backward, clipping, `torch.optim.AdamW`) on the same shapes, Debian's
PyTorch under `/usr/bin/python3`. **defaults**: as installed. **tuned**:
`LD_PRELOAD` of tcmalloc, `OMP_NUM_THREADS=1`, `OPENBLAS_NUM_THREADS=2`,
`torch.set_num_threads(1)`. fspo's figure is its best above (1 or 2 threads)
**in the same round** as the PyTorch run; the ratio column is the median of
the per-round ratios (defaults: one round, against round 1).

| config | PyTorch | PyTorch tokens/s | step s | fspo tokens/s | fspo / PyTorch |
|---|---|---|---|---|---|
{chr(10).join(trows)}
"""
if torch_runs and not runs16:
    md += """
PyTorch's bf16 autocast is not run where the CPU has no bf16 units: there
its bf16 products fall back to slow generic code, far below its fp32, so fp32 is PyTorch's best mode
too. Recorded by hand on the AVX2-only AMD EPYC of 2026-11-30, once, just
after its `make bench`: `bench_torch.py --preset B --steps 2 --threads 2
--autocast bf16` with tcmalloc ran at 12 tokens/s (a 168 s step), 0.04× the
297 tokens/s of its tuned fp32.
"""

if torch16:
    best16, best32 = {}, {}
    for r in runs16:
        key = (name.get((r["d_model"], r["n_layers"]), "?"), r.get("round", 1))
        best16[key] = max(best16.get(key, 0), r["tokens_per_s"])
    for r in runs:
        key = (name.get((r["d_model"], r["n_layers"]), "?"), r.get("round", 1))
        best32[key] = max(best32.get(key, 0), r["tokens_per_s"])
    t16 = {}
    for r in torch16:
        t16.setdefault(r["preset"], []).append(r)
    rows = []
    for preset, rs in sorted(t16.items()):
        keyed = [(r, (preset, r.get("round", 1))) for r in rs]
        ours16 = [best16[k] for r, k in keyed if k in best16]
        r16 = [best16[k] / r["tokens_per_s"] for r, k in keyed if k in best16]
        r32 = [best32[k] / r["tokens_per_s"] for r, k in keyed if k in best32]
        rows.append(f"| {preset} | {spread([r['tokens_per_s'] for r in rs])} | "
                    f"{median([r['step_s_median'] for r in rs]):.2f} | {spread(ours16) if ours16 else '–'} | "
                    f"**{spread(r16, '{:.2f}×') if r16 else '–'}** | {spread(r32, '{:.2f}×') if r32 else '–'} |")
    md += f"""
### PyTorch with bf16 autocast

`scripts/bench_torch.py --autocast bf16`: the step above with the forward and
the loss under `torch.autocast("cpu", dtype=torch.bfloat16)` (weights,
gradients and AdamW in float32, like `model.precision: bf16`), with tcmalloc
and **2 torch threads** (`OMP_NUM_THREADS=2`, `torch.set_num_threads(2)`):
under autocast the products run in oneDNN on torch's own threads, so the
fp32 row's 1 torch thread + 2 OpenBLAS threads would leave it one core (it
ran at about half this speed that way), in the same rounds as fspo's bf16 and
fp32 runs; fspo's figures are its best thread count in the same round.

| config | PyTorch bf16 autocast tokens/s | step s | fspo bf16 tokens/s | fspo bf16 / PyTorch bf16 | fspo fp32 / PyTorch bf16 |
|---|---|---|---|---|---|
{chr(10).join(rows)}
"""

if data:
    md += f"""
## Data pipeline

`scripts/bench_train.sh`: `fspo synth -o users.jsonl --users 1500 --pairs-per-user 40`
({data['synth_pairs']} pairs) at **{data['synth_pairs_per_s']:.0f} pairs/s**; `fspo prep` of
its {data['prep_mb']:.1f} MB of JSONL into the HDF5 dataset (parse, validate, group, tokenize,
write, seal) at **{data['prep_mb_per_s']:.1f} MB/s** end to end.
"""
if tok:
    md += f"""
The BPE tokenizer (docs/tokenizer.md) on the same file: `fspo tokenizer train --vocab {tok['vocab']}`
learns at {tok['learn_mb_per_s_cpu']:.1f} MB/s of CPU time; encoding (`fspo tokenizer stats`: every
prompt and answer) runs at **{tok['encode_mb_per_s_cpu']:.1f} MB/s** of CPU time
({tok['encode_mb_per_s_wall']:.1f} MB/s wall); `fspo prep --tokenizer bpe:{tok['vocab']}` (learning from
the training users, then encoding) at {tok['prep_bpe_mb_per_s']:.1f} MB/s end to end, {tok['bytes_per_token']:.2f} bytes/token.
"""

pref_fixed = [r for r in pref if r.get("ref_cache") is not None]
pref = [r for r in pref if r.get("ref_cache") is None]
if pref:
    prec = lambda r: r.get("precision", "fp32")
    per = {(r.get("round", 1), r["ranks"], r["threads"], prec(r)): r["meta_examples_per_s"] for r in pref}
    base = {k[0]: v for k, v in per.items() if k[1:] == (1, 1, "fp32")}
    pgroups = {}
    for r in pref:
        pgroups.setdefault((r["ranks"], r["threads"], prec(r)), []).append(r)
    rows = []
    for (ranks, threads, p), rs in sorted(pgroups.items(), key=lambda kv: (kv[0][2] != "fp32", kv[0][0] * kv[0][1], kv[0][0])):
        speedups = [r["meta_examples_per_s"] / base[r.get("round", 1)] for r in rs if r.get("round", 1) in base]
        # bf16 against fp32 at the same ranks x threads, in the same round
        vs32 = [per[k] / per[(k[0], k[1], k[2], "fp32")] for k in per
                if k[1:] == (ranks, threads, p) and p != "fp32" and (k[0], k[1], k[2], "fp32") in per]
        ar = [r for r in rs if r["allreduce_hidden_pct"] is not None]
        hidden = "–" if not ar else (f"{median([r['allreduce_ms'] for r in ar]):.1f} ms, "
                                     f"{median([r['allreduce_hidden_pct'] for r in ar]):.0f}% hidden")
        rows.append(f"| {ranks} × {threads} | {p} | {median([r['tokens_per_s'] for r in rs]):.0f} | "
                    f"{spread([r['meta_examples_per_s'] for r in rs], '{:.2f}')} | **{spread(speedups, '{:.2f}×')}** | "
                    f"{'**' + spread(vs32, '{:.2f}×') + '**' if vs32 else '–'} | "
                    f"{100 * median([r['mfu'] for r in rs]):.1f}% | {hidden} |")
    pref_by_hand = """What 2 × 1 loses against a perfect 2× (measured by hand, 2026-11-23; this VM
exposes no hardware counters to `perf stat`): two independent 1-thread
`fspo bench --preset A` processes side by side run at 0.98× and 0.95× of
one alone (3,066 and 2,974 vs 3,123 tokens/s): ≈ 3% for sharing the
last-level cache and memory bandwidth, i.e. ≈ 1.94× at best; the ranks'
wait after the backward (`allreduce_exposed_ms` in the JSON, ≈ 50–220 ms of a ≈ 4.6 s step:
length imbalance the cost-balanced shares leave, plus the allreduce's
tail) takes 1–5% more; and rounds differ by ±10% on this shared VM.
""" if primary else ""
    md += f"""
## Preference stage, data parallel

`fspo train` with `train.stage: pref` (DPO against a frozen reference, so two
forwards and one backward per step) on config A's model (d 256, 4 layers,
T ≤ 2048), global batch 8 FSPO meta-examples (N = 4 few-shot, Q = 4 queries,
tree-packed) from the synthetic users above; median over steps 2–5 of the
metrics log, `mpi.bucket_mb: 1`; the layouts run interleaved, `BENCH_ROUNDS`
rounds, and "vs 1 × 1" is the median of each round's ratio to that round's
1 × 1 (fp32). Ranks × OpenBLAS threads per rank on this 2-core machine; the
bf16 rows (`model.precision: bf16`, run only where the CPU has bf16 product
units) give "vs fp32" as the median of each round's ratio to the fp32 row
of the same ranks × threads, and their MFU is against the bf16 product peak:

| ranks × threads | precision | tokens/s | meta-examples/s (median, range) | vs 1 × 1 fp32 | vs fp32 (same layout) | MFU | gradient allreduce |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Targets: 2 ranks × 1 thread ≥ 1.8× 1 rank × 1 thread ([train]), ≥ 1.85× ([perf]).
{pref_by_hand}"Hidden" is 1 − (time waited after the backward) / (one blocking allreduce
of all gradients, timed at start-up); the wait also absorbs load imbalance
between ranks, so it is a lower bound.
"""
if pref_fixed:
    on = {r.get("round", 1): r["meta_examples_per_s"] for r in pref_fixed if r["ref_cache"]}
    off = {r.get("round", 1): r["meta_examples_per_s"] for r in pref_fixed if not r["ref_cache"]}
    ratios = [on[k] / off[k] for k in on if k in off]
    md += f"""
## Reference log-probs once (`loss.ref_cache`)

The preference stage above, 1 rank × 1 thread, with `data.fixed_examples: 8`
(the batch): every step after the first repeats the same 8 meta-examples.
With `loss.ref_cache` (the default) the frozen reference's answer log-probs
of each meta-example are kept after its first forward and its later
forwards are skipped; off, the reference runs every step. Median over steps
2–5, `BENCH_ROUNDS` interleaved rounds:

| loss.ref_cache | meta-examples/s (median, range) |
|---|---|
| true | {spread(list(on.values()), '{:.2f}')} |
| false | {spread(list(off.values()), '{:.2f}')} |
| **true / false** | **{spread(ratios, '{:.2f}×')}** |

A step is then one policy forward and backward instead of two forwards and
a backward, about a quarter less work; the results are the same bit for bit
(`tests/test_train.sh`). When meta-examples do not repeat (the default:
every step draws new ones from (seed, step)), each reference forward already
runs once per meta-example and there is nothing to reuse.
"""
if pack:
    md += f"""
## FSPO preference step: tree packing vs unshared rows

`{pack.get('command', 'fspo bench --pref')}`: config A's model (d 256, 4 layers),
{pack['threads']} threads, a DPO step (frozen reference forward, policy forward,
loss, backward, AdamW) per meta-example of N = {pack['fewshot']} few-shot pairs and
Q = {pack['queries']} queries from `fspo synth` users (300 users × 40 pairs), the
same {pack['examples']} meta-examples in both layouts, interleaved in one process.
**Tree**: one row (context once, each query's prompt once, both answers
branching from it; {pack['tree_tokens_mean']:.0f} tokens on average).
**Unshared**: the 2Q rows context + prompt + answer that FSPO's reference
code builds, padded to the longest ({pack['unshared_tokens_mean']:.0f} tokens on average).

| layout | s per meta-example (median) | meta-examples/s |
|---|---|---|
| tree-packed | {pack['tree_s_median']:.3f} | {1 / pack['tree_s_median']:.3f} |
| unshared rows | {pack['unshared_s_median']:.3f} | {1 / pack['unshared_s_median']:.3f} |
| **tree / unshared** | **{pack['speedup']:.2f}×** | |

Same loss checked in the run: largest relative difference of the DPO loss
{pack['loss_max_rel_diff']:.1e}, of the gradients {pack['grad_max_rel_diff']:.1e} (tolerance 1e-4;
`same_loss: {str(pack['same_loss']).lower()}`). Target of the [perf] issue: ≥ 4×.

**Peak RSS, preference stage**: the tree-packed setup alone (policy with
gradients and AdamW moments, frozen reference, both arenas for
{pack['arena_len']} tokens), measured before the unshared models exist:
`VmHWM` {pack['rss_peak_mb']:.0f} MB against {pack['analytic_mb']:.0f} MB analytic
(5 × 4 bytes per parameter + the two arenas) = **{pack['rss_ratio']:.2f}×**; net of the
process before loading anything ({pack['rss_base_mb']:.0f} MB) and counting the
dataset's arrays ({pack['dataset_mb']:.1f} MB): {pack['rss_ratio_net']:.2f}×. Target ≤ 1.3×.
"""
if pack and torch_pref:
    ratio = (1 / pack['tree_s_median']) / torch_pref['meta_per_s']
    md += f"""
## The same FSPO work in PyTorch, the usual way

`{torch_pref.get('command', 'scripts/bench_torch_fspo.py')}`:
the unshared rows above (dumped by `fspo bench --pref --dump`), each
query's chosen and rejected answer as its own row repeating the few-shot
context, right-padded; DPO against a frozen reference (forward under
`no_grad`), backward, clipping, `torch.optim.AdamW`, tuned as above
(tcmalloc, 1 torch thread, 2 OpenBLAS threads); median of {torch_pref['examples']} meta-examples after one warm-up.

| | s per meta-example | meta-examples/s |
|---|---|---|
| PyTorch, unshared rows (tuned) | {torch_pref['step_s_median']:.2f} | {torch_pref['meta_per_s']:.4f} |
| fspo, tree-packed | {pack['tree_s_median']:.3f} | {1 / pack['tree_s_median']:.3f} |
| **fspo / PyTorch** | | **{ratio:.2f}×** |

Target of the [perf] issue: ≥ 6×.
"""
if ckpt:
    md += f"""
## Checkpoints

`{ckpt.get('command', 'fspo bench --ckpt')}`: config B's {ckpt['params'] / 1e6:.1f} M parameters with
AdamW moments, {ckpt['bytes'] / 1e6:.0f} MB of HDF5. **Save** = `ckpt_save` (write the
temporary file, per-tensor checksums, flush, fsync, rename, fsync the
directory, reopen and verify); **load** = `ckpt_load` (whole-file seal check,
then every tensor and its checksum). Against `write` + `fsync` of the same
number of bytes, and `read` of them back (the page cache serves both reads);
medians of {ckpt['reps']}.

| | checkpoint | plain | ratio |
|---|---|---|---|
| save | {ckpt['save_s']:.3f} s | {ckpt['plain_write_fsync_s']:.3f} s (write+fsync) | {ckpt['save_ratio']:.2f}× |
| load | {ckpt['load_s']:.3f} s | {ckpt['plain_read_s']:.3f} s (read) | {ckpt['load_ratio']:.2f}× |
"""
if dp:
    md += f"""
## Gradient allreduce hidden behind the backward

`{dp.get('command', 'mpirun -np 2 fspo bench --dp')}`: {dp['ranks']} ranks × {dp['threads']} thread
on config A (batch {dp['batch']} × 1024), **the same rows on every rank** and a
barrier right before the backward; {dp['buckets']} buckets of ≥ {dp['bucket_mb']:g} MB, started as the
backward finishes each tensor and polled between attention heads; medians
of the steps. The ranks share one node, so their `CLOCK_MONOTONIC` clocks
compare: **communication left** is the time from the moment the *last*
rank finished its backward until the allreduce completed, which excludes
whatever imbalance is left between the ranks (the per-rank wait includes
it: on this shared 2-core VM identical work still ends tens of ms apart,
and that is what made the training run above read 0% hidden).

| one blocking allreduce of all gradients | backward alone | backward + overlapped allreduce | wait per rank (incl. imbalance) | communication left after the last backward | buckets still in flight then | hidden |
|---|---|---|---|---|---|---|
| {dp['allreduce_ms']:.1f} ms | {dp['backward_ms']:.0f} ms | {dp['backward_overlapped_ms']:.0f} ms | {dp['wait_ms']:.1f} ms | {dp['exposed_ms']:.1f} ms | {dp['buckets_pending_after_backward']:.0f} | **{100 * dp['hidden']:.0f}%** |

"Hidden" = 1 − communication left / blocking allreduce. Target of the
[perf] issue: ≥ 80%. What stays exposed is essentially the last bucket (the
tied embedding, final only after the input-side embedding backward, plus
the rest of layer 0). On this machine the transport is shared memory, so
the copies and sums run on the ranks' own cores inside MPI calls: the
"backward + overlapped" column shows that cost; `docs/scaling.md` models
real networks.
"""
if dp and dp_shard and "optim_state_mb_per_rank" in dp:
    md += f"""
## ZeRO-1: optimizer state per rank

`{dp_shard.get('command', 'mpirun -np 2 fspo bench --dp --shard')}`: the same step with
`mpi.shard_optimizer` (docs/design.md, "ZeRO-1"): each rank keeps the AdamW
moments of its slice of the {dp_shard['params']} parameters, the gradients are
reduce-scattered in the same buckets during the backward. State per rank:
counted (8 bytes per parameter held, MiB), and the resident memory it added
(VmRSS before and after one update touched it: below the count where the
allocator hands out pages already resident; means over the ranks).

| {dp['ranks']} ranks | optimizer state per rank | resident memory added | blocking reduction | communication left after the last backward | hidden |
|---|---|---|---|---|---|
| not sharded (allreduce) | {dp['optim_state_mb_per_rank']:.1f} MiB | {dp['optim_rss_mb_per_rank']:.1f} MiB | {dp['allreduce_ms']:.1f} ms | {dp['exposed_ms']:.1f} ms | {100 * dp['hidden']:.0f}% |
| sharded (reduce-scatter) | {dp_shard['optim_state_mb_per_rank']:.1f} MiB | {dp_shard['optim_rss_mb_per_rank']:.1f} MiB | {dp_shard['allreduce_ms']:.1f} ms | {dp_shard['exposed_ms']:.1f} ms | {100 * dp_shard['hidden']:.0f}% |

Sharded, the updated slices are then all-gathered: {dp_shard.get('allgather_ms', float('nan')):.1f} ms
per step run blocking here (median; `fspo train` starts each bucket's
all-gather as the optimizer finishes it). A reduce-scatter plus an
all-gather move the bytes of one ring allreduce.
"""
open(out_md, "w").write(md)
# the other reports' Machines tables (the reference report gains one if it has none)
for path in glob.glob(os.path.join(os.path.dirname(out_md), "benchmarks*.md")):
    text = open(path).read()
    if BLOCK.search(text):
        text = BLOCK.sub(lambda _: block, text)
    elif path == REFERENCE_MD and "\n## " in text:
        i = text.index("\n## ") + 1
        text = text[:i] + block + "\n" + text[i:]
    open(path, "w").write(text)
