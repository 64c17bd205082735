"""Files dropped on the dashboard: streamed to the studio's upload folder, checked as audio.

Each upload gets a folder of its own, ``<upload folder>/<random id>/``, so two files of
the same name never meet and its stems can go beside it. The body is written as it
arrives (never held whole) to a hidden ``.incoming<ext>`` there, counted against the
limit as it comes; only once it is whole, synced and read as audio by its content
(:func:`bridge.audio.probe.probe`) is it renamed to its sanitised name. Anything else
(too large, not audio, the browser gone, the disk full) removes the folder again, so
no partial file is ever left and no job is made.

The client's file name is only a suggestion for that last name: its folders are
dropped and it goes through :func:`bridge.names.folder_name`; nothing the client sends
is used as a path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import anyio.to_thread

from bridge.audio.probe import AudioInfo, probe
from bridge.errors import UnreadableAudio
from bridge.names import folder_name

log = logging.getLogger(__name__)

#: Bytes gathered before each write (one thread hop per write, not per network packet).
WRITE_BYTES = 1024 * 1024
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,5}$")

#: Opens the partial file for writing (injected in tests: a disk that fills up).
OpenPart = Callable[[Path], BinaryIO]


def open_part(path: Path) -> BinaryIO:
    """A new file at ``path``, refused if anything is there already."""
    return open(path, "xb")


class UploadRefused(Exception):
    """Why an upload was not taken, as an HTTP status and a sentence a person can act on."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Upload:
    """A whole, checked upload.

    Attributes:
        path: The file in its own upload folder.
        info: What the audio holds.
    """

    path: Path
    info: AudioInfo

    def discard(self) -> None:
        """Remove it and its folder (its job could not be made)."""
        shutil.rmtree(self.path.parent, ignore_errors=True)


def upload_name(client_name: str) -> str:
    """A safe file name made from the name the browser sent (its folders dropped)."""
    base = re.split(r"[/\\]", client_name)[-1]
    match = _EXTENSION.search(base)
    extension = match.group(0).lower() if match else ""
    stem = base[: match.start()] if match else base
    return folder_name(stem) + extension


class Uploads:
    """The studio's upload folder and its size limit.

    Args:
        folder: Where uploads are kept (made when first needed).
        max_bytes: The largest upload taken.
        opener: Opens the partial file (see :data:`OpenPart`).
    """

    def __init__(self, folder: Path, *, max_bytes: int, opener: OpenPart = open_part) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self._open = opener

    def check_length(self, declared: str | None) -> None:
        """Refuse a body whose ``Content-Length`` is already over the limit.

        Raises:
            UploadRefused: 413, or 400 for a length that is not a number.
        """
        if declared is None:
            return
        if not declared.isdigit():
            raise UploadRefused(400, f"Content-Length {declared!r} is not a number of bytes")
        if int(declared) > self.max_bytes:
            raise UploadRefused(413, self._too_large(int(declared)))

    async def receive(self, chunks: AsyncIterator[bytes], *, client_name: str) -> Upload:
        """Write the body to a new upload folder, check it, and give it its name.

        Raises:
            UploadRefused: Over the limit (413), not audio (415), the disk full or not
                writable (507); nothing is left behind.
            Exception: Whatever ``chunks`` raises (the browser went away); nothing is left.
        """
        name = upload_name(client_name)
        folder = self.folder / secrets.token_hex(8)
        part = folder / (".incoming" + Path(name).suffix)
        try:
            await anyio.to_thread.run_sync(self._make_folder, folder)
            file = self._open(part)
            try:
                await self._copy(chunks, file)
            except BaseException:
                # Closing flushes what a full disk refused: the first error is the one.
                with contextlib.suppress(OSError):
                    file.close()
                raise
            file.close()  # written, flushed and synced by the last write
            info = await anyio.to_thread.run_sync(_check_audio, part, name)
            final = folder / name
            os.replace(part, final)
        except BaseException:
            # Interrupted, refused or failed: no partial file, no folder.
            await anyio.to_thread.run_sync(lambda: shutil.rmtree(folder, ignore_errors=True))
            raise
        log.info("dashboard: took the upload %s (%d frames)", final, info.frames)
        return Upload(final, dataclasses.replace(info, path=final))

    def _make_folder(self, folder: Path) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            folder.mkdir()
        except OSError as exc:
            raise self._write_failed(exc) from exc

    async def _copy(self, chunks: AsyncIterator[bytes], file: BinaryIO) -> None:
        written = 0
        pending: list[bytes] = []
        size = 0
        async for chunk in chunks:
            written += len(chunk)
            if written > self.max_bytes:
                raise UploadRefused(413, self._too_large(written, counted=True))
            pending.append(chunk)
            size += len(chunk)
            if size >= WRITE_BYTES:
                await anyio.to_thread.run_sync(self._write, file, b"".join(pending))
                pending, size = [], 0
        if written == 0:
            raise UploadRefused(400, "the upload is empty (0 bytes); choose an audio file")
        await anyio.to_thread.run_sync(self._write, file, b"".join(pending), True)

    def _write(self, file: BinaryIO, data: bytes, last: bool = False) -> None:
        try:
            file.write(data)
            if last:
                file.flush()
                os.fsync(file.fileno())
        except OSError as exc:
            raise self._write_failed(exc) from exc

    def _write_failed(self, exc: OSError) -> UploadRefused:
        why = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror
        return UploadRefused(
            507,
            f"the upload could not be stored in {self.folder} ({why}); free space there "
            "or set [dashboard] upload_folder to a folder with room",
        )

    def _too_large(self, size: int, *, counted: bool = False) -> str:
        over = "is over" if counted else f"is {size} bytes, over"
        return (
            f"the file {over} the dashboard's limit of {self.max_bytes // 1_000_000} MB; "
            "raise [dashboard] upload_max_mb or submit it with `stembridge submit`"
        )


def _check_audio(path: Path, name: str) -> AudioInfo:
    try:
        return probe(path)
    except UnreadableAudio as exc:
        # The message names the hidden partial file; the person knows the file by its name.
        reason = str(exc).split(": ", 1)[-1]
        raise UploadRefused(415, f"{name}: {reason}") from exc
