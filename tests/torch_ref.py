#!/usr/bin/python3
"""PyTorch reference for the fspo model (docs/model.md) and golden-file writer.

Run with Debian's interpreter, which has torch:  /usr/bin/python3 tests/torch_ref.py --out FILE
Importable: FspoModel, Config, param_order, target_logp and write_golden are reused by other tests.
"""
import argparse
import math
import struct
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

RMSNORM_EPS = 1e-5
ROPE_THETA = 10000.0


@dataclass
class Config:
    vocab: int
    d_model: int
    n_layers: int
    n_heads: int
    ffn_hidden: int = 0
    max_seq: int = 16

    def __post_init__(self):
        if self.ffn_hidden == 0:  # Llama's SwiGLU width, rounded up to a multiple of 64
            self.ffn_hidden = 64 * math.ceil((8 * self.d_model / 3) / 64)
        assert self.d_model % self.n_heads == 0 and (self.d_model // self.n_heads) % 2 == 0


def param_shapes(cfg):
    """(name, shape, decayed) in the order of the C flat buffer."""
    C, F_ = cfg.d_model, cfg.ffn_hidden
    out = [("tok_emb", (cfg.vocab, C), True)]
    for l in range(cfg.n_layers):
        out += [(f"layers.{l}.attn_norm", (C,), False),
                (f"layers.{l}.attn.wqkv", (3 * C, C), True),
                (f"layers.{l}.attn.wo", (C, C), True),
                (f"layers.{l}.mlp_norm", (C,), False),
                (f"layers.{l}.mlp.w13", (2 * F_, C), True),
                (f"layers.{l}.mlp.w2", (C, F_), True)]
    return out + [("final_norm", (C,), False)]


def param_order(cfg):
    return [name for name, _, _ in param_shapes(cfg)]


def rmsnorm(x, gain):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + RMSNORM_EPS) * gain


