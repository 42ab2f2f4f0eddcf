#!/usr/bin/env python3
"""The Bayes-optimal description accuracy of the sparse rungs (docs/results.md,
experiment 15): the probability that the maximum-a-posteriori user type,
given N of the user's preference pairs, is the user's true type (names the
right attributes and signs), by simulation of the generator's model
(docs/populations.md): the answers' attributes uniform, a pair redrawn until
its rewards differ, the label a Bradley-Terry draw at the rung's T.

usage: /usr/bin/python3 scripts/bayes_description.py [--users 20000] [--seed 0]
(numpy: Debian's python3-numpy, which python3-torch brings)
"""
import argparse
import itertools

import numpy as np

RUNGS = {  # rung: (attributes that vary, active ones, T)
    "r2": (3, 1, 0.45512),
    "r3": (4, 2, 0.50286),
}


def user_types(n_attrs, k):
    types = []
    for idx in itertools.combinations(range(n_attrs), k):
        for signs in itertools.product((1, -1), repeat=k):
            w = np.zeros(n_attrs)
            w[list(idx)] = signs
            types.append(w)
    return np.array(types)


def map_accuracy(W, T, N, users, rng):
    n_attrs, hits = W.shape[1], 0.0
    for _ in range(users):
        t = rng.integers(len(W))
        w, logp = W[t], np.zeros(len(W))
        for _ in range(N):
            while True:
                a1, a2 = rng.integers(0, 2, n_attrs), rng.integers(0, 2, n_attrs)
                if w @ a1 != w @ a2:
                    break
            chosen, rejected = (a1, a2) if rng.random() < 1 / (1 + np.exp(-(w @ a1 - w @ a2) / T)) else (a2, a1)
            d = W @ (chosen - rejected)  # each type's reward gap; 0 = that type never draws this pair
            with np.errstate(divide="ignore"):
                logp += np.where(d != 0, -np.log1p(np.exp(-d / T)), -np.inf)
        best = np.flatnonzero(logp == logp.max())
        hits += (t in best) / len(best)
    return hits / users


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    for rung, (n_attrs, k, T) in RUNGS.items():
        W = user_types(n_attrs, k)
        accs = [f"N={N}: {map_accuracy(W, T, N, a.users, rng):.3f}" for N in (1, 2, 4, 8)]
        print(f"{rung} ({len(W)} user types): Bayes description accuracy " + ", ".join(accs))


if __name__ == "__main__":
    main()
