#!/usr/bin/python3
"""desc_bound.py DATA.h5 USERS.jsonl [--split validation|test] [--reps R]

How much of a synthetic user's preference a description inferred from N of
their pairs can carry (docs/results.md, experiment 22). For each user of the
split, R times: 8 query pairs and N few-shot pairs drawn from the user's
pairs; every answer's attribute vector read back by `fspo synth --score`
(the scorer fspo eval uses); then, on the query pairs, the accuracy of

  linear        a logistic fit on the N pairs' attribute differences (L2 1,
                as fspo eval's linear column)
  desc-sign     the description that fit would write: its attributes with
                |w| >= tau, weight +-1
  desc-rank     the same, weighted by rank (1, .85, .7, ...), as a
                description listing the strongest first
  true-sign / true-rank / bayes   the same from the true weights (|w| >= 0.2,
                SYNTH_ACTIVE_MIN, as fspo synth describes users)

and the fit's description scored as fspo eval scores a generated one:
"active" = the user's active attributes named with their sign, "attrs" = the
varying attributes whose state (liked, disliked, not named) is right.
USERS.jsonl is fspo synth's output (its .truth.jsonl beside it). Needs
h5py and numpy (Debian: python3-h5py, python3-numpy). Scoring runs the
fspo binary once per answer (FSPO=path, default ./fspo): minutes.
"""
import argparse, json, os, subprocess

import h5py
import numpy as np

ap = argparse.ArgumentParser(usage=__doc__.split("\n")[0])
ap.add_argument("data")
ap.add_argument("users")
ap.add_argument("--split", default="validation", choices=["validation", "test"])
ap.add_argument("--reps", type=int, default=20)
args = ap.parse_args()
fspo = os.environ.get("FSPO", "./fspo")

f = h5py.File(args.data, "r")
ids = [x.decode() if isinstance(x, bytes) else x for x in f["users/id"][:]]
code = {"validation": 1, "test": 2}[args.split]
keep = {ids[i] for i, s in enumerate(f["users/split"][:]) if s == code}
truth = {}
for line in open(args.users.replace(".jsonl", ".truth.jsonl")):
    t = json.loads(line)
    if t["user_id"] in keep:
        truth[t["user_id"]] = t
pairs = {}
for line in open(args.users):
    r = json.loads(line)
    if r["user_id"] in keep:
        pairs.setdefault(r["user_id"], []).append((r["chosen"], r["rejected"]))

feats = {}
def score(text):
    if text not in feats:
        out = subprocess.run([fspo, "synth", "--score", "-"], input=text.encode(), capture_output=True, check=True)
        feats[text] = np.array(json.loads(out.stdout.decode().strip().split("\n")[-1].split("=")[1]), float)
    return feats[text]
diffs = {u: np.array([score(c) - score(r) for c, r in p]) for u, p in pairs.items()}

def fit(X, l2=1.0):
    """L2-regularized logistic regression through the origin (Newton)."""
    w = np.zeros(X.shape[1])
    for _ in range(50):
        p = 1 / (1 + np.exp(X @ w))
        H = l2 * np.eye(len(w)) + (X * (p * (1 - p))[:, None]).T @ X
        w -= np.linalg.solve(H, l2 * w - X.T @ p)
    return w

RANK = [1, .85, .7, .55, .4, .25, .1]
def described(w, tau, rank):
    out = np.zeros_like(w)
    for j, k in enumerate(k for k in np.argsort(-np.abs(w), kind="stable") if abs(w[k]) >= tau):
        out[k] = np.sign(w[k]) * (RANK[j] if rank else 1.0)
    return out

def credit(m):
    return np.where(m > 0, 1.0, np.where(m == 0, 0.5, 0.0))

rng = np.random.default_rng(0)
taus = (0.1, 0.2, 0.3, 0.5)
Ns = (1, 2, 4, 8)
acc = {N: {} for N in Ns}
named = {N: {} for N in Ns}
for u in sorted(diffs):
    D, tw = diffs[u], np.array(truth[u]["weights"])
    varying = np.abs(D).sum(0) > 0  # attributes this population varies
    true = {"bayes": tw, "true-sign": described(tw, 0.2, 0), "true-rank": described(tw, 0.2, 1)}
    tstate = true["true-sign"][varying]  # liked +1, disliked -1, not named 0
    active = tstate != 0
    for _ in range(args.reps):
        perm = rng.permutation(len(D))
        Q = D[perm[:8]]
        for N in Ns:
            w = fit(D[perm[8:8 + N]])
            cand = {"linear": w, **true}
            for t in taus:
                cand["desc-sign tau %.1f" % t] = described(w, t, 0)
                cand["desc-rank tau %.1f" % t] = described(w, t, 1)
                state = cand["desc-sign tau %.1f" % t][varying]
                named[N].setdefault("tau %.1f" % t, []).append(
                    ((state[active] == tstate[active]).mean() if active.any() else 1.0, (state == tstate).mean()))
            for k, v in cand.items():
                acc[N].setdefault(k, []).append(credit(Q @ v).mean())

print("%s users: %d, %d draws each (8 query pairs, N few-shot pairs)" % (args.split, len(diffs), args.reps))
print("accuracy on the query pairs:")
for k in acc[8]:
    print("  %-18s %s" % (k, "  ".join("N%d %.3f" % (N, np.mean(acc[N][k])) for N in Ns)))
print("the fit's description, scored as fspo eval scores a generated one (active / attrs):")
for k in named[8]:
    print("  %-18s %s" % (k, "  ".join("N%d %.2f / %.2f" % (N, *np.mean(named[N][k], axis=0)) for N in Ns)))
