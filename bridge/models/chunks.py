"""Streaming, batched chunked separation for the networks that take whole chunks.

The band-split transformers and MDX23C are run the way python-audio-separator runs
them: the mix is cut into chunks of a fixed size at the reference's chunk starts,
each chunk goes through the network, and the outputs are overlap-added with the
reference's window and divided as the reference divides (by the summed windows, or
by the overlap count). A :class:`ChunkPlan` holds that schedule; this module only
streams it:

* input is pulled block by block, and output is released as soon as no later chunk
  can touch it, so memory depends on the chunk and batch sizes, never on the length
  of the file;
* chunks of every channel group go through the network together, ``batch_size`` at
  a time;
* samples before the start or after the end of the mix are read as zeros (the
  references pad with zeros).

The network call itself is injected (``run_batch``), so this module is plain NumPy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from bridge.errors import JobCancelled
from bridge.models.engine import InputWindow
from bridge.models.groups import ChannelGroup

#: ``run_batch(batch)`` maps ``(B, width, chunk)`` float32 input to
#: ``(B, sources, width, chunk)`` float32 output.
RunChunks = Callable[[np.ndarray], np.ndarray]
#: ``on_progress(done, total)`` is called after each forward pass with chunk counts.
OnProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class ChunkPlan:
    """Where the chunks of one stream start and how their outputs are blended.

    Attributes:
        length: Frames of the stream.
        chunk: Frames per chunk given to the network.
        starts: Each chunk's first frame, ascending (may lie before 0: zeros are read).
        window: ``(chunk,)`` weight of each output frame of a chunk.
        divisor: Divide the weighted sum by this; ``None`` divides by the summed windows.
        windows: Another window for some chunks, by index (shorter than ``chunk``: the
            output frames past its end are not used), for references that weight a
            chunk cut short by the end of the mix differently.
    """

    length: int
    chunk: int
    starts: tuple[int, ...]
    window: np.ndarray
    divisor: float | None = None
    windows: Mapping[int, np.ndarray] = field(default_factory=dict)

    def window_of(self, index: int) -> np.ndarray:
        """The window of chunk ``index``."""
        return self.windows.get(index, self.window)


def tail_aligned_plan(length: int, *, chunk: int, overlap: int) -> ChunkPlan:
    """python-audio-separator's schedule for the RoFormers: chunks every ``chunk //
    overlap`` frames, the last one ending at the end of the mix, a Hamming window, and
    the sum divided by the summed windows. A mix shorter than a chunk is one chunk."""
    if chunk <= 0 or overlap <= 0 or chunk // overlap <= 0:
        raise ValueError(f"chunk {chunk} and overlap {overlap} give no step")
    if length <= chunk:
        size = max(length, 1)
        return ChunkPlan(length, size, (0,), _hamming(chunk)[:size])
    step = chunk // overlap
    starts: list[int] = []
    for offset in range(0, length, step):
        if offset + chunk >= length:
            tail = length - chunk
            if not starts or starts[-1] != tail:
                starts.append(tail)
            break
        starts.append(offset)
    return ChunkPlan(length, chunk, tuple(starts), _hamming(chunk))


def padded_plan(length: int, *, chunk: int, overlap: int) -> ChunkPlan:
    """python-audio-separator's schedule for MDX23C: the mix padded with zeros by
    ``chunk - hop`` on both sides (and to a whole number of hops), chunks every
    ``hop = chunk // overlap`` frames, no window, the sum divided by ``overlap``."""
    hop = chunk // overlap
    if chunk <= 0 or overlap <= 0 or hop <= 0:
        raise ValueError(f"chunk {chunk} and overlap {overlap} give no hop")
    pad = hop - (length - chunk) % hop
    lead = chunk - hop
    padded = length + pad + 2 * lead
    count = (padded - chunk) // hop + 1
    starts = tuple(k * hop - lead for k in range(count))
    return ChunkPlan(length, chunk, starts, np.ones(chunk, dtype=np.float32), float(overlap))


def _hamming(size: int) -> np.ndarray:
    """The symmetric Hamming window (as ``scipy.signal.windows.hamming``)."""
    if size == 1:
        return np.ones(1, dtype=np.float32)
    n = np.arange(size, dtype=np.float64)
    return (0.54 - 0.46 * np.cos(2 * np.pi * n / (size - 1))).astype(np.float32)


