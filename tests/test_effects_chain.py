"""Effects chains streamed block by block equal one-shot processing, at the exact length."""

from __future__ import annotations

import numpy as np
import pedalboard
import pytest

from bridge.effects.catalog import EFFECTS
from bridge.effects.chain import BLOCK_FRAMES, BoardProcessor, ChainStream, build_board
from bridge.effects.presets import EffectSpec
from bridge.errors import EffectError

RATE = 44100


def signal(frames: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / RATE
    tone = 0.4 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 1.5 * t))
    return np.stack([tone + 0.1 * rng.standard_normal(frames) for _ in range(channels)]).astype(
        np.float32
    )


def mid_range(effect: str) -> EffectSpec:
    """The effect with every parameter set inside its range (away from the defaults)."""
    values = []
    for key, parameter in EFFECTS[effect].items():
        low = parameter.minimum
        high = min(parameter.maximum, 8000.0) if parameter.below_nyquist else parameter.maximum
        values.append((key, low + 0.3 * (high - low)))
    return EffectSpec(effect=effect, parameters=tuple(values))


def stream(
    chain: ChainStream, audio: np.ndarray, sizes: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Push ``audio`` in blocks of the given sizes (cycled), then flush."""
    out, start, index = [], 0, 0
    while start < audio.shape[1]:
        size = sizes[index % len(sizes)]
        out.append(chain.push(audio[:, start : start + size]))
        start += size
        index += 1
    rest, tail = chain.finish()
    return np.concatenate([*out, rest], axis=1), tail


@pytest.mark.parametrize("effect", sorted(EFFECTS))
def test_streaming_equals_one_shot_for_every_built_in_effect(effect: str) -> None:
    # Given 3.3 s of audio and the effect with mid-range settings
    audio = signal(int(3.3 * RATE))
    spec = mid_range(effect)
    expected = build_board([spec]).process(audio, RATE)
    # When it is streamed in uneven blocks (1 frame, tiny, larger than the chain's block)
    chain = ChainStream(BoardProcessor([spec], sample_rate=RATE), channels=2, sample_rate=RATE)
    got, tail = stream(chain, audio, [1, 1000, 20000, 333, 9000])
    chain.close()
    # Then it equals one-shot processing, at exactly the input's length, with no tail
    assert got.shape == audio.shape
    assert tail.shape == (2, 0)
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


class DelayingProcessor:
    """A plugin with latency, as pedalboard reports it: fewer frames out at first."""

    def __init__(self, latency: int) -> None:
        self._held = np.zeros((2, 0), dtype=np.float32)
        self._latency = latency
        self._seen = 0

    def process(self, block: np.ndarray) -> np.ndarray:
        self._held = np.concatenate([self._held, block], axis=1)
        self._seen += block.shape[1]
        ready = max(0, self._seen - self._latency) - (self._seen - self._held.shape[1])
        ready = min(max(ready, 0), self._held.shape[1])
        out, self._held = self._held[:, :ready], self._held[:, ready:]
        return out * 0.5

    def close(self) -> None:
        pass


def test_latency_is_flushed_and_the_length_kept() -> None:
    # Given a processor that holds back 3 blocks and a bit
    audio = signal(5 * BLOCK_FRAMES + 77)
    chain = ChainStream(DelayingProcessor(3 * BLOCK_FRAMES + 5), channels=2, sample_rate=RATE)
    # When the stem streams through
    got, tail = stream(chain, audio, [4000])
    # Then every frame comes back, aligned, exactly as long as the input
    assert got.shape == audio.shape
    np.testing.assert_allclose(got, audio * 0.5, atol=0)
    assert tail.shape == (2, 0)


def test_reverb_tail_is_cut_by_default_and_kept_when_asked() -> None:
    # Given a short burst followed by silence, through a long reverb
    audio = np.zeros((2, RATE), dtype=np.float32)
    audio[:, :2000] = signal(2000)
    spec = EffectSpec("Reverb", (("room_size", 0.9), ("wet_level", 0.8)))
    cut = ChainStream(BoardProcessor([spec], sample_rate=RATE), channels=2, sample_rate=RATE)
    kept = ChainStream(
        BoardProcessor([spec], sample_rate=RATE), channels=2, sample_rate=RATE, tail_frames=RATE
    )
    # When both stream it
    body_cut, tail_cut = stream(cut, audio, [5000])
    body_kept, tail_kept = stream(kept, audio, [5000])
    # Then the body is the same, and only the second keeps exactly one second of tail
    np.testing.assert_array_equal(body_cut, body_kept)
    assert tail_cut.shape == (2, 0)
    assert tail_kept.shape == (2, RATE)
    assert np.abs(tail_kept).max() > 1e-4
    # and the kept tail is what one-shot processing of input plus silence gives
    padded = np.concatenate([audio, np.zeros((2, RATE), np.float32)], axis=1)
    expected = build_board([spec]).process(padded, RATE)
    np.testing.assert_allclose(np.concatenate([body_kept, tail_kept], axis=1), expected, atol=1e-6)


def test_a_chain_that_never_returns_its_audio_fails_clearly() -> None:
    class Swallower:
        def process(self, block: np.ndarray) -> np.ndarray:
            return block[:, :0]

        def close(self) -> None:
            pass

    chain = ChainStream(Swallower(), channels=2, sample_rate=8000)
    chain.push(signal(100))
    with pytest.raises(EffectError, match="held back its audio"):
        chain.finish()


def test_non_finite_output_is_an_effect_error() -> None:
    class Exploder:
        def process(self, block: np.ndarray) -> np.ndarray:
            return block * np.float32(np.inf)

        def close(self) -> None:
            pass

    chain = ChainStream(Exploder(), channels=2, sample_rate=RATE)
    with pytest.raises(EffectError, match="NaN/Inf"):
        stream(chain, signal(BLOCK_FRAMES * 2), [BLOCK_FRAMES])


def test_pitch_shift_still_fails_when_streamed_upstream() -> None:
    # Why PitchShift is refused in presets (spotify/pedalboard#415): streamed in blocks
    # it returns silence where one-shot processing returns the shifted audio. When a
    # pedalboard release fixes it, this test fails and PitchShift can be allowed.
    audio = signal(2 * RATE)
    board = pedalboard.Pedalboard([pedalboard.PitchShift(semitones=3)])
    streamed = np.concatenate(
        [
            board.process(audio[:, i : i + BLOCK_FRAMES], RATE, reset=False)
            for i in range(0, audio.shape[1], BLOCK_FRAMES)
        ],
        axis=1,
    )
    assert streamed.shape[1] < audio.shape[1] or np.abs(streamed).max() == 0
