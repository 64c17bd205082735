"""A network that takes whole chunks (the RoFormers, MDX23C), on its device, ready to
separate any number of streams through :mod:`bridge.models.chunks`.

A model trained for one target (``training.target_instrument``) gives that stem
alone; the other one is the mix minus it, as MSST and python-audio-separator make it.
It is computed here, block by block, from the very mix blocks that went in.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from bridge.models.chunks import ChunkPlan, separate_chunks
from bridge.models.groups import ChannelGroup, MixStats

#: Runs the network on ``(B, width, chunk)`` float32, giving ``(B, outputs, width, chunk)``.
RunChunks = Callable[[np.ndarray], np.ndarray]
#: The chunk schedule for a stream of a given length.
PlanFor = Callable[[int], ChunkPlan]


class ChunkedSeparation:
    """How one chunked network separates a stream.

    Args:
        outputs: The stems the network gives, in order.
        complement: The stem that is the mix minus the network's one output (a
            single-target model), or ``None``.
        run: The network call (on its device, at its precision).
        plan_for: The chunk schedule (chunk size, overlap) for a stream's length.
        width: Channels the network takes.
        batch_size: Chunks per forward pass.
    """

    def __init__(
        self,
        *,
        outputs: Sequence[str],
        complement: str | None,
        run: RunChunks,
        plan_for: PlanFor,
        width: int,
        batch_size: int,
    ) -> None:
        if complement is not None and len(outputs) != 1:
            raise ValueError("only a single-target network has a complement")
        self.outputs = tuple(outputs)
        self.complement = complement
        self.sources = (*self.outputs, complement) if complement else self.outputs
        self._run = run
        self._plan_for = plan_for
        self._width = width
        self._batch_size = batch_size

    def separate(
        self,
        blocks: Iterable[np.ndarray],
        *,
        length: int,
        groups: Sequence[ChannelGroup],
        stats: Sequence[MixStats],
        wanted: Sequence[str],
        on_progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[np.ndarray]:
        """Separate a stream of ``(channels, n)`` blocks (``stats`` is unused: these
        networks take the mix as it is).

        Yields:
            ``(len(wanted), channels, n)`` float32 blocks, ``length`` frames in all.
        """
        del stats
        plan = self._plan_for(length)
        network_wanted = [self.outputs.index(name) for name in self._network_stems(wanted)]
        if self.complement is None or self.complement not in wanted:
            stream = separate_chunks(
                blocks,
                plan=plan,
                groups=groups,
                sources=len(self.outputs),
                wanted_sources=network_wanted,
                run_batch=self._run,
                width=self._width,
                batch_size=self._batch_size,
                on_progress=on_progress,
                cancel=cancel,
            )
            yield from stream
            return
        mix = _Tee(iter(blocks))
        target = separate_chunks(
            mix,
            plan=plan,
            groups=groups,
            sources=1,
            wanted_sources=[0],
            run_batch=self._run,
            width=self._width,
            batch_size=self._batch_size,
            on_progress=on_progress,
            cancel=cancel,
        )
        for block in target:
            original = mix.take(block.shape[-1])
            stems = {self.outputs[0]: block[0], self.complement: original - block[0]}
            yield np.stack([stems[name] for name in wanted]).astype(np.float32, copy=False)

    def _network_stems(self, wanted: Sequence[str]) -> list[str]:
        """The network outputs needed for ``wanted`` (the target, for its complement too)."""
        needed = [name for name in wanted if name in self.outputs]
        if self.complement in wanted and self.outputs[0] not in needed:
            needed.append(self.outputs[0])
        return needed


class _Tee:
    """Hands the mix blocks on to the engine and keeps them until the output catches up
    (at most the engine's look-ahead: a chunk and a batch)."""

    def __init__(self, blocks: Iterator[np.ndarray]) -> None:
        self._blocks = blocks
        self._kept: deque[np.ndarray] = deque()

    def __iter__(self) -> Iterator[np.ndarray]:
        return self

    def __next__(self) -> np.ndarray:
        block = next(self._blocks)
        self._kept.append(block)
        return block

    def take(self, frames: int) -> np.ndarray:
        pieces = []
        while frames > 0:
            block = self._kept[0]
            if block.shape[-1] <= frames:
                pieces.append(self._kept.popleft())
                frames -= block.shape[-1]
            else:
                pieces.append(block[:, :frames])
                self._kept[0] = block[:, frames:]
                frames = 0
        return np.concatenate(pieces, axis=-1) if pieces else np.zeros((0, 0), np.float32)
