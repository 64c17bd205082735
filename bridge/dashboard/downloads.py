"""All of a finished job's stems as one zip, streamed as it is made.

The stems are exactly the ones its manifest lists, each opened once inside the stem
folder without following links (:mod:`bridge.dashboard.files`) before the first byte is
sent, and copied into the zip as they are (stored, not compressed: audio hardly shrinks,
and a stored entry is the stem byte for byte). :mod:`zipfile` writes to a stream that
cannot seek by putting each entry's sizes after it, so nothing is held but one chunk.
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack

from bridge.dashboard.files import OpenFile

CHUNK_BYTES = 1024 * 1024


class _Sink:
    """A write-only stream whose bytes are taken out as they come."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        """Nothing is buffered here."""

    def close(self) -> None:
        """Nothing to close: the response takes what is left."""

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def zip_stream(files: Sequence[OpenFile]) -> Iterator[bytes]:
    """The zip of ``files`` (under their names), in chunks; closes them when done."""
    with ExitStack() as stack:
        for opened in files:
            stack.enter_context(opened)
        sink = _Sink()
        with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as archive:
            for opened in files:
                info = zipfile.ZipInfo(opened.name, date_time=_date_time(opened))
                info.compress_type = zipfile.ZIP_STORED
                with archive.open(info, "w", force_zip64=opened.size >= 2**31) as entry:
                    while chunk := opened.file.read(CHUNK_BYTES):
                        entry.write(chunk)
                        yield sink.take()
                yield sink.take()
        yield sink.take()


def _date_time(opened: OpenFile) -> tuple[int, int, int, int, int, int]:
    stamp = time.localtime(max(opened.status.st_mtime, 315532800))  # zip starts in 1980
    return stamp[:6]
