"""Compare two fspo checkpoints tensor by tensor (h5py, independent of fspo's C).

usage: /usr/bin/python3 tests/ckpt_compare.py A.h5 B.h5 [--tol T] [--optim]
Exit 0 if every /model tensor (and /optim with --optim) agrees: bit for bit
with --tol 0, else max|a-b| / max|b| <= T per tensor. Prints the worst error.
"""
import sys

import h5py
import numpy as np


def groups(f, optim):
    names = ["model"] + (["optim/m", "optim/v"] if optim and "optim" in f else [])
    return [g for g in names if g in f]


def main():
    args = sys.argv[1:]
    tol = float(args[args.index("--tol") + 1]) if "--tol" in args else 0.0
    optim = "--optim" in args
    a_path, b_path = [x for x in args if x.endswith(".h5")][:2]
    worst, where = 0.0, ""
    with h5py.File(a_path, "r", locking=False) as a, h5py.File(b_path, "r", locking=False) as b:
        for g in groups(b, optim):
            if sorted(a[g]) != sorted(b[g]):
                raise SystemExit(f"{g}: tensor names differ")
            for name in b[g]:
                x, y = a[g][name][()], b[g][name][()]
                if tol == 0:
                    err = 0.0 if np.array_equal(x.view(np.uint32), y.view(np.uint32)) else np.inf
                else:
                    err = float(np.abs(x - y).max() / max(np.abs(y).max(), 1e-30))
                if err > worst:
                    worst, where = err, f"{g}/{name}"
    print(f"max rel err {worst:.3g} {where}".strip())
    sys.exit(0 if worst <= tol else 1)


if __name__ == "__main__":
    main()
