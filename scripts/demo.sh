#!/usr/bin/env bash
# make demo: synthetic users -> dataset -> SFT -> FSPO preference stage and a
# pooled (no-context) preference model, each with mpirun -np 2 -> fspo eval
# on held-out users -> table and plots. Three tiers of the same pipeline:
#
#   FSPO_TIER=demo      (default, make demo) <= 20 minutes on 2 cores
#   FSPO_TIER=small     (make small) ~35 minutes on 2 cores: docs/results.md
#                       experiment 5, where few-shot personalization emerges;
#                       resumable: run it again after a stop and it goes on
#   FSPO_TIER=quick     (or FSPO_DEMO_QUICK=1) a ~1-minute miniature (the test
#                       suite runs it): tiny model, a few steps, few users
#   FSPO_DEMO_DIR=DIR   where everything goes (default runs/demo, runs/small)
#   FSPO=./fspo         the binary
#
# The demo and quick tiers start afresh on every run.
set -euo pipefail
cd "$(dirname "$0")/.."
FSPO=${FSPO:-./fspo}
TIER=${FSPO_TIER:-demo}
[[ ${FSPO_DEMO_QUICK:-0} == 1 ]] && TIER=quick

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
# one BLAS thread per rank: 2 ranks fill the 2 cores; eval runs alone on one
export OPENBLAS_NUM_THREADS=1

CONFIG=configs/demo.yaml
SYNTH=()            # fspo synth's population (default: all 7 attributes, 2 active per user)
PREF=()             # the preference stage's extra settings
RESUME=0
case $TIER in
quick)
    OUT=${FSPO_DEMO_DIR:-runs/demo}
    USERS=40 PAIRS=14 HELDOUT=0.25
    MODEL=(--set model.d_model=32 --set model.n_layers=2 --set model.n_heads=4)
    SFT_STEPS=8 PREF_STEPS=8 POOLED_STEPS=8 BATCH=4 LOG_EVERY=4 SFT_CAP=60s PREF_CAP=60s POOLED_CAP=60s
    EVAL=(--set eval.max_users=6 --set eval.bootstrap=200 --set eval.max_new_tokens=24) ;;
demo)
    OUT=${FSPO_DEMO_DIR:-runs/demo}
    USERS=300 PAIRS=24 HELDOUT=0.15
    MODEL=() # configs/demo.yaml: d_model 128, 4 layers, 4 heads (0.9 M parameters)
    SFT_STEPS=${FSPO_DEMO_SFT_STEPS:-250} PREF_STEPS=${FSPO_DEMO_PREF_STEPS:-250} POOLED_STEPS=$PREF_STEPS
    BATCH=8 LOG_EVERY=10
    # time caps per stage (train.max_time): 13.5 of the 20 minutes go to training
    SFT_CAP=5m PREF_CAP=6m POOLED_CAP=150s
    EVAL=(--set eval.max_users=30 --set eval.bootstrap=1000 --set eval.max_new_tokens=96) ;;
small)
    OUT=${FSPO_DEMO_DIR:-runs/small}
    CONFIG=configs/small.yaml RESUME=1
    # the easiest population that still needs the context: two attributes,
    # one of them liked or disliked by each user, pairs that differ only there
    USERS=1500 PAIRS=40 HELDOUT=0.1
    SYNTH=(--minimal-pairs --contrastive --attrs bullets,emoji --active 1)
    MODEL=()
    SFT_STEPS=1200 PREF_STEPS=300 POOLED_STEPS=150 BATCH=8 LOG_EVERY=10 SFT_CAP=0 PREF_CAP=0 POOLED_CAP=0
    PREF=(--set optim.lr=1e-4 --set optim.min_lr=2e-5 --set optim.warmup_steps=20 --set optim.decay_steps=0
          --set loss.sft_weight=0.5 --set train.sft_context=false --set checkpoint.every=50)
    EVAL=(--set eval.bootstrap=1000 --set mpi.threads_per_rank=2) ;;
*)
    echo "demo: FSPO_TIER must be quick, demo or small (got '$TIER')" >&2
    exit 2 ;;
esac

T0=$SECONDS
STAGE=0
N_STAGES=7
stage() { # stage TEXT: one progress line per stage, with the elapsed time
    STAGE=$((STAGE + 1))
    local e=$((SECONDS - T0))
    printf '[demo %d/%d %dm%02ds] %s\n' "$STAGE" "$N_STAGES" $((e / 60)) $((e % 60)) "$1"
}
timing=()
lap() { timing+=("$1 $(($SECONDS - LAP))s"); }

[[ $RESUME == 1 ]] || rm -rf "$OUT"
mkdir -p "$OUT"
if [[ $TIER == small ]]; then
    # configs/small.yaml as written: N 0-8 in context, 4 queries, max_seq 2048
    COMMON=(--set data.path="$OUT/data.h5" --set mpi.threads_per_rank=1)
else
    # N up to 4 in context: 4 pairs (~860 tokens) + 2 queries (~230 each) need max_seq 1536
    COMMON=(--set data.path="$OUT/data.h5" --set model.max_seq=1536 --set data.n_fewshot=4 --set data.n_fewshot_min=0
            --set data.n_queries=2 --set train.batch_size=$BATCH --set train.log_every=$LOG_EVERY
            --set mpi.threads_per_rank=1 --set checkpoint.every=100000 --set eval.n_fewshot=[0,1,2,4]
            "${MODEL[@]}")
