"""How an input's channels become model inputs, and their normalisation.

The networks take stereo. A stereo file is one group; a mono file is one group
whose channel is doubled (as demucs does) and whose stems are written mono (the
mean of the two output channels); a file with more channels is cut into
consecutive pairs (1-2, 3-4, ...; an odd last channel is a mono group), each pair
separated on its own, so every stem keeps the input's channel layout.

Each group is normalised like ``demucs.api.Separator``: minus the mean, divided by
the standard deviation (+1e-8) of its mono mix, measured over the whole range in a
first pass so that memory does not grow with the file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bridge.errors import UnreadableAudio


@dataclass(frozen=True)
class ChannelGroup:
    """Input channels that the model sees together."""

    channels: tuple[int, ...]

    def expand(self, block: np.ndarray, width: int) -> np.ndarray:
        """The group's channels of ``block`` (``(channels, n)``), doubled up to ``width``."""
        picked = block[list(self.channels)]
        if len(self.channels) < width:
            picked = np.repeat(picked, width // len(self.channels), axis=0)
        return picked

    def collapse(self, block: np.ndarray) -> np.ndarray:
        """Model output ``(..., width, n)`` back to the group's own channel count."""
        if len(self.channels) == 1:
            return block.mean(axis=-2, keepdims=True, dtype=np.float32)
        return block


def channel_groups(channels: int, width: int = 2) -> tuple[ChannelGroup, ...]:
    """Cut ``channels`` input channels into groups of at most ``width``."""
    return tuple(
        ChannelGroup(tuple(range(first, min(first + width, channels))))
        for first in range(0, channels, width)
    )


@dataclass(frozen=True)
class MixStats:
    """Normalisation of one group: ``(x - mean) / std``."""

    mean: float
    std: float


class RunningStats:
    """Mean and unbiased standard deviation of a long signal, one block at a time.

    Blocks are merged with Chan's parallel formula in float64, so a DC offset does
    not cancel the variance away.
    """

    def __init__(self) -> None:
        self.count = 0
        self._mean = 0.0
        self._m2 = 0.0

    def update(self, values: np.ndarray) -> None:
        """Add a 1-D block of samples."""
        n = values.size
        if n == 0:
            return
        block = values.astype(np.float64)
        block_mean = float(block.mean())
        block_m2 = float(((block - block_mean) ** 2).sum())
        total = self.count + n
        delta = block_mean - self._mean
        self._mean += delta * n / total
        self._m2 += block_m2 + delta * delta * self.count * n / total
        self.count = total

    def result(self) -> MixStats:
        """The statistics so far, with demucs' ``+ 1e-8`` on the deviation."""
        variance = self._m2 / (self.count - 1) if self.count > 1 else 0.0
        return MixStats(mean=self._mean, std=float(np.sqrt(variance)) + 1e-8)


class GroupStats:
    """Statistics of every channel group over a stream of ``(channels, n)`` blocks."""

    def __init__(self, groups: tuple[ChannelGroup, ...], width: int) -> None:
        self._groups = groups
        self._width = width
        self._stats = [RunningStats() for _ in groups]

    def update(self, block: np.ndarray, *, source: str) -> None:
        """Add a block; ``source`` names the file in the error about bad samples.

        Raises:
            UnreadableAudio: The block holds NaN or infinite samples.
        """
        if not np.isfinite(block).all():
            raise UnreadableAudio(
                f"{source}: holds NaN or infinite samples; re-render it (a plug-in or the "
                "export produced invalid floating-point audio)",
                path=source,
            )
        for group, stats in zip(self._groups, self._stats, strict=True):
            stats.update(group.expand(block, self._width).mean(axis=0))

    def result(self) -> tuple[MixStats, ...]:
        """One :class:`MixStats` per group."""
        return tuple(stats.result() for stats in self._stats)
