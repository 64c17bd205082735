"""BS-RoFormer and Mel-Band RoFormer: band-split transformers on the spectrogram.

Written from the papers (Lu et al., "Music Source Separation with Band-Split RoPE
Transformer", arXiv 2309.02612; Wang et al., "Mel-Band RoFormer for Music Source
Separation", arXiv 2310.01809) and the checkpoints' parameter names: a released MSST or
python-audio-separator state dict loads key for key, ``strict=True``. Inference only:
there are no dropouts and no loss, and ``train()`` changes nothing.

Both networks, for ``audio`` of shape (batch, channels, samples)::

    STFT per channel (Hann window of stft_win_length, centred, reflect padding)
      -> bins of both channels interleaved, (real, imaginary) pairs: bin-major features
      -> bands: each band's features through RMSNorm and a linear layer to ``dim``
      -> depth x [linear-attention transformer over all (frame, band) tokens, when
         linear_transformer_depth > 0; transformer across frames, per band; transformer
         across bands, per frame], with rotary position embeddings (one per axis)
      -> per stem, per band: an MLP (tanh) and a GLU give a complex mask for its bins
      -> spectrum times mask, inverse STFT to the input's length
    stems (batch, stems, channels, samples)

BS-RoFormer's bands are ``freqs_per_bands`` consecutive bins. Mel-Band RoFormer's are the
bins under each of ``num_bands`` triangular mel filters (Slaney's scale, as
``librosa.filters.mel`` makes them; the first and last bin are forced in), which overlap;
a bin's mask is the mean of the masks of the bands that hold it.

The output always has the input's length. The references' inverse STFT stops at the last
whole hop (``hop * (samples // hop)`` samples) unless told the length; the samples they
return are the same as these, and the rest continue the same overlap-add. Chunks of
``audio.chunk_size`` (a whole number of hops in the released configs) are unaffected.
"""

from __future__ import annotations

import logging
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bridge.errors import ModelCorrupt
from bridge.models.families.msst_config import (
    BSRoformerArgs,
    MelBandRoformerArgs,
    MsstConfig,
    RoformerArgs,
    load_checkpoint,
    load_weights,
)
from bridge.models.runner import fft_device

log = logging.getLogger(__name__)

# The feed-forward layers widen by 4 in both references; no yaml key changes it.
_FEED_FORWARD_EXPANSION = 4
# Linear attention's fixed softmax scale (El-Nouby et al., XCiT: a learned temperature
# on l2-normalised queries and keys does the rest).
_LINEAR_ATTENTION_SCALE = 8.0
_ROTARY_THETA = 10000.0


