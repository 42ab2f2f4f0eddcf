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
