"""Streaming sample-rate conversion with an exact output length.

soxr's stream gives the same samples as a one-shot conversion, whatever the block
sizes, and compensates its filter delay; this wrapper adds the one thing a stem
writer needs on top: exactly ``out_frames`` frames out, no more, no fewer.
"""

from __future__ import annotations

import numpy as np
import soxr


class StreamResampler:
    """Convert ``(channels, n)`` float32 blocks from one rate to another.

    Args:
        in_rate: Input frames per second.
        out_rate: Output frames per second.
        channels: Channel count of every block.
        out_frames: How many frames the whole stream must produce. Rounding in the
            converter can give one frame more or less; the surplus is dropped and a
            shortfall is filled by repeating the last frame.
    """

    def __init__(self, *, in_rate: int, out_rate: int, channels: int, out_frames: int) -> None:
        self._out_frames = out_frames
        self._produced = 0
        self._channels = channels
        self._last = np.zeros((channels, 1), dtype=np.float32)
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, channels, dtype="float32", quality="HQ")
        )

    def push(self, block: np.ndarray, *, last: bool = False) -> np.ndarray:
        """Convert one block; with ``last=True`` also flush and complete the length."""
        if self._stream is None:
            out = block
        else:
            converted = self._stream.resample_chunk(np.ascontiguousarray(block.T), last=last)
            out = np.ascontiguousarray(converted.T)
        out = out[:, : max(0, self._out_frames - self._produced)]
        self._produced += out.shape[1]
        if out.shape[1]:
            self._last = out[:, -1:]
        if last and self._produced < self._out_frames:
            missing = self._out_frames - self._produced
            out = np.concatenate([out, np.repeat(self._last, missing, axis=1)], axis=1)
            self._produced = self._out_frames
        return out.astype(np.float32, copy=False)

    def finish(self) -> np.ndarray:
        """Flush what is left, completing the stream to its exact length."""
        return self.push(np.zeros((self._channels, 0), dtype=np.float32), last=True)


def converted_length(frames: int, in_rate: int, out_rate: int) -> int:
    """The number of frames ``frames`` input frames become at ``out_rate``."""
    if in_rate == out_rate:
        return frames
    return round(frames * out_rate / in_rate)
