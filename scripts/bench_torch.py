"""PyTorch reference timing for `make bench`: the same training step as
`fspo bench` (random byte rows, next-token loss on every position, AdamW)
on tests/torch_ref.py's model, which is the same network as fspo's.

usage: /usr/bin/python3 scripts/bench_torch.py --preset A|B [--steps N] [--threads N] [--label NAME]
                                               [--autocast bf16]
Prints one JSON line. "Tuned" runs set the environment as docs/benchmarks.md
says (tcmalloc preloaded, OMP_NUM_THREADS=1, OPENBLAS_NUM_THREADS=2) and
pass --threads 1 (torch.set_num_threads). --autocast bf16 runs the forward
and the loss under torch.autocast("cpu", dtype=torch.bfloat16) (weights,
gradients and AdamW stay float32, as fspo's model.precision bf16).
"""
import argparse
import contextlib
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from torch_ref import Config, FspoModel  # noqa: E402

PRESETS = {"A": (Config(264, 256, 4, 4, 0, 1024), 4), "B": (Config(264, 512, 8, 8, 0, 1024), 2),
           "tiny": (Config(264, 32, 1, 2, 0, 64), 2)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="A", choices=PRESETS)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    ap.add_argument("--label", default="default")
    ap.add_argument("--autocast", choices=["bf16"], default=None, help="torch.autocast to bfloat16 on the CPU")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg, B = PRESETS[a.preset]
    T = cfg.max_seq
    torch.manual_seed(0)
    model = FspoModel(cfg, dtype=torch.float32)
    model.init_test_weights(torch.Generator().manual_seed(1), std=0.02)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    tokens = torch.randint(0, 256, (B, T))
    pos = torch.arange(T).expand(B, T)
    seg = torch.zeros(B, T, dtype=torch.long)
    vis = torch.ones(B, 1, 1, dtype=torch.long)
    def autocast():
        if a.autocast:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    times = []
    for s in range(a.steps + 1):  # the first step warms up
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast():
            logits = model(tokens, pos, seg, vis)
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, cfg.vocab), tokens[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if s:
            times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    print(json.dumps({"kind": "torch_step", "preset": a.preset, "label": a.label, "torch": torch.__version__,
                      "precision": "bf16-autocast" if a.autocast else "fp32",
                      "threads": torch.get_num_threads(), "batch": B, "seq": T, "step_s_median": t,
                      "tokens_per_s": B * T / t, "final_loss": float(loss)}))


if __name__ == "__main__":
    main()