def rope(z, cos, sin):
    """Rotate interleaved pairs (z[2i], z[2i+1]); z is [B,H,T,hd], cos/sin are [B,1,T,hd/2]."""
    even, odd = z[..., 0::2], z[..., 1::2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


def attention_allowed(seg, vis):
    """allowed[b,t,u] = (u == t) | (u < t & vis[b, seg[b,t], seg[b,u]])."""
    B, T = seg.shape
    rows = torch.arange(B)[:, None, None]
    seg_vis = vis[rows, seg[:, :, None], seg[:, None, :]].bool()
    t = torch.arange(T)
    return (t[None, :] == t[:, None]) | ((t[None, :] < t[:, None]) & seg_vis)


class Attention(nn.Module):
    def __init__(self, cfg, dtype):
        super().__init__()
        C = cfg.d_model
        self.n_heads = cfg.n_heads
        self.wqkv = nn.Parameter(torch.zeros(3 * C, C, dtype=dtype))
        self.wo = nn.Parameter(torch.zeros(C, C, dtype=dtype))

    def forward(self, h, cos, sin, allowed):
        B, T, C = h.shape
        hd = C // self.n_heads
        q, k, v = (h @ self.wqkv.T).split(C, dim=-1)
        q, k, v = (z.view(B, T, self.n_heads, hd).transpose(1, 2) for z in (q, k, v))
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        scores = scores.masked_fill(~allowed[:, None], float("-inf"))
        a = torch.softmax(scores, dim=-1) @ v
        return a.transpose(1, 2).reshape(B, T, C) @ self.wo.T


class Mlp(nn.Module):
    def __init__(self, cfg, dtype):
        super().__init__()
        self.w13 = nn.Parameter(torch.zeros(2 * cfg.ffn_hidden, cfg.d_model, dtype=dtype))
        self.w2 = nn.Parameter(torch.zeros(cfg.d_model, cfg.ffn_hidden, dtype=dtype))

    def forward(self, h):
        gate, up = (h @ self.w13.T).chunk(2, dim=-1)
        return (F.silu(gate) * up) @ self.w2.T


class Layer(nn.Module):
    def __init__(self, cfg, dtype):
        super().__init__()
        self.attn_norm = nn.Parameter(torch.ones(cfg.d_model, dtype=dtype))
        self.attn = Attention(cfg, dtype)
        self.mlp_norm = nn.Parameter(torch.ones(cfg.d_model, dtype=dtype))
        self.mlp = Mlp(cfg, dtype)


class FspoModel(nn.Module):
    """Weights start as zeros/ones; load them (load_state_dict) or call init_test_weights."""

    def __init__(self, cfg, dtype=torch.float64):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Parameter(torch.zeros(cfg.vocab, cfg.d_model, dtype=dtype))
        self.layers = nn.ModuleList([Layer(cfg, dtype) for _ in range(cfg.n_layers)])
        self.final_norm = nn.Parameter(torch.ones(cfg.d_model, dtype=dtype))

    def forward(self, tokens, pos, seg, vis):
        hd = self.cfg.d_model // self.cfg.n_heads
        dtype = self.tok_emb.dtype
        freq = ROPE_THETA ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
        angle = (pos.to(torch.float64)[..., None] * freq)[:, None].to(dtype)  # [B,1,T,hd/2]
        cos, sin = angle.cos(), angle.sin()
        allowed = attention_allowed(seg, vis)
        x = self.tok_emb[tokens]
        for layer in self.layers:
            x = x + layer.attn(rmsnorm(x, layer.attn_norm), cos, sin, allowed)
            x = x + layer.mlp(rmsnorm(x, layer.mlp_norm))
        return rmsnorm(x, self.final_norm) @ self.tok_emb.T

    def init_test_weights(self, gen, std=0.1):
        """Larger-than-real init so every term of the test is far from zero."""
        params = dict(self.named_parameters())
        with torch.no_grad():
            for name, shape, decayed in param_shapes(self.cfg):
                noise = torch.randn(shape, generator=gen, dtype=torch.float64) * std
                params[name].copy_(noise if decayed else 1.0 + noise)


def target_logp(logits, targets):
    """targets [K,2] = (flat index b*T+t, token)."""
    flat = logits.reshape(-1, logits.shape[-1]).log_softmax(-1)
    return flat[targets[:, 0], targets[:, 1]]


def weighted_nll(model, batch):
    logp = target_logp(model(*batch["inputs"]), batch["targets"])
    return -(batch["target_w"] * logp).sum()


# ---------------------------------------------------------------- test data

GOLDEN_CFG = Config(vocab=264, d_model=32, n_layers=2, n_heads=4, ffn_hidden=48, max_seq=16)
B, T, S = 2, 16, 5
# Row 0 segments: context, prompt, chosen, rejected, second prompt (lengths sum to T).
ROW0_LENGTHS = [4, 3, 4, 2, 3]
ROW0_VISIBLE = {0: [0], 1: [0, 1], 2: [0, 1, 2], 3: [0, 1, 3], 4: [0, 4]}
ROW0_FIRST_POS = [0, 4, 7, 7, 4]  # both answers follow the prompt; prompt 2 follows the context


def make_batch(rng):
    tokens = rng.integers(0, GOLDEN_CFG.vocab, size=(B, T))
    seg = np.zeros((B, T), np.int64)
    pos = np.zeros((B, T), np.int64)
    vis = np.zeros((B, S, S), np.int64)
    starts = np.cumsum([0] + ROW0_LENGTHS)
    for s, n in enumerate(ROW0_LENGTHS):
        seg[0, starts[s]:starts[s] + n] = s
        pos[0, starts[s]:starts[s] + n] = ROW0_FIRST_POS[s] + np.arange(n)
        vis[0, s, ROW0_VISIBLE[s]] = 1
    seg[1] = np.sort(rng.integers(0, S, size=T))
    pos[1] = np.arange(T)
    vis[1] = rng.integers(0, 2, size=(S, S))
    np.fill_diagonal(vis[1], 1)

    chosen, rejected, prompt2 = starts[2], starts[3], starts[4]
    row0 = [(chosen - 1, tokens[0, chosen]), (chosen - 1, tokens[0, rejected])]  # shared index
    row0 += [(t, tokens[0, t + 1]) for t in range(chosen, rejected - 1)]
    row0 += [(t, tokens[0, t + 1]) for t in range(rejected, prompt2 - 1)]
    row0 += [(t, tokens[0, t + 1]) for t in range(prompt2, T - 1)]
    row1 = [(T + t, rng.integers(0, GOLDEN_CFG.vocab)) for t in sorted(rng.choice(T, 5, replace=False))]
    targets = np.array(row0 + row1, np.int64)
    return {"inputs": tuple(torch.from_numpy(a) for a in (tokens, pos, seg, vis)),
            "targets": torch.from_numpy(targets),
            "target_w": torch.from_numpy(rng.uniform(0.2, 1.5, size=len(targets)))}


# ---------------------------------------------------------------- optimizers

def param_groups(model):
    decayed = {name for name, _, d in param_shapes(model.cfg) if d}
    named = list(model.named_parameters())
    return ([p for n, p in named if n in decayed], [p for n, p in named if n not in decayed])


def train_steps(model, batch, make_opt, lrs, max_norm):
    """Returns the pre-clip gradient norm of every step."""
    with_decay, without_decay = param_groups(model)
    opt = make_opt(with_decay, without_decay)
    norms = []
    for lr in lrs:
        opt.zero_grad()
        weighted_nll(model, batch).backward()
        grads = [p.grad for p in model.parameters()]
        norms.append(torch.norm(torch.stack([g.norm() for g in grads])).item())
        if max_norm > 0:  # fspo's 0 = off; torch itself would scale the grads to zero
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
    return norms


# ---------------------------------------------------------------- golden file

def write_golden(path, records):
    """records: list of (name, np.ndarray); float arrays are stored f32, integer arrays i32."""
    with open(path, "wb") as f:
        f.write(b"FSPOGOLD" + struct.pack("<II", 1, len(records)))
        for name, arr in records:
            is_int = np.issubdtype(arr.dtype, np.integer)
            data = np.ascontiguousarray(arr, dtype="<i4" if is_int else "<f4")
            if is_int:
                assert np.array_equal(data, arr), f"{name} overflows i32"
            encoded = name.encode()
            f.write(struct.pack("<I", len(encoded)) + encoded)
            f.write(struct.pack(f"<II{data.ndim}I", int(is_int), data.ndim, *data.shape))
            f.write(data.tobytes())


def snapshot(tensor):
    """A copy, because .numpy() shares storage that later in-place steps would overwrite."""
    return tensor.detach().numpy().copy()


def f32_exact(values):
    """float64 values the f32 file stores exactly, so C starts from the numbers the oracle used."""
    return np.asarray(values, dtype=np.float32).astype(np.float64)


def build_golden(seed):
    cfg = GOLDEN_CFG
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    batch = make_batch(rng)
    batch["target_w"] = torch.from_numpy(f32_exact(batch["target_w"]))
    model = FspoModel(cfg)
    model.init_test_weights(gen)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.from_numpy(f32_exact(p.numpy())))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    names = param_order(cfg)

    recs = [("config", np.array([cfg.vocab, cfg.d_model, cfg.n_layers, cfg.n_heads,
                                 cfg.ffn_hidden, cfg.max_seq, B, T, S]))]
    recs += [(f"param.{n}", snapshot(initial[n])) for n in names]
    recs += [(k, snapshot(v)) for k, v in zip(("tokens", "pos", "seg", "vis"), batch["inputs"])]
    recs += [("targets", snapshot(batch["targets"])), ("target_w", snapshot(batch["target_w"]))]

    logits = model(*batch["inputs"])
    logp = target_logp(logits, batch["targets"])
    loss = -(batch["target_w"] * logp).sum()
    loss.backward()
    params = dict(model.named_parameters())
    recs += [("logits", snapshot(logits)), ("target_logp", snapshot(logp)), ("loss", snapshot(loss.reshape(1)))]
    recs += [(f"grad.{n}", snapshot(params[n].grad)) for n in names]

    lr, max_norm = 1e-2, 1.0
    adamw_hp = f32_exact([lr, 0.9, 0.95, 1e-8, 0.1, max_norm])
    adamw_lrs = f32_exact([lr * 1 / 2, lr * 2 / 2, lr])  # warmup=2, then constant
    model.load_state_dict(initial)
    norms = train_steps(model, batch, lambda wd, nd: torch.optim.AdamW(
        [{"params": wd, "weight_decay": adamw_hp[4]}, {"params": nd, "weight_decay": 0.0}],
        lr=adamw_lrs[0], betas=(adamw_hp[1], adamw_hp[2]), eps=adamw_hp[3]), adamw_lrs, adamw_hp[5])
    print("adamw pre-clip grad norms:", " ".join(f"{n:.6f}" for n in norms))
    assert norms[0] > max_norm, "clipping must trigger on the first step"
    recs += [("adamw_hp", adamw_hp), ("adamw_lrs", adamw_lrs)]
    recs += [(f"adamw.{n}", snapshot(params[n])) for n in names]

    # eps 1e-3, not torch's 1e-8: RMSprop's first steps move each weight by
    # about lr*g/(0.1|g| + eps), a sign function of g when eps is tiny, so a
    # gradient at fp32 noise level could flip a whole step and the comparison
    # would test rounding, not the update rule. With eps above the gradient
    # noise the map is smooth and 1e-5 is a meaningful tolerance (measured:
    # eps 1e-8 -> 1.6e-4, 1e-4 -> 9e-6, 1e-3 -> 9e-7 worst tensor).
    rmsprop_hp = f32_exact([1e-3, 0.99, 1e-3, 0.01, 0.0])
    model.load_state_dict(initial)
    train_steps(model, batch, lambda wd, nd: torch.optim.RMSprop(
        [{"params": wd, "weight_decay": rmsprop_hp[3]}, {"params": nd, "weight_decay": 0.0}],
        lr=rmsprop_hp[0], alpha=rmsprop_hp[1], eps=rmsprop_hp[2]), [rmsprop_hp[0]] * 3, rmsprop_hp[4])
    recs += [("rmsprop_hp", rmsprop_hp)]
    recs += [(f"rmsprop.{n}", snapshot(params[n])) for n in names]
    return recs, model, batch, initial


