"""The metrics against known answers and against museval's own aggregation."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from bridge.evaluate import metrics
from bridge.evaluate.scoring import bss_sets, pair_stems, score_track

from evaluation_data import sources


def noisy(reference: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """``reference`` plus noise whose energy is exactly ``snr_db`` below the reference's."""
    noise = np.random.default_rng(seed).standard_normal(reference.shape)
    scale = np.sqrt(np.sum(reference.astype(np.float64) ** 2) / np.sum(noise**2))
    return reference + noise * scale * 10 ** (-snr_db / 20)


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 6.0, 12.5, 30.0])
def test_usdr_of_reference_plus_noise_is_the_energy_ratio(snr_db: float) -> None:
    # Given a reference and an estimate with noise at a known energy ratio
    reference = sources(1)["vocals"].astype(np.float64)
    # Then the whole-track SDR is that ratio
    assert abs(metrics.usdr(reference, noisy(reference, snr_db)) - snr_db) < 0.01


def test_si_sdr_is_invariant_to_scaling_and_knows_orthogonal_noise() -> None:
    reference = sources(2)["bass"].astype(np.float64)
    # Given noise made orthogonal to the reference, at 10 dB
    noise = np.random.default_rng(3).standard_normal(reference.shape)
    noise -= (
        (noise.ravel() @ reference.ravel()) / (reference.ravel() @ reference.ravel()) * reference
    )
    noise *= np.sqrt(np.sum(reference**2) / np.sum(noise**2)) * 10 ** (-10 / 20)
    estimate = reference + noise
    # Then SI-SDR is 10 dB, and any gain on the estimate leaves it there
    assert abs(metrics.si_sdr(reference, estimate) - 10.0) < 0.01
    for gain in (0.01, 0.5, 3.0, 1000.0):
        assert_allclose(metrics.si_sdr(reference, gain * estimate), 10.0, atol=1e-6)
    # While uSDR is not scale-invariant
    assert metrics.usdr(reference, 0.5 * estimate) < 7


def test_bss_eval_equals_museval_and_its_aggregation() -> None:
    import museval

    # Given four stems and estimates with noise at different levels
    stems = sources(4, seconds=3.0)
    estimates = {
        name: noisy(audio, 5.0 + 3 * i, seed=i) for i, (name, audio) in enumerate(stems.items())
    }
    # When our scoring runs
    scores, left_out = score_track("t", "m", stems, estimates, sample_rate=44100)
    assert left_out == ()
    ours = {(s.stem, s.metric): s.value for s in scores}
    # Then it equals museval's evaluate, aggregated as museval's EvalStore does (median
    # over frames)
    reference = np.stack(list(stems.values()))
    estimate = np.stack(list(estimates.values()))
    sdr, isr, sir, sar = museval.evaluate(reference, estimate, win=44100, hop=44100)
    track = museval.TrackStore(win=1.0, hop=1.0, track_name="t")
    for index, name in enumerate(stems):
        values = {
            "SDR": sdr[index].tolist(),
            "SIR": sir[index].tolist(),
            "ISR": isr[index].tolist(),
            "SAR": sar[index].tolist(),
        }
        track.add_target(target_name=name, values=values)
    store = museval.EvalStore()
    store.add_track(track)
    medians = store.agg_frames_scores()
    for (_, name, metric), value in medians.items():
        assert_allclose(ours[(name, metric)], value, atol=1e-4)  # float32 stems
    assert len(medians) == 16
    # And the noise levels show: each stem's uSDR is its own ratio
    for index, name in enumerate(stems):
        assert abs(ours[(name, "uSDR")] - (5.0 + 3 * index)) < 0.01


@pytest.mark.parametrize("seconds", [2.6, 0.7])
def test_bsseval_equals_museval_frame_by_frame(seconds: float) -> None:
    import museval
    from scipy.signal import lfilter

    from bridge.evaluate import bsseval

    # Given three stereo stems like music (tones through a low-pass: a Gram matrix far
    # from well conditioned), a partial last frame (or a clip shorter than one frame),
    # estimates that leak each other, and one estimate silent for a stretch
    rate, n = 44100, round(seconds * 44100)
    rng = np.random.default_rng(7)
    t = np.arange(n) / rate
    tones = [
        [np.sin(2 * np.pi * 110 * (s + 1) * t + c) + 0.05 * rng.standard_normal(n) for c in (0, 1)]
        for s in range(3)
    ]
    refs = lfilter([1.0], [1.0, -0.9], np.array(tones), axis=2).transpose(0, 2, 1)
    ests = refs + 0.2 * rng.standard_normal(refs.shape) + 0.3 * np.roll(refs, 1, axis=0)
    ests[2, rate : 2 * rate] = 0.0
    # When both score them on 1 s frames
    expected = museval.metrics.bss_eval(refs, ests, window=rate, hop=rate)
    ours = bsseval.bss_eval(refs, ests, window=rate)
    # Then every frame's four ratios agree (the silent stretch NaN in both)
    for theirs, mine in zip(expected[:4], (ours.sdr, ours.isr, ours.sir, ours.sar), strict=True):
        assert mine.shape == theirs.shape == (3, max(n // rate, 1))
        assert_allclose(mine, theirs, atol=1e-6, equal_nan=True)
    assert np.isnan(ours.sdr).all(axis=0).tolist() == [False, True][: ours.sdr.shape[1]]


def test_stems_a_model_lacks_are_sums_or_left_out() -> None:
    # Given a dataset of vocals and instrumental, a model of four sources
    pairings, left_out = pair_stems(
        ("vocals", "instrumental"), ("vocals", "drums", "bass", "other")
    )
    # Then instrumental is the sum of the model's non-vocal stems, the sources left out
    assert [(p.stem, p.references, p.estimates) for p in pairings] == [
        ("vocals", ("vocals",), ("vocals",)),
        ("instrumental", ("instrumental",), ("drums", "bass", "other")),
    ]
    assert [item.stem for item in left_out] == ["drums", "bass", "other"]
    # And a model's instrumental (or MUSDB's accompaniment) against four references
    pairings, left_out = pair_stems(
        ("vocals", "drums", "bass", "other"), ("vocals", "accompaniment")
    )
    assert pairings[-1].references == ("drums", "bass", "other")
    assert [item.stem for item in left_out] == ["drums", "bass", "other"]
    # And BSSEval scores an overlapping sum apart from the sources
    pairings, _ = pair_stems(
        ("vocals", "drums", "bass", "other"), ("vocals", "drums", "bass", "other", "instrumental")
    )
    sets = bss_sets(pairings)
    assert [[p.stem for p in s] for s in sets] == [
        ["vocals", "drums", "bass", "other"],
        ["instrumental"],
    ]


def test_a_silent_reference_leaves_its_bsseval_out_and_scores_the_rest() -> None:
    stems = sources(5, ("vocals", "other", "bass"), seconds=2.0)
    stems["vocals"] = np.zeros_like(stems["vocals"])  # an instrumental track
    estimates = {name: noisy(audio + 1e-3, 10.0) for name, audio in stems.items()}
    scores, _ = score_track("t", "m", stems, estimates, sample_rate=44100)
    values = {(s.stem, s.metric): s.value for s in scores}
    assert values[("vocals", "SDR")] is None
    assert values[("other", "SDR")] is not None and values[("bass", "SDR")] is not None
