"""Stage 4, post-process: each block of separated sources on its way to the stem files.

A block arrives at the model's rate; it is converted back to the output rate and
goes through the effects stage (exact-sum residual, stem sums, chains, meters; see
:mod:`bridge.effects.stage`) into the stem writer. It runs on its own thread, fed
by the separate stage, so the model never waits for the disk.
"""

from __future__ import annotations

from types import TracebackType

import numpy as np

from bridge.audio.resample import StreamResampler, converted_length
from bridge.audio.writer import StemWriter
from bridge.effects.loudness import GainDecision, Loudness
from bridge.effects.plugin_host import PluginLoader
from bridge.effects.stage import EffectsStage
from bridge.pipeline.analyse import rate_blocks
from bridge.pipeline.prepare import PreparedInput


class PostProcess:
    """Blocks of sources in, stems into ``writer``; a context manager owning the chains.

    Args:
        prepared: The input and its output format, stems and effects.
        wanted: The model sources in each block, in order.
        model_rate: The rate the blocks arrive at.
        writer: Where the stems go.
        plugin_loader: Loads third-party plugins (in their child process).
    """

    def __init__(
        self,
        prepared: PreparedInput,
        *,
        wanted: tuple[str, ...],
        model_rate: int,
        writer: StemWriter,
        plugin_loader: PluginLoader,
    ) -> None:
        info, fmt, effects = prepared.info, prepared.output, prepared.effects
        self.out_length = converted_length(
            prepared.frames.length, info.sample_rate, fmt.sample_rate
        )
        self._channels = info.channels
        self._wanted = len(wanted)
        self._names = prepared.names
        self._writer = writer
        self._back = StreamResampler(
            in_rate=model_rate,
            out_rate=fmt.sample_rate,
            channels=len(wanted) * info.channels,
            out_frames=self.out_length,
        )
        mix = (
            rate_blocks(info, prepared.frames, fmt.sample_rate, self.out_length)
            if effects.residual_source is not None
            else None
        )
        self._stage = EffectsStage(
            effects,
            stems=prepared.stems,
            wanted=wanted,
            channels=info.channels,
            sample_rate=fmt.sample_rate,
            mix=mix,
            plugin_loader=plugin_loader,
        )

    def __enter__(self) -> PostProcess:
        self._stage.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stage.close()

    def push(self, item: tuple[np.ndarray, bool]) -> None:
        """One ``(wanted, channels, n)`` block at the model's rate, and whether it is the last."""
        block, last = item
        flat = self._back.push(block.reshape(self._wanted * self._channels, -1), last=last)
        stems = self._stage.push(flat.reshape(self._wanted, self._channels, -1))
        for name, stem in stems.items():
            self._writer.write(name, stem)
        if last:
            rests, tails = self._stage.finish()
            for name in self._names:
                self._writer.write(name, rests[name])
                self._writer.write(name, tails[name])

    def last_block(self) -> tuple[np.ndarray, bool]:
        """The empty block that ends the stream."""
        return np.zeros((self._wanted, self._channels, 0), dtype=np.float32), True

    def loudness(self) -> dict[str, Loudness]:
        """Each stem's loudness and peaks, once the last block has passed."""
        return self._stage.loudness()

    def gains(
        self, measured: dict[str, Loudness], mix: Loudness | None
    ) -> dict[str, GainDecision] | None:
        """Each stem's normalisation gain (``None`` without loudness normalisation)."""
        return self._stage.gains(measured, mix)
