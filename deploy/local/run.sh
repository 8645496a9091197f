#!/usr/bin/env bash
# Fit a Gaussian mixture with daskem on a Dask cluster of separate processes on this
# machine: one `dask scheduler` and N `dask worker` processes, all listening on
# 127.0.0.1 only, the fit connected through a scheduler file. Every process the script
# starts is stopped when it exits (normally, on error, Ctrl-C or SIGTERM).
#
# Run it again with the same WORK_DIR: the fit resumes from the checkpoint.
# Usage: deploy/local/run.sh [options] [-- extra `daskem fit` arguments]; see --help.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: run.sh [options] [-- extra daskem fit arguments]

Starts `dask scheduler` and N `dask worker` processes on 127.0.0.1, makes synthetic
data with `daskem make-data` unless DATA is given, runs
`daskem fit DATA --scheduler-file ... --checkpoint ... -o ...` against them and stops
every process it started on exit. Running it again with the same work directory
resumes the fit from its checkpoint.

Options (each has an environment variable; flags win):
  -n, --workers N          worker processes               (N_WORKERS, default 2)
  -t, --threads N          threads per worker             (THREADS_PER_WORKER, default 1)
  -m, --memory-limit SIZE  memory limit of each worker    (MEMORY_LIMIT, default 1GiB)
  -w, --work-dir DIR       logs, scheduler file, data, checkpoint, model
                                                          (WORK_DIR, default ./daskem-local)
  -d, --data PATH          data to fit; none: generate    (DATA)
  -s, --n-samples N        rows of generated data         (N_SAMPLES, default 200000)
  -f, --n-features N       columns of generated data      (N_FEATURES, default 8)
  -k, --n-components K     mixture components             (N_COMPONENTS, default 4)
  -r, --chunk-rows N       rows per chunk of generated data (CHUNK_ROWS, default 25000)
  -i, --max-iter N         EM iterations at most          (MAX_ITER, default 50)
      --seed S             seed of the data and the fit   (SEED, default 0)
  -c, --checkpoint PATH    checkpoint (Zarr group)        (CHECKPOINT, default WORK_DIR/run.zarr)
  -o, --output PATH        fitted model (Zarr group)      (OUTPUT, default WORK_DIR/model.zarr)
  -h, --help               this help

Commands: DASKEM and DASK name them (word-split), e.g.
  DASKEM=.venv/bin/daskem DASK=.venv/bin/dask deploy/local/run.sh -n 4
Unset, `daskem` is the one on PATH, else the checkout's .venv/bin/daskem (the
environment the main README creates), and `dask` is the one beside that daskem, else
the one on PATH.
STARTUP_TIMEOUT (seconds, default 60) bounds the wait for the scheduler and workers.
EOF
}

N_WORKERS=${N_WORKERS:-2}
THREADS_PER_WORKER=${THREADS_PER_WORKER:-1}
MEMORY_LIMIT=${MEMORY_LIMIT:-1GiB}
WORK_DIR=${WORK_DIR:-./daskem-local}
DATA=${DATA:-}
N_SAMPLES=${N_SAMPLES:-200000}
N_FEATURES=${N_FEATURES:-8}
N_COMPONENTS=${N_COMPONENTS:-4}
CHUNK_ROWS=${CHUNK_ROWS:-25000}
MAX_ITER=${MAX_ITER:-50}
SEED=${SEED:-0}
CHECKPOINT=${CHECKPOINT:-}
OUTPUT=${OUTPUT:-}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-60}
# The checkout this script belongs to (deploy/local/run.sh): its .venv is a fallback.
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

die() {
    echo "run.sh: $*" >&2
    exit 2
}

