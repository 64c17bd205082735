"""Deciding when a file that is being written is finished.

DAWs write renders progressively. A file counts as finished when

* the OS said it was closed after writing (inotify's close-write, Linux only), or
* its size and modification time stayed the same over ``stable_polls`` polls (the
  only signal polling observers, network shares, macOS and Windows give),

and then, in both cases, its header agrees with its length (a header promising
more audio than is there means the writer is still at it). Files that are not
audio at all are reported as finished anyway: the job fails with a message.
Duplicate events for one path collapse into one candidate.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bridge.audio.probe import probe
from bridge.errors import UnreadableAudio

#: Polls a file may look incomplete (truncated, header only) once stable before it is
#: handed on anyway, to fail with a message instead of waiting for ever.
GIVE_UP_POLLS = 30


@dataclass
class _Candidate:
    size: int = -1
    mtime_ns: int = -1
    stable: int = 0
    closed: bool = False
    incomplete: int = 0


class FinishedFiles:
    """Collects changed paths and says which of them are finished.

    Thread-safe: observers call :meth:`touch` from their threads, the daemon calls
    :meth:`tick` from its loop.

    Args:
        stable_polls: Unchanged polls needed without a close-after-write event.
        stat: ``os.stat``-like (injectable).
        check: Raises :class:`UnreadableAudio` for an unusable file (default: probe).
    """

    def __init__(
        self,
        *,
        stable_polls: int = 3,
        stat: Callable[[Path], os.stat_result] = os.stat,
        check: Callable[[Path], object] = probe,
    ) -> None:
        self._stable_polls = stable_polls
        self._stat = stat
        self._check = check
        self._lock = threading.Lock()
        self._candidates: dict[Path, _Candidate] = {}

    def touch(self, path: Path, *, closed: bool = False) -> None:
        """Note that ``path`` changed; ``closed`` if the writer just closed it."""
        with self._lock:
            candidate = self._candidates.setdefault(path, _Candidate())
            candidate.closed = closed

    def forget(self, path: Path) -> None:
        """Stop tracking ``path`` (deleted or moved away)."""
        with self._lock:
            self._candidates.pop(path, None)

    def pending(self) -> int:
        """How many paths are being watched for completion."""
        with self._lock:
            return len(self._candidates)

    def tick(self) -> list[tuple[Path, os.stat_result]]:
        """One poll: the paths that are finished now (each once), with their stat."""
        with self._lock:
            paths = list(self._candidates.items())
        finished = []
        for path, candidate in paths:
            try:
                stat = self._stat(path)
            except OSError:
                self.forget(path)
                continue
            with self._lock:
                if (stat.st_size, stat.st_mtime_ns) != (candidate.size, candidate.mtime_ns):
                    candidate.size, candidate.mtime_ns = stat.st_size, stat.st_mtime_ns
                    candidate.stable = 0
                else:
                    candidate.stable += 1
                ready = stat.st_size > 0 and (
                    candidate.closed or candidate.stable >= self._stable_polls
                )
            if ready and self._complete(candidate, path):
                self.forget(path)
                finished.append((path, stat))
        return finished

    def _complete(self, candidate: _Candidate, path: Path) -> bool:
        try:
            self._check(path)
        except UnreadableAudio as exc:
            still_writing = "truncated" in str(exc) or "no audio samples" in str(exc)
            if still_writing and candidate.incomplete < GIVE_UP_POLLS:
                with self._lock:
                    candidate.incomplete += 1
                    candidate.closed = False
                    candidate.stable = 0
                return False
        return True
