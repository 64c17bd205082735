"""Open-Unmix (``umxhq``, ``umx``, ``umxl``, ``umxse``): one spectrogram LSTM per target,
then the reference's multichannel Wiener filter (:mod:`bridge.models.families.wiener`).

A model is one state dict per target, ``<target>-<sha256 prefix>.pth`` (``umxse``:
``<target>_<prefix>.pth``), as the ``openunmix`` package's hub code downloads them from
Zenodo. Each is opened with ``torch.load(weights_only=True)``; its hidden size, LSTM
layers and cut-off bin are read from its shapes (the reference's loaders fix them per
model name), and every shape is checked against the model's STFT before anything runs.

A chunk runs as ``openunmix.model.Separator.forward`` runs a whole track::

    audio (B, 2, n) -> STFT (Hann, n_fft, hop, centred, reflect) -> |X| (mono models:
    the mean over the channels) -> each target's network -> magnitudes
    -> Wiener filter per window of 300 frames (iterations, residual) -> inverse STFT, n

The LSTM is bidirectional over everything it is given, so memory would grow with the
track: a mix longer than one chunk (at least 30 s, ``--segment`` for more) is cut into
chunks overlapping by ``--overlap`` (default 0.1 of a chunk), each separated alone, and
cross-faded (linear ramps over the overlap, divided by the summed ramps). Chunks start
on multiples of 300 STFT hops, so that their frames and Wiener windows are the whole
track's; a chunk is a little longer than asked for, to step by whole multiples (see
:func:`crossfade_plan`). A mix no longer than one chunk is one chunk: exactly the
reference's result.

With ``residual`` the Wiener filter has one more source, the mix minus the targets, as
the reference's ``--residual``; only the targets are given as stems (exact-sum puts
what they leave into one stem, see :mod:`bridge.pipeline.postprocess`).
"""

from __future__ import annotations

import logging
import math
import pickle
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from zipfile import BadZipFile

import numpy as np
import torch
from torch import nn

from bridge.errors import ModelCorrupt, SettingsError
from bridge.models.catalog import UNMIX_WIENER_ITERATIONS
from bridge.models.chunks import ChunkPlan
from bridge.models.families.wiener import wiener
from bridge.models.runner import fft_device

log = logging.getLogger(__name__)

#: Chunk length when the settings leave it to the model.
DEFAULT_CHUNK_SECONDS = 30.0
#: The shortest chunk allowed: the LSTM needs context on both sides.
MIN_CHUNK_SECONDS = 30.0
#: Cross-fade between chunks, as a fraction of a chunk, unless the settings say.
DEFAULT_OVERLAP = 0.1
#: The reference's Wiener iterations (its CLI's ``--niter``; the Separator class says 0).
DEFAULT_WIENER_ITERATIONS = UNMIX_WIENER_ITERATIONS
#: Frames the reference filters at a time (``wiener_win_len``).
WIENER_FRAMES = 300
#: Audio channels in and out (a mono model averages the magnitudes, as the reference).
WIDTH = 2


@dataclass(frozen=True)
class UnmixStft:
    """The STFT and channels an Open-Unmix model was trained with.

    Attributes:
        n_fft: FFT size (Hann window of that length).
        hop: Hop in samples.
        channels: Channels each target network takes (1: the mean magnitude).
    """

    n_fft: int
    hop: int
    channels: int

    @property
    def bins(self) -> int:
        """Frequency bins of a frame."""
        return self.n_fft // 2 + 1


#: The reference's STFT per model (``openunmix/__init__.py``).
STFTS: Mapping[str, UnmixStft] = {
    "umxhq": UnmixStft(4096, 1024, 2),
    "umx": UnmixStft(4096, 1024, 2),
    "umxl": UnmixStft(4096, 1024, 2),
    "umxse": UnmixStft(1024, 512, 1),
}


