"""Files that appear whole or not at all.

Everything StemBridge writes where a host or a watcher may look goes to a hidden
temporary name in the same folder first, is flushed to disk, and is then renamed
over its final name. Temporary names share one recognisable form so that watchers
(ours and the hosts') can skip them.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

from bridge.documents import parse_json

TEMP_PREFIX = ".stembridge-"
TEMP_SUFFIX = ".part"


def temp_path_for(final: Path) -> Path:
    """A fresh hidden temporary name beside ``final``."""
    return final.with_name(f"{TEMP_PREFIX}{secrets.token_hex(4)}-{final.name}{TEMP_SUFFIX}")


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is one of StemBridge's in-progress files."""
    return path.name.startswith(TEMP_PREFIX) and path.name.endswith(TEMP_SUFFIX)


def remove_temporaries(folder: Path, *, modified_before: float | None = None) -> list[Path]:
    """Delete the temporary files in ``folder`` (only those last modified before
    ``modified_before``, a ``time.time()`` value, when given). Returns what was deleted."""
    removed = []
    for path in folder.iterdir():
        if is_temporary(path) and (
            modified_before is None or path.stat().st_mtime < modified_before
        ):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


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


# A set of files (stems, then their manifest) is renamed into place one file at a time.
# This journal, written first and removed last, lets the next run take back the part
# of a set that a kill left behind.
JOURNAL_NAME = f"{TEMP_PREFIX}set{TEMP_SUFFIX}"


def begin_set(folder: Path, names: list[str], *, key: str) -> None:
    """Record that ``names`` in ``folder`` are about to appear, as the set called ``key``."""
    record = json.dumps({"key": key, "names": names}).encode("utf-8")
    write_bytes(folder / JOURNAL_NAME, record, mode=0o600)


def end_set(folder: Path) -> None:
    """The set is whole: forget the journal."""
    (folder / JOURNAL_NAME).unlink(missing_ok=True)
    fsync_dir(folder)


def recover_set(folder: Path, is_whole: Callable[[str], bool]) -> list[Path]:
    """Undo an interrupted set in ``folder``: unless ``is_whole(key)`` says it finished,
    delete the files it named. Returns the files deleted."""
    journal = folder / JOURNAL_NAME
    try:
        record = parse_json(journal.read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, ValueError):
        record = None
    if isinstance(record, dict) and isinstance(record.get("names"), list):
        key, names = str(record.get("key")), [str(name) for name in record["names"]]
    else:
        key, names = "", []  # not a journal we wrote: delete nothing it names
    removed = []
    if not is_whole(key):
        for name in names:
            path = folder / Path(name).name
            if path.is_file():
                path.unlink()
                removed.append(path)
    journal.unlink(missing_ok=True)
    fsync_dir(folder)
    return removed
