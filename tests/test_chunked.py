"""A chunked network's stems, and the complement of a single-target one (mix minus target)."""

from __future__ import annotations

import numpy as np

from bridge.models.chunked import ChunkedSeparation
from bridge.models.chunks import tail_aligned_plan
from bridge.models.groups import GroupStats, channel_groups


def halve(batch: np.ndarray) -> np.ndarray:
    """A single-target stand-in: the target is half the chunk, times a ramp."""
    ramp = np.linspace(0.5, 1.0, batch.shape[-1], dtype=np.float32)
    return (0.5 * batch * ramp)[:, None]


def run(model: ChunkedSeparation, mix: np.ndarray, wanted: list[str]) -> np.ndarray:
    groups = channel_groups(mix.shape[0], 2)
    blocks = [mix[:, i : i + 777] for i in range(0, mix.shape[-1], 777)]
    stats = GroupStats(groups, width=2)
    for block in blocks:
        stats.update(block, source="mix")
    return np.concatenate(
        list(
            model.separate(
                blocks, length=mix.shape[-1], groups=groups, stats=stats.result(), wanted=wanted
            )
        ),
        axis=-1,
    )


def single_target() -> ChunkedSeparation:
    return ChunkedSeparation(
        outputs=("vocals",),
        complement="other",
        run=halve,
        plan_for=lambda length: tail_aligned_plan(length, chunk=2048, overlap=4),
        width=2,
        batch_size=2,
    )


def test_the_complement_is_the_mix_minus_the_target() -> None:
    mix = np.random.default_rng(1).standard_normal((2, 10_000)).astype(np.float32)
    model = single_target()
    assert model.sources == ("vocals", "other")
    both = run(model, mix, ["vocals", "other"])
    np.testing.assert_allclose(both[0] + both[1], mix, atol=1e-6)
    # Asked alone, each is the same as asked together
    np.testing.assert_array_equal(run(model, mix, ["other"])[0], both[1])
    np.testing.assert_array_equal(run(model, mix, ["vocals"])[0], both[0])


def test_mono_mixes_keep_one_channel_and_still_add_up() -> None:
    mix = np.random.default_rng(2).standard_normal((1, 5000)).astype(np.float32)
    out = run(single_target(), mix, ["other", "vocals"])
    assert out.shape == (2, 1, 5000)
    np.testing.assert_allclose(out.sum(axis=0), mix, atol=1e-6)
