#!/usr/bin/env bash
# Makes (or reuses) the virtual environment holding the Spleeter reference (deezer's
# `spleeter` on TensorFlow 2.12), apart from StemBridge's own environment: StemBridge runs
# Spleeter models in PyTorch and never imports TensorFlow. Prints the venv's python.
#
# Reused when it was made from the same requirement files and this script (their SHA-256
# in .requirements-sha256), so CI pays the install once per change of pins.
# Usage: tests/references/spleeter_env.sh [VENV_DIR]
#   VENV_DIR defaults to $STEMBRIDGE_SPLEETER_VENV, else ~/.cache/stembridge-ci/spleeter-venv.
# Needs a Python 3.8-3.11 (spleeter 2.4.2's range): $SPLEETER_PYTHON, else the first of
# python3.11, python3.10, python3.9, python3 found in that range.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:-${STEMBRIDGE_SPLEETER_VENV:-$HOME/.cache/stembridge-ci/spleeter-venv}}"
digest="$(cat "$here/spleeter.txt" "$here/spleeter-no-deps.txt" "$here/spleeter_env.sh" | sha256sum | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.requirements-sha256" 2>/dev/null)" = "$digest" ]; then
    echo "$venv/bin/python"
    exit 0
fi
python="${SPLEETER_PYTHON:-}"
if [ -z "$python" ]; then
    for candidate in python3.11 python3.10 python3.9 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(not (3, 9) <= sys.version_info < (3, 12))'; then
            python="$candidate"
            break
        fi
    done
fi
if [ -z "$python" ]; then
    echo "spleeter_env.sh: no Python 3.9-3.11 found (spleeter 2.4.2 needs Python < 3.12); set SPLEETER_PYTHON" >&2
    exit 1
fi
rm -rf "$venv"
"$python" -m venv "$venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$venv/bin/python" -m pip install -q -r "$here/spleeter.txt" >&2
"$venv/bin/python" -m pip install -q --no-deps -r "$here/spleeter-no-deps.txt" >&2
"$venv/bin/python" -c "import spleeter.separator" >&2
echo "$digest" >"$venv/.requirements-sha256"
echo "$venv/bin/python"
