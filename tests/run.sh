#!/usr/bin/env bash
# The one test runner: every C test binary and every shell test; each
# prints "PASS: ..." / "FAIL: ..." / "SKIP: ..." lines, counted here.
# Ends with "N passed, N failed, N skipped". BUILD selects the build tree
# (build, or build-san for `make sanitize`); FSPO the binary.
set -u
cd "$(dirname "$0")/.."
export BUILD=${BUILD:-build}
export FSPO=${FSPO:-./fspo}
# one BLAS thread per process unless the caller says otherwise: tests run
# side by side with mpirun ranks later and must not oversubscribe 2 cores
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
TMP=$(mktemp -d /tmp/fspo-test.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

passed=0 failed=0 skipped=0
# run NAME TIMEOUT CMD...: counts its PASS/FAIL/SKIP lines; a crash or a
# non-zero exit without any FAIL line counts as one more failure.
run() {
    local name=$1 limit=$2
    shift 2
    local log="$TMP/$name.log" t0=$SECONDS
    timeout "$limit" "$@" >"$log" 2>&1
    local rc=$?
    local p f s
    p=$(grep -c '^PASS: ' "$log"); f=$(grep -c '^FAIL: ' "$log"); s=$(grep -c '^SKIP: ' "$log")
    if [[ $rc -ne 0 && $f -eq 0 ]]; then
        f=1
        echo "FAIL: $name: exited with status $rc$([[ $rc -eq 124 ]] && echo " (timeout ${limit}s)")" >>"$log"
    fi
    passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
    printf '%-28s %3d passed, %d failed, %d skipped  (%ds)\n' "$name" "$p" "$f" "$s" $((SECONDS - t0))
    grep -E '^(FAIL|SKIP): ' "$log" | sed 's/^/    /'
    [[ $f -gt 0 ]] && tail -n 5 "$log" | grep -vE '^(PASS|FAIL|SKIP): ' | sed 's/^/    | /'
    return 0
}

# every C test binary (test_golden needs its golden file: tests/test_golden.sh runs it)
for bin in "$BUILD"/tests/test_*; do
    name=$(basename "$bin")
    [[ -x $bin && $name != test_golden ]] && run "$name" 300 "$bin"
done

for t in tests/test_*.sh; do
    run "$(basename "$t")" 600 bash "$t"
done

echo "$passed passed, $failed failed, $skipped skipped"
[[ $failed -eq 0 ]]
