"""Decode a range of an input file in blocks, checking that every frame arrives."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from bridge.audio.probe import AudioInfo
from bridge.errors import RangeOutsideAudio, UnreadableAudio
from bridge.settings import TimeRange

BLOCK_FRAMES = 1 << 16


@dataclass(frozen=True)
class FrameRange:
    """A range of an input file in frames (at the file's own rate)."""

    start: int
    length: int


def resolve_range(info: AudioInfo, wanted: TimeRange) -> FrameRange:
    """Turn a range in seconds into frames of ``info``'s file.

    Raises:
        RangeOutsideAudio: The range starts at or after the end, or ends after it.
    """
    start = round(wanted.start_seconds * info.sample_rate)
    if start >= info.frames:
        raise RangeOutsideAudio(
            f"{info.path}: start {wanted.start_seconds:g} s is at or after the end of the file "
            f"({info.duration_seconds:.3f} s); use a start below {info.duration_seconds:.3f}",
            path=info.path,
        )
    if wanted.length_seconds is None:
        return FrameRange(start, info.frames - start)
    length = round(wanted.length_seconds * info.sample_rate)
    if length < 1:
        raise RangeOutsideAudio(
            f"{info.path}: length {wanted.length_seconds:g} s is shorter than one sample; "
            "use a longer length",
            path=info.path,
        )
    if start + length > info.frames:
        end = (start + length) / info.sample_rate
        raise RangeOutsideAudio(
            f"{info.path}: the range {wanted.start_seconds:g}-{end:g} s ends after the end of "
            f"the file ({info.duration_seconds:.3f} s); shorten --length to at most "
            f"{(info.frames - start) / info.sample_rate:.3f} s",
            path=info.path,
        )
    return FrameRange(start, length)


def read_blocks(
    info: AudioInfo, frames: FrameRange, *, block_frames: int = BLOCK_FRAMES
) -> Iterator[np.ndarray]:
    """Yield the range as float32 blocks shaped ``(channels, n)``.

    Raises:
        UnreadableAudio: The decoder fails, or fewer frames arrive than the range holds
            (the file was cut short, or changed since it was probed).
    """
    remaining = frames.length
    try:
        with sf.SoundFile(str(info.path)) as file:
            if frames.start:
                file.seek(frames.start)
            while remaining > 0:
                data = file.read(min(block_frames, remaining), dtype="float32", always_2d=True)
                if len(data) == 0:
                    break
                remaining -= len(data)
                yield np.ascontiguousarray(data.T)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise UnreadableAudio(
            f"{info.path}: decoding failed after {frames.length - remaining} of "
            f"{frames.length} frames ({exc}); the file is damaged or truncated; "
            "render or copy it again",
            path=info.path,
        ) from exc
    if remaining > 0:
        raise UnreadableAudio(
            f"{info.path}: the file ends {remaining} frames early ({frames.length - remaining} "
            f"of {frames.length} decoded); it is truncated or changed while being read; "
            "render or copy it again",
            path=info.path,
        )
