"""How far one job has come, and how it is stopped."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from bridge.errors import JobCancelled


@dataclass(frozen=True)
class Progress:
    """Where one file's separation stands.

    Attributes:
        stage: ``analysing``, ``separating``, ``writing`` or ``done``.
        done: Units done in this stage (frames while analysing, segments while separating).
        total: Units in this stage.
        fraction: Overall progress of the file, 0 to 1.
    """

    stage: str
    done: int
    total: int
    fraction: float


OnProgress = Callable[[Progress], None]


def check_cancel(cancel: threading.Event | None) -> None:
    """Raise :class:`JobCancelled` when ``cancel`` is set.

    Raises:
        JobCancelled: The job was asked to stop.
    """
    if cancel is not None and cancel.is_set():
        raise JobCancelled("separation cancelled")
