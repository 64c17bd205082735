"""Who is doing something: this process as an owner id, and whether an owner still runs.

An owner id is ``host:pid:start`` (the process's start time tells a reused pid
apart). Jobs in the store, stem-folder reservations and temporary files name their
owner this way, so that what a killed process left behind can be told from what a
live one is still writing. A process on another machine cannot be asked: it counts
as alive, and whoever holds a resource across machines shows it by refreshing it.

Process lookups go through psutil, which works the same on Linux, macOS and Windows
(``os.kill(pid, 0)`` means something else on Windows).
"""

from __future__ import annotations

import hashlib
import os
import socket


def owner_id() -> str:
    """This process, as ``host:pid:start``."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start(pid)}"


def on_this_host(owner: str) -> bool:
    """Whether ``owner`` names a process of this machine (whose liveness can be checked)."""
    return owner.partition(":")[0] == socket.gethostname()


def owner_alive(owner: str) -> bool:
    """Whether the process named by :func:`owner_id` still runs (other hosts: assumed)."""
    host, _, rest = owner.partition(":")
    if host != socket.gethostname():
        return True
    pid_text, _, start = rest.partition(":")
    return pid_text.isdigit() and _start(int(pid_text)) == start


def process_tag() -> str:
    """This process in a form file names can carry: ``<host hash>.<pid>.<start>``."""
    pid = os.getpid()
    return f"{_host_hash()}.{pid}.{_start(pid)}"


def tag_gone(tag: str) -> bool:
    """Whether the process a :func:`process_tag` names has ended (known only on its host)."""
    parts = tag.split(".")
    if len(parts) != 3 or parts[0] != _host_hash() or not parts[1].isdigit():
        return False
    return _start(int(parts[1])) != parts[2]


def _host_hash() -> str:
    return hashlib.sha256(socket.gethostname().encode("utf-8")).hexdigest()[:6]


def _start(pid: int) -> str:
    """The start time of process ``pid`` in milliseconds, or ``"0"`` when it is gone."""
    import psutil  # here: status, jobs and submit answer host scripts and must start fast

    try:
        return str(round(psutil.Process(pid).create_time() * 1000))
    except (psutil.Error, ValueError, OverflowError):
        return "0"
