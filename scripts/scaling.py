#!/usr/bin/env python3
"""docs/scaling.md: an alpha-beta model of fspo's bucketed, overlapped ring
allreduce, fed with a measured compute rate, predicting data-parallel
efficiency on 1..256 nodes and the global batch that keeps it >= 90%.

usage: scaling.py [--bench-json FILE|-] [--tokens-per-s X] [--out docs/scaling.md]
With --bench-json (make bench pipes its JSON lines), config B's best
measured training-step tokens/s on this machine is the node's compute rate;
--tokens-per-s overrides it. Plain python3, no torch.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

NETS = {  # name: (alpha seconds, effective bandwidth bytes/s)
    "100 Gb/s InfiniBand (α 1.5 µs, 10 GB/s effective)": (1.5e-6, 10e9),
    "25 GbE (α 15 µs, 2.5 GB/s effective)": (15e-6, 2.5e9),
}
NODES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
BUCKET_MB = 4.0      # gradient bucket (mpi.bucket_mb); the model below also shows 1 MB / 25 MB
BWD_FRACTION = 2 / 3  # backward share of forward+backward compute (2 of the 3 matmul passes)


def flops_per_token(d, L, V=264, T=1024, F=None):
    F = F or 64 * -(-(8 * d // 3) // 64)
    W = L * (4 * d * d + 3 * d * F) + V * d
    return 6 * W + 12 * L * T * d, W


def ring_allreduce(nbytes, P, alpha, bw):
    """Ring allreduce: 2(P-1) latency steps, 2(P-1)/P of the data over each link."""
    if P == 1:
        return 0.0
    return 2 * (P - 1) * alpha + 2 * (P - 1) / P * nbytes / bw


def exposed_comm(grad_bytes, P, alpha, bw, t_bwd, bucket_bytes):
    """Buckets become ready evenly during the backward (the last at its end,
    as the tied embedding finishes last); the network runs them one after
    another. Returns (communication time, time left after the backward)."""
    if P == 1:
        return 0.0, 0.0
    K = max(1, int(-(-grad_bytes // bucket_bytes)))
    b = grad_bytes / K
    tb = ring_allreduce(b, P, alpha, bw)
    done = 0.0
    for k in range(1, K + 1):
        ready = t_bwd * k / K
        done = max(done, ready) + tb
    return K * tb, max(0.0, done - t_bwd)


def efficiency(tokens_per_node, tok_s, grad_bytes, P, alpha, bw, bucket_bytes):
    t_comp = tokens_per_node / tok_s
    comm, exposed = exposed_comm(grad_bytes, P, alpha, bw, BWD_FRACTION * t_comp, bucket_bytes)
    return t_comp / (t_comp + exposed), comm, exposed


def min_tokens_for(eff, tok_s, grad_bytes, P, alpha, bw, bucket_bytes):
    lo, hi = 1.0, 1e12
    if efficiency(hi, tok_s, grad_bytes, P, alpha, bw, bucket_bytes)[0] < eff:
        return float("inf")
    for _ in range(200):
        mid = (lo * hi) ** 0.5
        if efficiency(mid, tok_s, grad_bytes, P, alpha, bw, bucket_bytes)[0] >= eff:
            hi = mid
        else:
            lo = mid
    return hi


def fit_alpha_beta(sweep):
    """Least squares t = a + b * bytes over one sweep of 2-rank allreduces,
    in relative error (weights 1/t^2: the 4 KiB points set a, the 64 MiB
    ones b, instead of the largest times deciding both); for P = 2 the ring
    gives a = 2 alpha and b = 1 / B."""
    xs, ys = [r["bytes"] for r in sweep], [r["seconds"] for r in sweep]
    w = [1 / y ** 2 for y in ys]
    sw, sx, sy = sum(w), sum(wi * x for wi, x in zip(w, xs)), sum(wi * y for wi, y in zip(w, ys))
    sxx, sxy = sum(wi * x * x for wi, x in zip(w, xs)), sum(wi * x * y for wi, x, y in zip(w, xs, ys))
    b = (sw * sxy - sx * sy) / (sw * sxx - sx * sx)
    a = (sy - b * sx) / sw
    return max(a, 1e-7) / 2, 1 / b if b > 0 else float("inf")


GiB = 1 << 30
BUDGET = 24 * GiB  # this machine's memory, the question the table answers


def model_memory(fspo, d, L, H, T, attention, ranks=1, recompute=False):
    """fspo model --json: the one place the memory formula lives (src/model.c)."""
    args = [fspo, "model", "--d-model", str(d), "--n-layers", str(L), "--n-heads", str(H), "--max-seq", str(T),
            "--batch", "1", "--attention", attention, "--json"]
    if ranks > 1:
        args += ["--ranks", str(ranks), "--shard"]
    if recompute:
        args += ["--recompute"]
    r = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
    return r["state_bytes"] + r["activation_bytes"], r["params"]


def memory_section(fspo, attn_rows):
    out = ["""## Memory per rank

