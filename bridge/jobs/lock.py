"""One daemon per job store: an exclusive lock file in the state folder.

The lock is ``filelock``'s (``flock`` on POSIX, ``msvcrt.locking`` on Windows), taken
on ``daemon.lock``; the daemon's owner id (:func:`bridge.owners.owner_id`) goes in
``daemon.owner`` beside it, since Windows locks the lock file's bytes against readers.
``submit`` and ``status`` ask :func:`daemon_running` (a non-blocking attempt, released
at once) to know whether queued jobs will be picked up; no torch here, and filelock is
imported only when a lock is touched.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from bridge.errors import JobError
from bridge.owners import owner_id
from bridge.permissions import private_folder

if TYPE_CHECKING:
    from filelock import BaseFileLock

LOCK_NAME = "daemon.lock"
OWNER_NAME = "daemon.owner"

#: How long a starting daemon keeps trying for the lock: a ``daemon_running`` probe holds
#: it for microseconds, which must not make the daemon give up.
ACQUIRE_SECONDS = 2.0


class DaemonLock:
    """An exclusive lock on ``<state_dir>/daemon.lock``; ``daemon.owner`` names the holder.

    Raises:
        JobError: (on enter) Another daemon holds it.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._lock: BaseFileLock | None = None

    def __enter__(self) -> DaemonLock:
        from filelock import Timeout

        private_folder(self.path.parent)
        lock = _file_lock(self.path)
        try:
            lock.acquire(timeout=ACQUIRE_SECONDS, poll_interval=0.01)
        except Timeout:
            raise JobError(
                f"another StemBridge daemon ({_holder(self.path.parent)}) already serves "
                f"{self.path.parent}; stop it first, or give this one another [daemon] "
                "state_dir",
                path=self.path,
            ) from None
        _write_owner(self.path.parent / OWNER_NAME)
        self._lock = lock
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._lock is not None:
            (self.path.parent / OWNER_NAME).unlink(missing_ok=True)
            self._lock.release()
            self._lock = None


def daemon_running(state_dir: Path) -> bool:
    """Whether a daemon holds the lock of ``state_dir`` (the probe's own hold lasts
    microseconds; a starting daemon waits that out)."""
    path = state_dir / LOCK_NAME
    if not path.exists():
        return False
    from filelock import Timeout

    lock = _file_lock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    except OSError:  # a state folder this user may not write: no daemon of theirs there
        return False
    lock.release()
    return False


def _file_lock(path: Path) -> BaseFileLock:
    from filelock import FileLock

    # One lock object per use, not filelock's per-thread reentrancy: a second DaemonLock in
    # the same process must be refused like another process's.
    return FileLock(path, mode=0o600, thread_local=False)


def _write_owner(path: Path) -> None:
    """This process's owner id into ``path``, in place (not through a temporary: a daemon
    killed meanwhile must leave nothing to clean, and a torn id only makes a refusal say
    ``pid unknown``)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(owner_id().encode("utf-8"))


def _holder(state_dir: Path) -> str:
    """``pid N`` of the daemon holding the lock, as far as its owner file says."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        owner = (state_dir / OWNER_NAME).read_text(encoding="utf-8")
        pid = owner.split(":")[1:2]
        if pid and pid[0].isdigit():
            return f"pid {pid[0]}"
    return "pid unknown"
