"""The streaming engine: segment layout, overlap-add arithmetic, streaming and bounded memory."""

from __future__ import annotations

import random
import threading
import tracemalloc
from collections.abc import Iterator

import numpy as np
import pytest

from bridge.errors import JobCancelled
from bridge.models.engine import MemberGeometry, plan, separate_stream, triangular_window
from bridge.models.groups import MixStats, channel_groups

SEGMENT = 1000
STRIDE = 750


def identity_member(weights: tuple[float, ...] = (1.0, 1.0, 1.0)) -> MemberGeometry:
    return MemberGeometry(SEGMENT, STRIDE, weights, lambda length: SEGMENT)


def scaling_network(member: int, batch: np.ndarray) -> np.ndarray:
    """A linear, time-invariant stand-in: source k is the input times k + 1 (+ member)."""
    return np.stack([batch * (k + 1 + member) for k in range(3)], axis=1)


def blocks_of(audio: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, audio.shape[1], size):
        yield audio[:, start : start + size]


def run(audio: np.ndarray, **options: object) -> np.ndarray:
    stats = options.pop("stats", None) or [MixStats(0.1, 2.0)] * len(channel_groups(audio.shape[0]))
    members = options.pop("members", None) or [identity_member()]
    out = separate_stream(
        blocks_of(audio, int(options.pop("block", 333))),  # type: ignore[arg-type]
        length=audio.shape[1],
        groups=channel_groups(audio.shape[0]),
        stats=stats,  # type: ignore[arg-type]
        members=members,  # type: ignore[arg-type]
        sources=3,
        run_batch=scaling_network,
        **options,  # type: ignore[arg-type]
    )
    return np.concatenate(list(out), axis=-1)


def test_window_is_demucs_triangle() -> None:
    window = triangular_window(6)
    np.testing.assert_allclose(window, np.array([1, 2, 3, 3, 2, 1]) / 3, rtol=0, atol=1e-7)


@pytest.mark.parametrize("length", [1, 999, 1000, 1001, 7777])
def test_segments_cover_the_mix_like_apply_model(length: int) -> None:
    # Given one member, no shifts
    layout = plan(
        length=length,
        members=[identity_member()],
        groups=1,
        wanted_sources=[0],
        shifts=0,
        max_shift=0,
        batch_size=4,
        rng=random.Random(0),
    )
    # Then segment starts are range(0, length, stride) and each batch holds at most 4
    assert [s.offset for s in layout.segments] == list(range(0, length, STRIDE))
    assert all(len(batch) <= 4 for batch in layout.batches)
    # And short segments read their padding centred on the segment, as TensorChunk.padded
    last = layout.segments[-1]
    assert last.read_start == last.offset - (SEGMENT - last.length) // 2


@pytest.mark.parametrize("batch_size", [1, 2, 5])
@pytest.mark.parametrize("shifts", [0, 3])
@pytest.mark.parametrize("channels", [1, 2, 3])
def test_linear_network_gives_exact_scaled_mix(batch_size: int, shifts: int, channels: int) -> None:
    # Given a network that scales its input (so any correct overlap-add returns it)
    rng = np.random.default_rng(channels)
    audio = rng.standard_normal((channels, 5 * SEGMENT + 17)).astype(np.float32)
    # When the stream is separated
    out = run(audio, wanted_sources=[0, 2], batch_size=batch_size, shifts=shifts, max_shift=300)
    # Then each wanted source is (k + 1) times the normalised mix, denormalised
    assert out.shape == (2, channels, audio.shape[1])
    for row, k in enumerate([0, 2]):
        expected = ((audio - 0.1) / 2.0 * (k + 1)) * 2.0 + 0.1
        np.testing.assert_allclose(out[row], expected, rtol=0, atol=1e-5)


def test_bag_members_are_weighted_per_source_and_idle_members_skipped() -> None:
    # Given a bag of two members: member 1 alone makes source 2
    calls: list[int] = []

    def network(member: int, batch: np.ndarray) -> np.ndarray:
        calls.append(member)
        return scaling_network(member, batch)

    members = [identity_member((1.0, 1.0, 0.0)), identity_member((0.0, 0.0, 1.0))]
    audio = np.random.default_rng(0).standard_normal((2, 3000)).astype(np.float32)
    stats = [MixStats(0.0, 1.0)]
    # When only source 2 is wanted
    out = separate_stream(
        blocks_of(audio, 500),
        length=3000,
        groups=channel_groups(2),
        stats=stats,
        members=members,
        sources=3,
        wanted_sources=[2],
        run_batch=network,
    )
    result = np.concatenate(list(out), axis=-1)
    # Then only member 1 ran, and source 2 is its output (input times 2 + 1)
    assert set(calls) == {1}
    np.testing.assert_allclose(result[0], audio * 4, rtol=0, atol=1e-5)


def test_output_flows_before_the_input_is_exhausted() -> None:
    # Given a long input whose consumption is counted
    audio = np.zeros((2, 200 * SEGMENT), dtype=np.float32)
    consumed = 0

    def counting_blocks() -> Iterator[np.ndarray]:
        nonlocal consumed
        for block in blocks_of(audio, 500):
            consumed += block.shape[1]
            yield block

    stream = separate_stream(
        counting_blocks(),
        length=audio.shape[1],
        groups=channel_groups(2),
        stats=[MixStats(0.0, 1.0)],
        members=[identity_member()],
        sources=3,
        wanted_sources=[0],
        run_batch=scaling_network,
    )
    # When the first output block arrives
    first = next(stream)
    # Then only a few segments' worth of input had been read
    assert first.shape[-1] > 0
    assert consumed <= 3 * SEGMENT
    stream.close()


def peak_bytes(frames: int, member: MemberGeometry) -> int:
    audio_block = np.zeros((2, 4096), dtype=np.float32)

    def blocks() -> Iterator[np.ndarray]:
        for start in range(0, frames, 4096):
            yield audio_block[:, : min(4096, frames - start)]

    tracemalloc.start()
    total = 0
    for out in separate_stream(
        blocks(),
        length=frames,
        groups=channel_groups(2),
        stats=[MixStats(0.0, 1.0)],
        members=[member],
        sources=3,
        wanted_sources=[0, 1, 2],
        run_batch=scaling_network,
        batch_size=4,
    ):
        total += out.shape[-1]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert total == frames
    return peak


def test_memory_does_not_grow_with_the_length() -> None:
    # Given segments of 20,000 samples (audio, not bookkeeping, dominates as with real
    # 343,980-sample segments) and streams 10x apart in length
    member = MemberGeometry(20_000, 15_000, (1.0, 1.0, 1.0), lambda length: 20_000)
    short, long = peak_bytes(40 * 20_000, member), peak_bytes(400 * 20_000, member)
    # Then the peak of the long one is within 10% of the short one
    assert long <= short * 1.1, (short, long)


def test_cancel_stops_before_the_next_batch() -> None:
    cancel = threading.Event()
    cancel.set()
    audio = np.zeros((2, 5000), dtype=np.float32)
    with pytest.raises(JobCancelled):
        run(audio, wanted_sources=[0], cancel=cancel)
