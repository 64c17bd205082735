"""A job's files, opened once without following links and served from the open file.

Checking a path and then opening it again lets anyone who can write the stem folder swap
a checked stem for a symbolic link to a private file in between. So each file is opened
exactly once, every decision is taken on that open file, and the response reads it:

* **POSIX**: the stem folder is opened with ``O_DIRECTORY | O_NOFOLLOW``; the manifest and
  every part of a file's name are opened relative to it (``dir_fd``) with ``O_NOFOLLOW``
  (folders also ``O_DIRECTORY``), files also ``O_NONBLOCK`` so that a FIFO swapped in
  cannot hang a thread. A link at any step fails the open.
* **Windows** has neither ``O_NOFOLLOW`` nor ``dir_fd``: the file is opened by its path,
  and then, while it is open (Windows refuses to rename or delete an open file and the
  folders above it), the stem folder, every folder below it and the file are looked at
  without following links: none may be a link or another reparse point, and the file's
  identity (volume, index) must be the open file's. A swap before the open shows as a link
  or as another identity; a swap after it cannot happen.

Either way the open file must be a regular file. The stem folder's own parents are taken
as they are (they are the output folders the daemon was told to write to).
"""

from __future__ import annotations

import errno
import hashlib
import io
import mimetypes
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path, PurePosixPath
from typing import Final, Literal

import anyio
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

#: A manifest larger than this is not one (they are a few KiB); refusing it bounds memory.
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation
_NOFOLLOW_OPEN = hasattr(os, "O_NOFOLLOW") and os.open in os.supports_dir_fd
_REPARSE_POINT = getattr(stat, "FILE_ATTRIBUTE_REPARSE_POINT", 0x400)


@dataclass(frozen=True)
class Refusal:
    """Why a file is not served, as an HTTP status and a sentence."""

    status: int
    message: str


def open_folder(folder: Path) -> StemFolder | Refusal:
    """``folder`` opened (not through a link), ready to open files in; use with ``with``."""
    try:
        if _NOFOLLOW_OPEN:
            return StemFolder(folder, os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW))
        if not _is_link(os.lstat(folder)):
            return StemFolder(folder, None)
        error = OSError(errno.ELOOP, "a link or reparse point")
    except OSError as exc:
        error = exc
    if error.errno in (errno.ELOOP, errno.ENOTDIR):
        return Refusal(
            403, f"the stem folder {folder} is a link or not a folder; nothing in it is served"
        )
    return Refusal(404, f"the stem folder {folder} cannot be opened ({error.strerror})")


class StemFolder:
    """A job's stem folder, open (POSIX: its descriptor; Windows: its checked path).

    Made by :func:`open_folder`; ``with`` closes it.
    """

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self._fd = fd

    def __enter__(self) -> StemFolder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def read(self, name: str, *, max_bytes: int = MAX_MANIFEST_BYTES) -> bytes | Refusal:
        """The whole of the regular file ``name`` in this folder (the manifest)."""
        opened = self.open(name)
        if isinstance(opened, Refusal):
            return opened
        with opened as file:
            if opened.size > max_bytes:
                return Refusal(413, f"{name!r} in {self.path} is over {max_bytes} bytes")
            return file.read()

    def open(self, name: str) -> OpenFile | Refusal:
        """The regular file ``name`` (relative, ``/``-separated), opened for reading."""
        parts = PurePosixPath(name).parts
        if "\0" in name or not parts or name.startswith("/") or {".", ".."} & set(parts):
            return Refusal(400, f"{name!r} is not a file name inside the stem folder {self.path}")
        try:
            if self._fd is not None:
                fd = _open_below(self._fd, parts)
            else:
                fd = _open_checked(self.path, parts)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                return Refusal(
                    403, f"{name!r} in {self.path} is (or lies under) a link; not served"
                )
            if exc.errno == errno.ENOENT:
                return Refusal(404, f"{name!r} is not in {self.path} (any more)")
            return Refusal(404, f"{name!r} in {self.path} cannot be read ({exc.strerror})")
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            os.close(fd)
            return Refusal(403, f"{name!r} in {self.path} is not a regular file; not served")
        return OpenFile(io.FileIO(fd, "rb"), status, name=name)


def _open_below(root: int, parts: Sequence[str]) -> int:
    """POSIX: each part relative to the one before, never through a link."""
    folder = root
    try:
        for part in parts[:-1]:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=folder)
            if folder != root:
                os.close(folder)
            folder = inner
        return os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)
    finally:
        if folder != root:
            os.close(folder)


