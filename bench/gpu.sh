#!/usr/bin/env bash
# The GPU session's benchmark (issue 8): one command, under 8 minutes, prints one table.
#
#   bash bench/gpu.sh                  # on the GPU machine (PYTHON=... for a jax[cuda] python)
#   BENCH_TINY=1 bash bench/gpu.sh     # the same logic at toy sizes, e.g. on a CPU
#
# Figures: bfloat16 training throughput (ResNet-50, 256x128, 32 clips, mean fusion) at T=4 and
# T=8; the same step with a CLIP ViT-B/16 backbone (step time, XLA memory; issue 18) and with the
# AP3D and AP3D+NL ResNet-50s (issue 17, docs/models.md); all-frames
# feature extraction over MARS's real test tracklet lengths on synthetic frames
# (through extract_features, for as many tracklets as fit 60 s) and the device-only rate; the
# metrics at MARS's real sizes. Each step has its own time limit so the whole stays under 8
# minutes; a step that fails or runs out of time leaves a row saying so. Full outputs go to
# $OUT (the device tool's output folder) or a temporary folder, named on the last line.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
LOG=${OUT:-$(mktemp -d)}
mkdir -p "$LOG"
ROWS=$LOG/gpu_rows.jsonl
: > "$ROWS"

if [ "${BENCH_TINY:-0}" = 1 ]; then
  MODEL="--arch resnet18 --height 128 --width 64"
  TRAIN="$MODEL --p 2 --k 2 --steps 2 --rounds 2"
  VIT="--arch vit_s16 --height 64 --width 32 --p 2 --k 2 --steps 2 --rounds 2"
  AP3D="$TRAIN"
  EXTRACT="$MODEL --dtype float32 --extract_batch 8 --extract_budget_s 5"
  LIMIT=${BENCH_LIMIT:-300}
else
  MODEL="--arch resnet50 --height 256 --width 128"
  TRAIN="$MODEL --p 8 --k 4 --steps 20 --rounds 5"
  VIT="--arch clip_vit_b16 --height 256 --width 128 --p 8 --k 4 --steps 10 --rounds 3"
  AP3D="$MODEL --p 8 --k 4 --steps 10 --rounds 3"
  EXTRACT="$MODEL --dtype bfloat16 --extract_batch 128 --extract_budget_s 60"
  LIMIT=${BENCH_LIMIT:-150}
fi

# run_step NAME SECONDS COMMAND...: run with a time limit; on failure add a row naming the log.
run_step() {
  local name=$1 limit=$2
  shift 2
  echo "# $(date +%T) $name (limit ${limit}s)" >&2
  timeout "$limit" "$@" > "$LOG/$name.txt" 2>&1
  local rc=$?
  if [ $rc -ne 0 ]; then
    "$PY" - "$ROWS" "$name" "$rc" "$LOG/$name.txt" <<'PYEOF'
import json, sys
path, name, rc, log = sys.argv[1:]
why = "timed out" if rc in ("124", "137") else f"failed (exit {rc})"
row = {"source": name, "figure": name, "value": why, "goal": "-", "load": "-", "detail": log}
open(path, "a").write(json.dumps(row) + "\n")
PYEOF
    tail -5 "$LOG/$name.txt" >&2
  fi
}

"$PY" -c "import jax; d = jax.devices()[0]; print(f'# jax {jax.__version__}: {d.platform} {d.device_kind}')" >&2
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
  --format=csv,noheader > "$LOG/nvidia_smi.txt" 2>&1

run_step train_t4 "$LIMIT" "$PY" bench/train_step.py $TRAIN --seq_len 4 --fusions mean \
  --dtypes bfloat16 --torch 0 --max_load 0 --json "$ROWS"
run_step train_t8 "$LIMIT" "$PY" bench/train_step.py $TRAIN --seq_len 8 --fusions mean \
  --dtypes bfloat16 --torch 0 --max_load 0 --json "$ROWS"
run_step train_ap3d "$LIMIT" "$PY" bench/train_step.py $AP3D --seq_len 4 --fusions mean \
  --temporal ap3d,ap3d_nl --dtypes bfloat16 --torch 0 --max_load 0 --json "$ROWS"
run_step train_vit_b16 "$LIMIT" "$PY" bench/train_step.py $VIT --seq_len 4 --fusions mean \
  --dtypes bfloat16 --torch 0 --max_load 0 --json "$ROWS"
run_step eval "$LIMIT" "$PY" bench/eval.py $EXTRACT --seq_len 4 --extract 1 --metrics 1 \
  --loop_baseline 0 --rerank 0 --repeats 3 --max_load 0 --json "$ROWS"

echo "bench/gpu.sh $(date -u +%F) $([ "${BENCH_TINY:-0}" = 1 ] && echo '(BENCH_TINY=1: toy sizes)')"
[ -s "$LOG/nvidia_smi.txt" ] && echo "GPU: $(cat "$LOG/nvidia_smi.txt")"
"$PY" bench/common.py summarize "$ROWS"
echo "full outputs: $LOG"
