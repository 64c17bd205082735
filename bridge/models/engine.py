"""Streaming, batched separation that reproduces ``demucs.apply.apply_model``.

demucs cuts the whole mix into segments, runs each through the network and
overlap-adds the results with a triangular window into a tensor as long as the
file. This engine does the same arithmetic on a sliding window instead:

* the same segment offsets, the same context padding around short segments, the
  same window, the same shift trick and the same bag weighting, so the output
  matches ``apply_model`` (``split=True``) to float rounding;
* input is pulled block by block and output is released as soon as no later
  segment can touch it, so memory depends on the segment and batch sizes, never
  on the length of the file;
* several segments (of any shift, channel group or position) go through the
  network in one forward pass (``batch_size``);
* bag members whose weights are zero for every wanted stem are not run at all
  (``htdemucs_ft`` runs only the vocals specialist when only vocals are wanted).

The network call itself is injected (``run_batch``), so this module is plain
NumPy and can be tested with any callable.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from bridge.errors import AudioError, JobCancelled
from bridge.models.groups import ChannelGroup, MixStats

#: ``run_batch(member, batch)`` maps ``(B, width, V)`` float32 input to
#: ``(B, sources, width, V_out)`` float32 output with the given bag member.
RunBatch = Callable[[int, np.ndarray], np.ndarray]
#: ``on_progress(done, total)`` is called after each forward pass with segment counts.
OnProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class MemberGeometry:
    """How one network of a bag cuts the mix, as ``apply_model`` would.

    Attributes:
        segment_length: Samples per segment.
        stride: Samples between segment starts.
        weights: The member's weight for each model source.
        valid_length: Input length the network needs for a segment of a given length.
    """

    segment_length: int
    stride: int
    weights: tuple[float, ...]
    valid_length: Callable[[int], int]


@dataclass(frozen=True)
class _Pass:
    member: int
    group: int
    delay: int
    length: int


@dataclass(frozen=True)
class _Segment:
    pass_index: int
    member: int
    offset: int
    length: int
    read_start: int
    read_length: int


@dataclass(frozen=True)
class EnginePlan:
    """Every forward pass of one separation, in the order they will run."""

    passes: tuple[_Pass, ...]
    segments: tuple[_Segment, ...]
    batches: tuple[tuple[int, ...], ...]
    shifts: int

    @property
    def total_segments(self) -> int:
        """Segment forward passes in the whole job (the progress denominator)."""
        return len(self.segments)


def plan(
    *,
    length: int,
    members: Sequence[MemberGeometry],
    groups: int,
    wanted_sources: Sequence[int],
    shifts: int,
    max_shift: int,
    batch_size: int,
    rng: random.Random,
) -> EnginePlan:
    """Lay out every segment of a separation.

    Shift offsets are drawn from ``rng`` as ``apply_model`` draws them (``randint(0,
    max_shift)``, all shifts of member 0, then member 1...), also for members that
    are skipped, so the offsets do not depend on which stems are wanted.
    """
    passes: list[_Pass] = []
    keyed: list[tuple[tuple[int, int, int, int, int], _Segment]] = []
    for m, member in enumerate(members):
        delays = [max_shift - rng.randint(0, max_shift) for _ in range(shifts)] if shifts else [0]
        if not any(member.weights[k] for k in wanted_sources):
            continue
        for s, delay in enumerate(delays):
            for g in range(groups):
                index = len(passes)
                virtual = length + delay
                passes.append(_Pass(m, g, delay, virtual))
                for k, offset in enumerate(range(0, virtual, member.stride)):
                    chunk = min(member.segment_length, virtual - offset)
                    valid = member.valid_length(chunk)
                    start = offset - (valid - chunk) // 2 - delay
                    segment = _Segment(index, m, offset, chunk, start, valid)
                    keyed.append(((k // batch_size, m, k, s, g), segment))
    keyed.sort(key=lambda item: item[0])
    segments = tuple(segment for _, segment in keyed)
    batches: list[tuple[int, ...]] = []
    for i, segment in enumerate(segments):
        previous = segments[batches[-1][0]] if batches else None
        if (
            previous is not None
            and len(batches[-1]) < batch_size
            and previous.member == segment.member
            and previous.read_length == segment.read_length
        ):
            batches[-1] = (*batches[-1], i)
        else:
            batches.append((i,))
    return EnginePlan(tuple(passes), segments, tuple(batches), shifts)


def triangular_window(segment_length: int) -> np.ndarray:
    """demucs' overlap-add weight: a triangle peaking at 1 in the middle."""
    half = segment_length // 2
    rising = np.arange(1, half + 1, dtype=np.int64)
    falling = np.arange(segment_length - half, 0, -1, dtype=np.int64)
    weight = np.concatenate([rising, falling])
    return (weight / weight.max()).astype(np.float32)