class _Blend:
    """The weighted sum of chunk outputs over a moving stretch of one channel group."""

    def __init__(self, sources: int, width: int, plan: ChunkPlan) -> None:
        self._plan = plan
        self._base = 0
        self._total = np.zeros((sources, width, 0), dtype=np.float32)
        self._weight = np.zeros(0, dtype=np.float32)

    def add(self, start: int, output: np.ndarray, window: np.ndarray) -> None:
        # Only frames inside the mix are kept: padding around it is never output.
        lo = max(start, self._base)
        hi = min(start + window.shape[0], self._plan.length)
        if hi <= lo:
            return
        grow = hi - self._base - self._weight.shape[0]
        if grow > 0:
            shape = (*self._total.shape[:2], grow)
            self._total = np.concatenate([self._total, np.zeros(shape, np.float32)], axis=-1)
            self._weight = np.concatenate([self._weight, np.zeros(grow, np.float32)])
        here = slice(lo - self._base, hi - self._base)
        used = window[lo - start : hi - start]
        self._total[..., here] += output[..., lo - start : hi - start] * used
        self._weight[here] += used

    def take(self, stop: int) -> np.ndarray:
        """The finished stretch up to ``stop``; earlier frames are dropped."""
        count = stop - self._base
        total, weight = self._total[..., :count], self._weight[:count]
        divisor = self._plan.divisor
        # The references clamp the summed window at 1e-10 (never reached with their windows).
        scale = np.maximum(weight, np.float32(1e-10)) if divisor is None else np.float32(divisor)
        out: np.ndarray = total / scale
        self._total = self._total[..., count:].copy()
        self._weight = self._weight[count:].copy()
        self._base = stop
        return out


def separate_chunks(
    blocks: Iterable[np.ndarray],
    *,
    plan: ChunkPlan,
    groups: Sequence[ChannelGroup],
    sources: int,
    wanted_sources: Sequence[int],
    run_batch: RunChunks,
    width: int = 2,
    batch_size: int = 1,
    on_progress: OnProgress | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[np.ndarray]:
    """Separate a stream of mix blocks by ``plan``, yielding stem blocks once final.

    Args:
        blocks: ``(channels, n)`` float32 blocks at the model's rate, ``plan.length``
            frames in all.
        plan: The chunk schedule (see :func:`tail_aligned_plan`, :func:`padded_plan`).
        groups: How the input channels are grouped (see :mod:`bridge.models.groups`).
        sources: Number of sources the network gives.
        wanted_sources: Indices of the sources to produce, in output order.
        run_batch: Runs the network on a batch of chunks.
        width: Channels the network takes.
        batch_size: Chunks per forward pass.
        on_progress: Called with ``(done, total)`` chunks after each pass.
        cancel: When set, the next batch raises :class:`JobCancelled`.

    Yields:
        ``(len(wanted_sources), output channels, n)`` float32 blocks, in order;
        ``plan.length`` frames in all.

    Raises:
        JobCancelled: ``cancel`` was set.
    """
    work = [(index, g) for index in range(len(plan.starts)) for g in range(len(groups))]
    total = len(work)
    mix = InputWindow(iter(blocks), length=plan.length, groups=groups, stats=None, width=width)
    blends = [_Blend(sources, width, plan) for _ in groups]
    wanted = list(wanted_sources)
    emitted = done = 0
    for first in range(0, total, batch_size):
        if cancel is not None and cancel.is_set():
            raise JobCancelled("separation cancelled")
        batch = work[first : first + batch_size]
        inputs = np.stack([mix.read(g, plan.starts[index], plan.chunk) for index, g in batch])
        outputs = run_batch(inputs)
        for (index, g), output in zip(batch, outputs, strict=True):
            blends[g].add(plan.starts[index], output, plan.window_of(index))
        done += len(batch)
        if on_progress is not None:
            on_progress(done, total)
        # Chunks run in the order of their starts: every frame before the next start is
        # final, in every channel group.
        following = (
            plan.starts[work[first + batch_size][0]] if first + batch_size < total else plan.length
        )
        final = min(max(following, 0), plan.length)
        mix.drop_before(following)
        if final > emitted:
            pieces = [blend.take(final) for blend in blends]
            yield np.concatenate(
                [
                    group.collapse(piece[wanted])
                    for group, piece in zip(groups, pieces, strict=True)
                ],
                axis=1,
            ).astype(np.float32, copy=False)
            emitted = final
