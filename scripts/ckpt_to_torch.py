"""Convert an fspo checkpoint (HDF5) into a PyTorch state_dict file.

usage: /usr/bin/python3 scripts/ckpt_to_torch.py CKPT.h5 OUT.pt

OUT.pt holds {"state_dict": {name: tensor}, "config": {vocab, d_model,
n_layers, n_heads, ffn_hidden, max_seq}, "step": int}. The names and
shapes are those of tests/torch_ref.py's FspoModel, so

    model = FspoModel(Config(**blob["config"]), dtype=torch.float32)
    model.load_state_dict(blob["state_dict"])

runs the checkpoint in PyTorch. `fspo inspect CKPT.h5` verifies the
checksums first if the file's integrity is in doubt.
"""
import sys

import h5py
import torch

SHAPE_KEYS = ("vocab", "d_model", "n_layers", "n_heads", "ffn_hidden", "max_seq")


def convert(path):
    with h5py.File(path, "r", locking=False) as f:
        if f.attrs.get("format") != "fspo-checkpoint":
            raise SystemExit(f"{path}: not an fspo checkpoint")
        config = dict(zip(SHAPE_KEYS, (int(v) for v in f.attrs["model_shape"])))
        state = {name: torch.from_numpy(f["model"][name][()]) for name in f["model"]}
        return {"state_dict": state, "config": config, "step": int(f.attrs["step"])}


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__.strip().splitlines()[2])
    blob = convert(sys.argv[1])
    torch.save(blob, sys.argv[2])
    n = sum(t.numel() for t in blob["state_dict"].values())
    print(f"{sys.argv[2]}: {len(blob['state_dict'])} tensors, {n} parameters, step {blob['step']}")


if __name__ == "__main__":
    main()
