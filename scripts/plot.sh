#!/usr/bin/env bash
# plot.sh EVAL.json OUTDIR [RUN/metrics.jsonl ...]: PNG plots with gnuplot.
#   OUTDIR/accuracy_vs_n.png    few-shot accuracy vs N for every method of
#                               `fspo eval --json`, with 95% CI error bars
#                               (the title: win rates vs SFT and the anchor)
#   OUTDIR/training_curves.png  loss and rewards/accuracies vs step of each
#                               metrics log (one line per run, named by its directory)
# python3 turns the JSON lines into gnuplot's whitespace tables.
set -euo pipefail
[[ $# -ge 2 ]] || { echo "usage: bash scripts/plot.sh EVAL.json OUTDIR [metrics.jsonl ...]" >&2; exit 2; }
json=$1 out=$2
shift 2
command -v gnuplot >/dev/null || { echo "plot: gnuplot not found (apt-get install gnuplot-nox)" >&2; exit 1; }
mkdir -p "$out"
tmp=$(mktemp -d /tmp/fspo-plot.XXXXXX) && trap 'rm -rf "$tmp"' EXIT

# accuracy table: one file per method, columns N mean lo hi
python3 - "$json" "$tmp" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for m in ("model", "model_plain", "sft_plain", "pooled", "linear", "bayes"):
    rows = [(a["n"], a[m]) for a in r["accuracy"] if a.get(m)]
    with open(f"{sys.argv[2]}/{m}.dat", "w") as f:
        for n, c in rows:
            f.write(f"{n} {c['mean']} {c['lo']} {c['hi']}\n")
w = r.get("win_rate_sft")
with open(f"{sys.argv[2]}/title.txt", "w") as f:
    t = f"{r['users']} held-out users"
    if w:
        t += f"; win rate vs SFT at N={w['n_fewshot']}: {w['win']['mean']:.2f} [{w['win']['lo']:.2f}, {w['win']['hi']:.2f}]"
    a = r.get("win_rate_anchor")
    if a and a.get("policy") and a.get("oracle"):
        t += f"; vs the anchor {a['policy']['win']['mean']:.2f} (ceiling {a['oracle']['win']['mean']:.2f})"
    f.write(t)
PY

plots=""
for m in model model_plain sft_plain pooled linear bayes; do
    [[ -s $tmp/$m.dat ]] || continue
    case $m in
        model) label="FSPO model" ;; pooled) label="pooled (no context)" ;;
        model_plain) label="FSPO model, log-prob margin" ;; sft_plain) label="SFT with context, log-prob margin" ;;
        linear) label="linear (PReF-style)" ;; bayes) label="Bayes-optimal" ;;
    esac
    plots+="${plots:+, }'$tmp/$m.dat' using 1:2:3:4 with yerrorlines lw 2 title '$label'"
done
gnuplot <<GP
set terminal pngcairo size 1000,520 font ",11"
set output '$out/accuracy_vs_n.png'
set title "Few-shot preference accuracy vs N\n$(cat "$tmp/title.txt")"
set xlabel 'N (few-shot pairs in context)'
set ylabel 'accuracy on query pairs'
set yrange [0.3:1.05]
set offsets 0.5, 0.5, 0, 0
set xtics 1
set key outside right center
set grid
plot $plots, 0.5 with lines dt 2 lc rgb 'gray' title 'chance'
GP
echo "plot: $out/accuracy_vs_n.png"

[[ $# -gt 0 ]] || exit 0
# three panels: next-token loss of SFT runs, preference loss and training
# accuracy of preference runs; a run keeps its colour in every panel
splots="" pplots="" aplots="" i=0
for f in "$@"; do
    [[ -s $f ]] || continue
    i=$((i + 1))
    name=$(basename "$(dirname "$f")")
    python3 - "$f" "$tmp/$name.train" <<'PY'
import json, sys
with open(sys.argv[2], "w") as out:
    for line in open(sys.argv[1]):
        r = json.loads(line)
        acc, loss = r.get("rewards/accuracies"), r.get("loss")
        out.write(f"{r['step']} {loss if loss is not None else 'NaN'} {acc if acc is not None else 'NaN'}\n")
PY
    style="with lines lw 2 lt $i title '$name'"
    # an SFT log has no preference accuracy (0 on every line)
    if awk '$3 != "NaN" && $3 > 0 {f=1} END {exit !f}' "$tmp/$name.train"; then
        pplots+="${pplots:+, }'$tmp/$name.train' using 1:2 $style"
        aplots+="${aplots:+, }'$tmp/$name.train' using 1:3 $style"
    else
        splots+="${splots:+, }'$tmp/$name.train' using 1:2 $style"
    fi
done
[[ -n $splots$pplots ]] || exit 0
panels=$(( (${#splots} > 0) + 2 * (${#pplots} > 0) ))
gnuplot <<GP
set terminal pngcairo size 900,$((panels * 300 + 60)) font ",11"
set output '$out/training_curves.png'
set multiplot layout $panels,1 title 'Training curves (metrics.jsonl)'
set grid
set xlabel 'step'
$( [[ -n $splots ]] && printf "set ylabel 'SFT loss (nats/token)'\nplot %s\n" "$splots" )
$( [[ -n $pplots ]] && printf "set ylabel 'preference loss'\nplot %s\nset ylabel 'rewards/accuracies (train)'\nset yrange [0:1]\nplot %s\n" "$pplots" "$aplots" )
unset multiplot
GP
echo "plot: $out/training_curves.png"
