# Shared helpers for shell tests: print the PASS/FAIL lines tests/run.sh counts.
# FSPO (the binary under test) comes from the runner.
FSPO=${FSPO:-./fspo}

pass() { echo "PASS: $1: ${2:-}"; }
fail() { echo "FAIL: $1: ${2:-}"; }

# expect_error NAME CODE PATTERN -- CMD...: CMD must exit CODE and print PATTERN (grep -E) on stderr.
expect_error() {
    local name=$1 code=$2 pattern=$3
    shift 4
    local err rc
    err=$("$@" 2>&1 >/dev/null)
    rc=$?
    if [[ $rc -eq $code ]] && grep -qE -- "$pattern" <<<"$err"; then
        pass "$name" "exit $rc: $err"
    else
        fail "$name" "exit $rc (want $code), stderr '$err' (want /$pattern/)"
    fi
}

# mpirun for tests: root needs --allow-run-as-root; more ranks than cores need --oversubscribe
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Open MPI's shared-memory transport warns about /dev/shm in some sandboxes; keep output clean
export OMPI_MCA_btl_vader_single_copy_mechanism=none
# MPIRUN: the launcher with the flags tests need; use it directly where a PID or timeout matters
MPIRUN=(mpirun --oversubscribe -q)
mpirun_np() {
    local np=$1
    shift
    "${MPIRUN[@]}" -np "$np" "$@"
}

# tiny_fixture DIR TRAIN OPTIM CHECKPOINT: DIR/data.h5 (8 users x 24 pairs,
# from tests/test_pack) and DIR/cfg.yaml, the tiny model the training tests
# run; TRAIN, OPTIM and CHECKPOINT are the insides of those flow mappings.
tiny_fixture() {
    "${BUILD:-build}/tests/test_pack" --write-dataset "$1/data.h5" 8 24 >/dev/null || return 1
    cat >"$1/cfg.yaml" <<YAML
model: {d_model: 32, n_layers: 2, n_heads: 4, max_seq: 256}
data: {path: $1/data.h5, n_fewshot: 2, n_queries: 2}
train: {$2}
optim: {$3}
mpi: {threads_per_rank: 1, checksum_every: 5}
checkpoint: {$4}
YAML
}

# remove_tmp DIR: kills what still runs with DIR in its command line (a
# failed test's job), then removes DIR. For an EXIT trap.
remove_tmp() {
    local p
    for p in $(pgrep -f -- "$1/" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    rm -rf "$1"
}