class RMSNorm(nn.Module):
    """Root-mean-square norm: unit length times sqrt(dim), times a learned gain."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1) * self.scale * self.gamma


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoFormer): position p turns feature pair i by p * freqs[i].

    The pairs are adjacent features (0 and 1, 2 and 3, ...). ``freqs`` is in the
    checkpoints (every attention layer that uses it names it), so it is a parameter.
    """

    def __init__(self, dim_head: int) -> None:
        super().__init__()
        exponents = torch.arange(0, dim_head, 2)[: dim_head // 2].float() / dim_head
        self.freqs = nn.Parameter(1.0 / _ROTARY_THETA**exponents, requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        """Rotate ``x`` of shape (..., positions, dim_head)."""
        # Angles in fp32 whatever x is: positions times frequencies lose digits fast.
        positions = torch.arange(x.shape[-2], device=x.device, dtype=torch.float32)
        angles = positions[:, None] * self.freqs.float()[None, :]
        turned_width = 2 * angles.shape[-1]
        head, rest = x[..., :turned_width], x[..., turned_width:]
        if _pairs_as_complex(head):
            # A pair (a, b) turned by t is the complex product (a + ib) e^(it): one pass
            # over the heads instead of five (the pairs swapped, negated, two products and
            # their sum). On the CPU a released BS-RoFormer's queries took 12.7 ms instead
            # of 102 ms, a rounding apart (1e-6).
            pairs = torch.view_as_complex(head.unflatten(-1, (-1, 2)))
            turns = torch.polar(torch.ones_like(angles), angles)
            turned = torch.view_as_real(pairs * turns).flatten(-2)
        else:
            angles = angles.repeat_interleave(2, dim=-1)
            pairs = head.unflatten(-1, (-1, 2))
            quarter_turn = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
            turned = head * angles.cos().to(x.dtype) + quarter_turn * angles.sin().to(x.dtype)
        return torch.cat((turned, rest), dim=-1) if rest.shape[-1] else turned


def _pairs_as_complex(x: Tensor) -> bool:
    """Whether ``x``'s adjacent feature pairs can be viewed as complex numbers in place:
    a float type with a complex counterpart torch computes with (fp16 and bf16, the GPU's
    half precisions, have none that it fully supports), pairs adjacent in memory."""
    return (
        x.dtype in (torch.float32, torch.float64)
        and x.stride(-1) == 1
        and x.storage_offset() % 2 == 0
        and all(stride % 2 == 0 for stride in x.stride()[:-1])
    )


class Attention(nn.Module):
    """Multi-head self-attention with rotary positions and a sigmoid gate per head."""

    def __init__(self, dim: int, *, heads: int, dim_head: int, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_gates = nn.Linear(dim, heads)
        # A Sequential because the checkpoints name the projection to_out.0 (a dropout
        # followed it in training).
        self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim, bias=False))
        self.rotary_embed = rotary

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        q, k, v = (
            self.to_qkv(x).unflatten(-1, (3, self.heads, self.dim_head)).permute(2, 0, 3, 1, 4)
        )
        q, k = self.rotary_embed(q), self.rotary_embed(k)
        out = F.scaled_dot_product_attention(q, k, v)
        gates = self.to_gates(x).transpose(1, 2).unsqueeze(-1).sigmoid()
        return self.to_out((out * gates).transpose(1, 2).flatten(2))


class _MergeHeads(nn.Module):
    """(batch, heads, dim_head, tokens) to (batch, tokens, heads * dim_head)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(0, 3, 1, 2).flatten(2)


class LinearAttention(nn.Module):
    """Cross-covariance attention (XCiT): features attend to features, linear in tokens."""

    def __init__(self, dim: int, *, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        self.norm = RMSNorm(dim)
        # Sequentials because the checkpoints name these to_qkv.0 and to_out.1: the
        # reshapes around the projections were modules of their own there.
        self.to_qkv = nn.Sequential(nn.Linear(dim, 3 * heads * dim_head, bias=False))
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.to_out = nn.Sequential(_MergeHeads(), nn.Linear(heads * dim_head, dim, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        # (3, batch, heads, dim_head, tokens): the tokens are the features here
        q, k, v = (
            self.to_qkv(x).unflatten(-1, (3, self.heads, self.dim_head)).permute(2, 0, 3, 4, 1)
        )
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        q = q * self.temperature.exp()
        out = F.scaled_dot_product_attention(q, k, v, scale=_LINEAR_ATTENTION_SCALE)
        return self.to_out(out)


class FeedForward(nn.Module):
    """RMSNorm, a 4x wider GELU layer and back."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        inner = dim * _FEED_FORWARD_EXPANSION
        # Places as in the checkpoints (net.1, net.4): place 3 was the training dropout,
        # which is the identity at inference.
        self.net = nn.Sequential(
            RMSNorm(dim), nn.Linear(dim, inner), nn.GELU(), nn.Identity(), nn.Linear(inner, dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class _ResidualLayer(nn.ModuleList):
    """Attention then feed-forward, each added to its input (a list: the checkpoints
    name them 0 and 1)."""

    def __init__(self, attention: nn.Module, feed_forward: FeedForward) -> None:
        super().__init__([attention, feed_forward])

    def forward(self, x: Tensor) -> Tensor:
        x = self[0](x) + x
        return self[1](x) + x


class Transformer(nn.Module):
    """Pre-norm residual layers of attention and feed-forward, an RMSNorm after when asked."""

    def __init__(
        self,
        dim: int,
        *,
        depth: int,
        heads: int,
        dim_head: int,
        rotary: RotaryEmbedding | None,
        norm_output: bool,
    ) -> None:
        super().__init__()

        def attention() -> nn.Module:
            if rotary is None:
                return LinearAttention(dim, heads=heads, dim_head=dim_head)
            return Attention(dim, heads=heads, dim_head=dim_head, rotary=rotary)

        self.layers = nn.ModuleList(
            _ResidualLayer(attention(), FeedForward(dim)) for _ in range(depth)
        )
        self.norm: nn.Module = RMSNorm(dim) if norm_output else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


class BandSplit(nn.Module):
    """Each band's features (its bins' real and imaginary parts) to one ``dim`` vector."""

    def __init__(self, dim: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        self.widths = widths
        self.to_features = nn.ModuleList(
            nn.Sequential(RMSNorm(width), nn.Linear(width, dim)) for width in widths
        )

    def forward(self, x: Tensor) -> Tensor:
        """(batch, frames, sum(widths)) to (batch, frames, bands, dim)."""
        bands = x.split(self.widths, dim=-1)
        return torch.stack(
            [net(band) for net, band in zip(self.to_features, bands, strict=True)], dim=-2
        )


class MaskEstimator(nn.Module):
    """One stem's mask: per band, an MLP (tanh between layers) and a GLU."""

    def __init__(
        self, dim: int, widths: tuple[int, ...], *, hidden_layers: int, expansion: int
    ) -> None:
        super().__init__()
        hidden = dim * expansion
        sizes = (dim, *(hidden,) * hidden_layers)

        def mlp(width: int) -> nn.Sequential:
            layers: list[nn.Module] = []
            for size_in, size_out in pairwise(sizes):
                layers += [nn.Linear(size_in, size_out), nn.Tanh()]
            # The GLU halves the last layer's output: twice the band's features.
            layers.append(nn.Linear(sizes[-1], 2 * width))
            return nn.Sequential(nn.Sequential(*layers), nn.GLU(dim=-1))

        self.to_freqs = nn.ModuleList(mlp(width) for width in widths)

    def forward(self, x: Tensor) -> Tensor:
        """(batch, frames, bands, dim) to (batch, frames, sum(widths))."""
        bands = x.unbind(dim=-2)
        return torch.cat(
            [mlp(band) for mlp, band in zip(self.to_freqs, bands, strict=True)], dim=-1
        )


class _AxialBlock(nn.ModuleList):
    """One of the ``depth`` blocks: [linear transformer,] across frames, across bands.

    A list because the checkpoints name its transformers by place (0, 1[, 2]).
    """

    def __init__(self, axes: list[Transformer]) -> None:
        super().__init__(axes)

    def forward(self, x: Tensor) -> Tensor:
        """Band features (batch, frames, bands, dim) to the same shape."""
        *linear, across_time, across_bands = self
        batch, frames, bands, dim = x.shape
        if linear:
            x = linear[0](x.reshape(batch, frames * bands, dim)).view(batch, frames, bands, dim)
        per_band = x.transpose(1, 2).reshape(batch * bands, frames, dim)
        x = across_time(per_band).view(batch, bands, frames, dim).transpose(1, 2)
        per_frame = x.reshape(batch * frames, bands, dim)
        return across_bands(per_frame).view(batch, frames, bands, dim)


class _BandSplitRoformer(nn.Module):
    """What both networks share: the STFT, band split, axial transformers, masks, iSTFT."""

    def __init__(
        self,
        args: RoformerArgs,
        widths: tuple[int, ...],
        *,
        norm_each_transformer: bool,
        mask_hidden_layers: int,
    ) -> None:
        super().__init__()
        self.args = args
        self.audio_channels = args.audio_channels
        self.num_stems = args.num_stems
        # One rotary embedding per axis, shared by all that axis's layers.
        time_rotary = RotaryEmbedding(args.dim_head)
        freq_rotary = RotaryEmbedding(args.dim_head)

        def transformer(depth: int, rotary: RotaryEmbedding | None) -> Transformer:
            return Transformer(
                args.dim,
                depth=depth,
                heads=args.heads,
                dim_head=args.dim_head,
                rotary=rotary,
                norm_output=norm_each_transformer,
            )

        def block() -> _AxialBlock:
            axes = [
                transformer(args.time_transformer_depth, time_rotary),
                transformer(args.freq_transformer_depth, freq_rotary),
            ]
            if args.linear_transformer_depth > 0:
                axes.insert(0, transformer(args.linear_transformer_depth, None))
            return _AxialBlock(axes)

        self.layers = nn.ModuleList(block() for _ in range(args.depth))
        self.band_split = BandSplit(args.dim, widths)
        self.mask_estimators = nn.ModuleList(
            MaskEstimator(
                args.dim,
                widths,
                hidden_layers=mask_hidden_layers,
                expansion=args.mlp_expansion_factor,
            )
            for _ in range(args.num_stems)
        )

    def _spectrum(self, audio: Tensor) -> Tensor:
        """(batch, channels, samples) to (batch, bins * channels, frames), complex.

        The channels of a bin are next to each other (bin-major), as the bands expect.
        """
        if audio.ndim != 3 or audio.shape[1] != self.audio_channels:
            raise ValueError(
                f"the network takes audio of shape (batch, {self.audio_channels}, samples), "
                f"not {tuple(audio.shape)}; give it {self.audio_channels} channel(s) at a time"
            )
        if audio.shape[-1] <= self.args.stft_n_fft // 2:
            raise ValueError(
                f"the network needs more than {self.args.stft_n_fft // 2} samples (half its "
                f"STFT), not {audio.shape[-1]}; pad the audio"
            )
        batch, channels, samples = audio.shape
        args = self.args
        signal = audio.reshape(batch * channels, samples).to(fft_device(audio.device))
        spectrum = torch.stft(
            signal,
            n_fft=args.stft_n_fft,
            hop_length=args.stft_hop_length,
            win_length=args.stft_win_length,
            window=self._window(signal),
            normalized=args.stft_normalized,
            return_complex=True,
        )
        bins, frames = spectrum.shape[-2:]
        by_bin = spectrum.view(batch, channels, bins, frames).transpose(1, 2)
        return by_bin.reshape(batch, bins * channels, frames)

    def _window(self, like: Tensor) -> Tensor:
        return torch.hann_window(self.args.stft_win_length, device=like.device, dtype=like.dtype)

    def _transform(self, features: Tensor) -> Tensor:
        """Band features (batch, frames, bands, dim) through the axial transformers."""
        x = features
        for block in self.layers:
            x = block(x)
        return x

    def _masks(self, x: Tensor) -> Tensor:
        """Every stem's complex mask of the band features: (batch, stems, features, frames)."""
        masks = torch.stack([estimate(x) for estimate in self.mask_estimators], dim=1)
        batch, stems, frames, _ = masks.shape
        pairs = masks.view(batch, stems, frames, -1, 2).transpose(2, 3).contiguous()
        return torch.view_as_complex(pairs.to(fft_device(pairs.device)))

    def _stems(self, spectrum: Tensor, masks: Tensor, audio: Tensor) -> Tensor:
        """Masked spectra back to audio: (batch, stems, channels, samples)."""
        batch, channels, samples = audio.shape
        stems = spectrum.unsqueeze(1) * masks
        bins, frames = stems.shape[2] // channels, stems.shape[3]
        stems = stems.view(batch, self.num_stems, bins, channels, frames).transpose(2, 3)
        stems = stems.reshape(batch * self.num_stems * channels, bins, frames)
        if self.args.zero_dc:
            stems[:, 0] = 0
        args = self.args
        out = torch.istft(
            stems,
            n_fft=args.stft_n_fft,
            hop_length=args.stft_hop_length,
            win_length=args.stft_win_length,
            window=self._window(stems.real),
            normalized=args.stft_normalized,
            length=samples,
        )
        return out.view(batch, self.num_stems, channels, samples).to(audio.device)


def _features(spectrum: Tensor) -> Tensor:
    """(batch, bins, frames) complex to (batch, frames, bins * 2): real, imaginary per bin."""
    return torch.view_as_real(spectrum).transpose(1, 2).flatten(2)


class BSRoformer(_BandSplitRoformer):
    """BS-RoFormer: ``freqs_per_bands`` consecutive bins per band, an RMSNorm before the masks.

    Args:
        args: The model section of its MSST yaml.
    """

    def __init__(self, args: BSRoformerArgs) -> None:
        widths = tuple(2 * bins * args.audio_channels for bins in args.freqs_per_bands)
        # mask_estimator_depth counts the MLP's layers here, its hidden layers in Mel-Band.
        super().__init__(
            args,
            widths,
            norm_each_transformer=False,
            mask_hidden_layers=args.mask_estimator_depth - 1,
        )
        self.final_norm = RMSNorm(args.dim)

    def forward(self, audio: Tensor) -> Tensor:
        """Stems of ``audio`` (batch, channels, samples): (batch, stems, channels, samples)."""
        spectrum = self._spectrum(audio)
        features = _features(spectrum).to(audio.device)
        x = self.final_norm(self._transform(self.band_split(features)))
        return self._stems(spectrum, self._masks(x), audio)


def mel_bands(*, sample_rate: int, n_fft: int, num_bands: int) -> np.ndarray:
    """Which bins each mel band holds: (num_bands, n_fft // 2 + 1) booleans.

    Band i holds the bins strictly between mel edges i and i + 2, the edges equally spaced
    on Slaney's mel scale (linear, 200/3 Hz per mel, up to 1 kHz; logarithmic, 27 mels
    per factor 6.4, above) from 0 Hz to half the rate: where ``librosa.filters.mel``'s
    triangles are above zero. The first bin (0 Hz, on the first edge) and the last (on
    the last edge, up to rounding) are put into the first and last band; every other bin
    is in one band or two, as neighbouring triangles overlap.
    """
    # The edges must come out to the last bit as librosa's do: a bin that falls on an
    # edge is in or out of a band by the rounding (hence log_step as a divisor, as there).
    linear_hz_per_mel = 200.0 / 3
    log_start_hz = 1000.0
    log_start_mel = log_start_hz / linear_hz_per_mel
    log_step = np.log(6.4) / 27.0

    def hz_to_mel(hz: float) -> float:
        if hz < log_start_hz:
            return hz / linear_hz_per_mel
        return log_start_mel + float(np.log(hz / log_start_hz)) / log_step

    mels = np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2.0), num_bands + 2)
    edges = np.where(
        mels < log_start_mel,
        linear_hz_per_mel * mels,
        log_start_hz * np.exp(log_step * (mels - log_start_mel)),
    )
    bins = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    held = (bins[None, :] > edges[:-2, None]) & (bins[None, :] < edges[2:, None])
    held[0, 0] = True
    held[-1, -1] = True
    return held


class MelBandRoformer(_BandSplitRoformer):
    """Mel-Band RoFormer: ``num_bands`` overlapping mel bands, masks averaged per bin.

    Args:
        args: The model section of its MSST yaml.
    """

    def __init__(self, args: MelBandRoformerArgs) -> None:
        held = mel_bands(
            sample_rate=args.sample_rate, n_fft=args.stft_n_fft, num_bands=args.num_bands
        )
        channels = args.audio_channels
        widths = tuple(2 * int(count) * channels for count in held.sum(axis=1))
        super().__init__(
            args,
            widths,
            norm_each_transformer=True,
            mask_hidden_layers=args.mask_estimator_depth,
        )
        # Each band's bins, band after band; a bin's channels are next to each other.
        band_bins = torch.from_numpy(np.nonzero(held)[1])
        indices = (band_bins[:, None] * channels + torch.arange(channels)).flatten()
        self.freq_indices: Tensor
        self.register_buffer("freq_indices", indices, persistent=False)
        bands_per_bin = torch.from_numpy(held.sum(axis=0)).float().repeat_interleave(channels)
        self.bands_per_bin: Tensor
        self.register_buffer("bands_per_bin", bands_per_bin, persistent=False)

    def forward(self, audio: Tensor) -> Tensor:
        """Stems of ``audio`` (batch, channels, samples): (batch, stems, channels, samples)."""
        spectrum = self._spectrum(audio)
        # The complex parts stay where the STFT ran (the CPU for MPS: fft_device).
        indices = self.freq_indices.to(spectrum.device)
        features = _features(spectrum.index_select(1, indices)).to(audio.device)
        band_masks = self._masks(self._transform(self.band_split(features)))
        batch, stems, _, frames = band_masks.shape
        summed = band_masks.new_zeros(batch, stems, spectrum.shape[1], frames)
        summed.index_add_(2, indices, band_masks)
        per_bin = self.bands_per_bin.to(spectrum.device)
        return self._stems(spectrum, summed / per_bin[:, None], audio)


RoformerNetwork = BSRoformer | MelBandRoformer


def build(config: MsstConfig) -> RoformerNetwork:
    """The network a config describes, randomly initialised, in eval mode.

    Raises:
        ModelCorrupt: The config is not a RoFormer's, or asks for what this
            implementation does not do (``skip_connection``, ``use_pope``).
    """
    args = config.model
    if isinstance(args, RoformerArgs):
        for key in ("skip_connection", "use_pope"):
            if getattr(args, key):
                raise ModelCorrupt(
                    f"{config.path}: model.{key} = true is not supported (python-audio-"
                    "separator ignores it: there is no reference to hold it to); use a model "
                    "trained without it",
                    path=config.path,
                )
    network: RoformerNetwork
    if isinstance(args, BSRoformerArgs):
        network = BSRoformer(args)
    elif isinstance(args, MelBandRoformerArgs):
        network = MelBandRoformer(args)
    else:
        raise ModelCorrupt(
            f"{config.path}: describes {config.architecture}, not a band-split RoFormer; "
            "load it with its own family",
            path=config.path,
        )
    return network.eval()


def load(config: MsstConfig, checkpoint: Path) -> RoformerNetwork:
    """The network of ``config`` with the weights of ``checkpoint``, fp32, eval mode, CPU.

    Raises:
        ModelCorrupt: As :func:`build`, or the checkpoint cannot be read or does not fit
            the config (the message names the first missing and unexpected keys).
    """
    network = build(config)
    load_weights(network, load_checkpoint(checkpoint), checkpoint=checkpoint, config=config)
    log.info("loaded %s (%s) from %s", config.architecture, ", ".join(config.stems), checkpoint)
    return network
