"""Integrated loudness (ITU-R BS.1770-4) and true peak, measured in one streaming pass.

Loudness normalisation needs the whole file's integrated loudness before the first
output sample can be scaled, so the file is read twice: once through a
:class:`LoudnessMeter`, once to apply the gain. The meter must not hold the audio (a
two-hour render would not fit), so it keeps only one K-weighted energy sum per channel
per 100 ms hop; the overlapping 400 ms gating blocks are four consecutive hops, and
gating runs over those sums at the end. True peak is the largest absolute sample of a
4x (2x from 96 kHz, 1x from 192 kHz) oversampled copy, as BS.1770-4 Annex 2 describes.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass

import numpy as np
import soxr
from numpy.lib.stride_tricks import sliding_window_view

from bridge.effects.iir import CascadeFilter
from bridge.errors import SettingsError

_OFFSET = -0.691  # BS.1770 makes a 0 dBFS 997 Hz sine in one channel read -3.01 LUFS
_ABSOLUTE_GATE_LUFS = -70.0
_RELATIVE_GATE_LU = -10.0
_HOPS_PER_BLOCK = 4  # 400 ms blocks with 75 % overlap = four 100 ms hops
_SURROUND_WEIGHTS = (1.0, 1.0, 1.0, 0.0, 1.41, 1.41)  # 5.1: L R C LFE Ls Rs


@dataclass(frozen=True)
class Loudness:
    """What a :class:`LoudnessMeter` measured.

    ``integrated_lufs`` is None when no 400 ms block passes the -70 LUFS absolute gate
    (silence, or a signal shorter than one block); ``true_peak_dbtp`` and
    ``sample_peak_dbfs`` are None when every sample is 0.
    """

    integrated_lufs: float | None
    true_peak_dbtp: float | None
    sample_peak_dbfs: float | None

    @property
    def silent(self) -> bool:
        """True when there is no integrated loudness to normalise from."""
        return self.integrated_lufs is None


def _k_weighting(rate: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """The BS.1770 shelf and high-pass biquads, bilinear-transformed for ``rate``.

    The analogue prototypes (B. De Man's fit, also used by pyloudnorm) reproduce the
    standard's published 48 kHz coefficients exactly and work at any other rate.
    """
    k = math.tan(math.pi * 1681.9744509555319 / rate)
    q = 0.7071752369554193
    vh = 10.0 ** (3.99984385397 / 20.0)
    vb = vh**0.499666774155
    shelf_b = [vh + vb * k / q + k * k, 2.0 * (k * k - vh), vh - vb * k / q + k * k]
    shelf_a = [1.0 + k / q + k * k, 2.0 * (k * k - 1.0), 1.0 - k / q + k * k]
    k = math.tan(math.pi * 38.13547087613982 / rate)
    q = 0.5003270373253953
    pass_a = [1.0 + k / q + k * k, 2.0 * (k * k - 1.0), 1.0 - k / q + k * k]
    return (
        (np.array(shelf_b) / shelf_a[0], np.array(shelf_a) / shelf_a[0]),
        (np.array([1.0, -2.0, 1.0]), np.array(pass_a) / pass_a[0]),
    )


def _db(amplitude: float) -> float | None:
    return 20.0 * math.log10(amplitude) if amplitude > 0.0 else None


class LoudnessMeter:
    """Streaming integrated loudness, true peak and sample peak of one signal.

    Channel weights are 1.0 for every channel, except that exactly six channels are
    taken as 5.1 in the order L R C LFE Ls Rs and weighted 1, 1, 1, 0, 1.41, 1.41.

    Args:
        sample_rate: Frames per second, at least 8000.
        channels: Channel count of every block, at least 1.

    Raises:
        SettingsError: ``sample_rate`` or ``channels`` is out of range.
    """

    def __init__(self, *, sample_rate: int, channels: int) -> None:
        if channels < 1:
            raise SettingsError(
                f"channels is {channels}; it must be 1 or more", key="channels", value=channels
            )
        if sample_rate < 8000:
            raise SettingsError(
                f"sample rate is {sample_rate} Hz; it must be 8000 Hz or more",
                key="sample_rate",
                value=sample_rate,
            )
        self._rate = sample_rate
        self._channels = channels
        self._k_weighting = CascadeFilter(_k_weighting(sample_rate), channels=channels)
        self._frames = 0  # frames seen so far
        self._hop_index = 0  # index of the hop being filled
        self._hop_sum = np.zeros(channels)
        self._hop_sums = array("d")  # finished hops, flattened (hop, channel); 8 bytes each
        self._sample_peak = 0.0
        self._true_peak = 0.0
        factor = 4 if sample_rate < 96000 else 2 if sample_rate < 192000 else 1
        self._oversampler = (
            soxr.ResampleStream(
                sample_rate, sample_rate * factor, channels, dtype="float32", quality="HQ"
            )
            if factor > 1
            else None
        )
        self._result: Loudness | None = None

    def _hop_end(self, hop: int) -> int:
        # Integer boundaries, so rates that are not a multiple of 10 Hz never drift
        return (hop + 1) * self._rate // 10

    def update(self, block: np.ndarray) -> None:
        """Measure the next block of the signal.

        Args:
            block: ``(channels, n)`` float samples, any ``n`` including 0; not modified.

        Raises:
            ValueError: ``block`` is not shaped ``(channels, n)``.
        """
        if block.ndim != 2 or block.shape[0] != self._channels:
            raise ValueError(f"expected a ({self._channels}, n) block, got {block.shape}")
        if block.shape[1] == 0:
            return
        energy = np.square(self._k_weighting.process(block))
        start = 0
        while start < energy.shape[1]:
            stop = min(energy.shape[1], start + self._hop_end(self._hop_index) - self._frames)
            self._hop_sum += energy[:, start:stop].sum(axis=1)
            self._frames += stop - start
            start = stop
            if self._frames == self._hop_end(self._hop_index):
                self._hop_sums.extend(self._hop_sum.tolist())
                self._hop_sum[:] = 0.0
                self._hop_index += 1
        self._sample_peak = max(self._sample_peak, float(np.max(np.abs(block))))
        if self._oversampler is not None:
            frames = np.ascontiguousarray(block.T, dtype=np.float32)
            self._note_true_peak(self._oversampler.resample_chunk(frames))

    def _note_true_peak(self, oversampled: np.ndarray) -> None:
        if oversampled.size:
            self._true_peak = max(self._true_peak, float(np.max(np.abs(oversampled))))

    def result(self) -> Loudness:
        """Gate the collected blocks and return the measurement; ends the stream.

        Returns:
            The integrated loudness, true peak and sample peak of everything passed to
            :meth:`update`.
        """
        if self._result is not None:
            return self._result
        if self._oversampler is not None:
            empty = np.zeros((0, self._channels), dtype=np.float32)
            self._note_true_peak(self._oversampler.resample_chunk(empty, last=True))
        # The band-limited signal passes through every sample, but the oversampler's
        # anti-imaging filter cuts the top ~9 % of the band and can read below the sample
        # peak; like libebur128, never report less than the sample peak.
        self._true_peak = max(self._true_peak, self._sample_peak)
        self._result = Loudness(
            integrated_lufs=self._integrated(),
            true_peak_dbtp=_db(self._true_peak),
            sample_peak_dbfs=_db(self._sample_peak),
        )
        return self._result

    def _integrated(self) -> float | None:
        hops = np.frombuffer(self._hop_sums, dtype=np.float64).reshape(-1, self._channels)
        blocks = len(hops) - _HOPS_PER_BLOCK + 1
        if blocks < 1:
            return None  # shorter than one 400 ms block
        sums = sliding_window_view(hops, _HOPS_PER_BLOCK, axis=0).sum(axis=-1)
        edges = np.arange(len(hops) + 1) * self._rate // 10
        lengths = edges[_HOPS_PER_BLOCK:] - edges[:blocks]
        weights = _SURROUND_WEIGHTS if self._channels == 6 else (1.0,) * self._channels
        # Gate in the power domain, so silent blocks never go through log10(0)
        power = (sums / lengths[:, None]) @ np.array(weights)
        absolute = 10.0 ** ((_ABSOLUTE_GATE_LUFS - _OFFSET) / 10.0)
        gated = power[power > absolute]
        if gated.size == 0:
            return None
        gated = gated[gated > gated.mean() * 10.0 ** (_RELATIVE_GATE_LU / 10.0)]
        return _OFFSET + 10.0 * math.log10(float(gated.mean()))


@dataclass(frozen=True)
class GainDecision:
    """The gain to apply for loudness normalisation, and whether the peak ceiling set it."""

    gain_db: float
    limited_by_true_peak: bool


def normalisation_gain_db(
    measured: Loudness, *, target_lufs: float, true_peak_ceiling_dbtp: float | None
) -> GainDecision:
    """Choose the gain that brings ``measured`` to ``target_lufs`` without passing the ceiling.

    Args:
        measured: The signal's measurement.
        target_lufs: Integrated loudness wanted after the gain.
        true_peak_ceiling_dbtp: Highest true peak allowed after the gain; None for no limit.

    Returns:
        ``target - integrated`` dB, lowered to ``ceiling - true peak`` when that is
        smaller; 0 dB for a silent measurement, which has no loudness to move.

    Raises:
        SettingsError: The target or ceiling is not a finite number.
    """
    for key, value in (
        ("target_lufs", target_lufs),
        ("true_peak_ceiling_dbtp", true_peak_ceiling_dbtp),
    ):
        if value is not None and not math.isfinite(value):
            raise SettingsError(
                f"{key} is {value}; it must be a finite number", key=key, value=value
            )
    if measured.integrated_lufs is None:
        return GainDecision(0.0, False)
    gain = target_lufs - measured.integrated_lufs
    peak = measured.true_peak_dbtp
    if (
        true_peak_ceiling_dbtp is not None
        and peak is not None
        and peak + gain > true_peak_ceiling_dbtp
    ):
        return GainDecision(true_peak_ceiling_dbtp - peak, True)
    return GainDecision(gain, False)