class _OverlapAdd:
    """Weighted sum of segment outputs over a moving stretch of one pass."""

    def __init__(self, sources: int, width: int) -> None:
        self.base = 0
        self.total = np.zeros((sources, width, 0), dtype=np.float32)
        self.weight = np.zeros(0, dtype=np.float32)

    def add(self, offset: int, chunk: np.ndarray, window: np.ndarray) -> None:
        end = offset + chunk.shape[-1] - self.base
        grow = end - self.weight.shape[0]
        if grow > 0:
            shape = (*self.total.shape[:2], grow)
            self.total = np.concatenate([self.total, np.zeros(shape, np.float32)], axis=-1)
            self.weight = np.concatenate([self.weight, np.zeros(grow, np.float32)])
        start = offset - self.base
        self.total[..., start:end] += window * chunk
        self.weight[start:end] += window

    def take(self, start: int, stop: int) -> np.ndarray:
        """The finished average over ``[start, stop)``; earlier samples are dropped."""
        a, b = start - self.base, stop - self.base
        out = self.total[..., a:b] / self.weight[a:b]
        self.total = self.total[..., b:].copy()
        self.weight = self.weight[b:].copy()
        self.base = stop
        return out


class InputWindow:
    """The channel groups over a sliding stretch of the mix, zero outside it: normalised
    by each group's ``stats``, or as they are when there are none (the chunked families
    take the mix as it is, :mod:`bridge.models.chunks`)."""

    def __init__(
        self,
        blocks: Iterator[np.ndarray],
        *,
        length: int,
        groups: Sequence[ChannelGroup],
        stats: Sequence[MixStats] | None,
        width: int,
    ) -> None:
        self._blocks = blocks
        self._length = length
        self._groups = groups
        self._stats = (
            None if stats is None else [(np.float32(s.mean), np.float32(s.std)) for s in stats]
        )
        self._width = width
        self._base = 0
        self._data = np.zeros((len(groups), width, 0), dtype=np.float32)

    def read(self, group: int, start: int, length: int) -> np.ndarray:
        self._fill(min(start + length, self._length))
        out = np.zeros((self._width, length), dtype=np.float32)
        lo, hi = max(start, self._base), min(start + length, self._base + self._data.shape[-1])
        if hi > lo:
            out[:, lo - start : hi - start] = self._data[
                group, :, lo - self._base : hi - self._base
            ]
        return out

    def drop_before(self, position: int) -> None:
        cut = min(max(0, position - self._base), self._data.shape[-1])
        if cut:
            self._data = self._data[..., cut:].copy()
            self._base += cut

    def _fill(self, until: int) -> None:
        while self._base + self._data.shape[-1] < until:
            block = next(self._blocks, None)
            if block is None:
                raise AudioError(
                    f"the mix ended after {self._base + self._data.shape[-1]} of "
                    f"{self._length} frames; the input changed while it was being separated; "
                    "run again once it is complete"
                )
            expanded = [group.expand(block, self._width) for group in self._groups]
            if self._stats is not None:
                pairs = zip(expanded, self._stats, strict=True)
                expanded = [(group - mean) / std for group, (mean, std) in pairs]
            added = np.stack(expanded).astype(np.float32, copy=False)
            self._data = np.concatenate([self._data, added], axis=-1)