class UnmixNetwork(nn.Module):
    """One target's network, with the reference's ``OpenUnmix`` parameter names.

    Args:
        bins: Bins of the spectrogram it is given and gives back.
        max_bin: Bins it looks at (the rest are cut off before the first layer).
        channels: Channels of the spectrogram.
        hidden: Width of the layers.
        layers: LSTM layers.
        bidirectional: Whether the LSTM also runs backwards (all published models do).
    """

    def __init__(
        self,
        *,
        bins: int,
        max_bin: int,
        channels: int,
        hidden: int,
        layers: int,
        bidirectional: bool = True,
    ) -> None:
        super().__init__()
        self.bins, self.max_bin, self.hidden = bins, max_bin, hidden
        self.fc1 = nn.Linear(max_bin * channels, hidden, bias=False)
        self.bn1 = nn.BatchNorm1d(hidden)
        self.lstm = nn.LSTM(
            input_size=hidden,
            hidden_size=hidden // 2 if bidirectional else hidden,
            num_layers=layers,
            bidirectional=bidirectional,
            batch_first=False,
        )
        self.fc2 = nn.Linear(hidden * 2, hidden, bias=False)
        self.bn2 = nn.BatchNorm1d(hidden)
        self.fc3 = nn.Linear(hidden, bins * channels, bias=False)
        self.bn3 = nn.BatchNorm1d(bins * channels)
        self.input_mean = nn.Parameter(torch.zeros(max_bin))
        self.input_scale = nn.Parameter(torch.ones(max_bin))
        self.output_scale = nn.Parameter(torch.ones(bins))
        self.output_mean = nn.Parameter(torch.ones(bins))

    def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
        """``(B, channels, bins, frames)`` magnitudes to the target's, same shape."""
        x = spectrogram.permute(3, 0, 1, 2)
        frames, batch, channels, _ = x.shape
        mix = x
        x = (x[..., : self.max_bin] + self.input_mean) * self.input_scale
        x = self.bn1(self.fc1(x.reshape(-1, channels * self.max_bin)))
        x = torch.tanh(x.reshape(frames, batch, self.hidden))
        x = torch.cat([x, self.lstm(x)[0]], -1)
        x = torch.relu(self.bn2(self.fc2(x.reshape(-1, x.shape[-1]))))
        x = self.bn3(self.fc3(x)).reshape(frames, batch, channels, self.bins)
        x = x * self.output_scale + self.output_mean
        return (torch.relu(x) * mix).permute(1, 2, 3, 0)


