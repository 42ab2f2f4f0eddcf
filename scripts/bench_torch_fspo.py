"""FSPO preference step in PyTorch done the usual way, for `make bench`.

Each query's chosen and rejected answers are separate rows that repeat the
whole few-shot context (as FSPO's reference code does), right-padded to the
longest row; a DPO loss (beta 0.1) against a frozen reference model
(forward under no_grad), backward, clipping and AdamW: one optimizer step
per meta-example. The rows are the ones `fspo bench --pref ... --dump FILE`
timed as "unshared", so both sides see the same meta-examples.

usage: /usr/bin/python3 scripts/bench_torch_fspo.py ROWS.jsonl [--examples K] [--threads N] [--label NAME]
Prints one JSON line.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from torch_ref import Config, FspoModel  # noqa: E402

PAD = 257  # any id: right padding is never attended to by earlier tokens nor scored


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rows")
    ap.add_argument("--examples", type=int, default=0, help="time at most this many (0: all)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--label", default="default")
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--n-layers", type=int, default=4)
    ap.add_argument("--n-heads", type=int, default=4)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    metas = [json.loads(line) for line in open(a.rows)]
    if a.examples:
        metas = metas[: a.examples]
    longest = max(len(r["tokens"]) for m in metas for r in m["rows"])
    cfg = Config(264, a.d_model, a.n_layers, a.n_heads, 0, longest)
    torch.manual_seed(0)
    policy = FspoModel(cfg, dtype=torch.float32)
    policy.init_test_weights(torch.Generator().manual_seed(1), std=0.02)
    ref = FspoModel(cfg, dtype=torch.float32)
    ref.init_test_weights(torch.Generator().manual_seed(2), std=0.02)
    for p in ref.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    beta = 0.1

    def batch(meta):
        rows = meta["rows"]
        T = max(len(r["tokens"]) for r in rows)
        tokens = torch.full((len(rows), T), PAD, dtype=torch.long)
        mask = torch.zeros(len(rows), T - 1)  # 1 where position t predicts an answer token t+1
        for i, r in enumerate(rows):
            n = len(r["tokens"])
            tokens[i, :n] = torch.tensor(r["tokens"])
            mask[i, n - 1 - r["n_answer"]: n - 1] = 1
        pos = torch.arange(T).expand(len(rows), T)
        seg = torch.zeros(len(rows), T, dtype=torch.long)
        vis = torch.ones(len(rows), 1, 1, dtype=torch.long)
        return tokens, pos, seg, vis, mask

    def answer_logps(model, tokens, pos, seg, vis, mask):
        logits = model(tokens, pos, seg, vis)[:, :-1]
        lp = torch.gather(F.log_softmax(logits, dim=-1), 2, tokens[:, 1:, None])[..., 0]
        return (lp * mask).sum(-1)  # [rows]: chosen, rejected, chosen, ...

    times, losses = [], []
    for step, meta in enumerate([metas[0]] + metas):  # the first one warms up
        t0 = time.perf_counter()
        tokens, pos, seg, vis, mask = batch(meta)
        with torch.no_grad():
            r = answer_logps(ref, tokens, pos, seg, vis, mask)
        p = answer_logps(policy, tokens, pos, seg, vis, mask)
        h = beta * ((p[0::2] - r[0::2]) - (p[1::2] - r[1::2]))
        loss = -F.logsigmoid(h).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        if step:
            times.append(time.perf_counter() - t0)
            losses.append(float(loss))
        print(f"bench: torch meta-example {step}/{len(metas)}: {time.perf_counter() - t0:.3f} s", file=sys.stderr)
    t = statistics.median(times)
    print(json.dumps({"kind": "torch_pref", "label": a.label, "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "examples": len(times), "rows_per_example": len(metas[0]["rows"]),
                      "step_s_median": t, "meta_per_s": 1 / t, "final_loss": losses[-1]}))


if __name__ == "__main__":
    main()
