#!/usr/bin/env bash
# Part of make bench: data-pipeline and training throughput, one JSON line
# per measurement on stdout (scripts/bench_report.py turns them into
# docs/benchmarks.md). Uses config A's model on synthetic FSPO meta-batches.
set -euo pipefail
cd "$(dirname "$0")/.."
FSPO=${FSPO:-./fspo}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d /tmp/fspo-bench.XXXXXX) && trap 'rm -rf "$tmp"' EXIT

# synth and prep on the paper's scale of users: 1500 users x 40 pairs
synth=$("$FSPO" synth -o "$tmp/users.jsonl" --users 1500 --pairs-per-user 40 --seed 1 2>&1)
pairs_s=$(sed -n 's/.* \([0-9.]*\) pairs\/s.*/\1/p' <<<"$synth" | tail -1)
prep=$("$FSPO" prep "$tmp/users.jsonl" -o "$tmp/data.h5" 2>&1)
mb_s=$(sed -n 's/.*speed .*: \([0-9.]*\) MB\/s.*/\1/p' <<<"$prep" | tail -1)
mb=$(sed -n 's/.*speed *\([0-9.]*\) MB in.*/\1/p' <<<"$prep" | tail -1)
echo "{\"kind\": \"data\", \"synth_pairs_per_s\": $pairs_s, \"synth_pairs\": 60000, \"prep_mb_per_s\": $mb_s, \"prep_mb\": $mb}"

# the BPE tokenizer on the same file: learning V = 4096, encoding (fspo tokenizer
# stats: every prompt and answer), and prep --tokenizer bpe:4096 end to end
learn=$("$FSPO" tokenizer train "$tmp/users.jsonl" --vocab 4096 -o "$tmp/tok.json" 2>&1)
learn_s=$(sed -n 's/.*learned at \([0-9.]*\) MB\/s of CPU time.*/\1/p' <<<"$learn" | tail -1)
stats=$("$FSPO" tokenizer stats "$tmp/tok.json" "$tmp/users.jsonl")
enc_cpu=$(sed -n 's/^encoding: .* at \([0-9.]*\) MB\/s of CPU time.*/\1/p' <<<"$stats")
enc_wall=$(sed -n 's/^encoding: .*CPU time (\([0-9.]*\) MB\/s wall).*/\1/p' <<<"$stats")
prep_bpe=$("$FSPO" prep "$tmp/users.jsonl" -o "$tmp/data_bpe.h5" --tokenizer bpe:4096 2>&1)
bpe_mb_s=$(sed -n 's/.*speed .*: \([0-9.]*\) MB\/s.*/\1/p' <<<"$prep_bpe" | tail -1)
bpt=$(sed -n 's/^  tokens  [0-9]* (\([0-9.]*\) bytes\/token.*/\1/p' <<<"$prep_bpe")
echo "{\"kind\": \"tokenizer\", \"vocab\": 4096, \"learn_mb_per_s_cpu\": $learn_s, \"encode_mb_per_s_cpu\": $enc_cpu, \"encode_mb_per_s_wall\": $enc_wall, \"prep_bpe_mb_per_s\": $bpe_mb_s, \"bytes_per_token\": $bpt}"

# preference stage, config A's model, N = 4 few-shot and Q = 4 queries per meta-example
cat >"$tmp/cfg.yaml" <<YAML
model: {d_model: 256, n_layers: 4, n_heads: 4, max_seq: 2048}
data: {path: $tmp/data.h5, n_fewshot: 4, n_queries: 4}
train: {run_dir: $tmp/sft, max_steps: 1, batch_size: 8, log_every: 1}
checkpoint: {every: 1000}
YAML
"$FSPO" train "$tmp/cfg.yaml" --set mpi.threads_per_rank=2 >/dev/null
# BENCH_ROUNDS rounds of the layouts, interleaved, so that the machine's
# drift between minutes falls on every layout alike (the report takes medians);
# 1x1b, 2x1b: the same in bf16 ([bf16]: the speedups hold end to end), only
# where the CPU has bf16 product units
# 1x1c, 1x1n: 8 fixed meta-examples (data.fixed_examples 8 = the batch), so every
# step after the first repeats them, with loss.ref_cache on (c) and off (n): the
# reference forward the cache saves
layouts=(1x1 1x2 2x1 1x1c 1x1n)
grep -qw -e amx_bf16 -e avx512_bf16 /proc/cpuinfo && [[ -z ${FSPO_CPU_NO_BF16:-} ]] && layouts+=(1x1b 2x1b)
for round in $(seq 1 "${BENCH_ROUNDS:-3}"); do
for layout in "${layouts[@]}"; do
    prec=fp32 cache=()
    [[ $layout == *b ]] && prec=bf16
    [[ $layout == *c ]] && cache=(--set data.fixed_examples=8 --set loss.ref_cache=true)
    [[ $layout == *n ]] && cache=(--set data.fixed_examples=8 --set loss.ref_cache=false)
    l=${layout%[bcn]} && np=${l%x*} th=${l#*x} dir="$tmp/pref$layout.$round"
    echo "bench: pref stage, round $round, $np rank(s) x $th thread(s), model.precision $prec ..." >&2
    # mpirun binds each rank to one core by default: a rank with 2 threads needs --bind-to none
    bind=(); [[ $th -gt 1 ]] && bind=(--bind-to none)
    mpirun -q --oversubscribe "${bind[@]}" -np "$np" "$FSPO" train "$tmp/cfg.yaml" --set train.run_dir="$dir" \
        --set train.stage=pref --set loss.ref_ckpt="$tmp/sft/ckpt_1.h5" --set train.init_from="$tmp/sft/ckpt_1.h5" \
        --set train.max_steps=5 --set mpi.threads_per_rank="$th" --set mpi.bucket_mb=1 --set model.precision=$prec \
        "${cache[@]}" >"$dir.log" 2>&1
    /usr/bin/python3 - "$dir/metrics.jsonl" "$np" "$th" "$dir.log" "$round" "${cache[*]}" <<'PYEOF'
import json, re, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])][1:]  # the first step includes start-up
log = open(sys.argv[4]).read()
m = re.search(r"allreduce ([0-9.]+) ms blocking; ([0-9.]+) ms per step waited .*: ([0-9]+)% hidden", log)
prec = re.search(r"^train: precision (\w+)", log, re.M)
cache = sys.argv[6] if len(sys.argv) > 6 else ""
print(json.dumps({"kind": "pref_step", "ranks": int(sys.argv[2]), "threads": int(sys.argv[3]), "round": int(sys.argv[5]),
                  "precision": prec.group(1) if prec else "fp32",
                  "ref_cache": None if not cache else "ref_cache=true" in cache,
                  "tokens_per_s": statistics.median(r["tokens_per_sec"] for r in rows),
                  "meta_examples_per_s": statistics.median(r["meta_examples_per_sec"] for r in rows),
                  "mfu": statistics.median(r["mfu"] for r in rows),
                  "allreduce_ms": float(m.group(1)) if m else None,
                  "allreduce_exposed_ms": float(m.group(2)) if m else None,
                  "allreduce_hidden_pct": float(m.group(3)) if m else None}))
PYEOF
done
done
