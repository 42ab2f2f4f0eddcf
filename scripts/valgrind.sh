#!/usr/bin/env bash
# valgrind memcheck over the main paths of fspo (make valgrind): train from
# scratch, resume, train on 2 ranks (mpirun, valgrind under each rank),
# inspect, prep and sample, on a tiny model. Built apart in build-vg with
# -march=x86-64-v3 (valgrind 3.19 cannot decode AVX-512) and OpenBLAS held
# to its Haswell kernels. Passes when every run reports 0 errors: invalid
# reads/writes, uninitialised values, and leaks of any kind (definite,
# indirect, possible) outside Open MPI's own start-up allocations, which
# tests/valgrind.supp names by library. Slow: a few minutes.
set -u
cd "$(dirname "$0")/.." && source tests/lib.sh
BIN=$(readlink -f "${VG_FSPO:-build-vg/fspo}")
export OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=Haswell FSPO_PEAK_GFLOPS=50
tmp=$(mktemp -d /tmp/fspo-vg.XXXXXX) && trap 'rm -rf "$tmp"' EXIT
VG=(valgrind --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect,possible
    --errors-for-leak-kinds=definite,indirect,possible --track-origins=yes --num-callers=40
    --suppressions="$PWD/tests/valgrind.supp")
"${BUILD:-build-vg}/tests/test_pack" --write-dataset "$tmp/data.h5" 8 24 >/dev/null || { fail "valgrind: dataset"; exit 1; }
cat >"$tmp/cfg.yaml" <<YAML
model: {d_model: 32, n_layers: 2, n_heads: 4, max_seq: 256}
data: {path: $tmp/data.h5, n_fewshot: 2, n_queries: 2}
train: {run_dir: $tmp/run, max_steps: 3, batch_size: 6, log_every: 1}
optim: {decay_steps: 10}
mpi: {threads_per_rank: 1, checksum_every: 1}
checkpoint: {every: 2, keep: 2}
YAML
"$BIN" synth -o "$tmp/s.jsonl" --users 6 --pairs-per-user 6 >/dev/null 2>&1
head -2 "$tmp/s.jsonl" | sed 's/"user_id": "[^"]*"/"user_id": "x"/' >"$tmp/ex.jsonl"
total=0 clean=0
check() { # check NAME LOG...: every valgrind log must end with 0 errors
    local name=$1 bad="" l
    shift
    total=$((total + 1))
    for l in "$@"; do
        grep -q "ERROR SUMMARY: 0 errors" "$l" || bad="$bad $(basename "$l"): $(grep -m1 'ERROR SUMMARY' "$l")"
    done
    if [[ -z $bad ]]; then
        clean=$((clean + 1))
        pass "valgrind $name" "$(grep -h 'ERROR SUMMARY\|definitely lost:' "$@" | sed 's/==[0-9]*== *//' | sort | uniq -c | tr -s ' ' | tr '\n' ';')"
    else
        fail "valgrind $name" "$bad (logs: $*)"
        cp "$@" /tmp/ 2>/dev/null
    fi
}
"${VG[@]}" --log-file="$tmp/train.vg" "$BIN" train "$tmp/cfg.yaml" >"$tmp/train.log" 2>&1
check "train, 3 steps, 1 rank" "$tmp/train.vg"
"${VG[@]}" --log-file="$tmp/resume.vg" "$BIN" train "$tmp/cfg.yaml" --set train.max_steps=4 >"$tmp/resume.log" 2>&1
grep -q "resuming from" "$tmp/resume.log" || fail "valgrind resume" "did not resume: $(tail -2 "$tmp/resume.log")"
check "resume to step 4" "$tmp/resume.vg"
"${MPIRUN[@]}" -np 2 "${VG[@]}" --log-file="$tmp/np2.%q{OMPI_COMM_WORLD_RANK}.vg" "$BIN" train "$tmp/cfg.yaml" \
    --set train.run_dir="$tmp/run2" >"$tmp/np2.log" 2>&1
check "train, 3 steps, 2 ranks (mpirun)" "$tmp"/np2.*.vg
"${VG[@]}" --log-file="$tmp/inspect.vg" "$BIN" inspect "$tmp/run/ckpt_4.h5" >/dev/null 2>&1
"${VG[@]}" --log-file="$tmp/inspect_bad.vg" "$BIN" inspect "$tmp/cfg.yaml" >/dev/null 2>&1
check "inspect (a checkpoint, a non-HDF5 file)" "$tmp/inspect.vg" "$tmp/inspect_bad.vg"
"${VG[@]}" --log-file="$tmp/prep.vg" "$BIN" prep "$tmp/s.jsonl" -o "$tmp/p.h5" --quiet >/dev/null 2>&1
check "prep" "$tmp/prep.vg"
"${VG[@]}" --log-file="$tmp/sample.vg" "$BIN" sample --ckpt "$tmp/run/ckpt_4.h5" --examples "$tmp/ex.jsonl" \
    --prompt "hello" --max-tokens 8 >/dev/null 2>&1
check "sample" "$tmp/sample.vg"
"${VG[@]}" --log-file="$tmp/config.vg" "$BIN" config check "$tmp/cfg.yaml" --set optim.lr=abc >/dev/null 2>&1
check "config check (a bad --set)" "$tmp/config.vg"
echo "valgrind: $total runs, $clean with 0 errors"
[[ $clean -eq $total ]]
