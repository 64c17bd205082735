"""A model loaded once on its device, ready to separate any number of streams.

The daemon and workers keep one model per process so it stays warm between jobs; the
CLI builds one per run. :func:`load_model` loads one model of any family: a demucs bag
as a :class:`LoadedModel` (demucs' own overlap-add, :mod:`bridge.models.engine`), the
others as a :class:`~bridge.models.chunked_model.ChunkedModel`. Several models (an
ensemble, routed stems) separate as one :class:`~bridge.models.combined.CombinedModel`.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
from demucs.apply import BagOfModels
from demucs.htdemucs import HTDemucs

from bridge.errors import ModelCorrupt, SettingsError
from bridge.models.batching import BatchingOptions, PassSharing, SharedPasses
from bridge.models.catalog import DEMUCS_OVERLAP, ModelSpec
from bridge.models.chunked_model import ChunkedModel
from bridge.models.combined import CombinedModel
from bridge.models.compiled import compiled_networks
from bridge.models.engine import MemberGeometry, OnProgress, RunBatch, separate_stream
from bridge.models.groups import ChannelGroup, MixStats
from bridge.models.loading import load_bag
from bridge.models.runner import (
    TorchRunner,
    check_precision,
    default_batch_size,
    resolve_device,
)
from bridge.models.weights import Download, Fetch, locate
from bridge.settings import SeparationSettings

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: A loaded model of any family, or several as one (all separate streams the same way).
Model = Union["LoadedModel", ChunkedModel, CombinedModel]


@dataclass(frozen=True)
class _Networks:
    """One copy of a bag's networks on its device, shared by every :meth:`with_settings`:
    what runs each member (its network or, on the CPU, its compiled core around it, so a
    warm model loads or compiles its cores once), the lock its runners share, and, in a
    worker whose jobs share passes, those passes."""

    modules: list[torch.nn.Module]
    lock: threading.Lock
    sharing: PassSharing | None


class LoadedModel:
    """A bag of networks on a device, with the settings it runs under.

    Args:
        settings: Model, device, shifts, overlap, segment, batch size, precision.
        bag: The loaded networks (see :meth:`load` to find and load them).
        spec: The model's catalog entry.
        batching: Share forward passes between the jobs separating at once on this model
            (threads of a studio worker); ``None``: each separation runs its own passes.
    """

    def __init__(
        self,
        settings: SeparationSettings,
        bag: BagOfModels,
        spec: ModelSpec,
        *,
        batching: BatchingOptions | None = None,
        networks: _Networks | None = None,
    ) -> None:
        self.settings = settings
        self.spec = spec
        self._bag = bag
        self.samplerate = int(bag.samplerate)
        self.audio_channels = int(bag.audio_channels)
        self.sources: tuple[str, ...] = tuple(bag.sources)
        device = resolve_device(settings.device)
        self.batch_size = settings.batch_size or default_batch_size(device)
        self._weights = [tuple(float(w) for w in weights) for weights in bag.weights]
        self._geometry = [
            self._member_geometry(network, w)
            for network, w in zip(bag.models, self._weights, strict=True)
        ]
        self._networks = (
            networks
            if networks is not None
            else _Networks(
                compiled_networks(bag.models, settings),
                threading.Lock(),
                None if batching is None else PassSharing(batching),
            )
        )
        self._runner = TorchRunner(
            self._networks.modules,
            device=device,
            precision=settings.precision,
            lock=self._networks.lock,
        )
        sharing = self._networks.sharing
        self._passes = None if sharing is None else sharing.passes(settings.precision, self._runner)
        self.device = device
        log.info(
            "%s ready on %s (batch %d, %s)", spec.name, device, self.batch_size, settings.precision
        )

    @classmethod
    def load(
        cls,
        settings: SeparationSettings,
        *,
        folders: Sequence[Path] | None = None,
        download: Download | None = None,
        offline: bool | None = None,
        batching: BatchingOptions | None = None,
    ) -> LoadedModel:
        """Find the model's weights (offline first), load them and place them on the device
        (``batching``: see the class).

        Raises:
            ModelNotFound: No weights and no way to download them.
            ModelCorrupt: The weights are damaged or not the model's.
            DeviceUnavailable: The device does not exist here.
        """
        spec = settings.lineup.one()
        check_precision(settings.precision, resolve_device(settings.device))
        files = locate(spec, folders=folders, download=download, offline=offline)
        return cls(settings, load_bag(files), spec, batching=batching)

    def with_settings(self, settings: SeparationSettings) -> LoadedModel:
        """The same loaded networks under other settings (shifts, overlap, batch...).

        Raises:
            SettingsError: ``settings`` names another model or device (load that instead).
        """
        if settings.model != self.spec.name or resolve_device(settings.device) != self.device:
            raise SettingsError(
                f"this separator holds {self.spec.name} on {self.device}, not "
                f"{settings.model} on {settings.device}; load that one instead",
                key="model",
                value=settings.model,
            )
        return LoadedModel(settings, self._bag, self.spec, networks=self._networks)

    def separate(
        self,
        blocks: Iterable[np.ndarray],
        *,
        length: int,
        groups: Sequence[ChannelGroup],
        stats: Sequence[MixStats],
        wanted: Sequence[str],
        on_progress: OnProgress | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[np.ndarray]:
        """Separate a stream of ``(channels, n)`` blocks at :attr:`samplerate`.

        Yields:
            ``(len(wanted), channels, n)`` float32 blocks, ``length`` frames in all.

        Raises:
            JobCancelled: ``cancel`` was set.
        """
        wanted_sources = self._wanted_indices(wanted)

        def stream(run_batch: RunBatch) -> Iterator[np.ndarray]:
            return separate_stream(
                blocks,
                length=length,
                groups=groups,
                stats=stats,
                members=self._geometry,
                sources=len(self.sources),
                wanted_sources=wanted_sources,
                run_batch=run_batch,
                width=self.audio_channels,
                shifts=self.settings.shifts,
                max_shift=int(0.5 * self.samplerate),
                batch_size=self.batch_size,
                rng=random.Random(0),
                on_progress=on_progress,
                cancel=cancel,
            )

        if self._passes is None:
            return stream(self._runner)
        return _joined(self._passes, stream)

    def _wanted_indices(self, wanted: Sequence[str]) -> list[int]:
        indices = [self.sources.index(name) for name in wanted]
        for k in indices:
            if not any(weights[k] for weights in self._weights):
                raise ModelCorrupt(
                    f"{self.spec.name}: no network of the bag produces {self.sources[k]} "
                    f"(all its weights are 0); use the official {self.spec.bag_file}"
                )
        return indices

    def _member_geometry(self, network: object, weights: tuple[float, ...]) -> MemberGeometry:
        user_segment = self.settings.segment_seconds
        segment = user_segment if user_segment is not None else network.segment  # type: ignore[attr-defined]
        segment_length = int(self.samplerate * segment)
        overlap = DEMUCS_OVERLAP if self.settings.overlap is None else self.settings.overlap
        stride = int((1 - overlap) * segment_length)
        valid_length: Callable[[int], int]
        if isinstance(network, HTDemucs) and user_segment is not None:
            fixed = int(user_segment * self.samplerate)

            def valid_length(_: int) -> int:
                return fixed

        elif hasattr(network, "valid_length"):
            valid_length = network.valid_length
        else:

            def valid_length(length: int) -> int:
                return length

        return MemberGeometry(segment_length, stride, weights, valid_length)


def _joined(
    passes: SharedPasses, stream: Callable[[RunBatch], Iterator[np.ndarray]]
) -> Iterator[np.ndarray]:
    """``stream`` on shared passes, taking part from its first block to its end (or its
    error, or its cancel)."""
    with passes.join() as run_batch:
        yield from stream(run_batch)


def load_model(
    settings: SeparationSettings,
    *,
    folders: Sequence[Path] | None = None,
    download: Download | None = None,
    fetch: Fetch | None = None,
    offline: bool | None = None,
    batching: BatchingOptions | None = None,
) -> LoadedModel | ChunkedModel:
    """Find and load the one model ``settings`` name, whatever its family (several are
    loaded one by one into a :class:`~bridge.models.combined.CombinedModel`).

    Args:
        settings: Which model, and how it runs.
        folders: Folders to search (default: the standard search order).
        download: Fetches a demucs file from Hugging Face (injectable for tests).
        fetch: Fetches another family's file from its URL (injectable for tests).
        offline: Never download.
        batching: Share a demucs model's forward passes between the jobs separating on it
            at once (see :class:`LoadedModel`); the other families run each job's own
            passes, one at a time (their runners hold a lock).

    Raises:
        ModelNotFound: No weights and no way to download them.
        ModelCorrupt: The weights are damaged or not the model's.
        DeviceUnavailable: The device does not exist here.
        SettingsError: An Open-Unmix option for a model of another family.
    """
    family = settings.lineup.one().family
    if family != "openunmix" and (settings.wiener_iterations is not None or settings.residual):
        flag = "--residual" if settings.residual else "--wiener-iterations"
        raise SettingsError(
            f"{flag} is an Open-Unmix option; {settings.lineup.one().name} is a {family} "
            f"model: leave {flag} out",
            key="residual" if settings.residual else "wiener_iterations",
            value=settings.residual or settings.wiener_iterations,
        )
    if family == "demucs":
        return LoadedModel.load(
            settings, folders=folders, download=download, offline=offline, batching=batching
        )
    return ChunkedModel.load(settings, folders=folders, fetch=fetch, offline=offline)