need_value() {
    [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value"
}

EXTRA_FIT_ARGS=()
while [[ $# -gt 0 ]]; do
    case $1 in
        -n | --workers) need_value "$@"; N_WORKERS=$2; shift 2 ;;
        -t | --threads) need_value "$@"; THREADS_PER_WORKER=$2; shift 2 ;;
        -m | --memory-limit) need_value "$@"; MEMORY_LIMIT=$2; shift 2 ;;
        -w | --work-dir) need_value "$@"; WORK_DIR=$2; shift 2 ;;
        -d | --data) need_value "$@"; DATA=$2; shift 2 ;;
        -s | --n-samples) need_value "$@"; N_SAMPLES=$2; shift 2 ;;
        -f | --n-features) need_value "$@"; N_FEATURES=$2; shift 2 ;;
        -k | --n-components) need_value "$@"; N_COMPONENTS=$2; shift 2 ;;
        -r | --chunk-rows) need_value "$@"; CHUNK_ROWS=$2; shift 2 ;;
        -i | --max-iter) need_value "$@"; MAX_ITER=$2; shift 2 ;;
        --seed) need_value "$@"; SEED=$2; shift 2 ;;
        -c | --checkpoint) need_value "$@"; CHECKPOINT=$2; shift 2 ;;
        -o | --output) need_value "$@"; OUTPUT=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        --) shift; EXTRA_FIT_ARGS=("$@"); break ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

