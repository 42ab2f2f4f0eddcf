#!/usr/bin/env bash
# Fuzz smoke: every libFuzzer harness for a few seconds (make fuzz runs them long).
cd "$(dirname "$0")/.." && source tests/lib.sh
if ! command -v clang >/dev/null || [[ ! -x build-fuzz/fuzz_config ]]; then
    echo "SKIP: fuzz smoke: clang or the fuzz build is missing (apt-get install clang libclang-rt-14-dev)"
    exit 0
fi
bash tests/fuzz/run.sh "${FUZZ_SMOKE_SECONDS:-5}" config jsonl tokenizer tokenizer_json h5file safetensors
