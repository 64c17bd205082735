"""The chunked engine streams exactly what python-audio-separator computes on the whole mix."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import windows

from bridge.models.chunks import ChunkPlan, padded_plan, separate_chunks, tail_aligned_plan
from bridge.models.groups import channel_groups

SOURCES = 3


def network(batch: np.ndarray) -> np.ndarray:
    """A stand-in with memory of where in the chunk a frame is: ``(B, 2, n) -> (B, 3, 2, n)``."""
    position = np.linspace(-1, 1, batch.shape[-1], dtype=np.float32)
    return np.stack(
        [np.tanh((k + 1) * batch + k * position) for k in range(SOURCES)], axis=1
    ).astype(np.float32)


def reference_roformer(mix: np.ndarray, chunk: int, overlap: int) -> np.ndarray:
    """audio-separator 0.47's RoFormer demix, on the whole mix (its schedule and window)."""
    length = mix.shape[-1]
    step = chunk // overlap
    starts = []
    for offset in range(0, length, step):
        if offset + chunk >= length:
            tail = max(length - chunk, 0)
            if not starts or starts[-1] != tail:
                starts.append(tail)
            break
        starts.append(offset)
    window = windows.hamming(chunk).astype(np.float32)
    result = np.zeros((SOURCES, *mix.shape), np.float32)
    counter = np.zeros_like(result)
    for start in starts:
        part = mix[:, start : start + chunk]
        size = part.shape[-1]
        out = network(part[None])[0]
        result[..., start : start + size] += out[..., :size] * window[:size]
        counter[..., start : start + size] += window[:size]
    return result / np.maximum(counter, 1e-10)


def reference_mdxc(mix: np.ndarray, chunk: int, overlap: int, batch_size: int) -> np.ndarray:
    """audio-separator 0.47's MDX23C demix, on the whole mix (zero padding, unfold, / overlap)."""
    length = mix.shape[-1]
    hop = chunk // overlap
    pad = hop - (length - chunk) % hop
    padded = np.concatenate(
        [np.zeros((2, chunk - hop)), mix, np.zeros((2, pad + chunk - hop))], axis=1
    ).astype(np.float32)
    count = (padded.shape[-1] - chunk) // hop + 1
    chunks = np.stack([padded[:, k * hop : k * hop + chunk] for k in range(count)])
    total = np.zeros((SOURCES, *padded.shape), np.float32)
    for first in range(0, count, batch_size):
        for k, out in enumerate(network(chunks[first : first + batch_size]), start=first):
            total[..., k * hop : k * hop + chunk] += out
    total /= overlap
    return total[..., chunk - hop : -(pad + chunk - hop)]


def stream(mix: np.ndarray, plan: ChunkPlan, batch_size: int, block: int) -> np.ndarray:
    groups = channel_groups(mix.shape[0], 2)
    blocks = (mix[:, i : i + block] for i in range(0, mix.shape[-1], block))
    pieces = list(
        separate_chunks(
            blocks,
            plan=plan,
            groups=groups,
            sources=SOURCES,
            wanted_sources=range(SOURCES),
            run_batch=network,
            batch_size=batch_size,
        )
    )
    assert all(piece.shape[0] == SOURCES for piece in pieces)
    return np.concatenate(pieces, axis=-1)


LENGTHS = [700, 1024, 1025, 4096 + 337, 9000]


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("batch_size", [1, 3])
def test_roformer_schedule_matches_the_reference(length: int, batch_size: int) -> None:
    mix = np.random.default_rng(length).standard_normal((2, length)).astype(np.float32)
    plan = tail_aligned_plan(length, chunk=1024, overlap=4)
    out = stream(mix, plan, batch_size, block=333)
    assert out.shape == (SOURCES, 2, length)
    np.testing.assert_allclose(out, reference_roformer(mix, 1024, 4), atol=1e-6, rtol=0)


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("batch_size", [1, 2])
def test_mdxc_schedule_matches_the_reference(length: int, batch_size: int) -> None:
    mix = np.random.default_rng(length).standard_normal((2, length)).astype(np.float32)
    plan = padded_plan(length, chunk=1024, overlap=8)
    out = stream(mix, plan, batch_size, block=500)
    assert out.shape == (SOURCES, 2, length)
    np.testing.assert_allclose(out, reference_mdxc(mix, 1024, 8, batch_size), atol=1e-6, rtol=0)


def test_mono_and_many_channels_go_through_in_pairs() -> None:
    # Given a 3-channel mix: channels 1-2 as a pair, channel 3 doubled up and averaged back
    mix = np.random.default_rng(5).standard_normal((3, 3000)).astype(np.float32)
    plan = tail_aligned_plan(3000, chunk=1024, overlap=2)
    out = stream(mix, plan, batch_size=2, block=700)
    assert out.shape == (SOURCES, 3, 3000)
    np.testing.assert_allclose(out[:, :2], reference_roformer(mix[:2], 1024, 2), atol=1e-6)
    single = reference_roformer(np.repeat(mix[2:], 2, axis=0), 1024, 2).mean(axis=1)
    np.testing.assert_allclose(out[:, 2], single, atol=1e-6)


def test_memory_does_not_grow_with_the_length() -> None:
    # The engine never holds more than about a chunk and a batch of the mix
    held: list[int] = []
    length = 200_000

    def blocks():  # type: ignore[no-untyped-def]
        for start in range(0, length, 1000):
            held.append(start)
            yield np.zeros((2, min(1000, length - start)), np.float32)

    plan = tail_aligned_plan(length, chunk=2048, overlap=4)
    emitted = 0
    for piece in separate_chunks(
        blocks(),
        plan=plan,
        groups=channel_groups(2, 2),
        sources=SOURCES,
        wanted_sources=[0],
        run_batch=network,
        batch_size=2,
    ):
        emitted += piece.shape[-1]
        # blocks read ahead of what was emitted: at most a chunk, a batch and a block
        assert held[-1] - emitted <= 2048 + 2 * 512 + 1000
    assert emitted == length


def test_bad_schedules_are_refused() -> None:
    with pytest.raises(ValueError, match="no step"):
        tail_aligned_plan(100, chunk=4, overlap=8)
    with pytest.raises(ValueError, match="no hop"):
        padded_plan(100, chunk=4, overlap=8)


def test_a_chunk_can_have_a_window_of_its_own() -> None:
    # Given two chunks, the second cut short by the end of the mix and weighted by a
    # shorter window of its own (as UVR's MDX-Net weights its last chunks)
    mix = np.random.default_rng(9).standard_normal((2, 1500)).astype(np.float32)
    short = np.hanning(500).astype(np.float32)
    plan = ChunkPlan(1500, 1000, (0, 1000), np.hanning(1000).astype(np.float32), None, {1: short})
    out = stream(mix, plan, batch_size=1, block=400)
    # Then the second chunk's output past its own window is never used
    first = network(mix[None, :, :1000])[0] * plan.window
    padded = np.concatenate([mix[:, 1000:], np.zeros((2, 500), np.float32)], axis=1)
    second = network(padded[None])[0][..., :500] * short
    total = np.zeros((SOURCES, 2, 1500), np.float32)
    weight = np.zeros(1500, np.float32)
    total[..., :1000] += first
    weight[:1000] += plan.window
    total[..., 1000:] += second
    weight[1000:] += short
    np.testing.assert_allclose(out, total / np.maximum(weight, 1e-10), atol=1e-6)
