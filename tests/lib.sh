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

# same_losses A B TOL [FLOOR]: two metrics.jsonl agree on every logged training
# metric (timing ones excluded) within relative TOL (0: exactly); a value
# smaller than FLOOR in magnitude is held to TOL * FLOOR absolute instead (a
# DPO reward near 0 is the difference of two logps near -100: only their last
# bits are left, so its relative error is large)
same_losses() { # metrics A B TOL [FLOOR]: every logged training metric agrees (timing ones excluded)
    "${PY:-/usr/bin/python3}" - "$1" "$2" "$3" "${4:-1e-12}" <<'PYEOF'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
tol, floor = float(sys.argv[3]), float(sys.argv[4])
assert [r["step"] for r in a] == [r["step"] for r in b], "different steps logged"
worst, where = 0.0, ""
for x, y in zip(a, b):
    for k in x:
        if k in ("tokens_per_sec", "mfu", "meta_examples_per_sec"):
            continue
        if x[k] is None or y[k] is None:
            assert x[k] == y[k], (k, x[k], y[k])
            continue
        err = abs(x[k] - y[k]) / max(abs(y[k]), floor)
        if err > worst:
            worst, where = err, f"{k} at step {x['step']}: {x[k]!r} vs {y[k]!r}"
assert worst <= tol, f"metrics differ: {worst:.3g} > {tol:g} ({where})"
print(f"{len(a)} steps, worst rel diff {worst:.2g}")
PYEOF
}

# tiny_train_setup DIR: a dataset of 8 users x 24 pairs (tests/test_pack) and
# DIR/cfg.yaml, a tiny model training 20 steps on it (test_train.sh and
# test_bf16.sh); then train NP RUN_DIR [--set ...] runs fspo train on it
# under mpirun, its output in RUN_DIR.log
tiny_train_setup() {
    tiny_fixture "$1" "run_dir: $1/run, max_steps: 20, batch_size: 6, log_every: 1" "warmup_steps: 2" "every: 10, keep: 2" ||
        return 1
    TINY_CFG=$1/cfg.yaml
}
train() {
    local np=$1 dir=$2
    shift 2
    mpirun_np "$np" "$FSPO" train "$TINY_CFG" --set train.run_dir="$dir" "$@" >"$dir.log" 2>&1
}

# interrupt NP RUN_DIR [--set ...]: starts train like `train` does, sends
# SIGUSR1 to mpirun once RUN_DIR/metrics.jsonl has 30 lines, waits; returns
# mpirun's exit code (3: checkpointed and asked for a requeue)
interrupt() {
    local np=$1 dir=$2
    shift 2
    # mpirun itself in the background (not a shell function), so $! is mpirun's PID
    "${MPIRUN[@]}" -np "$np" "$FSPO" train "$TINY_CFG" --set train.run_dir="$dir" "$@" >"$dir.log" 2>&1 &
    local pid=$!
    for _ in $(seq 400); do
        [[ -f $dir/metrics.jsonl && $(wc -l <"$dir/metrics.jsonl") -ge 30 ]] && break
        sleep 0.05
    done
    kill -USR1 $pid
    wait $pid
}

# oracle_ready TMPDIR: Hugging Face `tokenizers` (the official Node.js
# binding) and `@huggingface/hub` (its safetensors header parser) in
# tests/node, installed from its package-lock.json when missing;
# prints a SKIP line and returns 1 when it cannot be had. ORACLE runs it.
NODE_DIR=tests/node
ORACLE=(node "$NODE_DIR/oracle.js")
oracle_ready() {
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        echo "SKIP: Hugging Face oracle: node or npm is missing (make deps installs them)"
        return 1
    fi
    if [[ ! -f $NODE_DIR/node_modules/tokenizers/package.json || ! -f $NODE_DIR/node_modules/@huggingface/hub/package.json ]]; then
        if ! (cd $NODE_DIR && timeout 600 npm ci --no-audit --no-fund --loglevel=error) >"$1/npm.log" 2>&1; then
            echo "SKIP: Hugging Face oracle: 'npm ci' in $NODE_DIR failed (registry unreachable?): $(tail -n 3 "$1/npm.log" | tr '\n' ' ')"
            return 1
        fi
    fi
    if ! node -e "require('./$NODE_DIR/node_modules/tokenizers')" 2>"$1/node.err"; then
        echo "SKIP: Hugging Face oracle: the tokenizers binding does not load here: $(head -c 300 "$1/node.err")"
        return 1
    fi
}

# hf_equal NAME DATA.h5 TOK.json IN.jsonl: the first 24 pairs' ids in DATA.h5 (prep of IN.jsonl)
# against the oracle's on IN.jsonl's texts (uses $tmp, $PY, $FSPO's test_dataset)
hf_equal() {
    local name=$1 data=$2 tok=$3 jsonl=$4
    "${BUILD:-build}/tests/test_dataset" --dump "$data" 24 >"$tmp/dump.tsv"
    local out
    out=$($PY - "$jsonl" "$tmp/dump.tsv" "$tmp/texts" <<'PYEOF'
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by_user = {}
for r in rows:
    by_user.setdefault(str(r["user_id"]), []).append(r)
seen = {}
os.makedirs(sys.argv[3], exist_ok=True)
n = 0
for line in open(sys.argv[2]):
    user, *ids = line.rstrip("\n").split("\t")
    r = by_user[user][seen.get(user, 0)]
    seen[user] = seen.get(user, 0) + 1
    for field, want in zip(("prompt", "chosen", "rejected"), ids):
        open(f"{sys.argv[3]}/{n:04d}.txt", "w").write(r[field])
        open(f"{sys.argv[3]}/{n:04d}.ids", "w").write(want + "\n")
        n += 1
print(n)
PYEOF
) || { fail "$name" "$out"; return; }
    "${ORACLE[@]}" encode "$tok" "$tmp"/texts/*.txt >"$tmp/hf.ids" 2>"$tmp/hf.err" || { fail "$name" "$(cat "$tmp/hf.err")"; return; }
    cat "$tmp"/texts/*.ids >"$tmp/fspo.ids"
    cmp -s "$tmp/hf.ids" "$tmp/fspo.ids" && pass "$name" "$out texts, $(wc -w <"$tmp/hf.ids") ids equal" ||
        fail "$name" "$(diff "$tmp/hf.ids" "$tmp/fspo.ids" | head -n 4 | tr '\n' ' ')"
    rm -rf "$tmp/texts"
}
