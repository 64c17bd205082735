"""Run one stem through its effects chain, block by block, keeping its exact length.

pedalboard plugins are prepared for the size of the first block they see and
reset when a larger one arrives, so a stream of uneven blocks sounds different
from one call over the whole file. :class:`ChainStream` therefore cuts the stem
into equal blocks of :data:`BLOCK_FRAMES` (the last one padded with silence) and
processes them with ``reset=False``; the result equals one-shot processing.

A plugin with latency returns fewer frames than it was given at first; the
stream feeds silence at the end until every input frame has come back, so the
stem ends up exactly as long as the input. Tails (reverb, delay) past the input's
end are cut, unless the preset keeps ``tail_seconds`` of them, which the manifest
then records.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import pedalboard

from bridge.effects.presets import EffectSpec
from bridge.errors import EffectError

log = logging.getLogger(__name__)

#: Frames per call into pedalboard (its default buffer size).
BLOCK_FRAMES = 8192
#: How much silence a plugin may need to return its delayed audio.
_MAX_LATENCY_SECONDS = 10.0


class BlockProcessor(Protocol):
    """Something that processes equal ``(channels, BLOCK_FRAMES)`` blocks of one stem."""

    def process(self, block: np.ndarray) -> np.ndarray:
        """Process one block; may return fewer frames while it fills its latency."""
        ...

    def close(self) -> None:
        """Release what the processor holds (a child process, plugin instances)."""
        ...


def build_board(specs: Sequence[EffectSpec]) -> pedalboard.Pedalboard:
    """A pedalboard of built-in effects, in order.

    Raises:
        EffectError: pedalboard refused a value (the catalog's ranges should prevent it).
    """
    plugins = []
    for spec in specs:
        if spec.is_plugin:
            raise EffectError(f"{spec.describe()} is a third-party plugin; it runs in a child")
        try:
            plugins.append(getattr(pedalboard, spec.effect)(**dict(spec.parameters)))
        except (TypeError, ValueError) as exc:
            raise EffectError(f"{spec.describe()}: pedalboard refused it ({exc})") from exc
    return pedalboard.Pedalboard(plugins)


class BoardProcessor:
    """Built-in effects run in this process (they are pedalboard's own, trusted code)."""

    def __init__(self, specs: Sequence[EffectSpec], *, sample_rate: int) -> None:
        self._board = build_board(specs)
        self._sample_rate = sample_rate

    def process(self, block: np.ndarray) -> np.ndarray:
        """See :class:`BlockProcessor`."""
        return self._board.process(
            block, self._sample_rate, buffer_size=BLOCK_FRAMES, reset=False
        ).astype(np.float32, copy=False)

    def close(self) -> None:
        """See :class:`BlockProcessor`."""
        self._board.reset()


class ChainStream:
    """Feed one stem through a processor in equal blocks and give back exact lengths.

    Args:
        processor: Runs the chain.
        channels: The stem's channel count.
        sample_rate: The stem's rate (for the latency limit).
        tail_frames: Frames to keep past the end of the input.
    """

    def __init__(
        self, processor: BlockProcessor, *, channels: int, sample_rate: int, tail_frames: int = 0
    ) -> None:
        self._processor = processor
        self._channels = channels
        self._tail_frames = tail_frames
        self._max_flush = int(_MAX_LATENCY_SECONDS * sample_rate) + tail_frames
        self._pending = np.zeros((channels, 0), dtype=np.float32)
        self._taken = 0
        self._given = 0

    def push(self, block: np.ndarray) -> np.ndarray:
        """Take ``(channels, n)`` frames; return the processed frames ready so far."""
        self._taken += block.shape[1]
        self._pending = np.concatenate([self._pending, block.astype(np.float32)], axis=1)
        out = []
        while self._pending.shape[1] >= BLOCK_FRAMES:
            out.append(self._run(self._pending[:, :BLOCK_FRAMES]))
            self._pending = self._pending[:, BLOCK_FRAMES:]
        return self._body(out)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """Flush the chain.

        Returns:
            The rest of the stem (so that everything returned equals the input's
            length) and the kept tail (``tail_frames`` long, possibly empty).

        Raises:
            EffectError: The chain never returned its delayed audio.
        """
        wanted = self._taken + self._tail_frames
        chunks = []
        produced = self._given
        flushed = 0
        while produced < wanted:
            if flushed > self._max_flush:
                raise EffectError(
                    f"an effect held back its audio for more than {_MAX_LATENCY_SECONDS:g} s "
                    "of silence; remove it from the preset"
                )
            # The input's last partial block, then silence, always in whole blocks.
            block = np.zeros((self._channels, BLOCK_FRAMES), dtype=np.float32)
            block[:, : self._pending.shape[1]] = self._pending
            flushed += BLOCK_FRAMES - self._pending.shape[1]
            self._pending = self._pending[:, :0]
            out = self._run(block)
            chunks.append(out)
            produced += out.shape[1]
        self._pending = self._pending[:, :0]
        everything = (
            np.concatenate(chunks, axis=1) if chunks else np.zeros((self._channels, 0), np.float32)
        )
        body_left = self._taken - self._given
        self._given = self._taken
        return everything[:, :body_left], everything[:, body_left : body_left + self._tail_frames]

    def close(self) -> None:
        """Release the processor."""
        self._processor.close()

    def _run(self, block: np.ndarray) -> np.ndarray:
        out = self._processor.process(np.ascontiguousarray(block))
        if out.shape[0] != self._channels or not np.isfinite(out).all():
            raise EffectError(
                "an effect returned audio with NaN/Inf samples or the wrong channel count; "
                "remove it from the preset or change its settings"
            )
        return out

    def _body(self, chunks: list[np.ndarray]) -> np.ndarray:
        if not chunks:
            return np.zeros((self._channels, 0), dtype=np.float32)
        out = np.concatenate(chunks, axis=1)
        # Never hand out more than was taken: the rest is flushed in finish().
        out = out[:, : self._taken - self._given]
        self._given += out.shape[1]
        return out