class UnmixSeparator(nn.Module):
    """The targets' networks and the Wiener filter: ``openunmix.model.Separator``.

    Args:
        targets: Each target's network, in output order.
        stft: The model's STFT.
        iterations: Wiener expectation-maximisation steps.
        residual: Filter with the mix minus the targets as one more source (not output).
    """

    window: torch.Tensor

    def __init__(
        self,
        targets: Sequence[UnmixNetwork],
        *,
        stft: UnmixStft,
        iterations: int,
        residual: bool,
    ) -> None:
        super().__init__()
        if len(targets) + residual < 2 and iterations > 0:
            raise SettingsError(
                f"wiener iterations {iterations} need two sources or more; this model has "
                "one target: add --residual or use --wiener-iterations 0",
                key="wiener_iterations",
                value=iterations,
            )
        self.targets = nn.ModuleList(targets)
        self.stft = stft
        self.iterations = iterations
        self.residual = residual
        self.register_buffer("window", torch.hann_window(stft.n_fft), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """``(B, 2, n)`` float32 mixes to ``(B, targets, 2, n)`` float32 stems."""
        batch, channels, length = audio.shape
        # Reflect padding needs more samples than half a frame: a shorter chunk is
        # separated with zeros after it (the reference refuses it).
        short = max(0, self.stft.n_fft // 2 + 1 - length)
        padded = nn.functional.pad(audio, (0, short)) if short else audio
        # The STFTs and the complex filter run where complex numbers are supported (the
        # CPU beside an Apple GPU, as demucs does); the networks on the model's device.
        fft = fft_device(audio.device)
        window = self.window.to(fft)
        spectrum = torch.stft(
            padded.reshape(-1, padded.shape[-1]).to(fft),
            n_fft=self.stft.n_fft,
            hop_length=self.stft.hop,
            window=window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        ).reshape(batch, channels, self.stft.bins, -1)
        magnitude = spectrum.abs().to(audio.device)
        if self.stft.channels == 1:
            magnitude = magnitude.mean(dim=1, keepdim=True)
        estimates = torch.stack([target(magnitude) for target in self.targets], dim=-1)
        # (B, frames, bins, channels[, sources]) for the filter.
        estimates = estimates.permute(0, 3, 2, 1, 4).to(fft)
        mix = spectrum.permute(0, 3, 2, 1)
        frames = mix.shape[1]
        targets = len(self.targets)
        # Filled window by window in the inverse STFT's layout (no copy of it after).
        kept = torch.empty(
            (batch, targets, channels, self.stft.bins, frames), dtype=mix.dtype, device=mix.device
        )
        for sample in range(batch):
            for first in range(0, frames, WIENER_FRAMES):
                span = slice(first, min(frames, first + WIENER_FRAMES))
                filtered = wiener(
                    estimates[sample, span],
                    mix[sample, span],
                    iterations=self.iterations,
                    residual=self.residual,
                )
                kept[sample, ..., span] = filtered[..., :targets].permute(3, 2, 1, 0)
        waves = torch.istft(
            kept.reshape(-1, *kept.shape[-2:]),
            n_fft=self.stft.n_fft,
            hop_length=self.stft.hop,
            window=window,
            center=True,
            length=padded.shape[-1],
        )
        return waves.reshape(batch, targets, channels, -1)[..., :length].to(audio.device)


def read_target(path: Path, *, stft: UnmixStft) -> UnmixNetwork:
    """One target's network from its ``.pth`` state dict, its shapes checked.

    Raises:
        ModelCorrupt: The file is no state dict, lacks a tensor, or its shapes are not
            those of an Open-Unmix network on this model's STFT.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's text for it suggests weights_only=False: code from the file is never run.
        raise ModelCorrupt(
            f"{path}: is not a torch file of tensors alone (damaged, or it names code to "
            "run); download it again",
            path=path,
        ) from exc
    except (OSError, RuntimeError, EOFError, ValueError, BadZipFile) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelCorrupt(
            f"{path}: cannot be read as an Open-Unmix state dict ({first}); download it again",
            path=path,
        ) from exc
    if not isinstance(state, dict) or not all(
        isinstance(value, torch.Tensor) for value in state.values()
    ):
        raise ModelCorrupt(
            f"{path}: is not a state dict of tensors; an Open-Unmix target file is one "
            "(download it again)",
            path=path,
        )
    return _build(path, state, stft)


def _build(path: Path, state: Mapping[str, torch.Tensor], stft: UnmixStft) -> UnmixNetwork:
    needed = ("fc1.weight", "input_mean", "lstm.weight_ih_l0")
    missing = [key for key in needed if key not in state]
    if missing:
        raise ModelCorrupt(
            f"{path}: has no {', '.join(missing)}; it is not an Open-Unmix target "
            "network: download it again",
            path=path,
        )
    hidden = state["fc1.weight"].shape[0]
    max_bin = state["input_mean"].shape[0]
    layers = len({key for key in state if re.fullmatch(r"lstm\.weight_ih_l\d+", key)})
    network = UnmixNetwork(
        bins=stft.bins,
        max_bin=max_bin,
        channels=stft.channels,
        hidden=hidden,
        layers=layers,
        bidirectional="lstm.weight_ih_l0_reverse" in state,
    )
    expected = network.state_dict()
    wrong = [
        f"{key} {list(state[key].shape)} (expected {list(value.shape)})"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    absent = [key for key in expected if key not in state]
    if wrong or absent:
        problem = "; ".join(wrong) if wrong else f"no {', '.join(absent)}"
        raise ModelCorrupt(
            f"{path}: its shapes do not fit an Open-Unmix network on a {stft.n_fft}-point "
            f"STFT with {stft.channels} channel(s): {problem}; use this model's own file "
            "(download it again)",
            path=path,
        )
    # Older releases also hold the STFT window and the rate: not parameters here.
    network.load_state_dict({key: state[key] for key in expected})
    return network.eval()


def load_separator(
    paths: Sequence[Path], *, stft: UnmixStft, iterations: int, residual: bool
) -> UnmixSeparator:
    """The separator of a model from its targets' files, in output order.

    Raises:
        ModelCorrupt: A file is damaged or its shapes do not fit (see :func:`read_target`).
        SettingsError: Wiener iterations with a single source.
    """
    targets = [read_target(path, stft=stft) for path in paths]
    log.debug("Open-Unmix: %d targets, hidden %d", len(targets), targets[0].hidden)
    return UnmixSeparator(targets, stft=stft, iterations=iterations, residual=residual)


def crossfade_plan(length: int, *, chunk: int, fade: int, grid: int) -> ChunkPlan:
    """Chunks of at least ``chunk`` frames starting on multiples of ``grid`` frames,
    neighbours overlapping by ``fade`` frames, cross-faded by linear ramps over the
    overlap and divided by the summed weights. The chunks step by ``chunk - fade``
    rounded up to the grid and are that step plus the fade long; the last one may run
    past the end of the mix (zeros are read there). A mix no longer than a chunk is one
    chunk, weighted 1 throughout: exactly the network's output.

    The grid is the STFT hop times the Wiener filter's frames: each chunk's frames and
    filter windows are then those of the whole track, so a chunk differs from the
    reference on the whole track only near its ends.

    Raises:
        ValueError: A fade of 0 or more than half a chunk.
    """
    if fade <= 0 or 2 * fade > chunk:
        raise ValueError(f"a fade of {fade} frames does not fit chunks of {chunk}")
    step = math.ceil((chunk - fade) / grid) * grid
    size = step + fade
    if length <= size:
        one = max(length, 1)
        return ChunkPlan(length, one, (0,), np.ones(one, dtype=np.float32))
    count = 1 + math.ceil((length - size) / step)
    starts = tuple(k * step for k in range(count))
    # The ramps stay above 0 so the first and last frames keep their weight; two
    # neighbours' ramps add up to 1 where they overlap.
    ramp = (np.arange(fade, dtype=np.float64) + 1) / (fade + 1)
    window = np.ones(size)
    window[:fade], window[size - fade :] = ramp, ramp[::-1]
    return ChunkPlan(length, size, starts, window.astype(np.float32))


def chunk_frames(samplerate: int, *, segment_seconds: float | None) -> int:
    """Frames per chunk for ``--segment``.

    Raises:
        SettingsError: A segment shorter than :data:`MIN_CHUNK_SECONDS`.
    """
    seconds = DEFAULT_CHUNK_SECONDS if segment_seconds is None else segment_seconds
    if seconds < MIN_CHUNK_SECONDS:
        raise SettingsError(
            f"segment {seconds} s is too short for Open-Unmix, whose LSTM looks at the "
            f"whole chunk; use --segment {MIN_CHUNK_SECONDS:g} or more, or leave it out "
            f"({DEFAULT_CHUNK_SECONDS:g} s)",
            key="segment_seconds",
            value=seconds,
        )
    return round(seconds * samplerate)


def fade_frames(chunk: int, *, overlap: float | None) -> int:
    """Cross-fade frames for ``--overlap`` (a fraction of a chunk, at most a half).

    Raises:
        SettingsError: An overlap of 0 or above 0.5.
    """
    fraction = DEFAULT_OVERLAP if overlap is None else overlap
    if not 0 < fraction <= 0.5:
        raise SettingsError(
            f"overlap {fraction} is not allowed for Open-Unmix; chunks cross-fade over a "
            f"fraction of a chunk above 0 and at most 0.5 (default {DEFAULT_OVERLAP})",
            key="overlap",
            value=fraction,
        )
    return max(1, round(fraction * chunk))
