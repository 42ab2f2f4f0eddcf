#!/usr/bin/env bash
# make demo: synthetic users -> dataset -> SFT -> FSPO preference stage and a
# pooled (no-context) preference model, each with mpirun -np 2 -> fspo eval
# on held-out users -> table and plots. Three tiers of the same pipeline:
#
#   FSPO_TIER=demo      (default, make demo) ~12 minutes on an idle 2-core AMX machine,
#                       ~14 on an AVX2-only one: population r1, the effect
#                       checked at the end (exit 1 if absent)
#   FSPO_TIER=small     (make small) ~1 hour on 2 cores: the r2 model of
#                       docs/results.md experiment 18 from scratch (FSPO + the
#                       user-description chain of thought and two description
#                       stages); resumable: run it again after a stop and it goes on
#   FSPO_TIER=quick     (or FSPO_DEMO_QUICK=1) a ~1-minute miniature (the test
#                       suite runs it): tiny model, a few steps, few users
#   FSPO_DEMO_DIR=DIR   where everything goes (default runs/demo, runs/small)
#   FSPO_DEMO_CAPS=1    per-stage time caps for the demo tier (train.max_time): the
#                       run stays near 15 minutes, but a machine slower than the
#                       reference then trains less, and the effect may not show;
#                       default 0, so a slower or busier machine trains the
#                       whole recipe, taking longer. The quick tier always
#                       caps; FSPO_DEMO_CAPS=0 lifts its caps too
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
SYNTH=(--population r1)   # fspo synth's users (docs/populations.md)
PREP=()             # fspo prep's splits and tokenizer (default: train / test, --test-frac HELDOUT)
SFT=()              # the SFT stage's extra settings
PREF=()             # the preference stage's extra settings
POOLED=()           # the pooled stage's, after PREF's
ANCHOR_STEPS=0      # > 0: train the non-personalizing anchor (SFT without context)
ANCHOR=(--set optim.decay_steps=0)  # the anchor stage's extra settings
DESC1_STEPS=0 DESC2_STEPS=0         # > 0: description stages after the preference stage (each from the last)
DESC1=() DESC2=()   # their settings
RESUME=0
case $TIER in
quick)
    OUT=${FSPO_DEMO_DIR:-runs/demo}
    USERS=40 PAIRS=14 HELDOUT=0.25 SEED=2
    MODEL=(--set model.d_model=32 --set model.n_layers=2 --set model.n_heads=4)
    SFT_STEPS=8 PREF_STEPS=8 POOLED_STEPS=8 ANCHOR_STEPS=8 BATCH=4 LOG_EVERY=4
    SFT_CAP=60s PREF_CAP=60s POOLED_CAP=60s ANCHOR_CAP=60s
    # a few steps of a description stage: the small tier's code path
    DESC1_STEPS=4 DESC1=(--set train.stage=sft --set data.user_desc=cot --set loss.desc_weight=10 --set data.n_queries=1)
    EVAL=(--set eval.max_users=6 --set eval.bootstrap=200 --set eval.max_new_tokens=24) ;;
demo)
    OUT=${FSPO_DEMO_DIR:-runs/demo}
    # seed 3: users nobody looked at while the recipe was chosen (seed 1's
    # validation users chose it; seed 2's test users were spent on an
    # earlier recipe: docs/results.md experiments 7-8)
    USERS=1500 PAIRS=40 HELDOUT=0.15 SEED=3
    MODEL=() # configs/demo.yaml: d_model 128, 4 layers, 4 heads (0.9 M parameters)
    SFT_STEPS=${FSPO_DEMO_SFT_STEPS:-1000} PREF_STEPS=${FSPO_DEMO_PREF_STEPS:-300} POOLED_STEPS=60 ANCHOR_STEPS=300
    BATCH=8 LOG_EVERY=20
    # time caps per stage (train.max_time), only with FSPO_DEMO_CAPS=1: they
    # keep the demo near 15 minutes, but on a CPU half as fast (fp32 products
    # without AVX-512) they stopped SFT at step 594 of 1000, before the
    # inference appears, and the demo failed its check. A capped stage is
    # reported at the end
    SFT_CAP=7m30s ANCHOR_CAP=75s PREF_CAP=3m30s POOLED_CAP=45s
    [[ ${FSPO_DEMO_CAPS:-0} == 1 ]] || SFT_CAP=0 ANCHOR_CAP=0 PREF_CAP=0 POOLED_CAP=0
    PREF=(--set optim.lr=3e-4 --set optim.min_lr=5e-5 --set optim.warmup_steps=20 --set optim.decay_steps=0
          --set loss.sft_weight=0.5 --set train.sft_context=false --set checkpoint.every=50)
    # the eval runs alone: both cores
    EVAL=(--set eval.bootstrap=1000 --set mpi.threads_per_rank=2) ;;
