"""The families that take whole chunks, loaded once on their device: BS-RoFormer,
Mel-Band RoFormer and MDX23C (MSST's ``.ckpt`` + ``.yaml``, run with torch), UVR's
MDX-Net (``.onnx``, run with onnxruntime) and Open-Unmix (``.pth`` per target, torch).

They run as python-audio-separator runs them (:mod:`bridge.models.chunks`):

* RoFormers: chunks of ``stft_hop_length * (dim_t - 1)`` samples (``inference.dim_t``
  of the yaml), one every ``chunk / overlap``, the last ending at the end of the mix,
  a Hamming window; ``overlap`` windows cover each sample: the yaml's
  ``inference.num_overlap``, else 8, unless the settings say otherwise;
* MDX23C: chunks of ``hop_length * (dim_t - 1)``, the mix padded with zeros, no window,
  divided by the overlap (windows as for the RoFormers);
* MDX-Net: see :mod:`bridge.models.families.mdx_net` (overlap 0.25);
* Open-Unmix: chunks of 30 s or a little more, cross-faded over 0.1 of a chunk, a mix no
  longer than a chunk in one (see :mod:`bridge.models.families.openunmix`).
* Spleeter: spleeter's own segments of 512 STFT frames, one after another, their inverse
  STFTs added (no window, no overlap options; see :mod:`bridge.models.families.spleeter`).

``--segment`` sets the chunk (in seconds, rounded to whole STFT frames), ``--overlap``
the overlap as a fraction (for the RoFormers and MDX23C turned into a number of windows:
``1 / (1 - overlap)``), ``--batch-size`` the chunks per forward pass. A model trained for
one target gives that stem and the mix minus it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from bridge.errors import ModelCorrupt, SettingsError
from bridge.models.catalog import ModelSpec
from bridge.models.chunked import ChunkedSeparation
from bridge.models.chunks import ChunkPlan, padded_plan, tail_aligned_plan
from bridge.models.compiled import compiled_networks
from bridge.models.groups import ChannelGroup, MixStats
from bridge.models.runner import TorchRunner, check_precision, default_batch_size, resolve_device
from bridge.models.weights import Fetch, ModelFiles, locate_files
from bridge.settings import SeparationSettings

log = logging.getLogger(__name__)

#: python-audio-separator's overlap for the RoFormers and MDX23C whose yaml has no
#: ``inference.num_overlap``: windows per sample.
DEFAULT_WINDOWS = 8


class ChunkedModel:
    """A chunked network on a device, with the settings it runs under.

    Make one with :meth:`load`; :meth:`with_settings` reuses it under other settings.

    Attributes:
        settings: What it runs under.
        spec: The model.
        samplerate: The rate it takes and gives.
        audio_channels: The channels it takes (a mono mix is doubled up, as for demucs).
        sources: What it produces, in order (the catalog's, checked against the model).
        device: Where it runs.
        batch_size: Chunks per forward pass.
    """

    def __init__(
        self,
        settings: SeparationSettings,
        spec: ModelSpec,
        network: _Network,
    ) -> None:
        self.settings = settings
        self.spec = spec
        self._network = network
        self.samplerate = network.samplerate
        self.audio_channels = network.width
        self.device = network.device
        self.batch_size = settings.batch_size or default_batch_size(network.device)
        self._separation = ChunkedSeparation(
            outputs=network.outputs,
            complement=network.complement,
            run=network.run,
            plan_for=lambda length: network.plan(length, settings),
            width=network.width,
            batch_size=self.batch_size,
        )
        self.sources = self._separation.sources
        if tuple(self.sources) != tuple(spec.sources):
            raise ModelCorrupt(
                f"{spec.name}: its config gives the stems {', '.join(self.sources)}, not "
                f"{', '.join(spec.sources)} as the catalog says; use the official config"
            )
        log.info(
            "%s ready on %s (batch %d, %s)",
            spec.name,
            self.device,
            self.batch_size,
            settings.precision,
        )

    @classmethod
    def load(
        cls,
        settings: SeparationSettings,
        *,
        folders: Sequence[Path] | None = None,
        fetch: Fetch | None = None,
        offline: bool | None = None,
    ) -> ChunkedModel:
        """Find the model's files (offline first), load them and place them on the device.

        Raises:
            ModelNotFound: No files and no way to download them.
            ModelCorrupt: The files are damaged or not what their config says.
            DeviceUnavailable: The device does not exist here.
            SettingsError: A setting this family does not take (shifts), or a precision
                the device or runtime cannot run.
        """
        spec = settings.lineup.one()
        if settings.shifts:
            raise SettingsError(
                f"shifts {settings.shifts} is a Demucs option; {spec.name} is a "
                f"{spec.family} model: leave --shifts out",
                key="shifts",
                value=settings.shifts,
            )
        device = resolve_device(settings.device)
        check_precision(settings.precision, device)
        files = locate_files(spec, folders=folders, fetch=fetch, offline=offline)
        if spec.family == "mdx_net":
            network: _Network = _MdxNet(files, settings, device)
        elif spec.family == "openunmix":
            network = _OpenUnmix(files, settings, device)
        elif spec.family == "spleeter":
            from bridge.models.families.spleeter import SpleeterNetwork

            network = SpleeterNetwork(files, settings, device)
        else:
            network = _Msst(files, settings, device)
        return cls(settings, spec, network)

    def with_settings(self, settings: SeparationSettings) -> ChunkedModel:
        """The same loaded network under other settings (overlap, segment, batch...).

        Raises:
            SettingsError: ``settings`` names another model or device (load that instead).
        """
        if settings.model != self.settings.model or resolve_device(settings.device) != self.device:
            raise SettingsError(
                f"this model is {self.spec.name} on {self.device}, not {settings.model} on "
                f"{settings.device}; load that one instead",
                key="model",
                value=settings.model,
            )
        if settings.shifts:
            raise SettingsError(
                f"shifts {settings.shifts} is a Demucs option; leave --shifts out",
                key="shifts",
                value=settings.shifts,
            )
        return ChunkedModel(settings, self.spec, self._network)

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
            JobCancelled: ``cancel`` was set.
        """
        stream = self._separation.separate(
            blocks,
            length=length,
            groups=groups,
            stats=stats,
            wanted=wanted,
            on_progress=on_progress,
            cancel=cancel,
        )
        if isinstance(self._network, _OpenUnmix):
            # Its chunks are half a minute or more: handed on whole, each stage after the
            # model would hold copies of that much of every stem.
            return _in_pieces(stream, frames=self.samplerate)
        return stream


def _in_pieces(stream: Iterator[np.ndarray], *, frames: int) -> Iterator[np.ndarray]:
    """The blocks of ``stream`` cut into blocks of at most ``frames`` frames (views)."""
    for block in stream:
        for first in range(0, block.shape[-1], frames):
            yield block[..., first : first + frames]


class _Network(Protocol):
    """A loaded network and its reference's chunk schedule."""

    samplerate: int
    width: int
    outputs: tuple[str, ...]
    complement: str | None
    device: torch.device

    def run(self, batch: np.ndarray) -> np.ndarray:
        """``(B, width, chunk)`` float32 to ``(B, outputs, width, chunk)``."""

    def plan(self, length: int, settings: SeparationSettings) -> ChunkPlan:
        """The chunk schedule of a stream of ``length`` frames."""


class _Msst:
    """A RoFormer or MDX23C from its ``.ckpt`` and ``.yaml``, on torch."""

    def __init__(
        self, files: ModelFiles, settings: SeparationSettings, device: torch.device
    ) -> None:
        from bridge.models.catalog import msst_sources
        from bridge.models.families.msst_config import read_config

        checkpoint, config_path = files.paths
        config = read_config(config_path, architecture=files.spec.family)  # type: ignore[arg-type]
        network: torch.nn.Module
        if files.spec.family == "mdx23c":
            from bridge.models.families.mdx23c import load_mdx23c

            network = load_mdx23c(config_path, checkpoint)
            self._hop = int(config.audio.hop_length or 0)
            self._padded = True
        else:
            from bridge.models.families.roformer import load

            network = load(config, checkpoint)
            self._hop = int(getattr(config.model, "stft_hop_length", 0))
            self._padded = False
        self._frames = config.inference.dim_t or config.audio.dim_t
        self._chunk = config.chunk_size
        self._windows = config.inference.num_overlap or DEFAULT_WINDOWS
        self.samplerate = config.audio.sample_rate
        self.width = config.audio.num_channels
        stems = msst_sources(config.training.instruments, config.training.target_instrument)
        single = bool(config.training.target_instrument)
        self.outputs = stems[:1] if single else stems
        self.complement = stems[1] if single else None
        self.device = device
        self._runner = TorchRunner(
            compiled_networks([network], settings), device=device, precision=settings.precision
        )

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._runner(0, batch)

    def plan(self, length: int, settings: SeparationSettings) -> ChunkPlan:
        chunk = self._chunk_size(settings)
        windows = self._windows if settings.overlap is None else _windows(settings.overlap)
        if self._padded:
            return padded_plan(length, chunk=chunk, overlap=windows)
        return tail_aligned_plan(length, chunk=chunk, overlap=windows)

    def _chunk_size(self, settings: SeparationSettings) -> int:
        """python-audio-separator's chunk: the hop times one frame less than dim_t."""
        if settings.segment_seconds is not None and self._hop:
            frames = round(settings.segment_seconds * self.samplerate / self._hop) + 1
            return self._hop * (frames - 1)
        if self._frames and self._hop:
            return self._hop * (self._frames - 1)
        return self._chunk


class _MdxNet:
    """A UVR MDX-Net ``.onnx`` on onnxruntime."""

    def __init__(
        self, files: ModelFiles, settings: SeparationSettings, device: torch.device
    ) -> None:
        from bridge.models.catalog import stem_word
        from bridge.models.families.mdx_net import SAMPLE_RATE, WIDTH, load_mdx_net

        if settings.precision != "fp32":
            raise SettingsError(
                f"precision {settings.precision}: MDX-Net models run in fp32 on onnxruntime; "
                "use --precision fp32",
                key="precision",
                value=settings.precision,
            )
        segment = None
        if settings.segment_seconds is not None:
            from bridge.models.families.mdx_net import HOP

            segment = round(settings.segment_seconds * SAMPLE_RATE / HOP) + 1
        self._runner = load_mdx_net(files.paths[0], device=str(device), segment=segment)
        self.samplerate = SAMPLE_RATE
        self.width = WIDTH
        self.outputs = tuple(stem_word(name) for name in self._runner.stems)
        self.complement: str | None = None
        self.device = device

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._runner(batch)

    def plan(self, length: int, settings: SeparationSettings) -> ChunkPlan:
        if settings.overlap is None:
            return self._runner.plan(length)
        return self._runner.plan(length, overlap=settings.overlap)


class _OpenUnmix:
    """An Open-Unmix model's target networks and Wiener filter, on torch."""

    def __init__(
        self, files: ModelFiles, settings: SeparationSettings, device: torch.device
    ) -> None:
        from bridge.models.families import openunmix

        iterations = settings.wiener_iterations
        self._grid = openunmix.STFTS[files.spec.name].hop * openunmix.WIENER_FRAMES
        self._separator = openunmix.load_separator(
            files.paths,
            stft=openunmix.STFTS[files.spec.name],
            iterations=openunmix.DEFAULT_WIENER_ITERATIONS if iterations is None else iterations,
            residual=settings.residual,
        )
        self._openunmix = openunmix
        self.samplerate = files.spec.samplerate
        self.width = openunmix.WIDTH
        self.outputs = files.spec.sources
        self.complement: str | None = None
        self.device = device
        self._runner = TorchRunner(
            compiled_networks([self._separator], settings),
            device=device,
            precision=settings.precision,
        )

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._runner(0, batch)

    def plan(self, length: int, settings: SeparationSettings) -> ChunkPlan:
        chunk = self._openunmix.chunk_frames(
            self.samplerate, segment_seconds=settings.segment_seconds
        )
        fade = self._openunmix.fade_frames(chunk, overlap=settings.overlap)
        return self._openunmix.crossfade_plan(length, chunk=chunk, fade=fade, grid=self._grid)


def _windows(overlap: float) -> int:
    """An overlap fraction as the number of windows covering each sample."""
    return max(1, round(1 / (1 - overlap)))
