#!/usr/bin/env bash
# Train on every worker of a Cloud TPU VM pod slice: one process per TPU VM host.
#
#   launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.key=value ...]
#
# Each worker must have reid_jax installed and the repository at $REID_JAX_REPO (default
# ~/reid_jax); REID_JAX_SYNC=1 first copies this checkout there on all workers. WORKDIR must be
# shared by all workers (e.g. a Filestore NFS or gcsfuse mount). The processes join through
# JAX's TPU detection (--distributed=jax asks the metadata server for the workers). A
# maintenance event or spot preemption delivers SIGTERM: every worker saves at a common step and
# exits 0; rerun this command to resume.
set -euo pipefail

if (($# < 4)); then
  echo "usage: launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.key=value ...]" >&2
  exit 2
fi
tpu="$1" zone="$2" config="$3" workdir="$4"
shift 4
repo="${REID_JAX_REPO:-~/reid_jax}"
python="${PYTHON:-python3}"

if [[ "${REID_JAX_SYNC:-0}" == 1 ]]; then
  gcloud compute tpus tpu-vm scp --recurse --zone "$zone" --worker=all . "$tpu:$repo"
fi
overrides="$(printf ' %q' "$@")"
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command \
  "cd $repo && PYTHONUNBUFFERED=1 $python -m reid_jax.main --distributed=jax \
   --config $(printf %q "$config") --workdir $(printf %q "$workdir")$overrides"