[[ $N_WORKERS =~ ^[1-9][0-9]*$ ]] || die "the number of workers must be a positive integer, got '$N_WORKERS'"
[[ $STARTUP_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "STARTUP_TIMEOUT must be a positive integer, got '$STARTUP_TIMEOUT'"

# The commands: DASKEM / DASK when set (word-split, so that e.g.
# DASK="python -m distributed.cli.dask" works); else daskem on PATH, else the checkout's
# .venv; dask from the same environment as daskem, else from PATH.
daskem_path=""
if [[ -n ${DASKEM:-} ]]; then
    read -r -a DASKEM_CMD <<<"$DASKEM"
    [[ ${DASKEM_CMD[0]} == */* ]] && daskem_path=${DASKEM_CMD[0]}
elif daskem_path=$(command -v daskem); then
    DASKEM_CMD=("$daskem_path")
elif [[ -x $REPO_DIR/.venv/bin/daskem ]]; then
    daskem_path=$REPO_DIR/.venv/bin/daskem
    DASKEM_CMD=("$daskem_path")
else
    die "no daskem command: not on PATH and no $REPO_DIR/.venv/bin/daskem. Create the environment (python3 -m venv .venv && .venv/bin/pip install -e .) or set DASKEM (see --help)"
fi
if [[ -n ${DASK:-} ]]; then
    read -r -a DASK_CMD <<<"$DASK"
elif [[ -n $daskem_path && -x $(dirname "$daskem_path")/dask ]]; then
    DASK_CMD=("$(dirname "$daskem_path")/dask")
elif command -v dask >/dev/null; then
    DASK_CMD=(dask)
else
    die "no dask command beside ${DASKEM_CMD[0]} or on PATH; set DASK (see --help)"
fi

mkdir -p "$WORK_DIR/logs"
WORK_DIR=$(cd "$WORK_DIR" && pwd) # absolute: the scheduler file and logs are named in messages
LOGS=$WORK_DIR/logs
SCHEDULER_FILE=$WORK_DIR/scheduler.json
CHECKPOINT=${CHECKPOINT:-$WORK_DIR/run.zarr}
OUTPUT=${OUTPUT:-$WORK_DIR/model.zarr}

# Job control: every background process gets its own process group, so that cleanup
# can signal a worker together with the worker process its nanny spawned.
set -m

FIT_PID=""
WORKER_PIDS=()
SCHEDULER_PID=""

stop_group() { # stop_group PID: TERM its process group, KILL what is left after 10 s
    local pid=$1 i
    kill -TERM -- "-$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 -- "-$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    echo "run.sh: process group $pid did not stop after SIGTERM; killing it" >&2
    kill -KILL -- "-$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    set +e
    disown -a 2>/dev/null # no "Terminated" job notices; stop_group polls the groups instead
    # The fit first (it would report a lost scheduler otherwise), then the workers and
    # the scheduler together.
    [[ -n $FIT_PID ]] && stop_group "$FIT_PID"
    local pid
    for pid in "${WORKER_PIDS[@]}" $SCHEDULER_PID; do
        kill -TERM -- "-$pid" 2>/dev/null
    done
    for pid in "${WORKER_PIDS[@]}" $SCHEDULER_PID; do
        stop_group "$pid"
    done
    rm -f "$SCHEDULER_FILE"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

alive() { kill -0 "$1" 2>/dev/null; }

if [[ -z $DATA ]]; then
    DATA=$WORK_DIR/data.zarr
    if [[ -e $DATA ]]; then
        echo "Using the data generated before: $DATA"
    else
        echo "Generating $N_SAMPLES x $N_FEATURES rows ($N_COMPONENTS components) in $DATA"
        "${DASKEM_CMD[@]}" make-data "$DATA" --n-samples "$N_SAMPLES" --n-features "$N_FEATURES" \
            --n-components "$N_COMPONENTS" --seed "$SEED" --chunk-rows "$CHUNK_ROWS"
    fi
fi

rm -f "$SCHEDULER_FILE"
"${DASK_CMD[@]}" scheduler --scheduler-file "$SCHEDULER_FILE" --host 127.0.0.1 --port 0 \
    --dashboard-address 127.0.0.1:0 >"$LOGS/scheduler.log" 2>&1 &
SCHEDULER_PID=$!

deadline=$((SECONDS + STARTUP_TIMEOUT))
until [[ -s $SCHEDULER_FILE ]]; do
    alive "$SCHEDULER_PID" || die "the scheduler exited; see $LOGS/scheduler.log"
    ((SECONDS < deadline)) || die "no scheduler file after ${STARTUP_TIMEOUT}s; see $LOGS/scheduler.log"
    sleep 0.2
done
sleep 0.2 # the file is written in one go, but give a slow filesystem a moment
echo "Scheduler running (pid $SCHEDULER_PID); scheduler file $SCHEDULER_FILE"

for ((i = 0; i < N_WORKERS; i++)); do
    "${DASK_CMD[@]}" worker --scheduler-file "$SCHEDULER_FILE" --host 127.0.0.1 \
        --dashboard-address 127.0.0.1:0 --nthreads "$THREADS_PER_WORKER" --memory-limit "$MEMORY_LIMIT" \
        --name "local-$i" --local-directory "$WORK_DIR/dask-scratch" --death-timeout 60 \
        >"$LOGS/worker-$i.log" 2>&1 &
    WORKER_PIDS+=("$!")
done

# Wait until every worker has registered with the scheduler: the fit sizes its cache
# decision by the workers' memory when it starts.
for ((i = 0; i < N_WORKERS; i++)); do
    until grep -q "Registered to:" "$LOGS/worker-$i.log" 2>/dev/null; do
        alive "${WORKER_PIDS[$i]}" || die "worker $i exited; see $LOGS/worker-$i.log"
        ((SECONDS < deadline)) || die "worker $i did not register after ${STARTUP_TIMEOUT}s; see $LOGS/worker-$i.log"
        sleep 0.2
    done
done
echo "$N_WORKERS worker(s) registered (${THREADS_PER_WORKER} thread(s), $MEMORY_LIMIT each); logs in $LOGS"

# In the background so that INT/TERM reach the trap at once (bash defers traps while a
# foreground command runs).
"${DASKEM_CMD[@]}" fit "$DATA" --scheduler-file "$SCHEDULER_FILE" -k "$N_COMPONENTS" --max-iter "$MAX_ITER" \
    --seed "$SEED" --checkpoint "$CHECKPOINT" --output "$OUTPUT" "${EXTRA_FIT_ARGS[@]}" &
FIT_PID=$!
fit_status=0
wait "$FIT_PID" || fit_status=$?
FIT_PID=""
if ((fit_status == 0)); then
    echo "Model written to $OUTPUT; checkpoint $CHECKPOINT"
elif ((fit_status == 130 || fit_status == 143)); then
    echo "run.sh: daskem fit was interrupted; run the same command again to resume from $CHECKPOINT" >&2
else
    echo "run.sh: daskem fit failed with status $fit_status: see its message above. Once its cause is" \
        "fixed, the same command resumes from $CHECKPOINT (committed iterations are kept)" >&2
fi
exit "$fit_status"
