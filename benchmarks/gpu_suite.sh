#!/usr/bin/env bash
# One script for a machine with a GPU: correctness checks and benchmarks, results into one folder.
#
#   benchmarks/gpu_suite.sh [RESULTS_DIR]      (default benchmarks/results/)
#
# Installs nothing: uses $PYTHON (default: .venv/bin/python if present, else python3) with torch
# and triton already there. Each step has its own time limit; they add up to under 10 minutes
# (90 + 150 + 200 + 80 + 60 s without DALI), so the suite ends in time even when a step hangs. A
# failing step is recorded in RESULTS_DIR/gpu-suite-status.txt without stopping the others.
# Other parts append their own sections at the marked hooks below (keep each under its budget).
set -uo pipefail

cd "$(dirname "$0")/.."
RESULTS_DIR=${1:-benchmarks/results}
mkdir -p "$RESULTS_DIR"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
STATUS="$RESULTS_DIR/gpu-suite-status.txt"
: >"$STATUS"
SUITE_START=$SECONDS

export PYTHONUNBUFFERED=1
# step NAME TIMEOUT_S COMMAND...: run, tee the log into RESULTS_DIR/NAME.log, record the status.
step() {
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    echo "=== $name (limit ${limit}s) ==="
    timeout "$limit" "$@" 2>&1 | tee "$RESULTS_DIR/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "$name rc=$rc $((SECONDS - t0))s" | tee -a "$STATUS"
}

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no CUDA device visible to $PYTHON: nothing to do" | tee -a "$STATUS"
    exit 1
fi
{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
    "$PYTHON" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
} >"$RESULTS_DIR/gpu-info.txt" 2>&1
cat "$RESULTS_DIR/gpu-info.txt"

# ===================== [kernels] fused loss kernels (issue 4) ===== about 4-5 min ==========
# Every kernel vs the float64 reference (fresh inputs, several sizes, fp32 and bf16), then the
# benchmark table kernels-<device>.md (eager vs torch.compile vs Triton).
step kernels-check 90 "$PYTHON" benchmarks/check_kernels_gpu.py --out "$RESULTS_DIR"
step kernels-bench 150 "$PYTHON" benchmarks/kernels.py --out "$RESULTS_DIR"
# ===================== [kernels] end ======================================================

# ===================== [training] every method through the training loop on the GPU ========
# The CPU learning benchmark's settings on the GPU (bf16 autocast, memory loader on the GPU,
# eager) -> learning-cuda.md; then the default SimCLR run with a ResNet-18 and the compiled step
# (torch.compile + the fused NT-Xent kernel inside it), its summary line in train-compile.log.
step learning-cuda 200 "$PYTHON" benchmarks/learning.py --device cuda --loader memory \
    --compile off --out /tmp/fastssl-learning --results "$RESULTS_DIR/learning-cuda.md"
step train-compile 80 "$PYTHON" -m fastssl.cli train --device cuda --compile on \
    --loader memory --backbone resnet18 --epochs 5 --eval_every 0 --progress false \
    --out /tmp/fastssl-compile
# ===================== [training] end =====================================================

# ===================== [pipelines] hook: DALI pipeline checks / benchmarks go here =========
# DALI GPU pipelines (nvJPEG "mixed" decode, every op on the GPU) vs the torchvision DataLoader
# with the same worker count: SwAV multi-crop and BYOL two views -> pipelines-cuda.md (~2 min).
# The GPU images lack DALI (190 MB wheel): stage it first, e.g. pip install nvidia-dali-cuda130.
if "$PYTHON" -c "import nvidia.dali" 2>/dev/null; then
    step pipelines-bench 60 "$PYTHON" benchmarks/pipelines.py --device cuda --threads 16 \
        --batch 64 --per-class 40 --repeats 2 --out "$RESULTS_DIR/pipelines-cuda.md"
else
    echo "pipelines-bench skipped: nvidia.dali is not importable by $PYTHON" | tee -a "$STATUS"
fi
# ===================== [pipelines] end ====================================================

# ===================== [profile] hook: loader / training-step profiles go here =============
# `fastssl profile` on the embedded shapes set (generated on first use, ~20 s): SwAV multi-crop
# with a ResNet-18 at 96/48 px so that the step is not trivial. The torchvision loader with a
# worker sweep (eager step), then, when DALI is importable, the DALI GPU loader with the step
# eager and compiled (--compile both). Verdict + table in RESULTS_DIR/profile-*.log, every number
# in profile-*-cuda.json, the plots next to them (~3.5 min in all).
PROFILE_ARGS=(--method swav --backbone resnet18 --crop_size 96 --local_crop_size 48
              --batch_size 128 --workers 8 --budget 25)
step profile-torch 60 "$PYTHON" -m fastssl.cli profile "${PROFILE_ARGS[@]}" --loader torch \
    --compile off --sweep --json "$RESULTS_DIR/profile-torch-cuda.json" \
    --plot "$RESULTS_DIR/profile-torch-cuda.png"
if "$PYTHON" -c "import nvidia.dali" 2>/dev/null; then
    step profile-dali 60 "$PYTHON" -m fastssl.cli profile "${PROFILE_ARGS[@]}" --loader dali \
        --compile both --json "$RESULTS_DIR/profile-dali-cuda.json" \
        --plot "$RESULTS_DIR/profile-dali-cuda.png"
else
    echo "profile-dali skipped: nvidia.dali is not importable by $PYTHON" | tee -a "$STATUS"
fi
# ===================== [profile] end ======================================================

echo "suite done in $((SECONDS - SUITE_START))s" | tee -a "$STATUS"
! grep -v " rc=0 " "$STATUS" | grep -q " rc="
