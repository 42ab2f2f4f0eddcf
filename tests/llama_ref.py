#!/usr/bin/python3
"""Hugging Face Llama semantics in plain PyTorch, for tests/test_llama.sh.

Independent of fspo: its own safetensors writer and reader (8-byte length,
JSON header, raw little-endian data), its own config.json handling and the
LlamaForCausalLM forward as transformers defines it (rotate-half RoPE,
repeat_kv for grouped-query attention, RMSNorm, SwiGLU MLP, untied or tied
head), computed in float64.

  make DIR:DTYPE:SHARDS:SEED:TIED[:VOCAB] ...  random tiny Llamas (GQA, rope_theta 500000,
                                       rms_norm_eps 1e-6); DTYPE F32|F16|BF16, TIED 0|1,
                                       VOCAB the vocab_size (272)
  check LIST --tokens 1,2,3 [--tol 1e-4]  LIST: lines NAME<TAB>FSPO_LOGITS<TAB>DIR; prints
                                       PASS/FAIL per line: fspo's raw float32 logits [T, V]
                                       against this forward on DIR
  bad DIR CASE                         a malformed model directory (see bad())
  grown ORIG GROWN                     GROWN (fspo's export of ORIG with a larger vocabulary)
                                       holds ORIG's rows of embed_tokens (and lm_head) and,
                                       after them, rows equal to the mean of ORIG's rows
(torch is imported only where needed: it takes seconds to load.)
"""
import argparse, json, math, os, struct, sys