small)
    OUT=${FSPO_DEMO_DIR:-runs/small}
    CONFIG=configs/small.yaml RESUME=1
    # docs/results.md experiment 18 (r2, design C3) on its own users: seed 1,
    # BPE rows, train / validation / test users as the experiments split them
    # (the recipe was chosen on the validation users; this reports the test users)
    USERS=1500 PAIRS=40 SEED=1
    SYNTH=(--population r2)
    PREP=(--val-frac 0.1 --test-frac 0.1 --tokenizer bpe:1024)
    SFT_STEPS=1000 ANCHOR_STEPS=300 PREF_STEPS=1662 POOLED_STEPS=150 DESC1_STEPS=600 DESC2_STEPS=800
    SFT_CAP=0 ANCHOR_CAP=0 PREF_CAP=0 POOLED_CAP=0
    ANCHOR=(--set optim.warmup_steps=50 --set optim.decay_steps=300)
    # FSPO + COT (experiment 13's C1): DPO with 8 queries after N 1..8 pairs and
    # the user's description, the cosine of a 3000-step run stopped at 1662
    PREF=(--set data.n_fewshot_min=1 --set data.n_queries=8 --set train.batch_size=8 --set loss.sft_weight=0.5
          --set optim.lr=5e-4 --set optim.min_lr=5e-5 --set optim.warmup_steps=20 --set optim.decay_steps=3000
          --set data.user_desc=cot)
    POOLED=(--set data.user_desc=none --set optim.decay_steps=0)  # no context, no description
    # description stages (C2, C3): SFT on 64 contexts a step, each with its
    # description (weight 10) and one query's chosen answer
    DESC=(--set train.stage=sft --set train.sft_context=false --set data.n_queries=1 --set train.batch_size=64 --set loss.desc_weight=10
          --set data.user_desc=cot --set optim.warmup_steps=20)
    DESC1=("${DESC[@]}" --set data.n_fewshot_min=1 --set optim.lr=3e-4 --set optim.min_lr=5e-5 --set optim.decay_steps=600)
    DESC2=("${DESC[@]}" --set data.n_fewshot_min=3 --set optim.lr=1.5e-4 --set optim.min_lr=1.5e-5 --set optim.decay_steps=800)
    # the policy writes its own description before it answers
    EVAL=(--set data.user_desc=cot --set eval.user_desc=generated --set data.n_fewshot_min=1 --set data.n_queries=8
          --set eval.bootstrap=1000 --set mpi.threads_per_rank=2) ;;
*)
    echo "demo: FSPO_TIER must be quick, demo or small (got '$TIER')" >&2
    exit 2 ;;
esac

[[ ${FSPO_DEMO_CAPS:-1} == 0 ]] && SFT_CAP=0 ANCHOR_CAP=0 PREF_CAP=0 POOLED_CAP=0
T0=$SECONDS
STAGE=0
N_STAGES=$((8 + (ANCHOR_STEPS > 0) + (DESC1_STEPS > 0) + (DESC2_STEPS > 0)))
stage() { # stage TEXT: one progress line per stage, with the elapsed time
    STAGE=$((STAGE + 1))
    local e=$((SECONDS - T0))
    printf '[demo %d/%d %dm%02ds] %s\n' "$STAGE" "$N_STAGES" $((e / 60)) $((e % 60)) "$1"
}
timing=()
lap() { timing+=("$1 $(($SECONDS - LAP))s"); }
capped=() # stages a time cap stopped before their planned steps

[[ $RESUME == 1 ]] || rm -rf "$OUT"
mkdir -p "$OUT"
if [[ $TIER == small ]]; then
    # configs/small.yaml as written: N 0-8 in context, 4 queries, max_seq 2048
    COMMON=(--set data.path="$OUT/data.h5" --set mpi.threads_per_rank=1)
else
    # configs/demo.yaml: N 0-4 in context, 2 queries, max_seq 1024
    COMMON=(--set data.path="$OUT/data.h5" --set train.batch_size=$BATCH --set train.log_every=$LOG_EVERY
            --set mpi.threads_per_rank=1 "${MODEL[@]}")
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
    local got
    got=$(basename "$(latest "$OUT/$name")" .h5)
    got=${got#ckpt_}
    if [[ $got -lt $steps ]]; then
        capped+=("$name stopped at step $got of $steps (train.max_time $cap)")
        echo "    demo: the time cap stopped $name at step $got of $steps: the machine is slower or busier than planned"
    fi
}

