"""How the same stem from several models becomes one: UVR's and python-audio-separator's
ensemble algorithms, streamed.

On the waveforms, sample by sample:

* ``avg_wave``: the weighted mean;
* ``median_wave``: the median;
* ``min_wave`` / ``max_wave``: the member's sample of least / greatest magnitude.

On the spectrum (STFT of 2048 points every 1024 with a periodic Hann window, centred
frames over the stream padded with zeros, as audio-separator's ensembler frames it
through librosa), bin by bin: the magnitude is the weighted mean (``avg_spec``), the
greatest (``max_spec``) or the least (``min_spec``) of the members' magnitudes, with the
phase of the weighted mean of the members' waves; the inverse STFT overlap-adds and
divides by the summed squared windows. The stream is framed as if ``HOP`` more zeros
followed it, so every sample lies under two frames and the division is by at least 0.5:
librosa's framing leaves the last samples under the very edge of one window, where that
division turns a changed spectrum into a click up to 10^5 times louder.

:class:`Blend` takes ``(members, stems, channels, n)`` blocks as they come and gives
``(stems, channels, n)`` blocks; the spectral ones hold back one FFT's worth of
samples, so memory does not grow with the stream. Plain NumPy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bridge.models.catalog import Algorithm

N_FFT = 2048
HOP = 1024


class Blend:
    """One ensemble's combination of its members' blocks.

    Args:
        algorithm: One of :data:`~bridge.models.catalog.ALGORITHMS`.
        weights: One per member for the weighted algorithms (``None``: equal).
        members: How many members there are.
        shape: ``(stems, channels)`` of each member's blocks.
    """

    def __init__(
        self,
        algorithm: Algorithm,
        *,
        weights: Sequence[float] | None,
        members: int,
        shape: tuple[int, int],
    ) -> None:
        self.algorithm = algorithm
        given = np.ones(members) if weights is None else np.asarray(weights, dtype=np.float64)
        self._weights = given / given.sum()
        self._shape = shape
        self._spectral = (
            _Spectral(algorithm, self._weights, (members, *shape))
            if algorithm.endswith("_spec")
            else None
        )

    def push(self, stacked: np.ndarray) -> np.ndarray:
        """Combine ``(members, stems, channels, n)``; gives the frames that are final."""
        if self._spectral is not None:
            return self._spectral.push(stacked)
        return combine_waves(self.algorithm, stacked, self._weights)

    def finish(self) -> np.ndarray:
        """The frames held back, once the stream has ended."""
        if self._spectral is not None:
            return self._spectral.finish()
        return np.zeros((*self._shape, 0), dtype=np.float32)


def combine_waves(algorithm: Algorithm, stacked: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """A wave algorithm on ``(members, ...)`` samples; ``weights`` sum to 1."""
    if algorithm == "avg_wave":
        return np.tensordot(weights, stacked.astype(np.float64), axes=1).astype(np.float32)
    if algorithm == "median_wave":
        return np.median(stacked, axis=0).astype(np.float32)
    pick = np.argmin if algorithm == "min_wave" else np.argmax
    chosen = pick(np.abs(stacked), axis=0)[np.newaxis]
    return np.take_along_axis(stacked, chosen, axis=0)[0].astype(np.float32)


class _Spectral:
    """A spectral algorithm, frame by frame over a stream.

    Positions are counted in the padded stream (``N_FFT // 2`` zeros before the first
    sample): frame ``t`` reads padded samples ``[t * HOP, t * HOP + N_FFT)``, and an
    output sample is final once the next frame starts after it. With ``HOP`` half of
    ``N_FFT``, each ``HOP`` of output is the second half of one frame plus the first
    half of the next.
    """

    def __init__(self, algorithm: Algorithm, weights: np.ndarray, shape: tuple[int, ...]) -> None:
        self._algorithm = algorithm
        self._weights = weights
        self._window = np.hanning(N_FFT + 1)[:N_FFT]  # periodic, as librosa's "hann"
        # Padded input from frame ``_frame``'s start; the overlap-add of the frames so
        # far from there on (the second half of the last frame), and its squared windows.
        self._pending = np.zeros((*shape, N_FFT // 2))
        self._frame = 0
        self._carry = np.zeros((*shape[1:], HOP))
        self._carry_squares = np.zeros(HOP)
        self._length = 0

    def push(self, stacked: np.ndarray) -> np.ndarray:
        self._length += stacked.shape[-1]
        self._pending = np.concatenate([self._pending, stacked.astype(np.float64)], axis=-1)
        return self._frames((self._pending.shape[-1] - N_FFT) // HOP + 1, final=False)

    def finish(self) -> np.ndarray:
        pad = np.zeros((*self._pending.shape[:-1], N_FFT))
        self._pending = np.concatenate([self._pending, pad], axis=-1)
        # Centred frames over the stream and HOP zeros: one per HOP samples, plus one.
        return self._frames(1 + (self._length + HOP) // HOP - self._frame, final=True)

    def _frames(self, count: int, *, final: bool) -> np.ndarray:
        count = max(count, 0)
        starts = np.arange(count) * HOP
        frames = self._pending[..., starts[:, None] + np.arange(N_FFT)]  # (M, S, C, T, N)
        spectra = np.fft.rfft(frames * self._window, axis=-1)
        waves = np.fft.irfft(self._blend(spectra), n=N_FFT, axis=-1) * self._window
        added = np.zeros((*self._carry.shape[:-1], count + 1, HOP))
        added[..., 0, :] = self._carry
        added[..., :count, :] += waves[..., :HOP]
        added[..., 1:, :] += waves[..., HOP:]
        squares = np.zeros((count + 1, HOP))
        squares[0] = self._carry_squares
        squares[:count] += self._window[:HOP] ** 2
        squares[1:] += self._window[HOP:] ** 2
        done = count + 1 if final else count
        out = added[..., :done, :].reshape(*added.shape[:-2], done * HOP)
        divisor = squares[:done].reshape(-1)
        out = out / np.maximum(divisor, np.finfo(np.float32).tiny)
        self._carry, self._carry_squares = added[..., count, :], squares[count]
        self._pending = self._pending[..., count * HOP :]
        first = self._frame * HOP
        self._frame += count
        # The padding before the stream and after its end is not output.
        lead = max(0, N_FFT // 2 - first)
        end = self._length + N_FFT // 2 - first
        return out[..., lead:end].astype(np.float32)

    def _blend(self, spectra: np.ndarray) -> np.ndarray:
        """``(members, ...)`` spectra to one: the chosen magnitude, the mean wave's phase."""
        mean = np.tensordot(self._weights, spectra, axes=1)
        magnitudes = np.abs(spectra)
        if self._algorithm == "avg_spec":
            magnitude = np.tensordot(self._weights, magnitudes, axes=1)
        elif self._algorithm == "max_spec":
            magnitude = magnitudes.max(axis=0)
        else:
            magnitude = magnitudes.min(axis=0)
        return magnitude * np.exp(1j * np.angle(mean))
