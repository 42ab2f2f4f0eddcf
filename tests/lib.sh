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
