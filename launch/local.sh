#!/usr/bin/env bash
# N reid_jax processes on this machine, CPU only, joined by JAX's distributed runtime with gloo
# collectives: the multi-host code path without a cluster (the tests use it).
#
#   launch/local.sh [-n PROCESSES] [-d DEVICES_PER_PROCESS] [-l LOG_DIR] [-g GRACE_S] -- \
#       --config configs/synth_mars_demo.py --workdir runs/local
#
# -n  processes (default 2); -d  CPU devices per process (default 1, via
#     --xla_force_host_platform_device_count); -l  write process i's output to LOG_DIR/process_i.log
#     and its pid to LOG_DIR/process_i.pid (default: all output here); -g  once a process fails,
#     SIGKILL any still running after GRACE_S seconds (default 120; the runtime's heartbeat
#     timeout normally stops them well before).
# SIGTERM/SIGINT to this script are forwarded as SIGTERM to every process (a preemption notice:
# they save at a common step and exit 0). Exit code: 0 if all processes succeeded, else the
# first failing process's code. $PYTHON picks the interpreter (default: python).
set -u -o pipefail

nproc=2
ndev=1
logdir=""
grace=120
while getopts "n:d:l:g:h" opt; do
  case "$opt" in
    n) nproc="$OPTARG" ;;
    d) ndev="$OPTARG" ;;
    l) logdir="$OPTARG" ;;
    g) grace="$OPTARG" ;;
    h) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "local.sh: see launch/local.sh -h" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[[ "${1:-}" == "--" ]] && shift
if ! [[ "$nproc" =~ ^[1-9][0-9]*$ && "$ndev" =~ ^[1-9][0-9]*$ && "$grace" =~ ^[0-9]+$ ]]; then
  echo "local.sh: -n and -d must be positive integers, -g a number of seconds" >&2
  exit 2
fi
python="${PYTHON:-python}"
port="${REID_JAX_PORT:-$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
[[ -n "$logdir" ]] && mkdir -p "$logdir"

launch() {  # launch <process id>: one process in the background
  exec env REID_JAX_COORDINATOR="127.0.0.1:$port" \
    REID_JAX_NUM_PROCESSES="$nproc" \
    REID_JAX_PROCESS_ID="$1" \
    REID_JAX_CPU_COLLECTIVES=gloo \
    JAX_PLATFORMS=cpu \
    XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$ndev" \
    PYTHONUNBUFFERED=1 \
    "$python" -m reid_jax.main "${args[@]}"
}
args=("$@")
pids=()
for ((i = 0; i < nproc; i++)); do
  if [[ -n "$logdir" ]]; then
    launch "$i" > "$logdir/process_$i.log" 2>&1 &
    echo "$!" > "$logdir/process_$i.pid"
  else
    launch "$i" &
  fi
  pids+=("$!")
  echo "local.sh: process $i of $nproc: pid $! ($ndev CPU devices, coordinator 127.0.0.1:$port)" >&2
done

forward() {
  echo "local.sh: forwarding SIGTERM to all processes" >&2
  kill -TERM "${pids[@]}" 2>/dev/null
}
trap forward TERM INT

declare -A rc=()
status=0
failed_at=""
while ((${#rc[@]} < nproc)); do
  for i in "${!pids[@]}"; do
    [[ -n "${rc[$i]:-}" ]] && continue
    kill -0 "${pids[$i]}" 2>/dev/null && continue
    wait "${pids[$i]}"
    rc[$i]=$?
    echo "local.sh: process $i (pid ${pids[$i]}) exited with code ${rc[$i]}" >&2
    if ((rc[$i] != 0)); then
      ((status == 0)) && status=${rc[$i]}
      [[ -z "$failed_at" ]] && failed_at=$SECONDS
    fi
  done
  if [[ -n "$failed_at" ]] && ((SECONDS - failed_at > grace)); then
    for i in "${!pids[@]}"; do
      if [[ -z "${rc[$i]:-}" ]]; then
        echo "local.sh: process $i still running ${grace}s after a failure: SIGKILL" >&2
        kill -KILL "${pids[$i]}" 2>/dev/null
      fi
    done
  fi
  ((${#rc[@]} < nproc)) && sleep 0.5
done
exit "$status"
