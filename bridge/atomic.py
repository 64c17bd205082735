"""Files that appear whole or not at all.

Everything StemBridge writes where a host or a watcher may look goes to a hidden
temporary name in the same folder first, is flushed to disk, and is then renamed
over its final name. Temporary names share one recognisable form so that watchers
(ours and the hosts') can skip them.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

TEMP_PREFIX = ".stembridge-"
TEMP_SUFFIX = ".part"


def temp_path_for(final: Path) -> Path:
    """A fresh hidden temporary name beside ``final``."""
    return final.with_name(f"{TEMP_PREFIX}{secrets.token_hex(4)}-{final.name}{TEMP_SUFFIX}")


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is one of StemBridge's in-progress files."""
    return path.name.startswith(TEMP_PREFIX) and path.name.endswith(TEMP_SUFFIX)


def fsync_file(path: Path) -> None:
    """Flush a closed file's contents to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make renames inside ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit(temp: Path, final: Path) -> None:
    """Flush ``temp`` and rename it over ``final`` in one step."""
    fsync_file(temp)
    os.replace(temp, final)
    fsync_dir(final.parent)


def write_bytes(final: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``final`` atomically with permission bits ``mode``."""
    temp = temp_path_for(final)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        commit(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def copy_file(source: Path, final: Path, *, link: bool = False) -> None:
    """Copy ``source`` to ``final`` atomically; ``link`` tries a hard link first."""
    temp = temp_path_for(final)
    try:
        if link:
            try:
                os.link(source, temp)
            except OSError:  # another file system, or one without hard links
                shutil.copyfile(source, temp)
        else:
            shutil.copyfile(source, temp)
        commit(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
