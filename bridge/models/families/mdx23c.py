"""MDX23C: the TFC-TDF v3 U-Net that MSST and python-audio-separator call ``TFC_TDF_net``.

A released model is an MSST ``.yaml`` and a ``.ckpt`` holding the network's state dict;
:mod:`bridge.models.families.msst_config` reads and checks both. :func:`load_mdx23c` adds
what only MDX23C needs checked (norm and activation names, sizes that the U-Net can
divide, a chunk it gives back whole), loads the state dict key for key and returns :class:`Mdx23c`
in eval mode, fp32.

The network works on the spectrogram and does its own framing::

    audio (batch, channels, samples)
      -> STFT: Hann window of n_fft (periodic), hop_length, centred (reflect padding);
         the first dim_f bins, real and imaginary parts as channels (channel-major)
      -> num_subbands equal sub-bands of the dim_f bins stacked as channels
      -> 1x1 conv -> U-Net over (frames, bins): num_scales levels of TFC-TDF blocks
         (3x3 convs, and a bottlenecked linear layer across the bins), strided
         convs by ``scale`` (frames, bins) down and transposed convs up, skips concatenated
      -> times the first conv's output, concatenated with the input spectrogram, 1x1 convs
      -> sub-bands back to bins, zeros for the bins above dim_f, inverse STFT
    stems (batch, stems, channels, hop_length * (samples // hop_length))

The U-Net needs a frame count (``samples // hop_length + 1``) that is a multiple of
``scale[0] ** num_scales``. The chunk size (``inference.chunk_size`` or
``audio.chunk_size``, as MSST picks) must be such a length and a multiple of ``hop_length``,
so that a chunk comes back at its own length.

Stems are ``training.instruments`` in order, or, for a model with a
``training.target_instrument``, that one stem alone (``stems == 1``). The other
instrument of such a model is not produced here: MSST and python-audio-separator take it
as the mixture minus the target, which is the caller's to do.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import torch
from torch import Tensor, nn

from bridge.errors import ModelCorrupt
from bridge.models.families.msst_config import (
    MDX23CArgs,
    MsstConfig,
    load_checkpoint,
    load_weights,
    read_config,
)
from bridge.models.runner import fft_device

log = logging.getLogger(__name__)

_NORMS = "BatchNorm, InstanceNorm or GroupNorm<groups> (e.g. GroupNorm4)"
_ACTS = "gelu, relu or elu<alpha> (e.g. elu1.0)"
_GROUP_NORM = re.compile(r"GroupNorm([1-9][0-9]*)")
_ELU = re.compile(r"elu([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)")


@dataclass(frozen=True)
class Mdx23cConfig:
    """An MSST config, checked as an MDX23C: what the network and its caller need.

    Attributes:
        path: The ``.yaml`` it came from.
        model: The model section (``act``, ``norm``, ``num_channels``, ``growth``...).
        stems: The stems :meth:`Mdx23c.forward` returns, in order: ``training.instruments``,
            or ``training.target_instrument`` alone.
        sample_rate: ``audio.sample_rate``, in Hz.
        channels: ``audio.num_channels``: audio channels in and out.
        chunk_size: Samples per chunk MSST's inference cuts.
        n_fft: ``audio.n_fft``.
        hop_length: ``audio.hop_length``, in samples.
        dim_f: ``audio.dim_f``: the lowest STFT bins, the only ones the network sees.
        scale: ``model.scale``: down-sampling factors (frames, bins) per level.
        batch_size: ``inference.batch_size``, or None when the file has none.
        num_overlap: ``inference.num_overlap``: chunks covering each sample, or None.
    """

    path: Path
    model: MDX23CArgs
    stems: tuple[str, ...]
    sample_rate: int
    channels: int
    chunk_size: int
    n_fft: int
    hop_length: int
    dim_f: int
    scale: tuple[int, int]
    batch_size: int | None
    num_overlap: int | None

    @property
    def frame_multiple(self) -> int:
        """The STFT frame count of an input must be a multiple of this."""
        return self.scale[0] ** self.model.num_scales

    def accepts(self, samples: int) -> bool:
        """Whether the network takes an input of ``samples`` samples."""
        return samples > 0 and (samples // self.hop_length + 1) % self.frame_multiple == 0

    @classmethod
    def from_msst(cls, msst: MsstConfig) -> Mdx23cConfig:
        """Check an MSST config read as ``mdx23c`` for what the network needs.

        Raises:
            ModelCorrupt: Not an MDX23C config, an unknown norm or activation, a scale
                that is not two factors, bins the levels cannot divide, group norms
                that do not divide the channels, or a chunk the network cannot take.
        """
        path, model, audio = msst.path, msst.model, msst.audio
        n_fft, hop_length, dim_f = audio.n_fft, audio.hop_length, audio.dim_f
        if (
            not isinstance(model, MDX23CArgs)
            or n_fft is None
            or hop_length is None
            or dim_f is None
        ):
            _refuse(path, "is not an MDX23C config (model.num_subbands, audio.n_fft, ...)")
        if not (model.act in ("gelu", "relu") or _ELU.fullmatch(model.act)):
            _refuse(path, f"model.act = {model.act!r} is not allowed; use {_ACTS}")
        groups = _GROUP_NORM.fullmatch(model.norm)
        if not (model.norm in ("BatchNorm", "InstanceNorm") or groups):
            _refuse(path, f"model.norm = {model.norm!r} is not allowed; use {_NORMS}")
        if groups and (model.num_channels % int(groups[1]) or model.growth % int(groups[1])):
            _refuse(
                path,
                f"model.norm = {model.norm} needs model.num_channels = {model.num_channels} "
                f"and model.growth = {model.growth} to be multiples of {groups[1]}",
            )
        if len(model.scale) != 2:
            _refuse(
                path,
                f"model.scale = {list(model.scale)} is not allowed; use two factors "
                "(frames, bins), e.g. [2, 2]",
            )
        config = cls(
            path=path,
            model=model,
            stems=msst.stems,
            sample_rate=audio.sample_rate,
            channels=audio.num_channels,
            chunk_size=msst.chunk_size,
            n_fft=n_fft,
            hop_length=hop_length,
            dim_f=dim_f,
            scale=(model.scale[0], model.scale[1]),
            batch_size=msst.inference.batch_size,
            num_overlap=msst.inference.num_overlap,
        )
        config._check_sizes()
        return config

    def _check_sizes(self) -> None:
        """Refuse sizes the layers could not be built with or a chunk that would not fit."""
        path, model = self.path, self.model
        bins_total = self.n_fft // 2 + 1
        if self.dim_f > bins_total:
            _refuse(
                path,
                f"audio.dim_f = {self.dim_f} is more than the {bins_total} bins of n_fft = "
                f"{self.n_fft}",
            )
        bins_multiple = model.num_subbands * self.scale[1] ** model.num_scales
        if self.dim_f % bins_multiple:
            _refuse(
                path,
                f"audio.dim_f = {self.dim_f} does not split into {model.num_subbands} "
                f"sub-bands divided {model.num_scales} times by {self.scale[1]}; use a "
                f"multiple of {bins_multiple}",
            )
        bottom_bins = self.dim_f // bins_multiple
        if bottom_bins < model.bottleneck_factor:
            _refuse(
                path,
                f"model.bottleneck_factor = {model.bottleneck_factor} leaves no bins of the "
                f"{bottom_bins} at the lowest level; use at most {bottom_bins}",
            )
        if self.chunk_size % self.hop_length or not self.accepts(self.chunk_size):
            multiples = max(1, round(self.chunk_size / self.hop_length / self.frame_multiple))
            _refuse(
                path,
                f"chunk_size = {self.chunk_size} is not a length the network gives back "
                f"whole: hop_length x (frames - 1) with frames a multiple of "
                f"{self.frame_multiple}, e.g. "
                f"{self.hop_length * (multiples * self.frame_multiple - 1)}",
            )


def _refuse(path: Path, problem: str) -> NoReturn:
    raise ModelCorrupt(f"{path}: {problem}; use the .yaml released with the checkpoint", path=path)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "BatchNorm":
        return nn.BatchNorm2d(channels)
    if kind == "InstanceNorm":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.GroupNorm(int(kind.removeprefix("GroupNorm")), channels)


def _act(kind: str) -> nn.Module:
    if kind == "gelu":
        return nn.GELU()
    if kind == "relu":
        return nn.ReLU()
    return nn.ELU(float(kind.removeprefix("elu")))


def _pre_activated(config: Mdx23cConfig, channels: int, layer: nn.Module) -> nn.Sequential:
    # norm, activation, layer: every convolution and TDF layer is preceded by both
    # (positions 0, 1, 2: the checkpoints' key names depend on them)
    return nn.Sequential(_norm(config.model.norm, channels), _act(config.model.act), layer)


class _TfcTdfBlock(nn.Module):
    """Two 3x3 convs with a bottlenecked linear layer across the bins between them."""

    def __init__(self, config: Mdx23cConfig, in_channels: int, channels: int, bins: int):
        super().__init__()
        narrow = bins // config.model.bottleneck_factor
        self.tfc1 = _pre_activated(
            config, in_channels, nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False)
        )
        self.tdf = nn.Sequential(
            *_pre_activated(config, channels, nn.Linear(bins, narrow, bias=False)),
            *_pre_activated(config, channels, nn.Linear(narrow, bins, bias=False)),
        )
        self.tfc2 = _pre_activated(
            config, channels, nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        )
        self.shortcut = nn.Conv2d(in_channels, channels, 1, 1, 0, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        skip = self.shortcut(x)
        x = self.tfc1(x)
        x = x + self.tdf(x)
        return self.tfc2(x) + skip


class _TfcTdf(nn.Module):
    def __init__(self, config: Mdx23cConfig, in_channels: int, channels: int, bins: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            _TfcTdfBlock(config, in_channels if i == 0 else channels, channels, bins)
            for i in range(config.model.num_blocks_per_scale)
        )

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class _Resample(nn.Module):
    """Down (strided conv) or up (transposed conv) by ``scale`` in frames and bins."""

    def __init__(self, config: Mdx23cConfig, in_channels: int, channels: int, *, up: bool):
        super().__init__()
        klass = nn.ConvTranspose2d if up else nn.Conv2d
        layer = klass(in_channels, channels, config.scale, config.scale, bias=False)
        self.conv = _pre_activated(config, in_channels, layer)

    def forward(self, x: Tensor) -> Tensor:
        result: Tensor = self.conv(x)
        return result


class _EncoderLevel(nn.Module):
    def __init__(self, config: Mdx23cConfig, channels: int, bins: int):
        super().__init__()
        self.tfc_tdf = _TfcTdf(config, channels, channels, bins)
        self.downscale = _Resample(config, channels, channels + config.model.growth, up=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        skip = self.tfc_tdf(x)
        return skip, self.downscale(skip)


class _DecoderLevel(nn.Module):
    def __init__(self, config: Mdx23cConfig, channels: int, bins: int):
        super().__init__()
        self.upscale = _Resample(config, channels + config.model.growth, channels, up=True)
        self.tfc_tdf = _TfcTdf(config, 2 * channels, channels, bins)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        result: Tensor = self.tfc_tdf(torch.cat([self.upscale(x), skip], 1))
        return result


class Mdx23c(nn.Module):
    """The MDX23C network, built from its config; attribute names are the checkpoints' keys.

    Args:
        config: What the ``.yaml`` says (see :meth:`Mdx23cConfig.from_msst`).
    """

    def __init__(self, config: Mdx23cConfig):
        super().__init__()
        self.config = config
        # Spectrogram channels: real and imaginary part of each channel in each sub-band
        subbands, growth = config.model.num_subbands, config.model.growth
        spectrum_channels = 2 * config.channels * subbands
        channels, bins = config.model.num_channels, config.dim_f // subbands
        self.first_conv = nn.Conv2d(spectrum_channels, channels, 1, 1, 0, bias=False)
        self.encoder_blocks = nn.ModuleList()
        for _ in range(config.model.num_scales):
            self.encoder_blocks.append(_EncoderLevel(config, channels, bins))
            channels, bins = channels + growth, bins // config.scale[1]
        self.bottleneck_block = _TfcTdf(config, channels, channels, bins)
        levels = []
        for _ in range(config.model.num_scales):
            channels, bins = channels - growth, bins * config.scale[1]
            levels.append(_DecoderLevel(config, channels, bins))
        self.decoder_blocks = nn.ModuleList(levels)
        self.final_conv = nn.Sequential(
            nn.Conv2d(channels + spectrum_channels, channels, 1, 1, 0, bias=False),
            _act(config.model.act),
            nn.Conv2d(channels, len(config.stems) * spectrum_channels, 1, 1, 0, bias=False),
        )

    def forward(self, audio: Tensor) -> Tensor:
        """Separate chunks of audio.

        Args:
            audio: ``(batch, channels, samples)``, float32, with ``samples`` a length
                :meth:`Mdx23cConfig.accepts` (``chunk_size`` is one).

        Returns:
            ``(batch, stems, channels, hop_length * (samples // hop_length))``: the
            stems of :attr:`Mdx23cConfig.stems`, as long as the input when ``samples``
            is a multiple of ``hop_length``.

        Raises:
            ValueError: ``audio`` has another shape, channel count or length.
        """
        config = self.config
        if audio.dim() != 3 or audio.shape[1] != config.channels:
            raise ValueError(
                f"MDX23C takes (batch, {config.channels}, samples) audio, not {tuple(audio.shape)}"
            )
        if not config.accepts(audio.shape[-1]):
            raise ValueError(
                f"MDX23C cannot take {audio.shape[-1]} samples: the frame count "
                f"(samples // {config.hop_length} + 1) must be a multiple of "
                f"{config.frame_multiple}; cut chunks of {config.chunk_size} samples"
            )
        # The STFTs run where fft_device says (the CPU for MPS); the U-Net on the device.
        window = torch.hann_window(config.n_fft, periodic=True, device=fft_device(audio.device))
        spectrum = self._spectrum(audio, window).to(audio.device)
        return self._waves(self.unet(spectrum), window, batch=audio.shape[0])

    def unet(self, spectrum: Tensor) -> Tensor:
        """Everything between the STFT and its inverse, on real tensors (what
        :mod:`bridge.models.compiled` exports)."""
        x = first = self.first_conv(spectrum)
        # The U-Net runs over (frames, bins): the TDF layers are linear across the bins
        x = x.transpose(-1, -2)
        skips = []
        for encoder in self.encoder_blocks:
            skip, x = encoder(x)
            skips.append(skip)
        x = self.bottleneck_block(x)
        for decoder in self.decoder_blocks:
            x = decoder(x, skips.pop())
        x = x.transpose(-1, -2) * first
        return self.final_conv(torch.cat([spectrum, x], 1))

    def _spectrum(self, audio: Tensor, window: Tensor) -> Tensor:
        """``(batch, channels, samples)`` to ``(batch, 2 * channels * subbands, bins, frames)``."""
        config = self.config
        batch, channels, samples = audio.shape
        stft = torch.stft(
            audio.reshape(batch * channels, samples).to(window.device),
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            window=window,
            center=True,
            return_complex=True,
        )
        parts = torch.view_as_real(stft).permute(0, 3, 1, 2)[:, :, : config.dim_f]
        # Channel c's real and imaginary parts, each split into sub-bands of adjacent bins
        return parts.reshape(
            batch,
            channels * 2 * config.model.num_subbands,
            config.dim_f // config.model.num_subbands,
            -1,
        )

    def _waves(self, spectrum: Tensor, window: Tensor, *, batch: int) -> Tensor:
        """The network's output spectrogram back to ``(batch, stems, channels, samples)``."""
        config = self.config
        frames = spectrum.shape[-1]
        parts = spectrum.reshape(-1, 2, config.dim_f, frames).to(window.device)
        parts = nn.functional.pad(parts, (0, 0, 0, config.n_fft // 2 + 1 - config.dim_f))
        waves = torch.istft(
            torch.complex(parts[:, 0], parts[:, 1]),
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            window=window,
            center=True,
        )
        return waves.reshape(batch, len(config.stems), config.channels, -1).to(spectrum.device)


def load_mdx23c(config_path: Path, checkpoint_path: Path) -> Mdx23c:
    """Load an MSST MDX23C model (``.yaml`` + ``.ckpt``) on the CPU, in eval mode, fp32.

    The ``.ckpt`` is opened with ``torch.load(weights_only=True)``: tensors only, no code.

    Raises:
        ModelCorrupt: The config is unreadable or not an MDX23C config, the checkpoint is
            unreadable or holds no state dict, or the state dict does not fit the config
            (the first missing, unexpected and misshapen keys are named).
    """
    msst = read_config(config_path, architecture="mdx23c")
    config = Mdx23cConfig.from_msst(msst)
    state = load_checkpoint(checkpoint_path)
    # Built without initialising: every tensor is about to come from the checkpoint
    with torch.device("meta"):
        network = Mdx23c(config)
    network.to_empty(device="cpu")
    load_weights(network, state, checkpoint=checkpoint_path, config=msst)
    network.eval()
    log.info(
        "loaded MDX23C %s (%s) from %s",
        checkpoint_path.name,
        ", ".join(config.stems),
        checkpoint_path.parent,
    )
    return network