def dt(name):
    import torch
    return {"F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2)}[name]


def st_bytes(tensors, dtype):
    """tensors: list of (name, float tensor). Returns the file's bytes."""
    import torch
    header, blobs, at = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in tensors:
        t = t.to(dt(dtype)[0]).contiguous()
        raw = t.view(torch.int16).numpy().tobytes() if dt(dtype)[1] == 2 else t.numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [at, at + len(raw)]}
        blobs.append(raw)
        at += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def st_read(path):
    import torch
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base, out = 8 + n, {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        raw = bytearray(data[base + b:base + end])
        if e["dtype"] == "F32":
            t = torch.frombuffer(raw, dtype=torch.float32)
        else:
            t = torch.frombuffer(raw, dtype=torch.int16).view(dt(e["dtype"])[0])
        out[name] = t.to(torch.float64).reshape(e["shape"])
    return out


def load_dir(d):
    cfg = json.load(open(os.path.join(d, "config.json")))
    idx = os.path.join(d, "model.safetensors.index.json")
    w = {}
    if os.path.exists(idx):
        for shard in sorted(set(json.load(open(idx))["weight_map"].values())):
            w.update(st_read(os.path.join(d, shard)))
    else:
        w = st_read(os.path.join(d, "model.safetensors"))
    return cfg, w


def rotate_half(x):
    import torch
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def forward(cfg, w, ids):
    """LlamaForCausalLM logits [T, V] for one sequence, float64."""
    import torch
    C, H = cfg["hidden_size"], cfg["num_attention_heads"]
    Hkv = cfg.get("num_key_value_heads") or H
    hd, L, eps = C // H, cfg["num_hidden_layers"], cfg.get("rms_norm_eps", 1e-6)
    theta, T = cfg.get("rope_theta", 10000.0), len(ids)

    def norm(x, g):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * g

    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    ang = torch.outer(torch.arange(T, dtype=torch.float64), inv)
    emb = torch.cat((ang, ang), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    x = w["model.embed_tokens.weight"][torch.tensor(ids)]
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    for l in range(L):
        p = f"model.layers.{l}."
        h = norm(x, w[p + "input_layernorm.weight"])
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(T, H, hd).transpose(0, 1)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).view(T, Hkv, hd).transpose(0, 1)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(T, Hkv, hd).transpose(0, 1)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = k.repeat_interleave(H // Hkv, dim=0), v.repeat_interleave(H // Hkv, dim=0)
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + mask, dim=-1) @ v
        x = x + a.transpose(0, 1).reshape(T, C) @ w[p + "self_attn.o_proj.weight"].T
        h = norm(x, w[p + "post_attention_layernorm.weight"])
        g, u = h @ w[p + "mlp.gate_proj.weight"].T, h @ w[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(g) * u) @ w[p + "mlp.down_proj.weight"].T
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings", False) else w["lm_head.weight"]
    return norm(x, w["model.norm.weight"]) @ head.T


def make(a):
    import torch
    torch.manual_seed(a.seed)
    C, L, H, Hkv, F, V, T = 32, 2, 4, 2, 48, a.vocab, 256
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": C,
           "intermediate_size": F, "num_attention_heads": H, "num_key_value_heads": Hkv,
           "num_hidden_layers": L, "vocab_size": V, "max_position_embeddings": T, "rms_norm_eps": 1e-6,
           "rope_theta": 500000.0, "tie_word_embeddings": a.tied, "hidden_act": "silu",
           "torch_dtype": {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[a.dtype],
           "bos_token_id": 256, "eos_token_id": 257}
    r = lambda *s: torch.randn(*s) * 0.3
    t = [("model.embed_tokens.weight", r(V, C)), ("model.norm.weight", 1 + 0.1 * torch.randn(C))]
    if not a.tied:
        t.append(("lm_head.weight", r(V, C)))
    for l in range(L):
        p = f"model.layers.{l}."
        t += [(p + "input_layernorm.weight", 1 + 0.1 * torch.randn(C)),
              (p + "post_attention_layernorm.weight", 1 + 0.1 * torch.randn(C)),
              (p + "self_attn.q_proj.weight", r(C, C)), (p + "self_attn.k_proj.weight", r(Hkv * C // H, C)),
              (p + "self_attn.v_proj.weight", r(Hkv * C // H, C)), (p + "self_attn.o_proj.weight", r(C, C)),
              (p + "mlp.gate_proj.weight", r(F, C)), (p + "mlp.up_proj.weight", r(F, C)),
              (p + "mlp.down_proj.weight", r(C, F))]
    os.makedirs(a.dir, exist_ok=True)
    json.dump(cfg, open(os.path.join(a.dir, "config.json"), "w"), indent=2)
    if a.shards <= 1:
        open(os.path.join(a.dir, "model.safetensors"), "wb").write(st_bytes(t, a.dtype))
        return
    wmap = {}
    for s in range(a.shards):
        name = f"model-{s + 1:05d}-of-{a.shards:05d}.safetensors"
        part = t[s::a.shards]
        open(os.path.join(a.dir, name), "wb").write(st_bytes(part, a.dtype))
        wmap.update({n: name for n, _ in part})
    json.dump({"metadata": {}, "weight_map": wmap}, open(os.path.join(a.dir, "model.safetensors.index.json"), "w"))


def header_file(header, data):
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


# malformed model.safetensors, each with the message fspo must print (grep -E)
def bad(a):
    cfg = json.load(open(os.path.join(a.dir, "config.json")))
    if a.case == "index":  # a sharded directory: one tensor mapped to a shard that does not hold it
        idx = os.path.join(a.dir, "model.safetensors.index.json")
        j = json.load(open(idx))
        name = next(n for n, f in sorted(j["weight_map"].items()) if f.startswith("model-00001"))
        j["weight_map"][name] = "model-00002-of-00003.safetensors"
        json.dump(j, open(idx, "w"))
        return
    path = os.path.join(a.dir, "model.safetensors")
    good = open(path, "rb").read()
    (n,) = struct.unpack("<Q", good[:8])
    hdr = json.loads(good[8:8 + n])
    data = good[8 + n:]
    names = sorted(k for k in hdr if k != "__metadata__")
    c = a.case
    if c == "truncated":
        out = good[:5]
    elif c == "beyond":
        out = struct.pack("<Q", len(good) * 2) + good[8:]
    elif c == "badjson":
        out = good[:8 + n - 3] + b"@@@" + good[8 + n:]
    elif c == "overlap":  # the second tensor in data order starts 4 bytes early, inside the first
        t1 = sorted(names, key=lambda k: hdr[k]["data_offsets"][0])[1]
        hdr[t1]["data_offsets"] = [x - 4 for x in hdr[t1]["data_offsets"]]
        out = header_file(hdr, data)
    elif c == "shape":
        hdr[names[0]]["shape"] = [hdr[names[0]]["shape"][0] + 1] + hdr[names[0]]["shape"][1:]
        out = header_file(hdr, data)
    elif c == "dtype":
        hdr[names[0]]["dtype"] = "Q7"
        out = header_file(hdr, data)
    elif c == "f64":
        hdr[names[0]]["dtype"] = "F64"
        out = header_file(hdr, data)
    elif c == "missing":
        # drop one tensor and its bytes: still a valid file, just not a complete model
        e = hdr.pop("model.norm.weight")
        b, end = e["data_offsets"]
        for k, v in hdr.items():
            if k != "__metadata__" and v["data_offsets"][0] >= end:
                v["data_offsets"] = [v["data_offsets"][0] - (end - b), v["data_offsets"][1] - (end - b)]
        out = header_file(hdr, data[:b] + data[end:])
    elif c == "gap":
        out = header_file(hdr, data + b"\0" * 8)
    elif c == "duplicate":
        h = json.dumps(hdr).encode()
        extra = json.dumps({names[0]: hdr[names[0]]}).encode()[1:-1]
        h = h[:-1] + b", " + extra + b"}"
        out = struct.pack("<Q", len(h)) + h + data
    elif c == "vocab_pad":  # 8 more (zero) rows of embed_tokens and lm_head, vocab_size to match
        rows, parts, at, new = 8, [], 0, {"__metadata__": hdr.get("__metadata__", {})}
        for k in sorted(names, key=lambda k: hdr[k]["data_offsets"][0]):
            e = dict(hdr[k])
            raw = data[e["data_offsets"][0]:e["data_offsets"][1]]
            if k in ("model.embed_tokens.weight", "lm_head.weight"):
                raw += bytes(rows * len(raw) // e["shape"][0])
                e["shape"] = [e["shape"][0] + rows, e["shape"][1]]
            e["data_offsets"] = [at, at + len(raw)]
            at += len(raw)
            new[k] = e
            parts.append(raw)
        cfg["vocab_size"] += rows
        json.dump(cfg, open(os.path.join(a.dir, "config.json"), "w"))
        out = header_file(new, b"".join(parts))
    elif c == "tokswap":  # tokenizer.json: the tokens of ids 97 and 98 trade ids (a valid file, another tokenizer)
        path = os.path.join(a.dir, "tokenizer.json")
        j = json.load(open(path))
        v = j["model"]["vocab"]
        x, y = (t for t, i in v.items() if i in (97, 98))
        v[x], v[y] = v[y], v[x]
        json.dump(j, open(path, "w"), ensure_ascii=False)
        return
    elif c == "nonspecial":  # tokenizer.json: <|eos|> an added token that is not special
        path = os.path.join(a.dir, "tokenizer.json")
        j = json.load(open(path))
        for t in j["added_tokens"]:
            t["special"] = t["special"] and t["content"] != "<|eos|>"
        json.dump(j, open(path, "w"), ensure_ascii=False)
        return
    elif c == "shape_vs_config":
        cfg["intermediate_size"] = cfg["intermediate_size"] + 8
        json.dump(cfg, open(os.path.join(a.dir, "config.json"), "w"))
        return
    elif c == "arch":
        cfg["architectures"] = ["MistralForCausalLM"]
        json.dump(cfg, open(os.path.join(a.dir, "config.json"), "w"))
        return
    else:
        sys.exit(f"unknown case {c}")
    open(path, "wb").write(out)


def grown(a):
    """0 if GROWN's embeddings are ORIG's plus mean rows (what docs/interop.md says), else 1."""
    (cfg, w), (gcfg, gw) = load_dir(a.orig), load_dir(a.grown)
    V, G = cfg["vocab_size"], gcfg["vocab_size"]
    names = ["model.embed_tokens.weight"] + ([] if cfg.get("tie_word_embeddings", False) else ["lm_head.weight"])
    bad = 0
    for n in names:
        o, g = w[n].float().double(), gw[n]  # the original as fp32 (what fspo computes from), fspo's rows
        keep = (g[:V] - o).abs().max().item()
        new = (g[V:] - o.mean(0, keepdim=True)).abs().max().item()
        ok = G > V and keep == 0 and new <= 1e-6
        bad |= not ok
        print(f"{'PASS' if ok else 'FAIL'}: {n}: {V} -> {G} rows; the first {V} equal the original's "
              f"(max diff {keep:.1e}), rows {V}..{G - 1} the mean of its rows (max diff {new:.1e}, tol 1e-6)")
    return bad


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("specs", nargs="+")
    c = sub.add_parser("check")
    c.add_argument("list")
    c.add_argument("--tokens", required=True)
    c.add_argument("--tol", type=float, default=1e-4)
    g = sub.add_parser("grown")
    g.add_argument("orig")
    g.add_argument("grown")
    b = sub.add_parser("bad")
    b.add_argument("dir")
    b.add_argument("case")
    a = ap.parse_args()
    if a.cmd == "make":
        for spec in a.specs:
            d, dtype, shards, seed, tied, *vocab = spec.split(":")
            make(argparse.Namespace(dir=d, dtype=dtype, shards=int(shards), seed=int(seed), tied=tied == "1",
                                    vocab=int(vocab[0]) if vocab else 272))
    elif a.cmd == "check":
        import torch
        ids = [int(x) for x in a.tokens.split(",")]
        for line in open(a.list):
            name, fspo_bin, d = line.rstrip("\n").split("\t")
            try:
                cfg, w = load_dir(d)
                y = forward(cfg, w, ids).reshape(-1)
                x = torch.frombuffer(bytearray(open(fspo_bin, "rb").read()), dtype=torch.float32).double()
                if x.numel() != y.numel():
                    raise ValueError(f"fspo wrote {x.numel()} logits, the reference has {y.numel()}")
                diff = (x - y).abs().max().item()
                msg = f"max abs diff {diff:.2e} over {y.numel()} logits (max |logit| {y.abs().max().item():.2f}, tol {a.tol:g})"
                print(f"{'PASS' if diff <= a.tol else 'FAIL'}: {name}: {msg}")
            except Exception as e:
                print(f"FAIL: {name}: {type(e).__name__}: {e}")
    elif a.cmd == "bad":
        bad(a)
    elif a.cmd == "grown":
        sys.exit(grown(a))


if __name__ == "__main__":
    main()
