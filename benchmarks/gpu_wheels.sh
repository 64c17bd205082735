#!/usr/bin/env bash
# The wheels benchmarks/gpu_check.sh installs on a GPU machine that has no network (issue
# 19): exactly the packages that machine's image lacks, one pinned version of each, into
# the checkout's ignored .whl/ folder, which the device tool then carries with the tree.
#
#   benchmarks/gpu_wheels.sh                          for the GPU image (CPython 3.12)
#   benchmarks/gpu_wheels.sh --python-version 3.11 --dest /tmp/gpu/whl311
#                                                     for a local copy of that machine
#
# The image already has torch, numpy, scipy, pyyaml, safetensors, huggingface-hub, tqdm,
# einops, rich, filelock, psutil and typing-extensions (/work/.library/device/KINDS.md,
# "Python packages already there"); none of those is fetched. bridge itself is not a wheel:
# gpu_check.sh puts this checkout on PYTHONPATH, so the run measures the tree that
# travelled, not a copy built earlier, and benchmarks/ and tests/ (whose model writers and
# demucs reference gpu.py imports) come from the same commit.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
python_version=3.12
dest=.whl
while [ $# -gt 0 ]; do
    case "$1" in
        --python-version) python_version=$2; shift 2 ;;
        --dest) dest=$2; shift 2 ;;
        *)
            echo "gpu_wheels: unknown option $1; use --python-version X.Y or --dest DIR" >&2
            exit 2
            ;;
    esac
done

pins=(
    # bridge's dependencies (pyproject.toml) that the image lacks; cffi and pycparser are
    # soundfile's.
    soundfile==0.14.0 cffi==2.0.0 pycparser==3.0 soxr==1.1.0 pedalboard==0.9.26
    watchdog==7.1.0 platformdirs==4.14.9 msgspec==0.23.0
    # demucs 4.1.0 and the runtime needs its METADATA lists that the image lacks
    # (dora-search, omegaconf, treetable and the like are its `train` extra only). sphn
    # (18 MB) is imported only by demucs.api; carried so that demucs imports whole.
    demucs==4.1.0 julius==0.2.8 lameenc==1.9.0 sphn==0.2.1
)
# Tags up to manylinux_2_28: every wheel then runs on glibc 2.28 or newer (the image is
# newer; this machine too, for the local copy). pip matches each tag exactly.
platforms=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
for n in $(seq 17 28); do platforms+=(--platform "manylinux_2_${n}_x86_64"); done

fresh=$(mktemp -d "${TMPDIR:-/tmp}/gpu-wheels.XXXXXX")
trap 'rm -rf "$fresh"' EXIT
"$PYTHON" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version "$python_version" --implementation cp "${platforms[@]}" \
    -d "$fresh" "${pins[@]}"
# One version of each: a second one would stop the whole --no-deps install there.
mkdir -p "$dest"
rm -f "$dest"/*.whl
mv "$fresh"/*.whl "$dest"/

limit=$((64 * 1024 * 1024))
wheels=$(stat -c %s "$dest"/*.whl | awk '{s += $1} END {print s}')
# What else travels: tracked and untracked-but-not-ignored files (the device tool's count).
tree=$(git ls-files -z --cached --others --exclude-standard \
    | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
for wheel in "$dest"/*.whl; do
    printf '%8.2f MB  %s\n' "$(stat -c %s "$wheel" | awk '{print $1 / 1048576}')" "${wheel##*/}"
done
awk -v w="$wheels" -v t="$tree" -v l="$limit" 'BEGIN {
    printf "wheels %.1f MB + working tree %.1f MB = %.1f MB of the %.0f MB that may travel\n",
        w / 1048576, t / 1048576, (w + t) / 1048576, l / 1048576
}'
if [ $((wheels + tree)) -gt "$limit" ]; then
    echo "gpu_wheels: the wheels and the tree are over 64 MiB; the device tool would refuse" \
        "them. Drop a wheel the run does not import, or untracked files from the tree" >&2
    exit 1
fi
