#!/usr/bin/env bash
# The GPU path measured in one short run (issue 19): htdemucs and htdemucs_ft throughput
# (x realtime) for batch sizes 1-32 at fp32/fp16/bf16 against demucs' apply_model on the
# same GPU, the parity error of each precision against apply_model fp32, peak GPU memory,
# a 3-minute song file to file, then CUDA graphs and torch.compile of htdemucs
# (benchmarks/gpu.py says how each is measured).
#
#   benchmarks/gpu_check.sh            on a CUDA machine: the whole run, cut at 7.5 minutes
#   benchmarks/gpu_check.sh --smoke    anywhere (CI): tiny networks on the CPU, seconds
#
# On this workplace's GPU machine (no network there): once, here, benchmarks/gpu_wheels.sh
# (fills the ignored .whl/), then one call of the device tool:
#   run  command="set -o pipefail; bash benchmarks/gpu_check.sh 2>&1 | tee $OUT/gpu_check.log"
#        carry=[".whl"]  timeout_s=540
#
# bridge runs from this checkout (PYTHONPATH). What the interpreter lacks is installed
# from $STEMBRIDGE_WHEELS (default .whl) into $STEMBRIDGE_SITE (default /tmp/site), with
# no index and no dependency resolution: gpu_wheels.sh lists exactly what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${STEMBRIDGE_WHEELS:-.whl}
SITE=${STEMBRIDGE_SITE:-/tmp/site}
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# What gpu.py and its child processes import (the stembridge side runs the CLI), demucs
# whole (demucs.api pulls in sphn and lameenc) and bridge's own dependencies.
needed="import bridge.cli, bridge.models.loaded, bridge.pipeline.run, demucs.api, demucs.hf"
needed="$needed, soundfile, soxr, pedalboard, msgspec, platformdirs, watchdog"
if ! "$PYTHON" -c "$needed" 2>/dev/null; then
    if ! compgen -G "$WHEELS/*.whl" >/dev/null; then
        echo "gpu_check: this python lacks packages and $WHEELS holds no wheels; run" \
            "benchmarks/gpu_wheels.sh where pip has an index, then carry .whl" >&2
        exit 2
    fi
    started=$SECONDS
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$WHEELS"/*.whl
    export PYTHONPATH="$PYTHONPATH:$SITE"
    if ! "$PYTHON" -c "$needed"; then
        echo "gpu_check: an import still fails after installing $WHEELS into $SITE; add" \
            "its wheel to benchmarks/gpu_wheels.sh" >&2
        exit 2
    fi
    echo "gpu_check: installed $(find "$WHEELS" -maxdepth 1 -name '*.whl' | wc -l) wheels" \
        "into $SITE in $((SECONDS - started)) s"
fi

if [ "${1:-}" = "--smoke" ]; then
    exec timeout 300 "$PYTHON" benchmarks/gpu.py --smoke
fi
if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: torch sees no CUDA device here; run with --smoke for the CPU check" >&2
    exit 3
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# gpu.py skips what its 420 s budget leaves no time for (it says so); 450 s is the
# backstop. With the install and the machine's start this stays inside 8 minutes, and
# every figure is printed as it is measured, so a cut run still reports what it measured.
exec timeout 450 "$PYTHON" benchmarks/gpu.py --budget-seconds 420 "$@"