fi

latest() { ls -v "$1"/ckpt_*.h5 2>/dev/null | tail -n 1; }

train() { # train NAME STEPS TIME_CAP [--set ...]: one stage under mpirun -np 2; step lines are the progress
    local name=$1 steps=$2 cap=$3 seen=0
    shift 3
    [[ -e $OUT/$name.log ]] && seen=$(wc -l <"$OUT/$name.log") # a resumed stage appends to its log
    # train.max_time keeps the demo inside its budget on a busy machine: the
    # stage then checkpoints and exits 3, and the demo goes on from there
    set +e
    mpirun --oversubscribe -q -np 2 "$FSPO" train $CONFIG "${COMMON[@]}" --set train.run_dir="$OUT/$name" \
        --set train.max_steps="$steps" --set train.max_time="$cap" "$@" >>"$OUT/$name.log" 2>&1 &
    local pid=$!
    tail -n +$((seen + 1)) -f --pid=$pid "$OUT/$name.log" | grep --line-buffered -E '^(step |train: (done|train.max_time|stop))' |
        sed -u 's/^/    /'
    wait $pid
    local rc=$?
    set -e
    if [[ $rc -ne 0 && $rc -ne 3 ]] || [[ -z $(latest "$OUT/$name") ]]; then
        echo "demo: the $name stage failed (exit $rc); its log:" >&2
        tail -n 20 "$OUT/$name.log" >&2
        exit 1
    fi
}

LAP=$SECONDS
stage "synthesize $USERS users x $PAIRS preference pairs (known per-user rewards)"
if [[ ! -s $OUT/data.h5 ]]; then # a resumed small tier keeps its data
    "$FSPO" synth -o "$OUT/users.jsonl" --users $USERS --pairs-per-user $PAIRS "${SYNTH[@]}" --quiet
    "$FSPO" prep "$OUT/users.jsonl" -o "$OUT/data.h5.tmp" --heldout-frac $HELDOUT --quiet
    mv "$OUT/data.h5.tmp" "$OUT/data.h5"
fi
lap synth+prep

LAP=$SECONDS
stage "SFT: $SFT_STEPS steps on chosen answers after the few-shot pairs (mpirun -np 2)"
train sft $SFT_STEPS $SFT_CAP --set train.stage=sft
SFT=$(latest "$OUT/sft")
lap sft

LAP=$SECONDS
stage "FSPO preference stage: $PREF_STEPS steps of DPO with the pairs in context, from and against SFT"
train pref $PREF_STEPS $PREF_CAP --set train.stage=pref --set loss.ref_ckpt="$SFT" --set train.init_from="$SFT" "${PREF[@]}"
POLICY=$(latest "$OUT/pref")
lap pref

LAP=$SECONDS
stage "pooled baseline: the same preference stage without any context (N = 0)"
train pooled $POOLED_STEPS $POOLED_CAP --set train.stage=pref --set loss.ref_ckpt="$SFT" --set train.init_from="$SFT" \
    "${PREF[@]}" --set data.n_fewshot=0 --set data.n_fewshot_min=-1
POOLED=$(latest "$OUT/pooled")
lap pooled

LAP=$SECONDS
# --heldout-frac F makes F of the users test users and none validation (the
# demo's users and numbers as before the three-way split): evaluate the test split
stage "evaluate on the held-out (test) users: accuracy vs N, linear and Bayes baselines, win rates"
"$FSPO" eval $CONFIG --ckpt "$POLICY" --split test --json "$OUT/eval.json" --truth "$OUT/users.truth.jsonl" \
    "${COMMON[@]}" --set train.run_dir="$OUT/pref" --set loss.ref_ckpt="$SFT" --set eval.sft_ckpt="$SFT" \
    --set eval.pooled_ckpt="$POOLED" "${EVAL[@]}" | tee "$OUT/eval.txt"
lap eval

LAP=$SECONDS
stage "plots"
bash scripts/plot.sh "$OUT/eval.json" "$OUT/plots" "$OUT/sft/metrics.jsonl" "$OUT/pref/metrics.jsonl" \
    "$OUT/pooled/metrics.jsonl" || echo "demo: plotting failed (is gnuplot installed? scripts/deps.sh adds it)"
lap plots

stage "done in $(((SECONDS - T0) / 60))m$(printf '%02d' $(((SECONDS - T0) % 60)))s: ${timing[*]}"
echo "  results   $OUT/eval.txt, $OUT/eval.json"
echo "  plots     $(ls "$OUT"/plots/*.png 2>/dev/null | tr '\n' ' ')"
echo "  models    SFT $SFT, FSPO $POLICY, pooled $POOLED"
echo "  sample    $FSPO sample --ckpt $POLICY --examples EXAMPLES.jsonl --prompt 'Write a quick review of Up.'"
echo "  what this budget reaches: a few CPU-minutes of training; see docs/results.md for what it means."
printf '%s\n' "total $((SECONDS - T0))s" "${timing[@]}" >"$OUT/timing.txt"