LAP=$SECONDS
stage "synthesize $USERS users x $PAIRS preference pairs (known per-user rewards): ${SYNTH[*]}"
if [[ ! -s $OUT/data.h5 ]]; then # a resumed small tier keeps its data
    "$FSPO" synth -o "$OUT/users.jsonl" --users $USERS --pairs-per-user $PAIRS --seed $SEED "${SYNTH[@]}" --quiet
    # the small grammar repeats a few pairs within a user; prep drops them
    # (reported line by line in prep.log)
    [[ ${#PREP[@]} -gt 0 ]] || PREP=(--val-frac 0 --test-frac $HELDOUT)
    "$FSPO" prep "$OUT/users.jsonl" -o "$OUT/data.h5.tmp" "${PREP[@]}" --quiet 2>"$OUT/prep.log" ||
        { cat "$OUT/prep.log" >&2; exit 1; }
    grep -E '^prep: skipped' "$OUT/prep.log" | sed 's/^/    /;s/$/ (see prep.log)/' || true
    mv "$OUT/data.h5.tmp" "$OUT/data.h5"
fi
if [[ ${SYNTH[*]} == "--population r1" ]]; then
    echo "    the users: each likes or dislikes one of 2 markers (a bullet list, an emoji); a pair differs only in"
    echo "    that marker, so the query shows which marker matters and the model must infer the sign from the"
    echo "    user's examples; 10% of labels are flipped, so even knowing the user scores ~0.9 (docs/populations.md)"
elif [[ ${SYNTH[*]} == "--population r2" ]]; then
    echo "    the users: each likes or dislikes one of 3 markers (exclamation marks, a bullet list, an emoji); a pair"
    echo "    also differs in markers the user ignores, so the model must infer from the user's examples which marker"
    echo "    matters and its sign; even knowing the user scores ~0.9 (docs/populations.md)"
fi
lap synth+prep

LAP=$SECONDS
stage "SFT: $SFT_STEPS steps on chosen answers after the few-shot pairs (mpirun -np 2)"
train sft $SFT_STEPS $SFT_CAP --set train.stage=sft "${SFT[@]}"
SFT=$(latest "$OUT/sft")
lap sft

ANCHOR_CKPT=
if [[ $ANCHOR_STEPS -gt 0 ]]; then
    LAP=$SECONDS
    stage "anchor: $ANCHOR_STEPS SFT steps without any context (the non-personalizing base every method is scored against)"
    train anchor $ANCHOR_STEPS $ANCHOR_CAP --set train.stage=sft --set train.sft_context=false \
        --set data.n_fewshot=0 --set data.n_fewshot_min=-1 "${ANCHOR[@]}"
    ANCHOR_CKPT=$(latest "$OUT/anchor")
    lap anchor
fi

LAP=$SECONDS
stage "FSPO preference stage: $PREF_STEPS steps of DPO with the pairs in context, from and against SFT"
train pref $PREF_STEPS $PREF_CAP --set train.stage=pref --set loss.ref_ckpt="$SFT" --set train.init_from="$SFT" "${PREF[@]}"
POLICY=$(latest "$OUT/pref")
lap pref

LAP=$SECONDS
stage "pooled baseline: the same preference stage without any context (N = 0)"
train pooled $POOLED_STEPS $POOLED_CAP --set train.stage=pref --set loss.ref_ckpt="$SFT" --set train.init_from="$SFT" \
    "${PREF[@]}" --set data.n_fewshot=0 --set data.n_fewshot_min=-1 "${POOLED[@]}"
POOLED_CKPT=$(latest "$OUT/pooled")
lap pooled

# description stages: the policy learns to write the user's description from
# more contexts than the preference stage shows it (docs/results.md 13, 18)
desc_stage() { # desc_stage NAME STEPS [--set ...]: from the last policy, which it then becomes
    local name=$1 steps=$2
    shift 2
    [[ $steps -gt 0 ]] || return 0
    LAP=$SECONDS
    stage "description stage ${name#desc}: $steps SFT steps on the user's description after N pairs, from the last policy"
    train "$name" "$steps" 0 --set train.init_from="$POLICY" "$@"
    POLICY=$(latest "$OUT/$name")
    lap "$name"
}
desc_stage desc1 $DESC1_STEPS "${DESC1[@]}"
desc_stage desc2 $DESC2_STEPS "${DESC2[@]}"

LAP=$SECONDS
# the demo's recipe was chosen on other users (another synth seed), so its
# own users are split train / test only; the small tier's recipe was chosen
# on its users' validation split. Either way the test users are evaluated once
stage "evaluate on the held-out (test) users: accuracy vs N, linear and Bayes baselines, win rates"
"$FSPO" eval $CONFIG --ckpt "$POLICY" --split test --json "$OUT/eval.json" --truth "$OUT/users.truth.jsonl" \
    "${COMMON[@]}" --set train.run_dir="$OUT/pref" --set loss.ref_ckpt="$SFT" --set eval.sft_ckpt="$SFT" \
    --set eval.pooled_ckpt="$POOLED_CKPT" ${ANCHOR_CKPT:+--set eval.anchor_ckpt="$ANCHOR_CKPT"} "${EVAL[@]}" | tee "$OUT/eval.txt"
lap eval

LAP=$SECONDS
stage "plots"
bash scripts/plot.sh "$OUT/eval.json" "$OUT/plots" "$OUT/sft/metrics.jsonl" "$OUT/pref/metrics.jsonl" \
    "$OUT/pooled/metrics.jsonl" || echo "demo: plotting failed (is gnuplot installed? scripts/deps.sh adds it)"
lap plots

# The self-check: the main job must show few-shot personalization. A flat
# table fails the demo loudly (quick is a smoke run: it only reports).
stage "check: accuracy at the largest N above N = 0 (separated 95% CIs) and above the pooled model"
set +e
python3 - "$OUT/eval.json" <<'PY' | tee "$OUT/check.txt"
import json, sys
r = json.load(open(sys.argv[1]))
acc = r["accuracy"]
lo, hi = acc[0], acc[-1]
m0, m1, pooled = lo["model"], hi["model"], hi["pooled"]
print(f"    model N={lo['n']}: {m0['mean']:.3f} [{m0['lo']:.3f},{m0['hi']:.3f}]   "
      f"N={hi['n']}: {m1['mean']:.3f} [{m1['lo']:.3f},{m1['hi']:.3f}]   "
      f"pooled {pooled['mean']:.3f} [{pooled['lo']:.3f},{pooled['hi']:.3f}]   bayes {hi['bayes']['mean']:.3f}")
g = hi.get("gap_closed")
if g:
    print(f"    gap closed at N={hi['n']} (pooled -> Bayes): {g['mean']:.2f} [{g['lo']:.2f},{g['hi']:.2f}]")
w = r.get("win_rate_anchor") or {}
if w.get("policy") and w.get("oracle"):
    p, o = w["policy"], w["oracle"]
    share = f": {p['of_ceiling']['mean']:.0%} of the ceiling" if p.get("of_ceiling") else ""
    print(f"    win rate vs the anchor: FSPO {p['win']['mean']:.3f} [{p['win']['lo']:.3f},{p['win']['hi']:.3f}], "
          f"ceiling (oracle policy) {o['win']['mean']:.3f}{share}")
ok = m1["lo"] > m0["hi"] and m1["mean"] > pooled["mean"]
print("    PASS: few-shot personalization shows" if ok else
      "    FAIL: accuracy at the largest N is not above N = 0 with separated CIs and above the pooled model")
sys.exit(0 if ok else 1)
PY
check=${PIPESTATUS[0]}
set -e
lap check

stage "done in $(((SECONDS - T0) / 60))m$(printf '%02d' $(((SECONDS - T0) % 60)))s: ${timing[*]}"
echo "  results   $OUT/eval.txt, $OUT/eval.json"
echo "  plots     $(ls "$OUT"/plots/*.png 2>/dev/null | tr '\n' ' ')"
echo "  models    SFT $SFT, FSPO $POLICY, pooled $POOLED_CKPT${ANCHOR_CKPT:+, anchor $ANCHOR_CKPT}"
echo "  sample    $FSPO sample --ckpt $POLICY --examples EXAMPLES.jsonl --prompt 'Write a quick review of Up.'"
[[ $TIER == demo ]] && echo "  more      make small: the r2 model from scratch (~1 hour); docs/results.md: the harder rungs r2-r4"
printf '%s\n' "total $((SECONDS - T0))s" "${timing[@]}" "${capped[@]}" >"$OUT/timing.txt"
for c in "${capped[@]}"; do echo "  note: $c"; done
if [[ $check -ne 0 && $TIER != quick ]]; then
    echo "demo: FAILED its self-check: this run did not show few-shot personalization (see $OUT/check.txt)." >&2
    [[ ${#capped[@]} -gt 0 ]] && echo "demo: time caps cut training short (above): run it again without FSPO_DEMO_CAPS=1." >&2
    exit 1
fi
