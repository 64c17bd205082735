"""Files that appear whole or not at all, and that say who is writing them.

Everything StemBridge writes where a host or a watcher may look goes to a hidden
temporary name in the same folder first, is flushed to disk, and is then renamed
over its final name. Temporary names share one recognisable form so that watchers
(ours and the hosts') skip them, and carry their writer's tag::

    .stembridge-<tag>-<random>-<final name>.part

The tag is a job attempt (``<job id>.<attempt>.<run>``) for files in a stem folder, whose
one writer is known (see :mod:`bridge.pipeline.folders`), and this process
(:func:`bridge.owners.process_tag`) elsewhere, so that a temporary is only ever
removed once its writer is gone.

A set of files (stems, pictures, then the manifest) is renamed into place through a
:class:`Journal` naming each published file by its identity on disk, so that what a
killed or failing writer put in place, and only that, can be taken back.

On Windows a rename onto a file another program holds open (a DAW playing last run's
stem) fails with ``PermissionError`` until it lets go: :class:`Replacer` tries again for
:data:`REPLACE_RETRY_SECONDS`, then names the file and the fix; the temporary is
removed whichever way it ends.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bridge.documents import parse_json
from bridge.errors import OutputError
from bridge.owners import process_tag, tag_gone

TEMP_PREFIX = ".stembridge-"
TEMP_SUFFIX = ".part"
_JOURNAL_END = f"-set{TEMP_SUFFIX}"
#: A temporary of a writer on another machine (whose liveness cannot be checked) is taken
#: as abandoned after this long: writing a status or config file takes milliseconds.
ABANDONED_SECONDS = 3600.0
#: How long a rename refused with ``PermissionError`` is tried again: long enough for a DAW
#: to close a stem it was playing, short enough for a job to fail with the reason.
REPLACE_RETRY_SECONDS = 10.0


def temp_path_for(final: Path, *, tag: str | None = None) -> Path:
    """A fresh hidden temporary name beside ``final``, carrying ``tag`` (default: this
    process)."""
    tag = tag or process_tag()
    return final.with_name(f"{TEMP_PREFIX}{tag}-{secrets.token_hex(4)}-{final.name}{TEMP_SUFFIX}")


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is one of StemBridge's in-progress files."""
    return path.name.startswith(TEMP_PREFIX) and path.name.endswith(TEMP_SUFFIX)


def temp_tag(path: Path) -> str | None:
    """The writer's tag in a temporary name (``None``: not a temporary, or no tag)."""
    if not is_temporary(path):
        return None
    tag, dash, _ = path.name[len(TEMP_PREFIX) :].partition("-")
    return tag if dash and "." in tag else None


def remove_temporaries(folder: Path, *, keep: Callable[[Path, str | None], bool]) -> list[Path]:
    """Delete the temporary files in ``folder`` for which ``keep(path, tag)`` is false.

    Journals are left alone: :func:`recover_journals` takes them back first.
    Returns what was deleted.
    """
    removed = []
    for path in folder.iterdir():
        if (
            is_temporary(path)
            and not is_journal(path)
            and path.is_file()
            and not keep(path, temp_tag(path))
        ):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def writer_gone(path: Path, tag: str | None, *, now: float | None = None) -> bool:
    """Whether the writer of the temporary ``path`` has ended: its process is gone, or it
    was left untouched for :data:`ABANDONED_SECONDS` (a writer on another machine)."""
    if tag is not None and tag_gone(tag):
        return True
    try:
        age = (time.time() if now is None else now) - path.stat().st_mtime
    except OSError:
        return False
    return age > ABANDONED_SECONDS


#: How a closed file is opened to be flushed: Windows' ``_commit`` (``os.fsync``) needs a
#: handle with write access (FlushFileBuffers); POSIX flushes through any descriptor, and
#: a hard-linked source may be read-only there.
_FLUSH_MODE = os.O_RDWR if os.name == "nt" else os.O_RDONLY


