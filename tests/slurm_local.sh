# A real one-node Slurm on localhost for tests (source this file).
#
#   slurm_start [N] munged + slurmctld + N slurmd (default 1) under a fresh
#                   temp dir; waits until `sinfo` shows every node idle. With
#                   N > 1 the nodes are n1, n2, ...: several slurmd on this
#                   host, each with its own port, spool, log and TmpFS, so a
#                   job with --nodes=2 runs as it would on two machines. Returns 1 with a
#                   "SKIP: ..." line when the machine cannot host it (not
#                   root, or the slurm-wlm/munge binaries are missing: the
#                   deps step installs them), 2 with a "FAIL: ..." line when
#                   a daemon does not come up.
#   slurm_stop      cancels what is still queued, stops every daemon it
#                   started (by PID) and removes the temp dir. An EXIT trap
#                   set by slurm_start runs it, so a failing test cleans up.
#
# For the tests that drive jobs: wait_job JOB SECONDS, wait_log FILE PATTERN
# SECONDS, steps_logged RUN_DIR, wait_steps RUN_DIR N SECONDS, job_field JOB
# FIELD (below).
#
# After slurm_start: SLURM_CONF is exported (every client needs it),
# SLURM_DIR is the temp dir, SLURM_PARTITION the partition's name and
# SLURM_NODE the (first) node's, SLURM_NODES all of them, comma-separated. Settings follow what is known to work on Debian 12
# with slurm-wlm 22.05 as root without systemd or cgroups: see issue 7.

SLURM_DIR=
SLURM_PIDS=()

# A daemon counts as alive unless it is gone or a zombie: after a kill the
# init here reaps slowly, and a zombie holds its PID for a while.
slurm_pid_alive() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

# COUNT free TCP ports in a row, for slurmctld and each slurmd, so a test run
# never meets another Slurm on this host (or another test run's).
slurm_free_ports() {
    local count=$1 used port i busy
    used=$(ss -Htan 2>/dev/null | awk '{print $4}' | sed 's/.*://' | sort -u)
    for _ in $(seq 50); do
        port=$((20000 + RANDOM % 20000)) busy=0
        for ((i = 0; i < count; i++)); do
            grep -qx "$((port + i))" <<<"$used" && busy=1
        done
        ((busy)) || { echo "$port"; return 0; }
    done
    return 1
}

