#!/usr/bin/env bash
# Part of make bench: the FSPO-specific rows, one JSON line each on stdout
# (scripts/bench_report.py turns them into docs/benchmarks.md):
#   tree packing vs unshared rows (fspo bench --pref, config A's model,
#   N = 8 few-shot, Q = 4 queries), the same meta-examples in PyTorch the
#   usual way (scripts/bench_torch_fspo.py, tuned), checkpoint save/load
#   for config B (fspo bench --ckpt) and the overlapped allreduce with
#   identical work per rank (mpirun -np 2 fspo bench --dp), then the same
#   with ZeRO-1's reduce-scatter and its optimizer state per rank (--shard).
#   Then attention memory (VmHWM vs analytic, full, flash, flash with
#   model.recompute, T = 4096 and 8192) and an allreduce sweep on one node and across two Slurm nodes.
set -euo pipefail
cd "$(dirname "$0")/.."
FSPO=${FSPO:-./fspo}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d /tmp/fspo-bench-fspo.XXXXXX) && trap 'rm -rf "$tmp"' EXIT
TCMALLOC=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
EXAMPLES=${EXAMPLES:-3}

"$FSPO" synth -o "$tmp/users.jsonl" --users 300 --pairs-per-user 40 --seed 1 >/dev/null 2>&1
"$FSPO" prep "$tmp/users.jsonl" -o "$tmp/data.h5" >/dev/null 2>&1

echo "bench: FSPO pref step, tree-packed vs unshared rows ($EXAMPLES meta-examples) ..." >&2
cmd="fspo bench --pref data.h5 --preset A --fewshot 8 --queries 4 --examples $EXAMPLES --threads 2 --json"
line=$("$FSPO" bench --pref "$tmp/data.h5" --preset A --fewshot 8 --queries 4 --examples "$EXAMPLES" --threads 2 \
    --dump "$tmp/rows.jsonl" --json 2>/dev/null)
echo "${line%\}}, \"command\": \"$cmd\"}"

if [[ -e $TCMALLOC ]]; then
    echo "bench: the same meta-examples in PyTorch the usual way, tuned ..." >&2
    cmd="LD_PRELOAD=libtcmalloc_minimal.so.4 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=2 python3 scripts/bench_torch_fspo.py rows.jsonl --threads 1"
    line=$(LD_PRELOAD=$TCMALLOC OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=2 \
        /usr/bin/python3 scripts/bench_torch_fspo.py "$tmp/rows.jsonl" --examples 2 --threads 1 --label tuned 2>/dev/null)
    echo "${line%\}}, \"command\": \"$cmd\"}"
fi

echo "bench: checkpoint save/load, config B ..." >&2
line=$("$FSPO" bench --ckpt "$tmp/ckpt" --preset B --reps 3 --json)
echo "${line%\}}, \"command\": \"fspo bench --ckpt DIR --preset B --reps 3\"}"

echo "bench: overlapped allreduce, 2 ranks x 1 thread, identical work ..." >&2
line=$(mpirun -q --oversubscribe -np 2 "$FSPO" bench --dp --preset A --threads 1 --steps 3 --bucket-mb 1 --json)
echo "${line%\}}, \"command\": \"mpirun -np 2 fspo bench --dp --preset A --threads 1 --steps 3 --bucket-mb 1\"}"
echo "bench: the same with ZeRO-1 (reduce-scatter, optimizer slices) ..." >&2
line=$(mpirun -q --oversubscribe -np 2 "$FSPO" bench --dp --shard --preset A --threads 1 --steps 3 --bucket-mb 1 --json)
echo "${line%\}}, \"command\": \"mpirun -np 2 fspo bench --dp --shard --preset A --threads 1 --steps 3 --bucket-mb 1\"}"

# attention memory: one training step of config A's model on one row of
# T = 4096 and 8192 tokens, full vs flash (model.attention): peak RSS (VmHWM)
# against the analytic figure, and the step time of each
for T in 4096 8192; do
    for keep in "full" "flash" "flash --recompute"; do
        echo "bench: attention memory, T = $T, $keep ..." >&2
        cmd="fspo bench --preset A --max-seq $T --batch 1 --steps 2 --threads 2 --sgemm-n 512 --attention $keep --json"
        # shellcheck disable=SC2086 # $keep is the attention kind and maybe --recompute
        line=$("$FSPO" bench --preset A --max-seq "$T" --batch 1 --steps 2 --threads 2 --sgemm-n 512 --attention $keep --json)
        echo "${line%\}}, \"kind\": \"attn_memory\", \"command\": \"$cmd\"}"
    done
done

# the alpha-beta fit of docs/scaling.md: one allreduce of 4 KiB .. 64 MiB
# between 2 ranks on one node (shared memory), and between two Slurm nodes
# (tests/slurm_local.sh: two slurmd on this host, so loopback TCP, not a
# real network: it checks the fit, the network rows stay assumptions)
echo "bench: allreduce sweep, 2 ranks on one node ..." >&2
mpirun -q --oversubscribe -np 2 "$FSPO" bench --allreduce-sweep --json
if [[ $(id -u) -eq 0 ]] && command -v slurmd >/dev/null; then
    echo "bench: allreduce sweep, 2 ranks on two Slurm nodes ..." >&2
    (
        set +e # tests/slurm_local.sh is written for the tests' shells, not for set -e
        source tests/slurm_local.sh
        slurm_start 2 >&2 || exit 0
        srun -N2 -n2 --mpi=pmix "$(readlink -f "$FSPO")" bench --allreduce-sweep --json ||
            echo "bench: the two-node allreduce sweep failed" >&2
        slurm_stop >&2
    )
else
    echo "bench: no root or no slurmd: the two-node allreduce sweep is skipped" >&2
fi
