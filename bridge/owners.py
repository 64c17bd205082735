"""Who is doing something: this process as an owner id, and whether an owner still runs.

An owner id is ``host@machine:pid:start``: the host name for people reading it, the
machine id (:func:`machine_id`) to tell this machine from others, since a Mac's host
name follows the network it joins, and the process's start time to tell a reused pid
apart. Jobs in the store, stem-folder reservations and temporary files name their
owner this way, so that what a killed process left behind can be told from what a
live one is still writing. A process on another machine cannot be asked: it counts
as alive, and whoever holds a resource across machines shows it by refreshing it.

Process lookups go through psutil, which works the same on Linux, macOS and Windows
(``os.kill(pid, 0)`` means something else on Windows).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import socket
import sys
import uuid
from pathlib import Path

#: Where Linux keeps the machine id (systemd's, then D-Bus's for older systems).
LINUX_MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))


def owner_id() -> str:
    """This process, as ``host@machine:pid:start``."""
    pid = os.getpid()
    return f"{socket.gethostname()}@{machine_id()}:{pid}:{_start(pid)}"


def on_this_host(owner: str) -> bool:
    """Whether ``owner`` names a process of this machine (whose liveness can be checked).

    An id written before machine ids (``host:pid:start``) is compared by host name.
    """
    host = owner.partition(":")[0]
    _, at, machine = host.rpartition("@")
    if not at:
        return host == socket.gethostname()
    return machine == machine_id()


def owner_alive(owner: str) -> bool:
    """Whether the process named by :func:`owner_id` still runs (other hosts: assumed)."""
    if not on_this_host(owner):
        return True
    pid_text, _, start = owner.partition(":")[2].partition(":")
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
    return hashlib.sha256(machine_id().encode("utf-8")).hexdigest()[:6]


@functools.cache  # constant while the machine runs; read once per process
def machine_id() -> str:
    """This machine, as 12 hex digits that stay the same across host names and reboots.

    From the OS's own id: ``/etc/machine-id`` (Linux), ``MachineGuid`` in the registry
    (Windows), ``gethostuuid`` (macOS); the host name where none can be read.
    """
    raw = _os_machine_id() or socket.gethostname()
    return hashlib.sha256(raw.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def _os_machine_id() -> str | None:
    if sys.platform == "win32":
        import winreg  # only on Windows

        try:
            with winreg.OpenKey(
                winreg.HKEY_LOCAL_MACHINE, r"SOFTWARE\Microsoft\Cryptography"
            ) as key:
                value, _ = winreg.QueryValueEx(key, "MachineGuid")
        except OSError:
            return None
        return str(value)
    if sys.platform == "darwin":
        buffer = ctypes.create_string_buffer(16)
        timeout = (ctypes.c_long * 2)(1, 0)  # struct timespec: one second at most
        try:
            failed = ctypes.CDLL(None).gethostuuid(buffer, timeout)
        except (OSError, AttributeError):
            return None
        return None if failed else str(uuid.UUID(bytes=buffer.raw))
    for path in LINUX_MACHINE_ID_FILES:
        try:
            text = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if text:
            return text
    return None


def _start(pid: int) -> str:
    """The start time of process ``pid`` in milliseconds, or ``"0"`` when it is gone."""
    import psutil  # here: status, jobs and submit answer host scripts and must start fast

    try:
        return str(round(psutil.Process(pid).create_time() * 1000))
    except (psutil.Error, ValueError, OverflowError):
        return "0"
