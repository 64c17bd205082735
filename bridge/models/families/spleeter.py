"""Spleeter (Deezer): its released TensorFlow checkpoints run in PyTorch.

A released model is a folder (``2stems``, ``4stems``, ``5stems``) of a TensorFlow
checkpoint: ``checkpoint``, ``model.index``, ``model.data-00000-of-00001`` (and
``model.meta``, the graph, which is not needed: the graph is rebuilt here). The files are
read as they are, at load, by :mod:`bridge.models.families.tf_checkpoint`: no TensorFlow
and no conversion step, so the official folder stays the only copy and a user's
``pretrained_models/`` folder works unchanged. The ``-16kHz`` configurations use the same
folders with a higher frequency cut-off. The configurations themselves are not in the
release (spleeter ships them in its package, ``spleeter/resources/*.json``); they are
:data:`CONFIGS`.

What spleeter 2.4's ``Separator`` computes, and so what this module computes::

    waveform (frames, 2), with frame_length zeros put before it
      -> STFT: periodic Hann window of 4096, hop 1024, the end padded with zeros
         (``tf.signal.stft(pad_end=True)``)
      -> magnitudes of the first F bins (1024, or 1536 for -16kHz), cut into
         segments of T = 512 frames (the last padded with zero frames)
      -> one U-Net per instrument: six 5x5 stride-2 convs (batch norm, LeakyReLU(0.2)
         or ELU), six 5x5 stride-2 transposed convs (ReLU or ELU, batch norm, skips),
         a 4x4 dilated conv; sigmoid times the input (2stems, 4stems), or a softmax
         across the instruments' logits times the input (5stems)
      -> ratio masks: (y_i^2 + eps/n) / (sum_j y_j^2 + eps), eps = 1e-10, extended
         with zeros up to 2049 bins
      -> each mask times the mix STFT, inverse STFT (irfft, the same window, summed
         without normalising), times 2/3, the leading frame_length cut off.

Spleeter runs the whole waveform in one graph (its CLI only the first 600 s, unless
``--duration`` says otherwise). The segments are independent (batch norm in inference
mode, no overlap), so StemBridge runs them one after another through
:mod:`bridge.models.chunks`: a chunk is one segment's 511 hops plus one frame of audio,
starting a frame early, and the overlap-added chunks (weight 1, no division) are exactly
the whole-waveform inverse STFT. Memory stays one segment deep; the numbers are the same.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bridge.errors import ModelCorrupt, SettingsError
from bridge.models.catalog import SPLEETER_URL
from bridge.models.chunks import ChunkPlan
from bridge.models.families.tf_checkpoint import Checkpoint, checkpoint_prefix, read_checkpoint
from bridge.models.runner import TorchRunner, fft_device
from bridge.models.weights import ModelFiles
from bridge.settings import SeparationSettings

log = logging.getLogger(__name__)

#: Spleeter's ``EstimatorSpecBuilder.EPSILON`` and ``WINDOW_COMPENSATION_FACTOR``.
EPSILON = 1e-10
WINDOW_COMPENSATION = 2.0 / 3.0
#: Keras' ``BatchNormalization`` epsilon (spleeter keeps the default).
BATCH_NORM_EPSILON = 1e-3
_ENCODER, _DECODER = 6, 6


@dataclass(frozen=True)
class SpleeterConfig:
    """One of spleeter's configurations (``spleeter/resources/<name>.json``).

    Attributes:
        name: The configuration (``4stems``, ``2stems-16kHz``...).
        folder: The release folder holding its weights (shared by the -16kHz variant).
        instruments: The stems, in spleeter's order.
        bins: ``F``: the frequency bins the U-Nets see.
        frames: ``T``: STFT frames per segment.
        frame_length: STFT window and FFT size.
        frame_step: STFT hop.
        separation_exponent: The power of the ratio masks.
        mask_extension: How masks reach the bins above ``bins``: ``zeros`` or ``average``.
        conv_activation: ``ELU``, ``ReLU``, else LeakyReLU(0.2) (spleeter's default).
        deconv_activation: ``ELU``, ``LeakyReLU``, else ReLU (spleeter's default).
        softmax: ``unet.softmax_unet`` (masks as a softmax across instruments).
        sample_rate: The rate the model takes.
        channels: The channels it takes.
    """

    name: str
    folder: str
    instruments: tuple[str, ...]
    bins: int = 1024
    frames: int = 512
    frame_length: int = 4096
    frame_step: int = 1024
    separation_exponent: float = 2.0
    mask_extension: str = "zeros"
    conv_activation: str = ""
    deconv_activation: str = ""
    softmax: bool = False
    sample_rate: int = 44100
    channels: int = 2

    @property
    def chunk(self) -> int:
        """Audio frames of one segment's STFT frames (511 hops and one window)."""
        return (self.frames - 1) * self.frame_step + self.frame_length


def _configs() -> dict[str, SpleeterConfig]:
    two = ("vocals", "accompaniment")
    four = ("vocals", "drums", "bass", "other")
    five = ("vocals", "piano", "drums", "bass", "other")
    elu = {"conv_activation": "ELU", "deconv_activation": "ELU"}
    configs = [
        SpleeterConfig("2stems", "2stems", two),
        SpleeterConfig("4stems", "4stems", four, **elu),  # type: ignore[arg-type]
        SpleeterConfig("5stems", "5stems", five, softmax=True, **elu),  # type: ignore[arg-type]
    ]
    wide = [
        SpleeterConfig(
            f"{c.name}-16kHz",
            c.folder,
            c.instruments,
            bins=1536,
            conv_activation=c.conv_activation,
            deconv_activation=c.deconv_activation,
            softmax=c.softmax,
        )
        for c in configs
    ]
    return {config.name: config for config in (*configs, *wide)}


#: spleeter 2.4.2's six configurations, by name.
CONFIGS = _configs()


def config_for(model: str) -> SpleeterConfig:
    """The configuration of a catalog name (``spleeter:4stems``).

    Raises:
        SettingsError: No such configuration.
    """
    name = model.removeprefix("spleeter:")
    if name not in CONFIGS:
        raise SettingsError(
            f"unknown Spleeter model {model!r}; choose one of "
            f"{', '.join('spleeter:' + n for n in CONFIGS)}",
            key="model",
            value=model,
        )
    return CONFIGS[name]


def spleeter_plan(length: int, config: SpleeterConfig) -> ChunkPlan:
    """Spleeter's segments of a stream of ``length`` frames, as chunks of audio.

    The STFT runs over the mix with ``frame_length`` zeros before it, its end padded to
    ``ceil((length + frame_length) / frame_step)`` frames; segment ``s`` holds frames
    ``s * T`` to ``(s + 1) * T - 1``, whose audio starts at ``s * T * frame_step -
    frame_length``. Each chunk's inverse STFT is added as it is (weight 1, no division):
    summed, they are the inverse STFT of the whole.
    """
    frames = -(-(length + config.frame_length) // config.frame_step)
    segments = -(-frames // config.frames)
    step = config.frames * config.frame_step
    starts = tuple(s * step - config.frame_length for s in range(segments))
    return ChunkPlan(length, config.chunk, starts, np.ones(config.chunk, np.float32), 1.0)


class _Layers:
    """The checkpoint's variables of one instrument's U-Net, by Keras' layer names
    (``conv2d_<k>``, ``batch_normalization_<k>``, ``conv2d_transpose_<k>``, counted over
    the instruments in order), as torch tensors."""

    def __init__(self, checkpoint: Checkpoint, instrument: int) -> None:
        self._checkpoint = checkpoint
        self._instrument = instrument

    def _get(self, kind: str, index: int, variable: str) -> Tensor:
        name = kind if index == 0 else f"{kind}_{index}"
        return torch.from_numpy(self._checkpoint.read(f"{name}/{variable}"))

    def conv(self, k: int) -> tuple[Tensor, Tensor]:
        index = self._instrument * (_ENCODER + 1) + k
        return self._get("conv2d", index, "kernel"), self._get("conv2d", index, "bias")

    def deconv(self, k: int) -> tuple[Tensor, Tensor]:
        index = self._instrument * _DECODER + k
        return (
            self._get("conv2d_transpose", index, "kernel"),
            self._get("conv2d_transpose", index, "bias"),
        )

    def norm(self, k: int) -> tuple[Tensor, ...]:
        index = self._instrument * (_ENCODER + _DECODER) + k
        return tuple(
            self._get("batch_normalization", index, v)
            for v in ("gamma", "beta", "moving_mean", "moving_variance")
        )


def _activation(name: str, *, default: str) -> Callable[[Tensor], Tensor]:
    chosen = name if name in ("ELU", "ReLU", "LeakyReLU") else default
    if chosen == "ELU":
        return F.elu
    if chosen == "ReLU":
        return F.relu
    return lambda x: F.leaky_relu(x, 0.2)


def _weight(kernel: Tensor) -> nn.Parameter:
    """A TF kernel in torch's layout, contiguous (a strided view is copied every call):
    conv (kh, kw, in, out) -> (out, in, kh, kw); transposed conv (kh, kw, out, in) ->
    (in, out, kh, kw), the same permutation."""
    return nn.Parameter(kernel.permute(3, 2, 0, 1).contiguous())


#: The taps of a 5-wide stride-2 transposed conv that land on an even and an odd output
#: sample, over inputs m-1, m, m+1 (TensorFlow's "same": output j is the full output j+1).
_PHASE_TAPS = ((3, 1, None), (4, 2, 0))


def _phase_weight(kernel: Tensor) -> nn.Parameter:
    """A TF ``Conv2DTranspose`` kernel (5, 5, out, in), stride 2, "same", as one 3x3 conv
    giving the four output phases as channels ``(2 * py + px) * out + o``: CPU torch runs
    a transposed conv on a slow path (im2col) and a plain conv on oneDNN."""
    height, width, outputs, inputs = kernel.shape
    if (height, width) != (5, 5):
        raise ModelCorrupt(f"a {height}x{width} transposed conv kernel; Spleeter's are 5x5")
    weight = kernel.new_zeros((2, 2, outputs, inputs, 3, 3))
    for py, rows in enumerate(_PHASE_TAPS):
        for px, cols in enumerate(_PHASE_TAPS):
            for a, ky in enumerate(rows):
                for b, kx in enumerate(cols):
                    if ky is not None and kx is not None:
                        weight[py, px, :, :, a, b] = kernel[ky, kx]
    return nn.Parameter(weight.reshape(4 * outputs, inputs, 3, 3).contiguous())


def _upsample(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """The transposed conv of :func:`_phase_weight`: ``(B, in, H, W)`` to ``(B, out, 2H, 2W)``."""
    batch, _, height, width = x.shape
    phases = F.conv2d(x, weight, bias, padding=1)
    outputs = phases.shape[1] // 4
    shuffled = phases.reshape(batch, 2, 2, outputs, height, width).permute(0, 3, 4, 1, 5, 2)
    return shuffled.reshape(batch, outputs, 2 * height, 2 * width)


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's ``padding="same"``: the extra pixel goes after."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class UNet(nn.Module):
    """One instrument's U-Net (spleeter's ``apply_unet``), on ``(B, 2, T, F)`` magnitudes.

    Returns the instrument's spectrogram estimate (sigmoid mask times the input), or the
    mask logits when ``logits`` (for ``softmax_unet``).
    """

    def __init__(self, layers: _Layers, config: SpleeterConfig, *, logits: bool) -> None:
        super().__init__()
        self._logits = logits
        self._act = _activation(config.conv_activation, default="LeakyReLU")
        self._deact = _activation(config.deconv_activation, default="ReLU")
        self.down = nn.ParameterList()
        self.up = nn.ParameterList()
        self.norms = nn.ParameterList()
        for k in range(_ENCODER):
            kernel, bias = layers.conv(k)
            # TF (kh, kw, in, out) -> torch (out, in, kh, kw)
            self.down.extend([_weight(kernel), nn.Parameter(bias)])
        for k in range(_DECODER):
            kernel, bias = layers.deconv(k)
            self.up.extend([_phase_weight(kernel), nn.Parameter(bias.repeat(4))])
        for k in range(_ENCODER + _DECODER):
            self.norms.extend(nn.Parameter(t) for t in layers.norm(k))
        kernel, bias = layers.conv(_ENCODER)
        self.last = nn.ParameterList([_weight(kernel), nn.Parameter(bias)])

    def _norm(self, k: int, x: Tensor) -> Tensor:
        gamma, beta, mean, var = (self.norms[4 * k + i] for i in range(4))
        return F.batch_norm(x, mean, var, gamma, beta, training=False, eps=BATCH_NORM_EPSILON)

    def forward(self, spectrogram: Tensor) -> Tensor:
        x = spectrogram
        skips: list[Tensor] = []
        for k in range(_ENCODER):
            top, bottom = _same_pads(x.shape[2], 5, 2)
            left, right = _same_pads(x.shape[3], 5, 2)
            conv = F.conv2d(
                F.pad(x, (left, right, top, bottom)),
                self.down[2 * k],
                self.down[2 * k + 1],
                stride=2,
            )
            skips.append(conv)
            # The sixth encoder's batch norm and activation are in the graph but unused.
            x = self._act(self._norm(k, conv)) if k < _ENCODER - 1 else conv
        for k in range(_DECODER):
            up = self._norm(
                _ENCODER + k, self._deact(_upsample(x, self.up[2 * k], self.up[2 * k + 1]))
            )
            # Dropout is off in inference; the skips are the encoder's convs before their norm.
            x = torch.cat([skips[_ENCODER - 2 - k], up], dim=1) if k < _DECODER - 1 else up
        out = F.conv2d(x, self.last[0], self.last[1], padding=3, dilation=2)
        if self._logits:
            return out
        return torch.sigmoid(out) * spectrogram


class SpleeterNet(nn.Module):
    """A whole Spleeter model on chunks of audio: ``(B, 2, chunk)`` to
    ``(B, instruments, 2, chunk)``, each chunk one segment of :func:`spleeter_plan`."""

    def __init__(self, checkpoint: Checkpoint, config: SpleeterConfig) -> None:
        super().__init__()
        self.config = config
        self.unets = nn.ModuleList(
            UNet(_Layers(checkpoint, i), config, logits=config.softmax)
            for i in range(len(config.instruments))
        )
        window = torch.hann_window(config.frame_length, periodic=True, dtype=torch.float32)
        self.window: Tensor
        self.register_buffer("window", window, persistent=False)

    def forward(self, audio: Tensor) -> Tensor:
        config = self.config
        batch, channels, length = audio.shape
        # The STFTs and masking run where complex numbers are supported (the CPU beside
        # an Apple GPU, as demucs does); the U-Nets on the model's device.
        fft = fft_device(audio.device)
        with torch.autocast(audio.device.type, enabled=False):
            stft = torch.stft(
                audio.float().reshape(batch * channels, length).to(fft),
                n_fft=config.frame_length,
                hop_length=config.frame_step,
                window=self.window.to(fft),
                center=False,
                return_complex=True,
            ).reshape(batch, channels, config.frame_length // 2 + 1, -1)
            # (B, channels, bins, frames) -> the U-Nets' (B, channels, T, F)
            magnitude = stft.abs()[:, :, : config.bins].transpose(2, 3).contiguous()
        on_device = magnitude.to(audio.device)
        estimates = [unet(on_device).float().to(fft) for unet in self.unets]
        if config.softmax:
            masks = torch.softmax(torch.stack(estimates), dim=0)
            estimates = [mask * magnitude for mask in masks]
        with torch.autocast(audio.device.type, enabled=False):
            powers = [e**config.separation_exponent for e in estimates]
            total = torch.stack(powers).sum(dim=0) + EPSILON
            stems = []
            for power in powers:
                mask = self._extend((power + EPSILON / len(powers)) / total)
                stems.append(self._inverse(mask.transpose(2, 3) * stft, length))
            return torch.stack(stems, dim=1).to(audio.device)

    def _extend(self, mask: Tensor) -> Tensor:
        """The mask over every bin: zeros (or the mask's mean) above the cut-off."""
        extra = self.config.frame_length // 2 + 1 - self.config.bins
        if self.config.mask_extension == "average":
            row = mask.mean(dim=3, keepdim=True)
        else:
            row = mask.new_zeros((*mask.shape[:3], 1))
        return torch.cat([mask, row.expand(*mask.shape[:3], extra)], dim=3)

    def _inverse(self, stft: Tensor, length: int) -> Tensor:
        """``tf.signal.inverse_stft`` times 2/3: windowed frames summed, not normalised."""
        batch, channels, _, frames = stft.shape
        size, step = self.config.frame_length, self.config.frame_step
        pieces = torch.fft.irfft(stft, n=size, dim=2).transpose(2, 3) * self.window.to(stft.device)
        # Overlap-add by hop-sized slices: the window is a whole number of hops.
        hops = size // step
        slices = pieces.reshape(batch, channels, frames, hops, step)
        summed = pieces.new_zeros((batch, channels, frames + hops - 1, step))
        for k in range(hops):
            summed[:, :, k : k + frames] += slices[:, :, :, k]
        return summed.reshape(batch, channels, -1)[..., :length] * WINDOW_COMPENSATION


def load_spleeter(folder: Path, config: SpleeterConfig) -> SpleeterNet:
    """Read a release folder's checkpoint and build its network, in eval mode, fp32.

    The layer widths are read from the checkpoint; everything else must be what
    spleeter's graph for ``config`` holds.

    Raises:
        ModelCorrupt: A file is missing, damaged, holds another stem count than the
            configuration's, or shapes that do not fit together.
    """
    prefix = checkpoint_prefix(folder)
    index = prefix.with_name(prefix.name + ".index")
    if not index.is_file():
        raise ModelCorrupt(
            f"{index}: missing ({folder / 'checkpoint'} names it); put the whole release "
            f"folder there ({SPLEETER_URL}{config.folder}.tar.gz, unpacked)",
            path=index,
        )
    checkpoint = read_checkpoint(prefix)
    _check_stem_count(checkpoint, index, config)
    _check_shapes(checkpoint, index, config)
    network = SpleeterNet(checkpoint, config).eval()
    log.info("spleeter:%s read from %s", config.name, folder)
    return network


_CONV = re.compile(r"conv2d(?:_(\d+))?/kernel")


def _check_stem_count(checkpoint: Checkpoint, index: Path, config: SpleeterConfig) -> None:
    convs = sum(1 for name in checkpoint.entries if _CONV.fullmatch(name))
    held, rest = divmod(convs, _ENCODER + 1)
    wanted = len(config.instruments)
    if rest or held != wanted:
        release = {2: "2stems", 4: "4stems", 5: "5stems"}.get(held)
        which = f" (the {release} release)" if release and not rest else ""
        raise ModelCorrupt(
            f"{index}: holds {convs / (_ENCODER + 1):g} instruments' U-Nets{which}, "
            f"spleeter:{config.name} needs {wanted} ({', '.join(config.instruments)}); put "
            f"the {config.folder} release folder there ({SPLEETER_URL}{config.folder}.tar.gz)",
            path=index,
        )


def _check_shapes(checkpoint: Checkpoint, index: Path, config: SpleeterConfig) -> None:
    """Every layer's shape against the widths the first encoder layers give."""
    entries = checkpoint.entries

    def shape(name: str) -> tuple[int, ...]:
        entry = entries.get(name)
        if entry is None:
            raise ModelCorrupt(
                f"{index}: no variable {name}, which spleeter:{config.name}'s U-Net has; "
                "use the official release folder",
                path=index,
            )
        return entry.shape

    def named(kind: str, index_: int) -> str:
        return kind if index_ == 0 else f"{kind}_{index_}"

    for i in range(len(config.instruments)):
        widths = [shape(f"{named('conv2d', i * 7 + k)}/kernel")[-1] for k in range(_ENCODER)]
        expected: dict[str, tuple[int, ...]] = {}
        inputs = [config.channels, *widths[:-1]]
        for k in range(_ENCODER):
            conv = named("conv2d", i * 7 + k)
            expected[f"{conv}/kernel"] = (5, 5, inputs[k], widths[k])
            expected[f"{conv}/bias"] = (widths[k],)
        ups = [*reversed(widths[:-1]), 1]
        incoming = widths[-1]
        norm_widths = [*widths, *ups]
        for k in range(_DECODER):
            deconv = named("conv2d_transpose", i * 6 + k)
            expected[f"{deconv}/kernel"] = (5, 5, ups[k], incoming)
            expected[f"{deconv}/bias"] = (ups[k],)
            incoming = ups[k] + (widths[_ENCODER - 2 - k] if k < _DECODER - 1 else 0)
        last = named("conv2d", i * 7 + _ENCODER)
        expected[f"{last}/kernel"] = (4, 4, 1, 2)
        expected[f"{last}/bias"] = (2,)
        for k, width in enumerate(norm_widths):
            norm = named("batch_normalization", i * 12 + k)
            for variable in ("gamma", "beta", "moving_mean", "moving_variance"):
                expected[f"{norm}/{variable}"] = (width,)
        for name, wanted in expected.items():
            found = shape(name)
            if found != wanted:
                raise ModelCorrupt(
                    f"{index}: variable {name} has shape {list(found)}, spleeter:"
                    f"{config.name}'s U-Net needs {list(wanted)}; the checkpoint is not "
                    "this model's: use the official release folder",
                    path=index,
                )


class SpleeterNetwork:
    """A Spleeter model loaded on its device, with its segment schedule (what
    :class:`bridge.models.chunked_model.ChunkedModel` runs)."""

    def __init__(
        self, files: ModelFiles, settings: SeparationSettings, device: torch.device
    ) -> None:
        self._config = config_for(files.spec.name)
        _refuse_schedule(settings, self._config)
        network = load_spleeter(files.paths[0].parent, self._config)
        self.samplerate = self._config.sample_rate
        self.width = self._config.channels
        self.outputs = self._config.instruments
        self.complement: str | None = None
        self.device = device
        self._runner = TorchRunner([network], device=device, precision=settings.precision)

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._runner(0, batch)

    def plan(self, length: int, settings: SeparationSettings) -> ChunkPlan:
        _refuse_schedule(settings, self._config)
        return spleeter_plan(length, self._config)


def _refuse_schedule(settings: SeparationSettings, config: SpleeterConfig) -> None:
    """Spleeter's segments are fixed and do not overlap: --segment and --overlap have
    nothing to change."""
    seconds = config.chunk / config.sample_rate
    for key, value in (("overlap", settings.overlap), ("segment", settings.segment_seconds)):
        if value is not None:
            raise SettingsError(
                f"--{key} {value}: Spleeter separates in its own segments of "
                f"{config.frames} STFT frames ({seconds:.1f} s) without overlap, as spleeter "
                f"does; leave --{key} out for spleeter:{config.name}",
                key=key,
                value=value,
            )
