#!/usr/bin/env bash
# eval_model.sh MODEL_DIR DATA.h5 OUT.json [fspo eval options...]
#
# Evaluates a shipped model (models/<rung>/, written by scripts/ship_model.sh)
# on the TEST users of any dataset of that rung and writes fspo eval's JSON.
# Users you generate yourself with another seed can all be made test users:
#   fspo synth --population r2 --seed 77 -o u.jsonl      (also writes u.truth.jsonl)
#   fspo prep u.jsonl -o u.h5 --all-test --tokenizer models/r2/policy.h5   (its ids)
#   scripts/eval_model.sh models/r2 u.h5 u.eval.json
# The truth file is found beside the dataset's source (.jsonl -> .truth.jsonl)
# or next to DATA.h5; pass --truth FILE otherwise. Extra options go to fspo
# eval (e.g. --set eval.max_users=50 for a quicker look).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
FSPO=${FSPO:-$here/fspo}
if [[ $# -lt 3 || $1 == -h || $1 == --help ]]; then
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    [[ $# -ge 1 && ( $1 == -h || $1 == --help ) ]] && exit 0 || exit 2
fi
M=$1 DATA=$2 OUT=$3
shift 3
for f in manifest.json eval.yaml policy.h5 ref.h5 pooled.h5 anchor.h5; do
    [[ -f $M/$f ]] || { echo "eval_model.sh: $M/$f: missing (a shipped model directory holds manifest.json, eval.yaml, policy.h5, ref.h5, pooled.h5, anchor.h5)" >&2; exit 2; }
done
[[ -f $DATA ]] || { echo "eval_model.sh: $DATA: no such dataset (make one with fspo prep)" >&2; exit 2; }
[[ -x $FSPO ]] || { echo "eval_model.sh: $FSPO: not built (run make, or set FSPO=)" >&2; exit 2; }
exec "$FSPO" eval "$M/eval.yaml" --ckpt "$M/policy.h5" --split test --json "$OUT" \
    --set data.path="$DATA" --set loss.ref_ckpt="$M/ref.h5" --set eval.sft_ckpt="$M/ref.h5" \
    --set eval.pooled_ckpt="$M/pooled.h5" --set eval.anchor_ckpt="$M/anchor.h5" "$@"
