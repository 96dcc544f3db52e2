#!/usr/bin/env bash
# GPU check on one NVIDIA GPU (an H200 with its own Python 3.12 + JAX/CUDA, flax, optax; no network):
# stage 2 on the surrogate, stage 2 on the full target and stage 3 of a Llama-3.2-3B-shaped decoder
# with a CLIP ViT-L/14-336-shaped encoder, random weights, bf16, cuDNN flash attention; tokens/s,
# step time, peak GPU memory and MFU (dense bf16 peak 989 TFLOP/s). Under 8 minutes; partial
# results are kept. Run from anywhere:
#
#   OUT=/some/dir bash experiments/gpu_check.sh [extra gpu_check.py flags, e.g. --batch 4]
#
# Writes $OUT/gpu_check.json (default experiments/results/gpu/) and $OUT/gpu_check.log.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$REPO/experiments/results/gpu}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"

export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"   # graft_jax from this checkout, not installed
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.95}"  # one process at a time
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
unset JAX_PLATFORMS                                     # let JAX find the GPU

{
  echo "== $(date -u '+%Y-%m-%d %H:%M:%S UTC') gpu_check on $(hostname)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  "$PYTHON" - <<'PY'
import importlib
for name in ("jax", "jaxlib", "flax", "optax", "numpy"):
  try:
    print(f"{name} {importlib.import_module(name).__version__}")
  except Exception as e:  # report and go on: gpu_check records per-stage failures
    print(f"{name}: not importable ({e})")
try:
  import jax
  print("devices:", jax.devices())
except Exception as e:
  print("jax devices failed:", e)
PY
} 2>&1 | tee "$LOG"

# The whole run stays under 8 minutes: stages start only before --deadline_s, each is killed after
# --stage_timeout, and an outer timeout guards the rest.
timeout --kill-after=10 450 "$PYTHON" "$REPO/experiments/gpu_check.py" --out "$OUT/gpu_check.json" \
    --deadline_s 410 --stage_timeout 170 "$@" 2>&1 | tee -a "$LOG"
status=${PIPESTATUS[0]}
echo "== exit $status; results in $OUT/gpu_check.json" | tee -a "$LOG"
exit "$status"
