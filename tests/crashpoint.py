"""Run ``python -m bridge ARGS`` and SIGKILL it at a chosen point, from the outside.

    python tests/crashpoint.py TARGET N WHEN -- ARGS...

TARGET is a dotted name (``os.replace``, ``soundfile.SoundFile.write``); the process
kills itself with SIGKILL on the Nth call, ``before`` or ``after`` the call runs. Nothing
in StemBridge knows: the daemon meets a real kill -9 at an exact place.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Callable
from typing import Any


def resolve(target: str) -> tuple[Any, str]:
    """The object holding the attribute ``target`` names, and the attribute's name."""
    parts = target.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            owner: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:-1]:
            owner = getattr(owner, name)
        return owner, parts[-1]
    raise SystemExit(f"cannot resolve {target}")


def arm(target: str, nth: int, when: str) -> None:
    owner, name = resolve(target)
    original: Callable[..., Any] = getattr(owner, name)
    calls = 0

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == nth and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if calls == nth and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, name, wrapper)


if __name__ == "__main__":
    target, nth, when, dashes, *args = sys.argv[1:]
    assert dashes == "--" and when in ("before", "after")
    arm(target, int(nth), when)
    from bridge.cli import main

    sys.exit(main(args))