# ---------------------------------------------------------------- self-check

def naive_causal_logits(p, cfg, tokens):
    """Token-by-token loops, complex-number RoPE: shares no code with FspoModel.forward."""
    C, H = cfg.d_model, cfg.n_heads
    hd = C // H

    def norm(v, g):
        return v / torch.sqrt((v * v).sum() / C + RMSNORM_EPS) * g

    def rotate(z, t):
        angles = t * torch.tensor([ROPE_THETA ** (-2 * i / hd) for i in range(hd // 2)], dtype=torch.float64)
        rotated = torch.view_as_complex(z.reshape(-1, 2).contiguous()) * torch.polar(torch.ones_like(angles), angles)
        return torch.view_as_real(rotated).reshape(-1)

    xs = [p["tok_emb"][tok].clone() for tok in tokens]
    for l in range(cfg.n_layers):
        pre = f"layers.{l}."
        qkv = [p[pre + "attn.wqkv"] @ norm(x, p[pre + "attn_norm"]) for x in xs]
        mixed = []
        for t in range(len(xs)):
            heads = []
            for h in range(H):
                rows = slice(h * hd, (h + 1) * hd)
                q = rotate(qkv[t][:C][rows], t)
                keys = [rotate(qkv[u][C:2 * C][rows], u) for u in range(t + 1)]
                w = torch.softmax(torch.stack([q @ k / math.sqrt(hd) for k in keys]), 0)
                heads.append(sum(w[u] * qkv[u][2 * C:][rows] for u in range(t + 1)))
            mixed.append(torch.cat(heads))
        xs = [x + p[pre + "attn.wo"] @ a for x, a in zip(xs, mixed)]
        for t, x in enumerate(xs):
            hidden = p[pre + "mlp.w13"] @ norm(x, p[pre + "mlp_norm"])
            gate, up = hidden[:cfg.ffn_hidden], hidden[cfg.ffn_hidden:]
            xs[t] = x + p[pre + "mlp.w2"] @ (gate * torch.sigmoid(gate) * up)
    return torch.stack([p["tok_emb"] @ norm(x, p["final_norm"]) for x in xs])


def selfcheck(seed):
    from torch.nn.utils.stateless import functional_call
    gen = torch.Generator().manual_seed(seed)

    # 1. gradcheck through a tree mask with repeated positions, on a tiny model.
    tiny = Config(vocab=11, d_model=8, n_layers=1, n_heads=2, ffn_hidden=6)
    model = FspoModel(tiny)
    model.init_test_weights(gen, std=0.5)
    tokens = torch.tensor([[1, 5, 7, 2, 9, 3]])
    pos = torch.tensor([[0, 1, 2, 2, 3, 1]])
    seg = torch.tensor([[0, 0, 1, 2, 2, 3]])
    vis = torch.tensor([[[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1]]])
    targets = torch.tensor([[1, 7], [1, 2], [3, 4], [5, 0]])
    names = [n for n, _ in model.named_parameters()]

    def logp_of(*params):
        logits = functional_call(model, dict(zip(names, params)), (tokens, pos, seg, vis))
        return target_logp(logits, targets)

    inputs = tuple(p.detach().clone().requires_grad_() for p in model.parameters())
    assert torch.autograd.gradcheck(logp_of, inputs, eps=1e-6, atol=1e-7)
    print("selfcheck: gradcheck ok")

    # 2. A one-segment row with pos = t is a plain causal LM.
    model = FspoModel(GOLDEN_CFG)
    model.init_test_weights(gen)
    tokens = torch.randint(0, GOLDEN_CFG.vocab, (1, 10), generator=gen)
    t = torch.arange(10)[None]
    with torch.no_grad():
        packed = model(tokens, t, torch.zeros_like(t), torch.ones(1, 1, 1, dtype=torch.long))[0]
        naive = naive_causal_logits(dict(model.named_parameters()), GOLDEN_CFG, tokens[0].tolist())
    err = (packed - naive).abs().max().item()
    assert err < 1e-10, err
    print(f"selfcheck: causal row vs naive loops ok (max |diff| {err:.1e})")

    # 3. Each branch of golden row 0 equals running its path unpacked (the point of tree packing).
    batch = make_batch(np.random.default_rng(seed))
    tokens, pos, seg, vis = (a[:1] for a in batch["inputs"])
    with torch.no_grad():
        packed = model(tokens, pos, seg, vis)[0]
        for branch in range(S):
            idx = torch.nonzero(torch.isin(seg[0], torch.tensor(ROW0_VISIBLE[branch]))).flatten()
            assert torch.equal(pos[0, idx], torch.arange(len(idx))), "unpacked path must be contiguous"
            alone = naive_causal_logits(dict(model.named_parameters()), GOLDEN_CFG, tokens[0, idx].tolist())
            mine = seg[0, idx] == branch
            err = (packed[idx[mine]] - alone[mine]).abs().max().item()
            assert err < 1e-10, (branch, err)
    print("selfcheck: tree-packed row 0 matches its unpacked branches ok")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="golden file to write")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--selfcheck", action="store_true", help="verify the reference itself")
    args = ap.parse_args()
    if not args.out and not args.selfcheck:
        ap.error("nothing to do: give --out FILE and/or --selfcheck")
    if args.selfcheck:
        selfcheck(args.seed)
    if args.out:
        recs, *_ = build_golden(args.seed)
        write_golden(args.out, recs)
        print(f"wrote {len(recs)} records to {args.out}")


if __name__ == "__main__":
    main()
