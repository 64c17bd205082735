"""One track's estimates against its references: which stems can be compared, and their
scores (no torch).

A stem is scored where both sides have it, or can make it as a sum of what they have:
a model without ``instrumental`` has it as the sum of its stems but vocals, a dataset
without it as the sum of its references but vocals (``accompaniment`` is the same word,
as MUSDB18 says it; ``no_<stem>`` works too). A stem neither side can make is left out,
and the report says so.

BSSEval measures a stem's interference against the other references of its set, so
the stems are scored in sets that do not overlap: those made of different references
together (the four MUSDB18 sources as SiSEC scores them), and a sum that overlaps them
(``instrumental`` beside ``drums``) with its complement, as SiSEC scores accompaniment
with vocals.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bridge.errors import SettingsError
from bridge.evaluate import metrics
from bridge.stems import plan_stems

_WORD = re.compile(r"^[A-Za-z0-9_-]+$")
#: MUSDB18's word for the sum of every source but vocals, and ours.
_ALIASES = {"accompaniment": "instrumental"}


@dataclass(frozen=True)
class Pairing:
    """One scored stem: the references and the estimates summed to compare it."""

    stem: str
    references: tuple[str, ...]
    estimates: tuple[str, ...]


@dataclass(frozen=True)
class LeftOut:
    """A stem one side has that the other cannot make."""

    stem: str
    reason: str


@dataclass(frozen=True)
class Score:
    """One value of the results: ``None`` where it is undefined (every frame silent)."""

    track: str
    model: str
    stem: str
    metric: str
    value: float | None


def _as_sum(stem: str, parts: Sequence[str]) -> tuple[str, ...] | None:
    """The parts that add up to ``stem`` (``instrumental``, ``no_<stem>``), if they do."""
    word = _ALIASES.get(stem, stem)
    if not _WORD.match(word):
        return None
    try:
        (plan,) = plan_stems([word], parts)
    except SettingsError:
        return None
    return plan.sources


def pair_stems(
    references: Sequence[str], estimates: Sequence[str]
) -> tuple[tuple[Pairing, ...], tuple[LeftOut, ...]]:
    """Which stems of a track can be scored, and which are left out (see the module
    docstring); references' stems first, in their order."""
    pairings: list[Pairing] = []
    left_out: list[LeftOut] = []
    for stem in references:
        if stem in estimates:
            pairings.append(Pairing(stem, (stem,), (stem,)))
        elif (parts := _as_sum(stem, estimates)) is not None:
            pairings.append(Pairing(stem, (stem,), parts))
        else:
            left_out.append(
                LeftOut(
                    stem, f"the estimates have no {stem} ({', '.join(estimates)}), nor its parts"
                )
            )
    for stem in estimates:
        if stem in references:
            continue
        if (parts := _as_sum(stem, references)) is not None:
            pairings.append(Pairing(stem, parts, (stem,)))
        else:
            left_out.append(
                LeftOut(
                    stem,
                    f"the dataset has no {stem} reference ({', '.join(references)}), nor its parts",
                )
            )
    return tuple(pairings), tuple(left_out)


def bss_sets(pairings: Sequence[Pairing]) -> list[list[Pairing]]:
    """The sets BSSEval scores together: the first holds every pairing whose references
    overlap no earlier one's; each other pairing forms a set with its complement (or
    alone, when it has none)."""
    first: list[Pairing] = []
    used: set[str] = set()
    rest: list[Pairing] = []
    for pairing in pairings:
        if used.isdisjoint(pairing.references):
            first.append(pairing)
            used.update(pairing.references)
        else:
            rest.append(pairing)
    return [first, *([pairing] for pairing in rest)] if first else [[p] for p in rest]


def score_track(
    track: str,
    model: str,
    references: Mapping[str, np.ndarray],
    estimates: Mapping[str, np.ndarray],
    *,
    sample_rate: int,
) -> tuple[list[Score], tuple[LeftOut, ...]]:
    """Every metric of every stem that can be compared (see :func:`pair_stems`).

    Args:
        track: Its name, for the scores.
        model: The candidate's name, for the scores.
        references: The dataset's stems, ``(frames, channels)`` each.
        estimates: The candidate's stems, of the same shape.
        sample_rate: Of both.
    """
    pairings, left_out = pair_stems(tuple(references), tuple(estimates))

    def total(audio: Mapping[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
        return np.asarray(np.sum([audio[name] for name in names], axis=0, dtype=np.float32))

    scores: list[Score] = []
    for pairing in pairings:
        ref, est = total(references, pairing.references), total(estimates, pairing.estimates)
        scores.append(Score(track, model, pairing.stem, "uSDR", metrics.usdr(ref, est)))
        scores.append(
            Score(track, model, pairing.stem, "SI-SDR", _finite(metrics.si_sdr(ref, est)))
        )
    for group in bss_sets(pairings):
        # A silent reference makes every frame of its set NaN: its BSSEval metrics are
        # undefined, and the set is scored without it.
        audible = [p for p in group if np.any(total(references, p.references))]
        members = list(audible)
        if len(members) == 1:
            complement = _complement(members[0], tuple(references), tuple(estimates))
            members += [complement] if complement is not None else []
        values = (
            metrics.bss_eval_v4(
                np.stack([total(references, p.references) for p in members]),
                np.stack([total(estimates, p.estimates) for p in members]),
                sample_rate=sample_rate,
            )
            if members
            else None
        )
        for pairing in group:
            index = audible.index(pairing) if pairing in audible else None
            scores.extend(
                Score(
                    track,
                    model,
                    pairing.stem,
                    name,
                    None
                    if values is None or index is None
                    else metrics.frame_median(values[name][index]),
                )
                for name in metrics.BSS_METRICS
            )
    order = {stem: i for i, stem in enumerate(p.stem for p in pairings)}
    rank = {name: i for i, name in enumerate(metrics.METRICS)}
    scores.sort(key=lambda s: (order[s.stem], rank[s.metric]))
    return scores, left_out


def _complement(
    pairing: Pairing, references: Sequence[str], estimates: Sequence[str]
) -> Pairing | None:
    """What the rest of the mixture is on both sides (vocals beside instrumental)."""
    ref = tuple(stem for stem in references if stem not in pairing.references)
    est = tuple(stem for stem in estimates if stem not in pairing.estimates)
    return Pairing(f"not {pairing.stem}", ref, est) if ref and est else None


def _finite(value: float) -> float | None:
    """JSON has no infinities or NaN: an undefined or unbounded value is ``None``."""
    return value if np.isfinite(value) else None
