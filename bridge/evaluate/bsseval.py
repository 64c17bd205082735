"""BSSEval v4 (Vincent et al. 2006; Liutkus et al. 2018), the decomposition SiSEC 2018
scored MUSDB18 with, computed as museval 0.4's ``bss_eval`` does in its ``v4`` mode:
distortion filters of 512 taps fitted once on the whole track, the ratios on frames
without overlap, the last partial frame dropped, NaN for a frame where any reference or
estimate sums to zero over its channels.

Same equations, arranged for long tracks. museval takes the correlations between the
delayed references and the estimates from FFTs of the whole track (each pair's spectrum
is transformed back in full for 512 lags), solves the same large system once per
estimate, and convolves every frame with every filter pair apart. Here:

* the correlations are summed block by block in the frequency domain, so memory and work
  per sample do not grow with the track's length (museval holds complex spectra of the
  whole track, about 1 GB for a 3-minute song);
* the large system is factorised once for every estimate's right-hand sides;
* each frame's projections are one transform per reference channel and one back per
  estimate channel, the filters' spectra computed once.

The numbers equal museval's to rounding (``tests/test_evaluate_metrics.py`` compares
them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.fft

#: Taps of the distortion filters (museval's ``filters_len``).
FILTER_TAPS = 512
#: Transform length of the blockwise correlations: blocks of ``BLOCK_FFT - 2·(taps - 1)``
#: samples, each correlated with its reach of 511 samples either side.
BLOCK_FFT = 8192
#: Blocks transformed together (each batch holds about 16 MB per 8 channels).
BLOCKS_PER_BATCH = 32
#: Frames projected together.
FRAMES_PER_BATCH = 8

Floats = npt.NDArray[np.float64]
Audio = npt.NDArray[np.floating]


@dataclass(frozen=True)
class Ratios:
    """The four BSSEval ratios in dB, each ``(sources, frames)``."""

    sdr: Floats
    isr: Floats
    sir: Floats
    sar: Floats


def bss_eval(
    references: npt.ArrayLike, estimates: npt.ArrayLike, *, window: int, taps: int = FILTER_TAPS
) -> Ratios:
    """BSSEval v4 images of ``estimates`` against ``references``.

    Args:
        references: ``(sources, frames, channels)``, none silent (the caller leaves a
            silent reference out: its ratios are undefined).
        estimates: The same shape, each the estimate of the reference at its index.
        window: Frame length in samples (hop equal: no overlap).
        taps: Length of the distortion filters.
    """
    # Kept in their own precision (float32 stems: half the memory of a 3-minute set);
    # each block and frame is computed in float64, as museval computes everything.
    refs = np.asarray(references)
    ests = np.asarray(estimates)
    if refs.shape != ests.shape or refs.ndim != 3:
        raise ValueError(
            f"references {refs.shape} and estimates {ests.shape} must both be "
            "(sources, frames, channels)"
        )
    sources, _, channels = refs.shape
    lags = correlations(refs, (refs, ests), taps)
    gram, targets = _system(lags, sources, channels, taps)
    whole = (
        np.linalg.solve(gram, targets)
        .astype(np.float64, copy=False)
        .reshape(sources, channels, taps, sources, channels)
    )
    own = np.stack([_own_filter(gram, targets, j, sources, channels, taps) for j in range(sources)])
    return _frame_ratios(refs, ests, whole.transpose(3, 0, 1, 2, 4), own, window)


def correlations(references: Audio, others: Sequence[Audio], taps: int) -> Floats:
    """The correlations of every reference channel, delayed, with every channel of
    each of ``others``: ``out[p, q, u] = Σ_n r[p][n + u - (taps - 1)] · o[q][n]`` for the lags
    ``-(taps - 1)`` to ``taps - 1`` (``u`` from 0), signals zero outside.

    Args:
        references: ``(sources, frames, channels)``; ``p`` counts source by source, each
            one's channels in order.
        others: Each ``(signals, frames, channels)``, counted the same way for ``q``,
            one after the other.
    """
    reach = taps - 1
    step = BLOCK_FFT - 2 * reach
    count = -(-references.shape[1] // step)
    total = np.zeros(
        (BLOCK_FFT // 2 + 1, _channels(references), sum(_channels(o) for o in others)),
        np.complex128,
    )
    for first in range(0, count, BLOCKS_PER_BATCH):
        last = min(first + BLOCKS_PER_BATCH, count)
        # Each block of ``others`` meets its stretch of the references and their reach of
        # ``taps - 1`` samples either side: windows of BLOCK_FFT overlapping by 2·reach.
        around = _excerpt(references, first * step - reach, last * step + reach)
        windows = np.lib.stride_tricks.sliding_window_view(around, BLOCK_FFT, axis=1)[:, ::step]
        blocks = np.concatenate([_excerpt(o, first * step, last * step) for o in others])
        blocks = blocks.reshape(len(blocks), last - first, step, -1).transpose(0, 3, 1, 2)
        seg_spectra = scipy.fft.rfft(windows.transpose(0, 2, 1, 3), axis=-1, workers=-1)
        blk_spectra = scipy.fft.rfft(blocks, n=BLOCK_FFT, axis=-1, workers=-1)
        seg_spectra = seg_spectra.reshape(-1, last - first, BLOCK_FFT // 2 + 1)
        blk_spectra = blk_spectra.reshape(-1, last - first, BLOCK_FFT // 2 + 1)
        # Summed over the batch's blocks, one product per frequency: (P, b) @ (b, Q).
        total += seg_spectra.transpose(2, 0, 1) @ blk_spectra.conj().transpose(2, 1, 0)
    return np.ascontiguousarray(
        scipy.fft.irfft(total, n=BLOCK_FFT, axis=0, workers=-1)[: 2 * reach + 1].transpose(1, 2, 0)
    )


def _channels(signals: Audio) -> int:
    return int(signals.shape[0] * signals.shape[2])


def _excerpt(signals: Audio, start: int, stop: int) -> Floats:
    """``signals[:, start:stop]`` in float64, zeros where that reaches outside them."""
    out = np.zeros((signals.shape[0], stop - start, signals.shape[2]))
    inside = slice(max(start, 0), min(stop, signals.shape[1]))
    if inside.start < inside.stop:
        out[:, inside.start - start : inside.stop - start] = signals[:, inside]
    return out


def _system(lags: Floats, sources: int, channels: int, taps: int) -> tuple[Floats, Floats]:
    """The Gram matrix of the delayed references, rows and columns (source, channel, delay),
    plus museval's eps on its diagonal (which keeps references that are silent or copies
    of each other solvable), and the estimates' correlations with them, columns
    (estimate, channel)."""
    signals = sources * channels
    delay = np.arange(taps)
    # gram[(x, a), (y, b)] = <reference x delayed by a, reference y delayed by b>, filled
    # block by block: the whole matrix is held once (134 MB for four stereo stems)
    shift = delay[None, :] - delay[:, None] + taps - 1
    gram = np.empty((signals * taps, signals * taps))
    for x in range(signals):
        for y in range(signals):
            gram[x * taps : (x + 1) * taps, y * taps : (y + 1) * taps] = lags[x, y][shift]
    gram.flat[:: len(gram) + 1] += np.finfo(float).eps
    targets = lags[:, signals:, taps - 1 - delay].transpose(0, 2, 1).reshape(signals * taps, -1)
    return gram, targets


def _own_filter(
    gram: Floats, targets: Floats, source: int, sources: int, channels: int, taps: int
) -> Floats:
    """The filters from one reference alone onto its own estimate: ``(channels, taps,
    channels)``."""
    rows = slice(source * channels * taps, (source + 1) * channels * taps)
    cols = slice(source * channels, (source + 1) * channels)
    solved = np.linalg.solve(gram[rows, rows], targets[rows, cols]).astype(np.float64, copy=False)
    return solved.reshape(channels, taps, channels)


def _frame_ratios(refs: Audio, ests: Audio, whole: Floats, own: Floats, window: int) -> Ratios:
    """The ratios per frame, from the filters of each estimate onto every reference
    (``whole``: estimate, source, channel, delay, channel) and onto its own (``own``)."""
    sources, length = refs.shape[:2]
    taps = own.shape[2]
    frames = length // window if window < length else 1
    size = min(window, length)
    span = size + taps - 1
    n_fft = scipy.fft.next_fast_len(span, real=True)
    whole_spectra = scipy.fft.rfft(whole, n=n_fft, axis=3, workers=-1)
    own_spectra = scipy.fft.rfft(own, n=n_fft, axis=2, workers=-1)
    out = np.full((4, sources, frames), np.nan)
    for first in range(0, frames, FRAMES_PER_BATCH):
        indices = range(first, min(first + FRAMES_PER_BATCH, frames))
        ref = np.stack([refs[:, t * size : t * size + size] for t in indices]).astype(np.float64)
        est = np.stack([ests[:, t * size : t * size + size] for t in indices]).astype(np.float64)
        spectra = scipy.fft.rfft(ref, n=n_fft, axis=2, workers=-1)
        # projections onto every reference (b: frame, e: estimate, j: source, k: its
        # channel, c: output channel) and onto the estimate's own reference
        onto_all = np.einsum("ejkfc,bjfk->befc", whole_spectra, spectra, optimize=True)
        onto_own = np.einsum("ekfc,befk->befc", own_spectra, spectra, optimize=True)
        all_proj = scipy.fft.irfft(onto_all, n=n_fft, axis=2, workers=-1)[:, :, :span]
        own_proj = scipy.fft.irfft(onto_own, n=n_fft, axis=2, workers=-1)[:, :, :span]
        for b, t in enumerate(indices):
            if _any_silent(ref[b]) or _any_silent(est[b]):
                continue
            for e in range(sources):
                out[:, e, t] = _ratios(ref[b, e], est[b, e], own_proj[b, e], all_proj[b, e])
    return Ratios(sdr=out[0], isr=out[1], sir=out[2], sar=out[3])


def _ratios(
    reference: Floats, estimate: Floats, own: Floats, projection: Floats
) -> tuple[float, float, float, float]:
    """SDR, ISR, SIR, SAR of one frame: the true image, and what the filters onto its own
    reference and onto every reference add to it."""
    true = np.zeros_like(own)
    true[: len(reference)] = reference
    spatial = own - true
    interference = projection - own
    artefacts = -projection
    artefacts[: len(estimate)] += estimate
    energy = float(np.sum(true**2))
    return (
        _db(energy, float(np.sum((spatial + interference + artefacts) ** 2))),
        _db(energy, float(np.sum(spatial**2))),
        _db(float(np.sum(own**2)), float(np.sum(interference**2))),
        _db(float(np.sum(projection**2)), float(np.sum(artefacts**2))),
    )


def _db(signal: float, noise: float) -> float:
    return float(np.inf) if noise == 0 else float(10 * np.log10(signal / noise))


def _any_silent(frame: Floats) -> bool:
    """museval's silence test: a source whose channels sum to zero at every sample."""
    return bool(np.any(np.all(frame.sum(axis=2) == 0, axis=1)))
