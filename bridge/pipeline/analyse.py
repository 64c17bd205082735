"""Stage 2, analyse: a first pass over the input before the model sees it.

It gives what the streamed separation needs up front: the exact length at the
model's rate, each channel group's normalisation statistics and, for match-mix
normalisation, the mix's loudness. The input's hash (the job's identity) is read
here too.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bridge.audio.probe import AudioInfo
from bridge.audio.reader import FrameRange, read_blocks
from bridge.audio.resample import StreamResampler, converted_length
from bridge.effects.loudness import Loudness, LoudnessMeter
from bridge.models.groups import ChannelGroup, GroupStats, MixStats
from bridge.pipeline.progress import OnProgress, Progress, check_cancel

#: Share of the overall progress given to the first (analysis) pass.
ANALYSIS_SHARE = 0.05


@dataclass(frozen=True)
class Analysis:
    """What the first pass found.

    Attributes:
        groups: The channel groups the model separates (pairs, see
            :mod:`bridge.models.groups`).
        stats: Normalisation statistics of each channel group.
        model_length: Frames of the range at the model's rate.
        mix_loudness: The mix's loudness (only measured for match-mix).
    """

    groups: tuple[ChannelGroup, ...]
    stats: tuple[MixStats, ...]
    model_length: int
    mix_loudness: Loudness | None


def file_sha256(path: Path, cancel: threading.Event | None = None) -> str:
    """The SHA-256 of a file's bytes, read in chunks (checks ``cancel`` between them)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 22), b""):
            check_cancel(cancel)
            digest.update(chunk)
    return digest.hexdigest()


def rate_blocks(
    info: AudioInfo, frames: FrameRange, rate: int, length: int
) -> Iterator[np.ndarray]:
    """The range, decoded and converted to ``rate`` (``length`` frames), block by block."""
    resampler = StreamResampler(
        in_rate=info.sample_rate, out_rate=rate, channels=info.channels, out_frames=length
    )
    for block in read_blocks(info, frames):
        yield resampler.push(block)
    yield resampler.finish()


def analyse(
    info: AudioInfo,
    frames: FrameRange,
    *,
    rate: int,
    groups: tuple[ChannelGroup, ...],
    width: int,
    report: OnProgress,
    cancel: threading.Event | None,
    meter: bool,
) -> Analysis:
    """Read the range once at the model's ``rate``; ``meter`` also measures its loudness."""
    model_length = converted_length(frames.length, info.sample_rate, rate)
    stats = GroupStats(groups, width=width)
    loudness = LoudnessMeter(sample_rate=rate, channels=info.channels) if meter else None
    done = 0
    for block in rate_blocks(info, frames, rate, model_length):
        check_cancel(cancel)
        stats.update(block, source=str(info.path))
        if loudness is not None:
            loudness.update(block)
        done += block.shape[-1]
        report(Progress("analysing", done, model_length, ANALYSIS_SHARE * done / model_length))
    return Analysis(
        groups, stats.result(), model_length, loudness.result() if loudness is not None else None
    )