def _open_checked(root: Path, parts: Sequence[str]) -> int:
    """Windows: open by path, then check the way there while the file is open."""
    path = root.joinpath(*parts)
    fd = os.open(path, os.O_RDONLY | _BINARY)
    try:
        folders = [root.joinpath(*parts[:n]) for n in range(len(parts))]
        if any(_is_link(os.lstat(folder)) for folder in folders):
            raise OSError(errno.ENOTDIR, "a folder on the way is a link", str(path))
        named, opened = os.lstat(path), os.fstat(fd)
        if _is_link(named) or (named.st_dev, named.st_ino) != (opened.st_dev, opened.st_ino):
            raise OSError(errno.ELOOP, "a link, or not the file that was opened", str(path))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _is_link(status: os.stat_result) -> bool:
    attributes = getattr(status, "st_file_attributes", 0)
    return stat.S_ISLNK(status.st_mode) or bool(attributes & _REPARSE_POINT)


class OpenFile:
    """A file opened by :class:`StemFolder`, with its status when opened; ``with`` closes it."""

    def __init__(self, file: io.FileIO, status: os.stat_result, *, name: str) -> None:
        self.file = file
        self.status = status
        self.name = name

    @property
    def size(self) -> int:
        """Its size in bytes when it was opened."""
        return self.status.st_size

    def __enter__(self) -> io.FileIO:
        return self.file

    def __exit__(self, *exc_info: object) -> None:
        self.file.close()


class OpenFileResponse(Response):
    """An :class:`OpenFile` as the response; closes it when done.

    Answers ``HEAD`` and one byte range (``bytes=a-b``, ``a-``, ``-n``: what ``<audio>``
    asks for when it seeks) with 206, a range past the end with 416; a list of ranges, an
    unknown unit or an ``If-Range`` that no longer matches gets the whole file (RFC 9110
    lets a server ignore ``Range``).
    """

    chunk_size = 64 * 1024

    def __init__(self, opened: OpenFile) -> None:
        status = opened.status
        tag = hashlib.md5(f"{status.st_mtime_ns}-{status.st_size}".encode(), usedforsecurity=False)
        super().__init__(
            media_type=mimetypes.guess_type(opened.name)[0] or "application/octet-stream",
            headers={
                "accept-ranges": "bytes",
                "last-modified": formatdate(status.st_mtime, usegmt=True),
                "etag": f'"{tag.hexdigest()}"',
            },
        )
        self._opened = opened

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with self._opened as file:
            size = self._opened.size
            wanted = _byte_range(Headers(scope=scope), size, etag=self.headers["etag"])
            if wanted == UNSATISFIABLE:
                headers = [
                    (b"content-range", f"bytes */{size}".encode()),
                    (b"content-length", b"0"),
                ]
                await send({"type": "http.response.start", "status": 416, "headers": headers})
                await send({"type": "http.response.body", "body": b""})
                return
            start, end = (0, size) if wanted is None else wanted
            if wanted is not None:
                self.status_code = 206
                self.headers["content-range"] = f"bytes {start}-{end - 1}/{size}"
            self.headers["content-length"] = str(end - start)
            start_message = {"status": self.status_code, "headers": self.raw_headers}
            await send({"type": "http.response.start", **start_message})
            if scope["method"] == "HEAD":
                await send({"type": "http.response.body", "body": b""})
                return
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    await _send_part(file, start, end, send, self.chunk_size)
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                # uvicorn answers receive() with a disconnect once the response is sent or
                # the browser went away (it seeked, or left the page): stop reading then.
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()


async def _send_part(file: io.FileIO, start: int, end: int, send: Send, chunk_size: int) -> None:
    position = start
    while True:
        count = min(chunk_size, end - position)
        chunk = await anyio.to_thread.run_sync(_read_at, file, position, count) if count else b""
        position += len(chunk)
        # A file that shrank since it was opened ends the body early rather than never.
        last = position >= end or len(chunk) < count
        await send({"type": "http.response.body", "body": chunk, "more_body": not last})
        if last:
            return


def _read_at(file: io.FileIO, position: int, count: int) -> bytes:
    file.seek(position)
    return file.read(count) or b""


UNSATISFIABLE: Final = "unsatisfiable"
_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.IGNORECASE)


def _byte_range(
    headers: Headers, size: int, *, etag: str
) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """``(start, end)`` of the one range asked for, :data:`UNSATISFIABLE`, or ``None``: all."""
    asked = headers.get("range")
    if_range = headers.get("if-range")
    match = _RANGE.fullmatch(asked) if asked is not None else None
    if match is None or (if_range is not None and if_range != etag):
        return None
    first, last = match.groups()
    if not first:  # "-n": the last n bytes
        if not last:
            return None
        suffix = int(last)
        return (max(0, size - suffix), size) if suffix else UNSATISFIABLE
    start = int(first)
    end = int(last) + 1 if last else size
    if start >= size:
        return UNSATISFIABLE
    return (start, min(end, size)) if end > start else None
