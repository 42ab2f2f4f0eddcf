#!/usr/bin/env bash
# make bench: training-step throughput of configs A and B at 1 and 2
# OpenBLAS threads, each against the sgemm peak measured in the same
# process, and PyTorch on the same step; then the same in bf16
# (model.precision bf16, MFU against the bf16 product peak measured in the
# same process) against PyTorch with bf16 autocast, in the same rounds
# (skipped where the CPU has no bf16 units). Writes docs/benchmarks.json and
# regenerates docs/benchmarks.md and docs/scaling.md on the reference kind of
# machine (AMX-BF16, where the issues' targets are set); on another kind,
# docs/benchmarks-KIND.json and .md (KIND by the matrix units: avx512bf16,
# avx512, avx2), and the Machines table of docs/benchmarks.md gains its row.
#
# Figures on a shared 2-core VM drift by 10-30% between minutes, so the
# comparisons that carry targets (fspo vs tuned PyTorch, the data-parallel
# layouts) run BENCH_ROUNDS times, interleaved, and the report quotes
# medians over rounds with their range.
set -euo pipefail
cd "$(dirname "$0")/.."
FSPO=${FSPO:-./fspo}
ROUNDS=${BENCH_ROUNDS:-3}
flags=$(grep -m1 '^flags' /proc/cpuinfo)
if [[ $flags =~ (^| )amx_bf16( |$) ]]; then kind=amx
elif [[ $flags =~ (^| )avx512_bf16( |$) ]]; then kind=avx512bf16
elif [[ $flags =~ (^| )avx512f( |$) ]]; then kind=avx512
else kind=avx2; fi
stem=docs/benchmarks$([[ $kind == amx ]] || echo "-$kind")
out=$stem.json
echo "bench: a machine of kind $kind (by its matrix units): the report goes to $stem.md" >&2
runs=()
TCMALLOC=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
# the PyTorch peer (fp32 with tcmalloc, bf16 autocast) runs with tcmalloc
# preloaded; scripts/deps.sh installs it, so its absence is said, not hidden
[[ -e $TCMALLOC ]] || echo "bench: $TCMALLOC missing (apt-get install libtcmalloc-minimal4): no tuned or autocast PyTorch rows" >&2
# bf16 rows only where model.precision auto resolves to bf16 (AMX-BF16 or AVX512-BF16)
if "$FSPO" bench --d-model 32 --n-layers 1 --n-heads 2 --max-seq 64 --precision bf16 --steps 1 --sgemm-n 64 \
    >/dev/null 2>&1; then BF16=1; else
    BF16=0
    echo "bench: no bf16 matrix units here (or FSPO_CPU_NO_BF16 set): the bf16 rows are skipped" >&2
fi
precisions=(fp32)
[[ $BF16 == 1 ]] && precisions+=(bf16)
# bf16 without AMX: oneDNN capped at AVX512-BF16 (a Zen 4's kernels), config B,
# where the CPU has both (so the cap is the only difference)
NOAMX=0
grep -qw amx_bf16 /proc/cpuinfo && grep -qw avx512_bf16 /proc/cpuinfo && [[ $BF16 == 1 ]] && NOAMX=1
for round in $(seq 1 "$ROUNDS"); do
    for preset in A B; do
        for precision in "${precisions[@]}"; do
            for threads in 1 2; do
                steps=$([[ $preset == A ]] && echo 5 || echo 3)
                echo "bench: round $round/$ROUNDS, config $preset, $precision, $threads thread(s), $steps timed steps ..." >&2
                line=$("$FSPO" bench --preset "$preset" --threads "$threads" --steps "$steps" --precision "$precision" --json)
                runs+=("${line%\}}, \"round\": $round}")
            done
        done
        # no bf16 units: auto must resolve to fp32 and cost nothing (the [bf16] issue), config B
        if [[ $BF16 == 0 && $preset == B ]]; then
            for threads in 1 2; do
                echo "bench: round $round/$ROUNDS, config B, model.precision auto, $threads thread(s) ..." >&2
                line=$("$FSPO" bench --preset B --threads "$threads" --steps 3 --precision auto --json)
                runs+=("${line%\}}, \"round\": $round, \"asked\": \"auto\"}")
            done
        fi
        if [[ $NOAMX == 1 && $preset == B ]]; then
            for threads in 1 2; do
                echo "bench: round $round/$ROUNDS, config B, bf16 capped at AVX512_CORE_BF16 (no AMX), $threads thread(s) ..." >&2
                line=$(DNNL_MAX_CPU_ISA=AVX512_CORE_BF16 "$FSPO" bench --preset B --threads "$threads" --steps 3 --precision bf16 --json)
                runs+=("${line%\}}, \"round\": $round, \"isa_cap\": \"AVX512_CORE_BF16\"}")
            done
        fi
        # the PyTorch reference on the same step, tuned as docs/benchmarks.md says (and with bf16 autocast)
        if [[ -e $TCMALLOC ]]; then
            steps=$([[ $preset == A ]] && echo 3 || echo 2)
            for precision in "${precisions[@]}"; do
                # fp32: torch's 1 thread, OpenBLAS's 2 run the products; bf16 autocast: the products
                # run in oneDNN on torch's own (OpenMP) threads, so it gets both cores that way
                label=tuned autocast=() omp=1
                [[ $precision == bf16 ]] && label=tuned-bf16-autocast autocast=(--autocast bf16) omp=2
                echo "bench: round $round/$ROUNDS, PyTorch config $preset, $label ..." >&2
                line=$(LD_PRELOAD=$TCMALLOC OMP_NUM_THREADS=$omp OPENBLAS_NUM_THREADS=2 /usr/bin/python3 \
                    scripts/bench_torch.py --preset $preset --steps $steps --threads $omp --label $label "${autocast[@]}")
                runs+=("${line%\}}, \"round\": $round}")
            done
        fi
    done
done
# PyTorch with its defaults is several times slower; one round says so
for preset in A B; do
    steps=$([[ $preset == A ]] && echo 3 || echo 2)
    echo "bench: PyTorch config $preset, defaults ..." >&2
    line=$(/usr/bin/python3 scripts/bench_torch.py --preset $preset --steps $steps --label default)
    runs+=("${line%\}}, \"round\": 1}")
done
echo "bench: data pipeline and preference-stage training ..." >&2
while IFS= read -r line; do runs+=("$line"); done < <(BENCH_ROUNDS=$ROUNDS bash scripts/bench_train.sh)
while IFS= read -r line; do runs+=("$line"); done < <(bash scripts/bench_fspo.sh)
# the alpha-beta scaling model, fed with this run's measured step time (docs/scaling.md), on the reference machine
if [[ $kind == amx ]]; then
    printf '%s\n' "${runs[@]}" | /usr/bin/python3 scripts/scaling.py --bench-json - --out docs/scaling.md
fi
printf '%s\n' "${runs[@]}" | /usr/bin/python3 scripts/bench_report.py "$out" "$stem.md" \
    "$(date -u +%Y-%m-%d) on $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" "$kind"
echo "bench: wrote $stem.md and $out$([[ $kind == amx ]] || echo ", and the Machines row in docs/benchmarks.md")" >&2