From `fspo model --json` (`model_arena_bytes_attn` in `src/model.c`, the
figure `fspo train` checks against the node's memory before it starts):
parameters, gradients and AdamW moments (16 bytes per parameter; ZeRO-1
keeps 8 + 8/P) plus the activations one row of T tokens keeps for the
backward, byte vocabulary (264), batch 1, an SFT step (a preference stage
adds the frozen reference: its weights and one forward's activations).
`full` keeps every layer's [heads, T, T] probabilities; `flash` keeps one
log-sum-exp per row and head and recomputes them by query block;
`+ recompute` (`model.recompute`) keeps one block's activations instead of
every layer's and reruns each block's forward in the backward.
"""]
    if attn_rows:
        out.append("Measured (`make bench`, `fspo bench --attention full|flash`, config A's model, one row, 2 threads): "
                   "peak resident memory (VmHWM) of a whole training step against the analytic figure (RSS also holds "
                   "the code, libraries, the data and allocator slack, which the analytic figure leaves out).\n")
        out.append("| T | attention | peak RSS | analytic | RSS / analytic | step s |")
        out.append("|---|---|---|---|---|---|")
        for r in sorted(attn_rows, key=lambda r: (r["seq"], r["attention"], r.get("recompute", False))):
            kind = r["attention"] + (" + recompute" if r.get("recompute") else "")
            out.append(f"| {r['seq']} | {kind} | {r['rss_peak_mb']:.0f} MB | {r['analytic_mb']:.0f} MB | "
                       f"{r['rss_peak_mb'] / r['analytic_mb']:.2f}× | {r['step_s_median']:.2f} |")
        out.append("")
    shapes = [("config A", 256, 4, 4), ("config B", 512, 8, 8), ("~100M", 768, 14, 12), ("~400M", 1024, 24, 16),
              ("~1.2B", 1536, 36, 16), ("~2.4B", 2048, 40, 16), ("~5B", 2560, 60, 20)]
    Ts = [1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072]
    out.append(f"Per rank, GiB, one row; three row lengths:\n")
    opts = (("full", 1, False), ("flash", 1, False), ("flash", 1, True), ("flash", 64, True))
    out.append("| model | params | T | full | flash | flash + recompute | flash + recompute + ZeRO-1 at 64 ranks |")
    out.append("|---|---|---|---|---|---|---|")
    largest = {}
    for name, d, L, H in shapes:
        for T in (1024, 8192, 32768):
            cells, params = [], 0
            for attn, ranks, rec in opts:
                b, params = model_memory(fspo, d, L, H, T, attn, ranks, rec)
                cells.append(f"{b / GiB:.1f}")
            out.append(f"| {name} | {params / 1e6:.0f} M | {T} | " + " | ".join(cells) + " |")
        for attn, ranks, rec in opts:
            fit = [T for T in Ts if model_memory(fspo, d, L, H, T, attn, ranks, rec)[0] <= BUDGET]
            largest[(name, attn, ranks, rec)] = fit[-1] if fit else 0
    out.append("")
    out.append(f"The longest row (T, powers of 2 up to {Ts[-1]}) each model trains in {BUDGET // GiB} GiB per rank:\n")
    out.append("| model | full | flash | flash + recompute | flash + recompute + ZeRO-1 at 64 ranks |")
    out.append("|---|---|---|---|---|")
    for name, *_ in shapes:
        cells = [str(largest[(name, *o)]) if largest[(name, *o)] else "none" for o in opts]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out.append("""
Full attention's probabilities grow as T² per layer and head and decide
the row length well before the weights do; flash makes the activations
linear in T; recomputing blocks divides that linear part by about the
number of layers (the residual stream at each block's input stays); then
the weights' state (16 bytes per parameter) is the limit, which ZeRO-1
brings to about 8 bytes at 64 ranks.
""")
    return out


def fmt_tokens(x):
    if x == float("inf"):
        return "never"
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if x >= div:
            return f"{x / div:.1f}{unit}"
    return f"{x:.0f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench-json")
    ap.add_argument("--tokens-per-s", type=float)
    ap.add_argument("--out", default="docs/scaling.md")
    a = ap.parse_args()
    tok_s_b, source = a.tokens_per_s, "--tokens-per-s"
    sweeps, attn_rows = {}, []
    if a.bench_json:
        text = (sys.stdin if a.bench_json == "-" else open(a.bench_json)).read()
        try:  # docs/benchmarks.json (one object) or make bench's JSON lines
            doc = json.loads(text)
            runs = doc["step_runs"]
            extra = doc.get("allreduce_sweep", []) + doc.get("attn_memory", [])
        except (ValueError, KeyError, TypeError):
            runs = [json.loads(l) for l in text.splitlines() if l.strip()]
            extra = runs
        for r in extra:
            if r.get("kind") == "allreduce_sweep":
                sweeps.setdefault(r["nodes"], []).append(r)
            elif r.get("kind") == "attn_memory":
                attn_rows.append(r)
        runs = [r for r in runs if "kind" not in r and r.get("d_model") == 512 and r.get("n_layers") == 8
                and r.get("precision", "fp32") == "fp32"]  # the default precision's step
        if runs and not tok_s_b:
            # the faster thread count, median over make bench's rounds
            by_threads = {}
            for r in runs:
                by_threads.setdefault(r["threads"], []).append(r["tokens_per_s"])
            threads, vals = max(by_threads.items(), key=lambda kv: statistics.median(kv[1]))
            tok_s_b = statistics.median(vals)
            source = f"make bench: config B, {threads} thread(s), median of {len(vals)} run(s), this machine"
    if not tok_s_b:
        tok_s_b, source = 579.0, "docs/benchmarks.md of 2026-11-23 (quiet machine)"
    nets = dict(NETS)
    fits = {nodes: fit_alpha_beta(s) for nodes, s in sweeps.items() if len(s) >= 3}
    if 2 in fits:
        al, bw = fits[2]
        nets[f"two Slurm nodes on this host, loopback TCP, fitted (α {al * 1e6:.0f} µs, {bw / 1e9:.2f} GB/s)"] = (al, bw)
    fB, WB = flops_per_token(512, 8)
    f100, W100 = flops_per_token(768, 14)
    gflops = tok_s_b * fB / 1e9  # the node's sustained model GFLOP/s, used for both models
    models = {
        f"config B ({WB / 1e6:.1f} M matmul weights)": (fB, WB, 2 * 1024),
        f"~100M (d 768, 14 layers, F 2048: {W100 / 1e6:.0f} M matmul weights)": (f100, W100, 8 * 1024),
    }
    out = [f"""# Scaling on paper

Regenerated by `make bench` (`scripts/scaling.py`, plain python3; rerun it
alone with `python3 scripts/scaling.py --bench-json docs/benchmarks.json` or
`--tokens-per-s X`). An α-β model of
fspo's data-parallel step, fed with the compute rate measured on this
machine, predicts efficiency on 1–256 nodes.

## Model

- **Compute per node.** Config B's training step runs at **{tok_s_b:.0f}
  tokens/s** ({source}), i.e. {gflops:.0f} GFLOP/s of model FLOPs. A node is
  taken to sustain that FLOP rate on both models (the ~100M model has
  larger matrices, so this is conservative). Step compute t = tokens per
  node × FLOPs per token / rate; the backward is {BWD_FRACTION:.0%} of it.
- **Ring allreduce** of n bytes on P nodes:
  `T(n) = 2(P−1)·α + 2·(P−1)/P · n/B` (reduce-scatter then all-gather; the
  float adds are far below link speed and left out).
- **Buckets, overlapped.** fspo starts an `MPI_Iallreduce` per bucket as the
  backward finishes it (per tensor, reverse memory order, `mpi.bucket_mb`,
  here {BUCKET_MB:g} MB of fp32 gradients). The model lets K buckets become
  ready evenly over the backward, the last at its very end (the tied
  embedding finishes last), and the network serve them in order; the time
  still needed after the backward is **exposed**. Efficiency = t / (t +
  exposed). The optimizer step, the metrics allreduce (a few doubles) and
  input are left out: they do not grow with P.
- **What the model leaves out**: MPI progress. Open MPI moves nonblocking
  collectives only inside MPI calls, so fspo polls after every tensor of
  the backward and between attention heads; measured on this machine
  (docs/benchmarks.md, "Gradient allreduce hidden behind the backward"),
  what is left after the last rank's backward is about the last bucket.
  On InfiniBand the transfers themselves are RDMA, so polling only gates
  the handshakes.
- **Networks** (effective bandwidth ≈ 80% of line rate):
"""]
    for name in nets:
        out.append(f"  - {name}")
    out.append("")
    if fits:
        out.append("""## α and β fitted from measured allreduces

`make bench` times one blocking allreduce of 4 KiB to 64 MiB between 2
ranks (`fspo bench --allreduce-sweep`, the median of 3 each): on one node
(`mpirun -np 2`, shared memory) and on two Slurm nodes (`srun -N2 -n2
--mpi=pmix` on the two-node test cluster of `tests/slurm_local.sh`: two
slurmd on this host, so TCP over loopback between processes that share two
cores with everything else, not a real network). For P = 2 the ring gives
t = 2α + n/B; a least-squares line through the sweep (in relative error) gives α and B. The
two-node fit enters the tables below as a third network, which shows how
the projection to 64 and 256 nodes reads with a measured α and B in place of
the assumed ones; a real cluster's two-node sweep (the same command under
its srun) is what the projection wants.
""")
        out.append("| setup | bytes | measured | fitted |")
        out.append("|---|---|---|---|")
        for nodes, s in sorted(sweeps.items()):
            al, bw = fits[nodes]
            where = "one node, 2 ranks" if nodes == 1 else f"{nodes} Slurm nodes, 1 rank each"
            for r in sorted(s, key=lambda r: r["bytes"]):
                out.append(f"| {where} | {r['bytes']} | {1e3 * r['seconds']:.3f} ms | "
                           f"{1e3 * (2 * al + r['bytes'] / bw):.3f} ms |")
        out.append("")
        for nodes in sorted(fits):
            al, bw = fits[nodes]
            out.append(f"- {'one node' if nodes == 1 else f'{nodes} Slurm nodes'}: α = {al * 1e6:.1f} µs, "
                       f"B = {bw / 1e9:.2f} GB/s")
        out.append("")
    for mname, (fpt, W, per_node) in models.items():
        grad_bytes = 4 * W
        tok_s = gflops * 1e9 / fpt
        out.append(f"## {mname}\n")
        out.append(f"{grad_bytes / 1e6:.0f} MB of fp32 gradients per step; a node computes {tok_s:.0f} tokens/s; "
                   f"per-node batch {per_node} tokens → {per_node / tok_s:.2f} s of compute per step.\n")
        for nname, (alpha, bw) in nets.items():
            out.append(f"**{nname}**, buckets of {BUCKET_MB:g} MB:\n")
            out.append("| nodes | allreduce, not overlapped | exposed after backward | efficiency at "
                       f"{per_node} tokens/node | global batch for ≥ 90% (tokens) | same, 16× faster node |")
            out.append("|---|---|---|---|---|---|")
            for P in NODES:
                e, comm, exp = efficiency(per_node, tok_s, grad_bytes, P, alpha, bw, BUCKET_MB * 1e6)
                need = min_tokens_for(0.9, tok_s, grad_bytes, P, alpha, bw, BUCKET_MB * 1e6)
                need16 = min_tokens_for(0.9, 16 * tok_s, grad_bytes, P, alpha, bw, BUCKET_MB * 1e6)
                g = need * P if P > 1 else 0
                g16 = need16 * P if P > 1 else 0
                out.append(f"| {P} | {1e3 * comm:.1f} ms | {1e3 * exp:.1f} ms | {100 * e:.1f}% | "
                           f"{fmt_tokens(g) if P > 1 else '–'} | {fmt_tokens(g16) if P > 1 else '–'} |")
            out.append("")
    # bucket size sensitivity at 256 nodes, 25 GbE, the 100M model
    fpt, W, per_node = list(models.values())[1]
    alpha, bw = list(NETS.values())[1]
    tok_s = gflops * 1e9 / fpt
    out.append("## Bucket size (the ~100M model, 25 GbE, 256 nodes)\n")
    out.append("| bucket | buckets | allreduce, not overlapped | global batch for ≥ 90% (tokens) |")
    out.append("|---|---|---|---|")
    for mb in (1, 4, 25, 100):
        K = max(1, int(-(-4 * W // (mb * 1e6))))
        comm = exposed_comm(4 * W, 256, alpha, bw, 1.0, mb * 1e6)[0]
        need = min_tokens_for(0.9, tok_s, 4 * W, 256, alpha, bw, mb * 1e6)
        out.append(f"| {mb} MB | {K} | {1e3 * comm:.0f} ms | {fmt_tokens(256 * need)} |")
    # ZeRO-1: memory per rank and the all-gather it adds after the update
    out.append("""
## ZeRO-1 (`mpi.shard_optimizer`)

Each rank keeps fp32 parameters and gradients (8 bytes per parameter) and
the AdamW moments of its 1/P slice only (8/P bytes), instead of 16 bytes per
parameter. The gradient buckets are reduce-scattered as the backward
finishes them (the first half of the ring allreduce, so the overlap above
holds), and the updated slices are all-gathered: `(P−1)·α + (P−1)/P · n/B`,
the other half. fspo starts each bucket's all-gather as the optimizer
finishes that bucket, so it overlaps the update (short next to the
backward); the table counts it as exposed in full, an upper bound.
Activations and the reference model of a preference stage come on top of
the figures below.
""")
    out.append("| model | P | params + grads + moments per rank | unsharded | all-gather exposed, 100 Gb/s IB | 25 GbE |")
    out.append("|---|---|---|---|---|---|")
    for mname, (fpt, W, per_node) in models.items():
        n_bytes = 4 * W
        for P in (1, 2, 8, 64):
            per_rank = 2 * n_bytes + 2 * n_bytes / P
            gathers = [(P - 1) * al + (P - 1) / P * n_bytes / b for al, b in NETS.values()]
            out.append(f"| {mname.split(' (')[0]} | {P} | {per_rank / 1e6:.0f} MB | {4 * n_bytes / 1e6:.0f} MB | "
                       f"{1e3 * gathers[0]:.1f} ms | {1e3 * gathers[1]:.1f} ms |")
    out.append("")
    out += memory_section(os.environ.get("FSPO", "./fspo"), attn_rows)
    out.append("""
## Reading the tables

- The bandwidth term barely grows with P (2(P−1)/P → 2), so at a fixed
  per-node batch the cost per step is almost flat in P; the latency term
  2(P−1)·α per bucket is what grows, and it is why small buckets hurt at
  256 nodes on Ethernet (last table): larger buckets, or a hierarchical
  (node-local then inter-node) allreduce, are the fix there.
- Efficiency is set by the per-node batch, not the node count: keep each
  node's share of the global batch at or above the "≥ 90%" figure ÷ P. On
  a node that computes as slowly as this 2-core VM, communication hides
  behind the backward almost entirely; a real 16× faster node needs the
  last column's global batch.
- A preference step (reference forward + policy forward + backward) has
  more compute per gradient byte than the SFT step modelled here, so it
  scales at least as well.
""")
    open(a.out, "w").write("\n".join(out))
    print(f"scaling: wrote {a.out} ({source}: {tok_s_b:.0f} tokens/s for config B)", file=sys.stderr)


if __name__ == "__main__":
    main()
