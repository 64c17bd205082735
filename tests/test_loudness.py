"""BS.1770 loudness and true peak: pyloudnorm agreement, streaming, calibration, gain."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pyloudnorm  # type: ignore[import-untyped]
import pytest
from numpy.testing import assert_allclose

from bridge.effects.loudness import GainDecision, Loudness, LoudnessMeter, normalisation_gain_db
from bridge.errors import SettingsError

SECONDS = 5


def pink_noise(channels: int, rate: int, *, seed: int) -> np.ndarray:
    """``(channels, frames)`` noise with a 1/f power spectrum, about -20 dBFS RMS."""
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal((channels, SECONDS * rate)), axis=1)
    freqs = np.fft.rfftfreq(SECONDS * rate, 1 / rate)
    spectrum[:, 1:] /= np.sqrt(freqs[1:])
    spectrum[:, 0] = 0.0
    noise = np.fft.irfft(spectrum, n=SECONDS * rate, axis=1)
    return 0.1 * noise / np.sqrt(np.mean(noise**2))


def music(channels: int, rate: int, *, seed: int) -> np.ndarray:
    """``(channels, frames)`` plucked notes with harmonics, panned, ending in a quiet passage."""
    rng = np.random.default_rng(seed)
    frames = SECONDS * rate
    out = np.zeros((channels, frames))
    for _ in range(25):
        start = int(rng.integers(0, frames - rate // 4))
        length = min(frames - start, int(rng.uniform(0.2, 1.0) * rate))
        t = np.arange(length) / rate
        pitch = rng.uniform(80, 2000)
        note = sum(np.sin(2 * np.pi * pitch * h * t) / h for h in (1, 2, 3))
        note *= np.minimum(t / 0.01, 1.0) * np.exp(-t * rng.uniform(2, 8))
        pan = rng.uniform(0.3, 1.0, size=(channels, 1))
        out[:, start : start + length] += 0.2 * pan * note
    out[:, -rate:] *= 10 ** (-30 / 20)  # a quiet last second, for the relative gate
    return out


def measure(signal: np.ndarray, rate: int) -> Loudness:
    meter = LoudnessMeter(sample_rate=rate, channels=signal.shape[0])
    meter.update(signal)
    return meter.result()


def lufs(signal: np.ndarray, rate: int) -> float:
    integrated = measure(signal, rate).integrated_lufs
    assert integrated is not None
    return integrated


def peaks(result: Loudness) -> tuple[float, float]:
    """True peak and sample peak of a measurement that has both."""
    assert result.true_peak_dbtp is not None and result.sample_peak_dbfs is not None
    return result.true_peak_dbtp, result.sample_peak_dbfs


@pytest.mark.parametrize("rate", [44100, 48000, 96000])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("make", [pink_noise, music])
def test_integrated_loudness_matches_pyloudnorm(
    make: Callable[..., np.ndarray], channels: int, rate: int
) -> None:
    signal = make(channels, rate, seed=channels * rate)

    ours = lufs(signal, rate)

    # "DeMan" is pyloudnorm's exact BS.1770 filter at every rate, the one used here;
    # its default "K-weighting" is an RBJ-cookbook approximation, a few hundredths off
    for filter_class in ("DeMan", "K-weighting"):
        reference = pyloudnorm.Meter(rate, filter_class).integrated_loudness(signal.T)
        assert_allclose(ours, reference, atol=0.1)


def test_5_1_weights_surrounds_and_ignores_lfe() -> None:
    signal = pink_noise(6, 48000, seed=6)

    ours = lufs(signal, 48000)

    # pyloudnorm's five channels are L R C Ls Rs: the 5.1 order without the LFE
    without_lfe = np.delete(signal, 3, axis=0).T
    assert_allclose(ours, pyloudnorm.Meter(48000, "DeMan").integrated_loudness(without_lfe))


def test_block_sizes_do_not_change_the_result() -> None:
    rate = 48000
    signal = music(2, rate, seed=3).astype(np.float32)
    original = signal.copy()
    whole = measure(signal, rate)

    rng = np.random.default_rng(7)
    meter = LoudnessMeter(sample_rate=rate, channels=2)
    start = 0
    while start < signal.shape[1]:
        size = int(rng.choice([0, 1, int(rng.integers(2, 20000))]))
        meter.update(signal[:, start : start + size])
        start += size
    streamed = meter.result()

    assert streamed.integrated_lufs is not None and whole.integrated_lufs is not None
    assert_allclose(streamed.integrated_lufs, whole.integrated_lufs, atol=1e-6)
    assert_allclose(peaks(streamed)[0], peaks(whole)[0], atol=1e-3)
    assert streamed.sample_peak_dbfs == whole.sample_peak_dbfs
    np.testing.assert_array_equal(signal, original)


def test_calibration_997_hz_sine() -> None:
    t = np.arange(SECONDS * 48000) / 48000
    sine = np.sin(2 * np.pi * 997 * t)

    # BS.1770: a 0 dBFS 997 Hz sine in one channel reads -3.01 LUFS
    assert_allclose(lufs(sine[None], 48000), -3.01, atol=0.01)
    assert_allclose(lufs(10 ** (-20 / 20) * sine[None], 48000), -23.0, atol=0.1)
    # EBU Tech 3341 case 1: the same sine at -23 dBFS in both channels reads -23 LUFS
    stereo = np.tile(10 ** (-23 / 20) * sine, (2, 1))
    assert_allclose(lufs(stereo, 48000), -23.0, atol=0.1)


def test_true_peak_sees_peaks_between_samples() -> None:
    # Given a sine at fs/4 shifted 45 degrees: every sample is +-0.5, the wave peaks at 0.707
    n = np.arange(2 * 48000)
    sine = math.sqrt(2) * 0.5 * np.sin(np.pi / 2 * n + np.pi / 4)

    true_peak, sample_peak = peaks(measure(sine[None], 48000))

    assert_allclose(sample_peak, 20 * math.log10(0.5))
    assert_allclose(true_peak - sample_peak, 3.01, atol=0.3)


@pytest.mark.parametrize("rate", [44100, 96000, 192000])
def test_true_peak_is_never_below_sample_peak(rate: int) -> None:
    noise = 0.25 * np.random.default_rng(rate).standard_normal((2, rate))

    true_peak, sample_peak = peaks(measure(noise, rate))

    assert true_peak >= sample_peak


def test_silence_and_short_signals_have_no_loudness() -> None:
    zeros = measure(np.zeros((2, 48000)), 48000)
    assert zeros == Loudness(None, None, None)
    assert zeros.silent

    hiss = measure(1e-7 * np.random.default_rng(0).standard_normal((2, 48000)), 48000)
    assert hiss.silent and hiss.integrated_lufs is None
    assert hiss.true_peak_dbtp is not None and math.isfinite(hiss.true_peak_dbtp)

    # 399 ms: not one whole gating block
    short = measure(0.5 * np.ones((1, 48000 * 399 // 1000)), 48000)
    assert short.silent and short.sample_peak_dbfs is not None


def test_normalisation_gain() -> None:
    measured = Loudness(integrated_lufs=-20.0, true_peak_dbtp=-5.0, sample_peak_dbfs=-5.5)

    plain = normalisation_gain_db(measured, target_lufs=-23.0, true_peak_ceiling_dbtp=-1.0)
    unlimited = normalisation_gain_db(measured, target_lufs=-14.0, true_peak_ceiling_dbtp=None)
    capped = normalisation_gain_db(measured, target_lufs=-14.0, true_peak_ceiling_dbtp=-1.0)

    assert plain == GainDecision(-3.0, False)
    assert unlimited == GainDecision(6.0, False)
    assert capped.limited_by_true_peak
    assert_allclose(-5.0 + capped.gain_db, -1.0)
    silent = normalisation_gain_db(
        Loudness(None, None, None), target_lufs=-14.0, true_peak_ceiling_dbtp=-1.0
    )
    assert silent == GainDecision(0.0, False)


@pytest.mark.parametrize(
    ("settings", "value"),
    [({"sample_rate": 48000, "channels": 0}, "0"), ({"sample_rate": 7999, "channels": 2}, "7999")],
)
def test_bad_settings_are_refused(settings: dict[str, int], value: str) -> None:
    with pytest.raises(SettingsError, match=value) as caught:
        LoudnessMeter(**settings)
    assert str(caught.value.value) == value
