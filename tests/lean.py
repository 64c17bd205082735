"""``stembridge`` in a child process where some packages cannot be imported, as on a
lean install without their extras.

The launcher puts ``None`` into ``sys.modules`` for each blocked module before
StemBridge is imported: Python then refuses every import of it (``import of PIL
halted; None in sys.modules``) exactly as if it were not installed, so the real
code paths meet the real ImportError.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

#: The packages behind every extra (bridge/extras.py): a plain ``pip install stembridge``.
ALL_EXTRAS = (
    "PIL",
    "starlette",
    "uvicorn",
    "dramatiq",
    "redis",
    "onnxruntime",
    "musdb",
    "stempeg",
    "matplotlib",
    "diffq",
)

LAUNCHER = """\
import sys

for name in sys.argv[1].split(","):
    if name:
        sys.modules[name] = None
from bridge.cli import main

raise SystemExit(main(sys.argv[2:]))
"""


def launcher(folder: Path) -> Path:
    """Write the launcher script into ``folder``."""
    path = folder / "lean_stembridge.py"
    path.write_text(LAUNCHER)
    return path


def command(folder: Path, blocked: Sequence[str], args: Sequence[str]) -> list[str]:
    """The command line running ``stembridge ARGS`` with ``blocked`` unimportable."""
    return [sys.executable, str(launcher(folder)), ",".join(blocked), *args]


def run_without(
    folder: Path, blocked: Sequence[str], args: Sequence[str], *, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``stembridge ARGS`` to its end with ``blocked`` unimportable."""
    return subprocess.run(
        command(folder, blocked, args),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
