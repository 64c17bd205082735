"""Look at an input file before any work: is it audio, is it whole, what is it.

libsndfile (through soundfile) is the one decoder for every format, MP3 included,
so "the input's length" means the number of frames libsndfile decodes.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from bridge.errors import UnreadableAudio

log = logging.getLogger(__name__)

SUPPORTED = "WAV, FLAC, AIFF, OGG or MP3"


@dataclass(frozen=True)
class AudioInfo:
    """What a decodable input file holds.

    Attributes:
        path: The file.
        format: libsndfile's container name (``WAV``, ``FLAC``, ``MP3``...).
        subtype: libsndfile's sample format (``PCM_16``, ``PCM_24``, ``FLOAT``...).
        sample_rate: Frames per second.
        channels: Channel count.
        frames: Length in frames.
    """

    path: Path
    format: str
    subtype: str
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration_seconds(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


def probe(path: Path) -> AudioInfo:
    """Check that ``path`` is a whole, readable audio file and describe it.

    Raises:
        UnreadableAudio: The file is missing, unreadable, empty, not audio, holds no
            samples, or is shorter than its header says (a render that did not finish).
    """
    path = Path(path)
    if not path.exists():
        raise UnreadableAudio(f"{path}: no such file; check the path", path=path)
    if not path.is_file():
        raise UnreadableAudio(f"{path}: not a file; give an audio file, not a folder", path=path)
    try:
        size = path.stat().st_size
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise UnreadableAudio(
            f"{path}: cannot be read ({exc.strerror}); check its permissions", path=path
        ) from exc
    if size == 0:
        raise UnreadableAudio(
            f"{path}: the file is empty (0 bytes); render or export it again", path=path
        )
    try:
        raw = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise UnreadableAudio(
            f"{path}: not audio that StemBridge can read ({_reason(exc)}); "
            f"export it as {SUPPORTED}",
            path=path,
        ) from exc
    info = AudioInfo(
        path=path,
        format=raw.format,
        subtype=raw.subtype,
        sample_rate=int(raw.samplerate),
        channels=int(raw.channels),
        frames=int(raw.frames),
    )
    if info.frames <= 0:
        raise UnreadableAudio(
            f"{path}: holds no audio samples (header only); render or export it again",
            path=path,
        )
    _check_complete(info, raw.extra_info, size)
    log.debug("probed %s: %s", path, info)
    return info


def _check_complete(info: AudioInfo, log_text: str, size: int) -> None:
    """Refuse files shorter than their header promises.

    libsndfile quietly shortens such files to what is there, which would give stems
    of a render that had not finished; its log line ``(should be N)`` says so.
    """
    if info.format in ("WAV", "WAVEX", "W64", "RF64", "AIFF"):
        for line in log_text.splitlines():
            head = line.strip().lower()
            if head.startswith(("data", "ssnd")) and "should be" in head:
                raise UnreadableAudio(
                    f"{info.path}: the file is truncated (libsndfile: {line.strip()}); the "
                    "render or copy did not finish; render or copy it again",
                    path=info.path,
                )
    elif info.format == "MP3":
        promised = _xing_stream_bytes(info.path)
        if promised is not None and size < promised:
            raise UnreadableAudio(
                f"{info.path}: the file is truncated ({size} bytes, its header promises "
                f"{promised}); the export or copy did not finish; export or copy it again",
                path=info.path,
            )


def _xing_stream_bytes(path: Path) -> int | None:
    """The file size an MP3's Xing/Info header promises, if it has one."""
    with open(path, "rb") as file:
        head = file.read(1 << 16)
    start = 0
    if head[:3] == b"ID3" and len(head) >= 10:
        size = 0
        for byte in head[6:10]:
            size = (size << 7) | (byte & 0x7F)
        start = 10 + size
    frame = head[start : start + 200]
    for tag in (b"Xing", b"Info"):
        at = frame.find(tag)
        if at < 0 or len(frame) < at + 16:
            continue
        (flags,) = struct.unpack(">I", frame[at + 4 : at + 8])
        field = at + 8 + (4 if flags & 1 else 0)
        if flags & 2:
            (stream_bytes,) = struct.unpack(">I", frame[field : field + 4])
            return start + stream_bytes
    return None


def _reason(exc: Exception) -> str:
    text = str(exc)
    reason = text.split(": ", 1)[-1].strip() if ": " in text else text
    # libsndfile's MP3 decoder reports undecodable bytes this way, but the file exists
    if reason.startswith("File does not exist"):
        return "no audio format recognised in its bytes"
    return reason
