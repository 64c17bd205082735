#!/usr/bin/env bash
# The GPU path measured in one short run (issue 19): htdemucs and htdemucs_ft throughput
# (x realtime) for batch sizes 1-32 at fp32/fp16/bf16 against demucs' apply_model on the
# same GPU, the parity error of each precision against apply_model fp32, peak GPU memory,
# and a 3-minute song file to file (benchmarks/gpu.py says how each is measured).
#
#   benchmarks/gpu_check.sh            on a CUDA machine: the whole run, cut at 7.5 minutes
#   benchmarks/gpu_check.sh --smoke    anywhere (CI): tiny networks on the CPU, seconds
#
# A machine without the packages installs them from wheels carried with the checkout, with
# no index: $STEMBRIDGE_WHEELS (default: ../shared/wheels, then shared/wheels) must hold
# wheels of this package's dependencies, demucs and its own, and torch for that machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1

if ! "$PYTHON" -c "import bridge, demucs, torch, soundfile" 2>/dev/null; then
    wheels=${STEMBRIDGE_WHEELS:-}
    for candidate in ../shared/wheels shared/wheels; do
        if [ -z "$wheels" ] && [ -d "$candidate" ]; then wheels=$candidate; fi
    done
    if [ -z "$wheels" ]; then
        echo "gpu_check: bridge, demucs, torch or soundfile is not installed and no wheels" \
            "folder was found; set STEMBRIDGE_WHEELS to a folder of wheels for this machine" >&2
        exit 2
    fi
    "$PYTHON" -m pip install -q --no-index --find-links "$wheels" -e . demucs
fi

if [ "${1:-}" = "--smoke" ]; then
    exec timeout 300 "$PYTHON" benchmarks/gpu.py --smoke
fi
if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: torch sees no CUDA device here; run with --smoke for the CPU check" >&2
    exit 3
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# 450 s leaves the machine's start and the copy back inside 8 minutes; gpu.py prints each
# figure as it is measured, so a cut run still reports what it measured.
exec timeout 450 "$PYTHON" benchmarks/gpu.py "$@"