def fsync_file(path: Path) -> None:
    """Flush a closed file's contents to disk."""
    fd = os.open(path, _FLUSH_MODE)
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


@dataclass(frozen=True)
class Replacer:
    """Renames a temporary over its final name, trying again while the target is held open.

    Attributes:
        rename: The rename itself (``os.replace``; tests inject one that refuses).
        sleep: How the wait between attempts passes.
        retry_seconds: How long a ``PermissionError`` is tried again.
    """

    rename: Callable[[Path, Path], None] = os.replace
    sleep: Callable[[float], None] = time.sleep
    retry_seconds: float = REPLACE_RETRY_SECONDS

    def __call__(self, temp: Path, final: Path) -> None:
        """Rename ``temp`` over ``final``.

        Raises:
            OutputError: Still refused after ``retry_seconds`` (``temp`` is left for the
                caller, who removes it).
        """
        waited, delay = 0.0, 0.05
        while True:
            try:
                self.rename(temp, final)
                return
            except PermissionError as exc:
                if waited >= self.retry_seconds:
                    raise OutputError(
                        f"{final}: cannot be replaced, another program holds it open ({exc}); "
                        "close it there (or remove it from the DAW's project) and run the job "
                        "again",
                        path=final,
                    ) from exc
            self.sleep(delay)
            waited += delay
            delay = min(delay * 2, 1.0)


#: The rename everything uses unless told otherwise.
REPLACE = Replacer()


def commit(temp: Path, final: Path, *, replace: Replacer = REPLACE) -> None:
    """Flush ``temp`` and rename it over ``final`` in one step (see :class:`Replacer`)."""
    fsync_file(temp)
    replace(temp, final)
    fsync_dir(final.parent)