slurm_write_conf() { # DIR PORT NODE...: NODE i's slurmd listens on PORT + i
    local dir=$1 port=$2 host cpus mem_mb nodes i
    shift 2
    host=$(hostname -s) nodes=$(IFS=,; echo "$*")
    cpus=$(nproc)
    # RealMemory must not exceed what slurmd finds, or the node is drained;
    # nodes on one host share its memory
    mem_mb=$(awk -v n=$# '/^MemAvailable:/ {printf "%d", $2 / 1024 * 0.8 / n}' /proc/meminfo)
    cat >"$dir/slurm.conf" <<EOF
# one-node test cluster written by tests/slurm_local.sh
ClusterName=fspotest
SlurmctldHost=$host
SlurmctldPort=$port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire=10: a requeued job restarts after ~12 s instead of 2-3 min
AuthInfo=socket=$dir/munge/munge.socket.2,cred_expire=10
# no cgroups here: plain process tracking, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=pmix
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MailProg=/bin/true
SchedulerParameters=sched_interval=2,bf_interval=2
ReturnToService=2
StateSaveLocation=$dir/state
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmctldPidFile=$dir/run/slurmctld.pid
# %n = the node's name, so daemons sharing this host keep their files apart.
# TmpFS too: the PMIx client dirs go there, named after job and step ids,
# which are the same on every node of a job and restart at 1 on a fresh
# cluster (in /tmp a killed step's dir would break the next).
SlurmdSpoolDir=$dir/spool/%n
SlurmdLogFile=$dir/log/slurmd-%n.log
SlurmdPidFile=$dir/run/slurmd-%n.pid
TmpFS=$dir/tmp/%n
EOF
    for ((i = 1; i <= $#; i++)); do
        [[ ${!i} == "$host" ]] && echo "NodeName=$host CPUs=$cpus RealMemory=$mem_mb Port=$((port + i)) State=UNKNOWN" ||
            echo "NodeName=${!i} NodeHostname=$host CPUs=$cpus RealMemory=$mem_mb Port=$((port + i)) State=UNKNOWN"
        mkdir -p "$dir/tmp/${!i}"
    done >>"$dir/slurm.conf"
    echo "PartitionName=local Nodes=$nodes Default=YES MaxTime=INFINITE State=UP" >>"$dir/slurm.conf"
}

slurm_start_munge() {
    local dir=$1
    # munged insists that every directory up to its socket is world-executable
    mkdir -p "$dir/munge" && chmod 755 "$dir" "$dir/munge"
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none && chmod 400 "$dir/munge/munge.key"
    munged -F --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket.2" \
        --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munge.seed" \
        </dev/null >>"$dir/log/munged.out" 2>&1 &
    SLURM_PIDS+=($!)
    for _ in $(seq 100); do
        [[ -S $dir/munge/munge.socket.2 ]] && return 0
        slurm_pid_alive "${SLURM_PIDS[-1]}" || break
        sleep 0.05
    done
    echo "FAIL: slurm_start: munged did not come up: $(tail -3 "$dir/log/munged.log" "$dir/log/munged.out" 2>/dev/null)"
    return 2
}

# Waits until sinfo shows the node idle; the daemons are in the foreground
# (-D) as children of this shell, so their PIDs are known without pid files.
slurm_wait_idle() {
    local state="" want
    want=$(tr ',' '\n' <<<"$SLURM_NODES" | sed 's/$/ idle/' | sort)
    for _ in $(seq 150); do
        state=$(sinfo -h -N -n "$SLURM_NODES" -o '%N %t' 2>/dev/null | sort -u)
        [[ $state == "$want" ]] && return 0
        local pid
        for pid in "${SLURM_PIDS[@]}"; do
            slurm_pid_alive "$pid" || { echo "FAIL: slurm_start: a daemon (PID $pid) died: $(tail -3 "$SLURM_DIR"/log/*.log)"; return 2; }
        done
        sleep 0.1
    done
    echo "FAIL: slurm_start: nodes $SLURM_NODES not all idle after 15 s (state '${state:-none}'): $(tail -3 "$SLURM_DIR"/log/*.log)"
    return 2
}

# Runs slurm_stop on exit before whatever EXIT trap the test already had
# (bash runs the EXIT trap on TERM too, e.g. from the runner's timeout).
SLURM_PREV_EXIT_TRAP=
slurm_chain_exit_trap() {
    local prev
    prev=$(trap -p EXIT)
    if [[ -n $prev ]]; then
        eval "prev=(${prev})" # trap -p quotes it: (trap -- 'CMD' EXIT)
        SLURM_PREV_EXIT_TRAP=${prev[2]}
    fi
    trap 'slurm_stop; eval "$SLURM_PREV_EXIT_TRAP"' EXIT
}

slurm_start() {
    local nnodes=${1:-1} node names=()
    if [[ $(id -u) -ne 0 ]]; then
        echo "SKIP: slurm: the local test cluster needs root (slurmd runs jobs as any user)"
        return 1
    fi
    local bin
    for bin in munged slurmctld slurmd sbatch squeue sinfo scontrol scancel srun; do
        if ! command -v "$bin" >/dev/null; then
            echo "SKIP: slurm: '$bin' not found (scripts/deps.sh installs slurm-wlm and munge)"
            return 1
        fi
    done
    SLURM_DIR=$(mktemp -d /tmp/fspo-slurm.XXXXXX) || return 2
    slurm_chain_exit_trap
    mkdir -p "$SLURM_DIR"/{state,spool,log,run}
    if ((nnodes == 1)); then
        names=("$(hostname -s)")
    else
        for ((node = 1; node <= nnodes; node++)); do names+=("n$node"); done
    fi
    SLURM_NODE=${names[0]}
    SLURM_NODES=$(IFS=,; echo "${names[*]}")
    SLURM_PARTITION=local
    local port
    port=$(slurm_free_ports $((nnodes + 1))) || { echo "FAIL: slurm_start: no $((nnodes + 1)) free TCP ports in a row"; return 2; }
    slurm_write_conf "$SLURM_DIR" "$port" "${names[@]}"
    export SLURM_CONF=$SLURM_DIR/slurm.conf
    slurm_start_munge "$SLURM_DIR" || return 2
    slurmctld -D -c -f "$SLURM_CONF" </dev/null >>"$SLURM_DIR/log/slurmctld.out" 2>&1 &
    SLURM_PIDS+=($!)
    for node in "${names[@]}"; do # -N: which NodeName line this daemon is
        slurmd -D -c -N "$node" -f "$SLURM_CONF" </dev/null >>"$SLURM_DIR/log/slurmd-$node.out" 2>&1 &
        SLURM_PIDS+=($!)
    done
    slurm_wait_idle
}

# Job processes (slurmstepd, the batch shell, srun, ranks) inherit
# SLURM_CONF=<this cluster's conf> from the daemons and the submitter: any
# still alive once the daemons are gone belongs to this cluster and would
# run on unseen. Call after unsetting SLURM_CONF here.
slurm_kill_leftovers() {
    local env pid
    for env in /proc/[0-9]*/environ; do
        pid=${env#/proc/}
        pid=${pid%/environ}
        [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
        if { tr '\0' '\n' <"$env" | grep -qxF "SLURM_CONF=$SLURM_DIR/slurm.conf"; } 2>/dev/null; then
            slurm_pid_alive "$pid" && echo "slurm_stop: killing leftover job process $pid" && kill -KILL "$pid" 2>/dev/null
        fi
    done
}

slurm_stop() {
    [[ -n $SLURM_DIR ]] || return 0
    if [[ -n $SLURM_PREV_EXIT_TRAP ]]; then trap -- "$SLURM_PREV_EXIT_TRAP" EXIT; else trap - EXIT; fi
    # cancel jobs first: their step daemons outlive slurmd otherwise. A
    # cancel sends TERM (an fspo job then checkpoints and ends); KILL if slow.
    local left i pid
    if [[ -n $(squeue -h -o %i 2>/dev/null) ]]; then
        scancel --user=root 2>/dev/null
        for i in $(seq 150); do
            left=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')
            [[ -z $left ]] && break
            ((i == 100)) && scancel --full -s KILL --user=root 2>/dev/null
            sleep 0.1
        done
        [[ -n $left ]] && echo "slurm_stop: jobs $left still listed after cancelling"
    fi

    for ((i = ${#SLURM_PIDS[@]} - 1; i >= 0; i--)); do # slurmd, slurmctld, then munged
        pid=${SLURM_PIDS[i]}
        slurm_pid_alive "$pid" && kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${SLURM_PIDS[@]}"; do
        for _ in $(seq 50); do
            slurm_pid_alive "$pid" || break
            sleep 0.1
        done
        slurm_pid_alive "$pid" && kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    unset SLURM_CONF
    slurm_kill_leftovers
    rm -rf "$SLURM_DIR"
    SLURM_DIR= SLURM_PIDS=()
}

# ---- waiting on jobs (the Slurm tests) ----

wait_job() { # JOB SECONDS: until the job leaves the queue
    local t0=$SECONDS
    while [[ -n $(squeue -h -j "$1" 2>/dev/null) ]]; do
        ((SECONDS - t0 >= $2)) && return 1
        sleep 0.3
    done
}
wait_log() { # FILE PATTERN SECONDS
    local t0=$SECONDS
    until grep -qE -- "$2" "$1" 2>/dev/null; do
        ((SECONDS - t0 >= $3)) && return 1
        sleep 0.2
    done
}
steps_logged() { [[ -f $1/metrics.jsonl ]] && wc -l <"$1/metrics.jsonl" || echo 0; }
wait_steps() { # RUN_DIR N SECONDS
    local t0=$SECONDS
    until (($(steps_logged "$1") >= $2)); do
        ((SECONDS - t0 >= $3)) && return 1
        sleep 0.1
    done
}
job_field() { scontrol show job -o "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p"; }
