"""Everything between the model's sources and the stem files, streamed block by block.

For each block of separated sources (already at the output rate) the stage

1. adds the residual (input minus the sum of all sources) to one source when
   exact-sum is on, computed in float64 against the input at the output rate,
2. sums sources into the requested stems (``instrumental``, ``no_drums``, ...),
3. runs each stem through its effects chain (:mod:`bridge.effects.chain`), with
   third-party plugins in a child process (:mod:`bridge.effects.plugin_host`),
4. meters each stem's loudness and true peak, so the manifest can flag silent
   stems and normalisation knows its gain once the last block has passed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from types import TracebackType

import numpy as np

from bridge.effects.chain import BlockProcessor, BoardProcessor, ChainStream
from bridge.effects.loudness import GainDecision, Loudness, LoudnessMeter, normalisation_gain_db
from bridge.effects.plan import EffectsPlan
from bridge.effects.plugin_host import ChildProcessor, PluginLoader, load_with_pedalboard
from bridge.stems import StemPlan

log = logging.getLogger(__name__)


class EffectsStage:
    """The post-separation work of one job; a context manager that owns the chains.

    Args:
        plan: What to do (see :func:`bridge.effects.plan.plan_effects`).
        stems: The output stems, in order.
        wanted: The model sources that arrive in each block, in order (all of them
            when exact-sum is on).
        channels: Channels of every stem.
        sample_rate: The output rate.
        mix: The input at the output rate, in blocks of any size; needed for exact-sum.
        plugin_loader: Loads third-party plugins in the child process.
    """

    def __init__(
        self,
        plan: EffectsPlan,
        *,
        stems: Sequence[StemPlan],
        wanted: Sequence[str],
        channels: int,
        sample_rate: int,
        mix: Iterator[np.ndarray] | None = None,
        plugin_loader: PluginLoader = load_with_pedalboard,
    ) -> None:
        self._plan = plan
        self._names = [stem.name for stem in stems]
        self._rows = [[list(wanted).index(source) for source in stem.sources] for stem in stems]
        self._residual_row = (
            list(wanted).index(plan.residual_source) if plan.residual_source is not None else None
        )
        if self._residual_row is not None and mix is None:
            raise ValueError("exact-sum needs the input mix")
        self._mix = _Frames(mix, channels) if mix is not None else None
        self._channels = channels
        self._sample_rate = sample_rate
        self._loader = plugin_loader
        self._chains: dict[str, ChainStream] = {}
        self._meters = {
            name: LoudnessMeter(sample_rate=sample_rate, channels=channels) for name in self._names
        }

    def __enter__(self) -> EffectsStage:
        try:
            for name in self._names:
                treatment = self._plan.treatments[name]
                if not treatment.chain and not treatment.tail_seconds:
                    continue
                label = f"{self._plan.preset.path} stems.{name}"
                processor: BlockProcessor
                if treatment.uses_plugins:
                    processor = ChildProcessor(
                        treatment.chain,
                        sample_rate=self._sample_rate,
                        label=label,
                        loader=self._loader,
                    )
                else:
                    processor = BoardProcessor(treatment.chain, sample_rate=self._sample_rate)
                self._chains[name] = ChainStream(
                    processor,
                    channels=self._channels,
                    sample_rate=self._sample_rate,
                    tail_frames=round(treatment.tail_seconds * self._sample_rate),
                )
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def push(self, sources: np.ndarray) -> dict[str, np.ndarray]:
        """Turn one block of sources ``(wanted, channels, n)`` into stem blocks by name."""
        if self._residual_row is not None and self._mix is not None:
            exact = sources.astype(np.float64)
            exact[self._residual_row] += self._mix.take(sources.shape[-1]) - exact.sum(axis=0)
            stems = [exact[rows].sum(axis=0).astype(np.float32) for rows in self._rows]
        else:
            stems = [sources[rows].sum(axis=0) for rows in self._rows]
        out = {}
        for name, block in zip(self._names, stems, strict=True):
            chain = self._chains.get(name)
            processed = chain.push(block) if chain is not None else block
            self._meters[name].update(processed)
            out[name] = processed
        return out

    def finish(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Flush every chain: the rest of each stem, and each kept tail (maybe empty)."""
        rests, tails = {}, {}
        empty = np.zeros((self._channels, 0), dtype=np.float32)
        for name in self._names:
            chain = self._chains.get(name)
            rest, tail = chain.finish() if chain is not None else (empty, empty)
            self._meters[name].update(rest)
            self._meters[name].update(tail)
            rests[name], tails[name] = rest, tail
        return rests, tails

    def loudness(self) -> dict[str, Loudness]:
        """Each stem's measured loudness and peaks (after its effects, before any gain)."""
        return {name: meter.result() for name, meter in self._meters.items()}

    def gains(
        self, measured: dict[str, Loudness], mix: Loudness | None
    ) -> dict[str, GainDecision] | None:
        """The normalisation gain of each stem, or ``None`` when the plan has no loudness.

        Args:
            measured: From :meth:`loudness`.
            mix: The input mix's loudness (needed for match-mix).
        """
        target = self._plan.loudness
        if target is None:
            return None
        if target.match_mix:
            lufs = mix.integrated_lufs if mix is not None else None
        else:
            lufs = target.target_lufs
        if lufs is None:
            # A silent mix gives nothing to match: the stems stay as they are.
            return {name: GainDecision(0.0, False) for name in measured}
        return {
            name: normalisation_gain_db(
                loudness, target_lufs=lufs, true_peak_ceiling_dbtp=target.true_peak_dbtp
            )
            for name, loudness in measured.items()
        }

    def close(self) -> None:
        """Stop every chain (and any plugin child)."""
        for chain in self._chains.values():
            try:
                chain.close()
            except Exception:
                log.warning("closing an effects chain failed", exc_info=True)
        self._chains.clear()


class _Frames:
    """Hand out exactly ``n`` frames at a time from an iterator of uneven blocks."""

    def __init__(self, blocks: Iterator[np.ndarray], channels: int) -> None:
        self._blocks = blocks
        self._buffer = np.zeros((channels, 0), dtype=np.float64)

    def take(self, frames: int) -> np.ndarray:
        while self._buffer.shape[1] < frames:
            block = next(self._blocks, None)
            if block is None:
                raise ValueError(f"the input ended {frames - self._buffer.shape[1]} frames early")
            self._buffer = np.concatenate([self._buffer, block.astype(np.float64)], axis=1)
        out, self._buffer = self._buffer[:, :frames], self._buffer[:, frames:]
        return out