def write_temp(final: Path, data: bytes, *, tag: str | None = None, mode: int = 0o644) -> Path:
    """Write ``data`` to a new temporary beside ``final`` and return it (not yet renamed)."""
    temp = temp_path_for(final, tag=tag)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def link_temp(source: Path, final: Path, *, tag: str | None = None) -> Path:
    """Hard-link (or, across file systems, copy) ``source`` to a new temporary beside
    ``final`` and return it (not yet renamed)."""
    temp = temp_path_for(final, tag=tag)
    try:
        try:
            os.link(source, temp)
        except OSError:  # another file system, or one without hard links
            shutil.copyfile(source, temp)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def write_bytes(
    final: Path,
    data: bytes,
    *,
    mode: int = 0o644,
    tag: str | None = None,
    replace: Replacer = REPLACE,
) -> None:
    """Write ``data`` to ``final`` atomically with permission bits ``mode``.

    Raises:
        OutputError: ``final`` stays held open by another program (see :class:`Replacer`).
    """
    temp = write_temp(final, data, tag=tag, mode=mode)
    try:
        commit(temp, final, replace=replace)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def copy_file(source: Path, final: Path, *, link: bool = False) -> None:
    """Copy ``source`` to ``final`` atomically; ``link`` tries a hard link first."""
    if link:
        temp = link_temp(source, final)
    else:
        temp = temp_path_for(final)
        try:
            shutil.copyfile(source, temp)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
    try:
        commit(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def journal_path(folder: Path, tag: str) -> Path:
    """The journal of the set that the writer ``tag`` publishes in ``folder``."""
    return folder / f"{TEMP_PREFIX}{tag}{_JOURNAL_END}"


def is_journal(path: Path) -> bool:
    """Whether ``path`` is a set's journal (see :class:`Journal`)."""
    return path.name.startswith(TEMP_PREFIX) and path.name.endswith(_JOURNAL_END)


class Journal:
    """The record of one set of files being renamed into ``folder`` by the writer ``tag``.

    Before each group of renames the journal is rewritten (atomically, flushed) with
    the identity on disk (device, inode, size) of every file about to appear, so
    that :meth:`undo`, or :func:`recover_journals` after a kill, deletes exactly what
    this set put in place: a file of the same name that someone else wrote since is
    never touched. :meth:`close` forgets the journal once the set is whole.

    Args:
        folder: Where the files appear.
        tag: The writer (a job attempt).
        key: What the set is (the job's identity): a later run keeps a set whose
            manifest records this key, even if the journal outlived the last rename.
        replace: How a file is renamed into place.
    """

    def __init__(self, folder: Path, *, tag: str, key: str, replace: Replacer = REPLACE) -> None:
        self.path = journal_path(folder, tag)
        self._tag = tag
        self._key = key
        self._replace = replace
        self._files: list[dict[str, object]] = []

    def publish(self, pairs: Iterable[tuple[Path, Path]]) -> None:
        """Rename each ``(temporary, final)`` pair into place, recorded first.

        Raises:
            OutputError: A final name stays held open by another program; the pairs'
                temporaries not yet renamed are removed (:meth:`undo` takes back the rest).
        """
        pairs = list(pairs)
        try:
            for temp, final in pairs:
                fsync_file(temp)
                stat = temp.stat()
                self._files.append(
                    {
                        "name": final.name,
                        "dev": stat.st_dev,
                        "ino": stat.st_ino,
                        "size": stat.st_size,
                    }
                )
            record = json.dumps({"key": self._key, "files": self._files}).encode("utf-8")
            write_bytes(self.path, record, mode=0o600, tag=self._tag, replace=self._replace)
            for temp, final in pairs:
                self._replace(temp, final)
        except BaseException:
            for temp, _ in pairs:
                temp.unlink(missing_ok=True)
            raise
        fsync_dir(self.path.parent)

    def write(self, final: Path, data: bytes) -> None:
        """Publish ``data`` as ``final`` (through a temporary of this writer's)."""
        self.publish([(write_temp(final, data, tag=self._tag), final)])

    def undo(self) -> list[Path]:
        """Take back every file this set put in place; returns what was deleted."""
        removed = _take_back(self.path.parent, self._files)
        self.path.unlink(missing_ok=True)
        fsync_dir(self.path.parent)
        return removed

    def close(self) -> None:
        """The set is whole: forget the journal."""
        self.path.unlink(missing_ok=True)
        fsync_dir(self.path.parent)


def recover_journals(
    folder: Path, *, is_whole: Callable[[str], bool], keep_tag: str | None = None
) -> list[Path]:
    """Undo the sets that killed writers left half-published in ``folder``.

    A journal whose key ``is_whole`` accepts (its manifest made it) is just removed;
    otherwise the files it recorded are deleted where they still are what it
    published. The journal of ``keep_tag`` (the caller's own) is left alone.
    Returns the files deleted.
    """
    removed: list[Path] = []
    own = journal_path(folder, keep_tag) if keep_tag else None
    for journal in sorted(folder.iterdir()):
        if not is_journal(journal) or journal == own:
            continue
        try:
            record = parse_json(journal.read_bytes())
        except (OSError, ValueError):
            record = None
        if isinstance(record, dict) and isinstance(record.get("files"), list):
            key, files = str(record.get("key")), record["files"]
        else:
            key, files = "", []  # not a journal we wrote: delete nothing it names
        if not is_whole(key):
            removed.extend(_take_back(folder, files))
        journal.unlink(missing_ok=True)
    fsync_dir(folder)
    return removed


def _take_back(folder: Path, files: Sequence[object]) -> list[Path]:
    removed = []
    for entry in files:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            continue
        path = folder / Path(entry["name"]).name
        try:
            stat = path.lstat()
        except OSError:
            continue
        if (stat.st_dev, stat.st_ino, stat.st_size) == (
            entry.get("dev"),
            entry.get("ino"),
            entry.get("size"),
        ):
            path.unlink()
            removed.append(path)
    return removed