def separate_stream(
    blocks: Iterable[np.ndarray],
    *,
    length: int,
    groups: Sequence[ChannelGroup],
    stats: Sequence[MixStats],
    members: Sequence[MemberGeometry],
    sources: int,
    wanted_sources: Sequence[int],
    run_batch: RunBatch,
    width: int = 2,
    shifts: int = 0,
    max_shift: int = 0,
    batch_size: int = 1,
    rng: random.Random | None = None,
    on_progress: OnProgress | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[np.ndarray]:
    """Separate a stream of mix blocks, yielding stem blocks as soon as they are final.

    Args:
        blocks: ``(channels, n)`` float32 blocks at the model's rate, ``length`` frames
            in all.
        length: Total frames of the mix.
        groups: How the input channels are grouped (see :mod:`bridge.models.groups`).
        stats: Normalisation of each group, measured beforehand.
        members: Geometry of each network in the bag.
        sources: Number of model sources.
        wanted_sources: Indices of the sources to produce, in output order.
        run_batch: Runs one bag member on a batch of segments.
        width: Channels the networks take.
        shifts: Random shifts to average (0 = none).
        max_shift: Largest shift in samples (demucs: half a second).
        batch_size: Segments per forward pass.
        rng: Source of shift offsets.
        on_progress: Called with ``(done, total)`` segments after each pass.
        cancel: When set, the next batch raises :class:`JobCancelled`.

    Yields:
        ``(len(wanted_sources), output channels, n)`` float32 blocks, in order, denormalised;
        ``length`` frames in all.

    Raises:
        JobCancelled: ``cancel`` was set.
    """
    layout = plan(
        length=length,
        members=members,
        groups=len(groups),
        wanted_sources=wanted_sources,
        shifts=shifts,
        max_shift=max_shift,
        batch_size=batch_size,
        rng=rng or random.Random(0),
    )
    window = InputWindow(iter(blocks), length=length, groups=groups, stats=stats, width=width)
    adders = [_OverlapAdd(sources, width) for _ in layout.passes]
    windows = {m: triangular_window(member.segment_length) for m, member in enumerate(members)}
    offsets_left = [
        [seg.offset for seg in layout.segments if seg.pass_index == p]
        for p in range(len(layout.passes))
    ]
    cursor = [0] * len(layout.passes)
    reads_left = _suffix_min([seg.read_start for seg in layout.segments])
    emitted = 0
    done = 0
    for batch in layout.batches:
        if cancel is not None and cancel.is_set():
            raise JobCancelled("separation cancelled")
        segs = [layout.segments[i] for i in batch]
        inputs = np.stack(
            [
                window.read(layout.passes[s.pass_index].group, s.read_start, s.read_length)
                for s in segs
            ]
        )
        outputs = run_batch(segs[0].member, inputs)
        for seg, out in zip(segs, outputs, strict=True):
            trim = (out.shape[-1] - seg.length) // 2
            chunk = out[..., trim : trim + seg.length]
            adders[seg.pass_index].add(seg.offset, chunk, windows[seg.member][: seg.length])
            cursor[seg.pass_index] += 1
        window.drop_before(reads_left[batch[-1] + 1])
        done += len(batch)
        if on_progress is not None:
            on_progress(done, layout.total_segments)
        final = min(
            (offsets_left[p][cursor[p]] if cursor[p] < len(offsets_left[p]) else spec.length)
            - spec.delay
            for p, spec in enumerate(layout.passes)
        )
        if final > emitted:
            yield _combine(layout, adders, members, groups, stats, wanted_sources, emitted, final)
            emitted = final


def _combine(
    layout: EnginePlan,
    adders: list[_OverlapAdd],
    members: Sequence[MemberGeometry],
    groups: Sequence[ChannelGroup],
    stats: Sequence[MixStats],
    wanted_sources: Sequence[int],
    start: int,
    stop: int,
) -> np.ndarray:
    """Mix the finished stretch ``[start, stop)`` of every pass into output stems."""
    per_member: dict[tuple[int, int], np.ndarray] = {}
    for p, spec in enumerate(layout.passes):
        piece = adders[p].take(start + spec.delay, stop + spec.delay)
        key = (spec.member, spec.group)
        per_member[key] = per_member[key] + piece if key in per_member else piece
    if layout.shifts:
        per_member = {key: value / layout.shifts for key, value in per_member.items()}
    wanted = list(wanted_sources)
    totals = np.array(
        [sum(member.weights[k] for member in members) for k in wanted], dtype=np.float32
    )
    out_groups = []
    for g, group in enumerate(groups):
        estimate = np.zeros((len(wanted), *next(iter(per_member.values())).shape[1:]), np.float32)
        for (m, member_group), value in per_member.items():
            if member_group == g:
                weights = np.array([members[m].weights[k] for k in wanted], dtype=np.float32)
                estimate = estimate + value[wanted] * weights[:, None, None]
        estimate = estimate / totals[:, None, None]
        restored = estimate * np.float32(stats[g].std) + np.float32(stats[g].mean)
        out_groups.append(group.collapse(restored))
    return np.concatenate(out_groups, axis=1).astype(np.float32, copy=False)


def _suffix_min(values: Sequence[int]) -> list[int]:
    """``out[i] = min(values[i:])``, with one extra entry holding a huge number."""
    out = [2**62] * (len(values) + 1)
    for i in range(len(values) - 1, -1, -1):
        out[i] = min(values[i], out[i + 1])
    return out
