"""Open-Unmix's multichannel Wiener filter (``openunmix.filtering.wiener``), on complex
tensors.

The networks give a magnitude per target; the filter turns them into complex spectra:

1. each target's magnitude takes the mix's phase (a mix bin of 0 gives phase 0);
2. with ``residual``, one more source is the mix minus the targets;
3. ``iterations`` expectation-maximisation steps then refine them: each source's power
   (its mean over the channels) and spatial covariance (summed over the frames, divided
   by its summed power) make the mix covariance, and each source is its Wiener gain
   ``v_j R_j Cxx^-1`` times the mix. Before them the spectra are scaled down so the mix
   peaks at 10 (never up), and scaled back after, as the reference does.

The reference works on ``(..., 2)`` real/imaginary pairs and inverts 1x1 and 2x2
matrices in closed form; this does the same sums on complex numbers (same formulas,
so float32 results agree to rounding).
"""

from __future__ import annotations

import torch

#: The reference's regularisation of the covariances and divisions.
EPS = 1e-10
#: The reference scales the spectra down until the mix peaks at this.
SCALE_FACTOR = 10.0


def wiener(
    magnitudes: torch.Tensor,
    mix: torch.Tensor,
    *,
    iterations: int,
    residual: bool,
) -> torch.Tensor:
    """Complex spectra of the sources from their magnitudes and the mix.

    Args:
        magnitudes: ``(frames, bins, channels or 1, targets)`` non-negative estimates.
        mix: ``(frames, bins, channels)`` complex spectrum of the mix.
        iterations: Expectation-maximisation steps (0: the magnitudes with the mix's phase).
        residual: Add the mix minus the targets as one more source.

    Returns:
        ``(frames, bins, channels, sources)`` complex spectra (``targets + 1`` sources
        with ``residual``).
    """
    phase = torch.polar(torch.ones_like(mix.real), torch.angle(mix))
    sources = magnitudes.to(mix.dtype) * phase[..., None]
    if residual:
        sources = torch.cat([sources, mix[..., None] - sources.sum(dim=-1, keepdim=True)], -1)
    if iterations == 0:
        return sources
    one = torch.ones((), dtype=mix.real.dtype, device=mix.device)
    scale = torch.maximum(one, mix.abs().max() / SCALE_FACTOR)
    refined = _expectation_maximization(sources / scale, mix / scale, iterations)
    return refined * scale


def _expectation_maximization(
    sources: torch.Tensor, mix: torch.Tensor, iterations: int
) -> torch.Tensor:
    channels = mix.shape[-1]
    eye = torch.eye(channels, dtype=mix.dtype, device=mix.device)
    regularization = torch.sqrt(torch.as_tensor(EPS)) * eye
    for _ in range(iterations):
        # Power per frame and bin, the mean over the channels: (frames, bins, sources).
        power = (sources.real**2 + sources.imag**2).mean(dim=-2)
        # Spatial covariance per bin and source: (bins, sources, channels, channels).
        covariance = torch.einsum("fbis,fbjs->bsij", sources, sources.conj())
        weight = EPS + power.sum(dim=0)
        spatial = covariance / weight[..., None, None]
        # Mix covariance per frame and bin: (frames, bins, channels, channels).
        mixed = regularization + torch.einsum("fbs,bsij->fbij", power.to(mix.dtype), spatial)
        inverse = _invert(mixed)
        gain = torch.einsum("bsik,fbkj->fbsij", spatial, inverse)
        gain = gain * power.to(mix.dtype)[..., None, None]
        sources = torch.einsum("fbsij,fbj->fbis", gain, mix)
    return sources


def _invert(matrices: torch.Tensor) -> torch.Tensor:
    """Inverses of 1x1 or 2x2 complex matrices, in closed form as the reference."""
    if matrices.shape[-1] == 1:
        return 1 / matrices
    a, b = matrices[..., 0, 0], matrices[..., 0, 1]
    c, d = matrices[..., 1, 0], matrices[..., 1, 1]
    inverse_det = 1 / (a * d - b * c)
    first = torch.stack([d, -b], dim=-1)
    second = torch.stack([-c, a], dim=-1)
    return torch.stack([first, second], dim=-2) * inverse_det[..., None, None]
