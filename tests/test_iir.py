"""Streaming biquad cascades by block matrix products, against scipy's ``lfilter``."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import lfilter

from bridge.effects.iir import CascadeFilter
from bridge.effects.loudness import _k_weighting

from processes import child_json


def reference(sections: list, signal: np.ndarray) -> np.ndarray:
    """The cascade through scipy, one section after another, in float64."""
    out = signal.astype(np.float64)
    for b, a in sections:
        out = lfilter(b, a, out, axis=1)
    return out


def streamed(sections: list, signal: np.ndarray, sizes: list[int]) -> np.ndarray:
    """The cascade fed ``sizes`` frames at a time, the rest in one last block."""
    cascade = CascadeFilter(sections, channels=signal.shape[0])
    parts, position = [], 0
    for size in [*sizes, signal.shape[1]]:
        parts.append(cascade.process(signal[:, position : position + size]))
        position += size
    return np.concatenate(parts, axis=1)


@pytest.mark.parametrize("rate", [8000, 44100, 48000, 96000, 192000])
def test_the_k_weighting_matches_lfilter_at_every_rate(rate: int) -> None:
    # Given two seconds of noise and the BS.1770 filters for the rate
    signal = np.random.default_rng(rate).standard_normal((2, 2 * rate))
    sections = list(_k_weighting(rate))
    # When filtered in one block
    found = CascadeFilter(sections, channels=2).process(signal)
    # Then it is scipy's result to float64 rounding (the 38 Hz high-pass has poles near
    # 1, more so at high rates, which is where both sides' rounding grows)
    expected = reference(sections, signal)
    assert np.abs(found - expected).max() < 1e-8 * np.abs(expected).max()


def test_any_split_of_the_stream_gives_the_same_output() -> None:
    # Given noise, and block sizes around the internal block (64) and group (64 x 64)
    signal = np.random.default_rng(1).standard_normal((3, 30_000))
    sections = list(_k_weighting(44100))
    whole = CascadeFilter(sections, channels=3).process(signal)
    sizes = [1, 0, 2, 63, 64, 65, 127, 4095, 4096, 4097, 1, 0]
    # When fed in those pieces
    pieces = streamed(sections, signal, sizes)
    # Then the state carried between calls makes it the same signal
    assert pieces.shape == signal.shape
    assert np.abs(pieces - whole).max() < 1e-10 * np.abs(whole).max()
    assert np.abs(pieces - reference(sections, signal)).max() < 1e-9 * np.abs(whole).max()


def test_random_stable_cascades_match_lfilter() -> None:
    rng = np.random.default_rng(7)
    for _ in range(5):
        # Given three random stable biquads (poles inside the unit circle)
        sections = []
        for _ in range(3):
            radius, angle = rng.uniform(0.1, 0.98), rng.uniform(0.0, np.pi)
            a = [1.0, -2.0 * radius * np.cos(angle), radius**2]
            sections.append((rng.standard_normal(3).tolist(), a))
        signal = rng.standard_normal((1, 10_000))
        # When streamed in uneven blocks
        found = streamed(sections, signal, [1000, 33, 2048])
        # Then each equals scipy's
        expected = reference(sections, signal)
        assert np.abs(found - expected).max() < 1e-9 * np.abs(expected).max()


def test_coefficients_are_normalised_by_a0_and_channels_stay_apart() -> None:
    # Given a section written with a[0] = 2, and two channels, one of them silent
    sections = [([2.0, 0.4, -0.2], [2.0, -0.5, 0.1])]
    signal = np.zeros((2, 500))
    signal[0, 0] = 1.0
    found = CascadeFilter(sections, channels=2).process(signal)
    # Then channel 0 is the impulse response lfilter gives, channel 1 stays silent
    np.testing.assert_allclose(found[0], lfilter(*sections[0], signal[0]), atol=1e-15)
    assert not found[1].any()


def test_the_input_is_not_changed_and_empty_blocks_are_empty() -> None:
    cascade = CascadeFilter(list(_k_weighting(48000)), channels=2)
    block = np.ones((2, 100), dtype=np.float32)
    out = cascade.process(block)
    assert out.dtype == np.float64
    assert (block == 1.0).all()
    assert cascade.process(np.zeros((2, 0))).shape == (2, 0)


@pytest.mark.parametrize(
    ("sections", "block", "message"),
    [
        ([([1.0, 0.0], [1.0, 0.0, 0.0])], np.zeros((1, 8)), "not 2 and 3"),
        ([([1.0, 0.0, 0.0], [0.0, 0.5, 0.0])], np.zeros((1, 8)), "must not be 0"),
        ([([1.0, 0.0, 0.0], [1.0, 0.0, 0.0])], np.zeros((2, 8)), "expected a \\(1, n\\) block"),
        ([([1.0, 0.0, 0.0], [1.0, 0.0, 0.0])], np.zeros(8), "got \\(8,\\)"),
    ],
)
def test_bad_sections_and_blocks_are_refused(
    sections: list, block: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        CascadeFilter(sections, channels=1).process(block)


def test_separating_does_not_import_scipy_signal() -> None:
    # scipy.signal took 0.6-0.7 s to import, all of it at the start of every separation
    script = (
        "import json, sys\n"
        "import bridge.cli, bridge.models.loaded, bridge.pipeline.run, bridge.effects.stage\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('scipy'))))\n"
    )
    assert child_json(script) == []
