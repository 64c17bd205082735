"""Several loaded models separating one stream as one model: an ensemble, routed stems,
or both (see :mod:`bridge.models.lineup`).

Every model needed for the wanted sources separates the same blocks in lockstep: the
input is shared (each model reads it through its own cursor), the model that has given
the least output so far is advanced next, and output is released as far as every model
has given it. Each ensemble then combines its models' stems (:mod:`bridge.models.ensemble`),
and the sources are put back in the order asked for. Memory stays bounded by the models'
own segment sizes: no model runs more than one segment ahead of another.

Models are loaded when a separation first needs them, through the ``load`` given, so a
model whose sources are not wanted is never loaded.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

import numpy as np

from bridge.errors import ModelCorrupt, SettingsError
from bridge.models.catalog import ModelSpec
from bridge.models.ensemble import Blend
from bridge.models.groups import ChannelGroup, MixStats
from bridge.models.lineup import Ensemble
from bridge.models.runner import default_batch_size, resolve_device
from bridge.settings import SeparationSettings


class Member(Protocol):
    """One loaded model of a lineup (a :class:`~bridge.models.loaded.LoadedModel` or a
    :class:`~bridge.models.chunked_model.ChunkedModel`)."""

    samplerate: int
    audio_channels: int

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
        """``(len(wanted), channels, n)`` blocks, ``length`` frames in all."""


#: Loads one model of the lineup under its own settings (see :func:`member_settings`).
LoadMember = Callable[[ModelSpec], Member]


def member_settings(settings: SeparationSettings, spec: ModelSpec) -> SeparationSettings:
    """The settings one model of a lineup runs under: the lineup's, for that model alone
    (shifts are a Demucs option, the Wiener filter's an Open-Unmix one: the other families
    run without them)."""
    own_config = spec.name == settings.lineup.primary.members[0].name
    return dataclasses.replace(
        settings,
        model=spec.name,
        model_config=settings.model_config if own_config else None,
        stems=(),
        ensemble=None,
        ensemble_weights=None,
        shifts=settings.shifts if spec.family == "demucs" else 0,
        wiener_iterations=settings.wiener_iterations if spec.family == "openunmix" else None,
        residual=settings.residual and spec.family == "openunmix",
    )


class CombinedModel:
    """The models of a lineup, separating as one.

    Args:
        settings: The lineup's settings.
        load: Loads a model of the lineup.

    Attributes:
        spec: The lineup as one model: its name, every model's signatures.
        samplerate: The rate every model takes and gives.
        audio_channels: The channels every model takes.
        sources: ``--model``'s sources.
    """

    def __init__(self, settings: SeparationSettings, *, load: LoadMember) -> None:
        self.settings = settings
        self.lineup = settings.lineup
        self._load = load
        lineup = self.lineup
        self.spec = ModelSpec(
            name=lineup.name,
            sources=lineup.sources,
            description=f"{lineup.name} together",
            family="ensemble",
            members=tuple(spec.name for spec in lineup.models),
        )
        self.samplerate = lineup.samplerate
        self.audio_channels = lineup.channels
        self.sources = lineup.sources
        self.device = resolve_device(settings.device)
        self.batch_size = settings.batch_size or default_batch_size(self.device)

    def with_settings(self, settings: SeparationSettings) -> CombinedModel:
        """The same models under other settings (loaded again only where they changed)."""
        if settings.lineup != self.lineup:
            raise SettingsError(
                f"these models are {self.lineup.name}, not {settings.lineup.name}; load those",
                key="model",
                value=settings.model,
            )
        return CombinedModel(settings, load=self._load)

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
        """Separate a stream of ``(channels, n)`` blocks at :attr:`samplerate`.

        Yields:
            ``(len(wanted), channels, n)`` float32 blocks, ``length`` frames in all.

        Raises:
            ModelCorrupt: A model does not take the rate and channels its config says.
            JobCancelled: ``cancel`` was set.
        """
        shares = self.lineup.providers(wanted)
        # Each model once, with every source any ensemble wants of it, in wanted order.
        asks: dict[str, list[str]] = {}
        for ensemble, sources in shares:
            for member in ensemble.members:
                asked = asks.setdefault(member.name, [])
                asked.extend(s for s in sources if s not in asked)
        specs = {spec.name: spec for spec in self.lineup.models}
        models = {name: self._loaded(specs[name]) for name in asks}
        progress = _Progress(len(models), on_progress)
        streams = [
            models[name].separate(
                copy,
                length=length,
                groups=groups,
                stats=stats,
                wanted=asked,
                on_progress=progress.part(index),
                cancel=cancel,
            )
            for index, ((name, asked), copy) in enumerate(
                zip(asks.items(), itertools.tee(blocks, len(asks)), strict=True)
            )
        ]
        combine = _Combine(shares, asks, wanted, self.audio_channels)
        for outputs in _lockstep(streams):
            yield from combine.push(dict(zip(asks, outputs, strict=True)))
        yield from combine.finish()

    def _loaded(self, spec: ModelSpec) -> Member:
        model = self._load(spec)
        if (model.samplerate, model.audio_channels) != (spec.samplerate, spec.channels):
            raise ModelCorrupt(
                f"{spec.name} runs at {model.samplerate} Hz with {model.audio_channels} "
                f"channels, not {spec.samplerate} Hz with {spec.channels} as its config "
                "says; use the config released with it"
            )
        return model


def _lockstep(streams: Sequence[Iterator[np.ndarray]]) -> Iterator[list[np.ndarray]]:
    """Blocks of equal length from every stream: the stream with the least output so far
    is read next, and what every stream has given is released."""
    held: list[list[np.ndarray]] = [[] for _ in streams]
    given = [0] * len(streams)
    ended = [False] * len(streams)
    while True:
        open_ = [i for i in range(len(streams)) if not ended[i]]
        if not open_:
            break
        behind = min(open_, key=lambda i: given[i])
        try:
            block = next(streams[behind])
        except StopIteration:
            ended[behind] = True
        else:
            held[behind].append(block)
            given[behind] += block.shape[-1]
        ready = min(sum(b.shape[-1] for b in blocks) for blocks in held)
        if ready:
            yield [_take(blocks, ready) for blocks in held]


def _take(blocks: list[np.ndarray], frames: int) -> np.ndarray:
    """The first ``frames`` frames of ``blocks`` (removed from it)."""
    joined = blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=-1)
    blocks.clear()
    if joined.shape[-1] > frames:
        blocks.append(joined[..., frames:])
    return joined[..., :frames]


class _Combine:
    """Each ensemble's blend of its models' blocks, the sources put back in wanted order.

    Spectral blends hold frames back, so their outputs are aligned again before a block
    of every wanted source is released.
    """

    def __init__(
        self,
        shares: Sequence[tuple[Ensemble, tuple[str, ...]]],
        asks: dict[str, list[str]],
        wanted: Sequence[str],
        channels: int,
    ) -> None:
        self._parts: list[tuple[list[str], dict[str, list[int]], Blend | None, list[int]]] = []
        for ensemble, sources in shares:
            members = [m.name for m in ensemble.members]
            rows = {name: [asks[name].index(s) for s in sources] for name in members}
            blend = (
                Blend(
                    ensemble.algorithm,
                    weights=ensemble.weights,
                    members=len(members),
                    shape=(len(sources), channels),
                )
                if len(members) > 1
                else None
            )
            self._parts.append((members, rows, blend, [wanted.index(s) for s in sources]))
        self._held: list[list[np.ndarray]] = [[] for _ in self._parts]
        self._wanted = len(wanted)
        self._channels = channels

    def push(self, outputs: dict[str, np.ndarray]) -> Iterator[np.ndarray]:
        for held, (members, rows, blend, _) in zip(self._held, self._parts, strict=True):
            picked = [outputs[name][rows[name]] for name in members]
            held.append(picked[0] if blend is None else blend.push(np.stack(picked)))
        return self._release()

    def finish(self) -> Iterator[np.ndarray]:
        for held, (_, _, blend, _) in zip(self._held, self._parts, strict=True):
            if blend is not None:
                held.append(blend.finish())
        return self._release()

    def _release(self) -> Iterator[np.ndarray]:
        ready = min(sum(b.shape[-1] for b in held) for held in self._held)
        if not ready:
            return
        block = np.empty((self._wanted, self._channels, ready), dtype=np.float32)
        for held, (_, _, _, places) in zip(self._held, self._parts, strict=True):
            block[places] = _take(held, ready)
        yield block


class _Progress:
    """The models' progress as one: their forward passes, added up."""

    def __init__(self, parts: int, report: Callable[[int, int], None] | None) -> None:
        self._done = [0] * parts
        self._total = [0] * parts
        self._report = report

    def part(self, index: int) -> Callable[[int, int], None]:
        def on_progress(done: int, total: int) -> None:
            self._done[index], self._total[index] = done, total
            if self._report is not None and all(self._total):
                self._report(sum(self._done), sum(self._total))

        return on_progress
