#!/usr/bin/env bash
# ship_model.sh RUNG OUTDIR --policy CKPT --ref CKPT --pooled CKPT --anchor CKPT
#               --design TEXT --command TEXT [--val VAL.json] [--test TEST.json] [--bf16]
#               [--eval-config CFG] [--primary model|model_plain]
#
# Writes a shipped model directory (models/<rung>/, docs/results.md): the
# weights only (fspo model strip: no optimizer state; --bf16: rounded to and
# stored as bfloat16, about 36% of the float32 bytes) of the FSPO policy, its
# reference (the SFT model with context, also the head-to-head baseline), the
# pooled and the anchor models; eval.yaml (the policy's training config, or
# with --eval-config the config CFG resolved by fspo config show, e.g. one
# with eval.user_desc: generated for a policy that writes the user's
# description; scripts/eval_model.sh completes it with paths); and
# manifest.json: rung,
# design, steps and stage of each model, the validation and test figures
# read from fspo eval's JSON, the command that made it, sha256 of each file,
# and the primary accuracy column (--primary: model, the implicit margin, by
# default; model_plain for a policy whose last stage is SFT).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
FSPO=${FSPO:-$here/fspo}
usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[[ $# -ge 2 ]] || usage
RUNG=$1 OUT=$2
shift 2
declare -A A=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --bf16) A[bf16]=1; shift ;;
        --policy|--ref|--pooled|--anchor|--design|--command|--val|--test|--eval-config|--primary)
            [[ $# -ge 2 ]] || { echo "ship_model.sh: $1 needs a value" >&2; exit 2; }
            A[${1#--}]=$2; shift 2 ;;
        *) echo "ship_model.sh: unknown option '$1'" >&2; usage ;;
    esac
done
for k in policy ref pooled anchor design command; do
    [[ -n ${A[$k]:-} ]] || { echo "ship_model.sh: --$k is required" >&2; exit 2; }
done
if [[ -e $OUT ]] && [[ -n $(ls -A "$OUT") ]]; then
    echo "ship_model.sh: $OUT: exists and is not empty; a shipped model is never overwritten" >&2; exit 2
fi
if [[ -n ${A[eval-config]:-} ]]; then
    cfg=${A[eval-config]}
    text=$("$FSPO" config show "$cfg" 2>&1) || { echo "ship_model.sh: --eval-config: $text" >&2; exit 2; }
    what="the config the shipped policy is evaluated with ($cfg, resolved)"
else
    cfg=$(dirname "${A[policy]}")/config.yaml
    [[ -f $cfg ]] || { echo "ship_model.sh: $cfg: the policy's run config is missing" >&2; exit 2; }
    text=$(cat "$cfg")
    what="the training config of the shipped policy"
fi
mkdir -p "$OUT"
for k in policy ref pooled anchor; do "$FSPO" model strip "${A[$k]}" -o "$OUT/$k.h5" ${A[bf16]:+--bf16} >/dev/null; done
{ echo "# $what (models/$RUNG/manifest.json);"
  echo "# scripts/eval_model.sh sets data.path and every checkpoint path"
  printf '%s\n' "$text"; } >"$OUT/eval.yaml"
case ${A[primary]:-model} in model|model_plain) ;; *) echo "ship_model.sh: --primary: model or model_plain" >&2; exit 2 ;; esac
/usr/bin/python3 - "$RUNG" "$OUT" "${A[design]}" "${A[command]}" "${A[val]:-}" "${A[test]:-}" "$FSPO" "${A[bf16]:-0}" \
    "${A[primary]:-model}" <<'PY'
import hashlib, json, os, re, subprocess, sys
rung, out, design, command, val, test, fspo, bf16, primary = sys.argv[1:10]
def summary(path):
    if not path: return None
    d = json.load(open(path))
    acc = {str(r["n"]): {k: r[k] for k in ("model", "model_plain", "sft_plain", "pooled", "linear", "bayes", "gap_closed") if r.get(k)} for r in d["accuracy"]}
    s = {"split": d["split"], "users": d["users"], "data": d["data"], "accuracy": acc}
    w = d.get("win_rate_anchor")
    if w:
        s["win_rate_anchor"] = {m: {"win": w[m]["win"], "of_ceiling": w[m].get("of_ceiling")} for m in ("policy", "sft", "pooled", "oracle") if isinstance(w.get(m), dict)}
    return s
models = {}
for k in ("policy", "ref", "pooled", "anchor"):
    f = os.path.join(out, k + ".h5")
    info = subprocess.run([fspo, "inspect", f], capture_output=True, text=True, check=True).stdout
    m = re.search(r"step (\d+), samples seen \d+, stage (\w+)", info)
    models[k] = {"file": k + ".h5", "step": int(m.group(1)), "stage": m.group(2), "bytes": os.path.getsize(f),
                 "sha256": hashlib.sha256(open(f, "rb").read()).hexdigest()}
man = {"rung": rung, "design": design, "command": command, "weights": "bfloat16" if bf16 == "1" else "float32",
       "primary": primary, "models": models,
       "validation": summary(val), "test": summary(test)}
json.dump(man, open(os.path.join(out, "manifest.json"), "w"), indent=1)
print(f"ship_model.sh: {out}: {sum(m['bytes'] for m in models.values()) / 1e6:.1f} MB in 4 checkpoints + eval.yaml + manifest.json")
PY
