"""One daemon per job store: an exclusive lock file in the state folder.

``submit`` and ``status`` ask :func:`daemon_running` (a shared, non-blocking lock
attempt) to know whether queued jobs will be picked up; no torch here.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from bridge.errors import JobError
from bridge.permissions import private_folder

LOCK_NAME = "daemon.lock"


class DaemonLock:
    """An exclusive lock on ``<state_dir>/daemon.lock``, holding the daemon's pid.

    Raises:
        JobError: (on enter) Another daemon holds it.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> DaemonLock:
        private_folder(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        if not _lock_exclusive(fd):
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise JobError(
                f"another StemBridge daemon (pid {holder}) already serves {self.path.parent}; "
                "stop it first, or give this one another [daemon] state_dir",
                path=self.path,
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


#: How long a starting daemon keeps trying for the lock: a ``daemon_running`` probe holds
#: it (shared) for microseconds, which must not make the daemon give up.
ACQUIRE_SECONDS = 2.0


def _lock_exclusive(fd: int) -> bool:
    """Take the exclusive lock on ``fd``; ``False`` when another process keeps it."""
    deadline = time.monotonic() + ACQUIRE_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)


def daemon_running(state_dir: Path) -> bool:
    """Whether a daemon holds the lock of ``state_dir`` (without disturbing it)."""
    path = state_dir / LOCK_NAME
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
