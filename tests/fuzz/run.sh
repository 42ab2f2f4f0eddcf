#!/usr/bin/env bash
# Runs each libFuzzer harness for SECONDS on a working copy of its corpus
# (tests/fuzz/corpus/NAME stays as committed); prints one summary line per
# harness ("PASS: fuzz NAME: ..." or "FAIL: ...") and keeps any crash input
# under build-fuzz/NAME/ (FUZZ_WORK=DIR puts the working copies under DIR/NAME/
# instead, so a long run and the make-test smoke can run side by side).
# usage: tests/fuzz/run.sh SECONDS NAME...
set -u
cd "$(dirname "$0")/../.."
seconds=$1
root=$PWD
shift
export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1
for name in "$@"; do
    work=${FUZZ_WORK:-build-fuzz}/$name
    rm -rf "$work" && mkdir -p "$work/corpus"
    cp tests/fuzz/corpus/"$name"/* "$work/corpus/" 2>/dev/null
    log=$work/fuzz.log
    (cd "$work" && "$root"/build-fuzz/fuzz_"$name" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 corpus >fuzz.log 2>&1)
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    crashes=$(ls "$work"/crash-* "$work"/leak-* "$work"/timeout-* 2>/dev/null | wc -l)
    if [[ $rc -eq 0 && $crashes -eq 0 ]]; then
        echo "PASS: fuzz $name: ${runs:-?} executions in ${seconds} s (${speed:-?}/s), 0 crashes"
    else
        echo "FAIL: fuzz $name: exit $rc, $crashes crash/leak/timeout inputs in $work; $(grep -m1 -E 'ERROR|SUMMARY' "$log")"
    fi
done
