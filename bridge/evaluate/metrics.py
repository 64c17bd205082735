"""Separation quality metrics on NumPy arrays (no torch).

* **BSSEval v4** (SDR, SIR, ISR, SAR) as SiSEC 2018 reports it, museval's equations
  arranged for long tracks (:mod:`bridge.evaluate.bsseval`): distortion filters fitted on
  the whole track, the ratios on 1 s frames without overlap; a track's value is the
  median over its frames (frames where a reference or estimate is silent are NaN and left
  out), a model's the median over tracks.
* **uSDR**, the per-song "SDR" of the MDX challenges and the MVSEP leaderboard:
  ``10·log10(Σ ref² / Σ (ref - est)²)`` over the whole track and every channel, with
  the MDX scorer's 1e-7 added to both sums.
* **SI-SDR** (Le Roux et al. 2019): the estimate's part along the reference, scaled
  to fit, against the rest; one scale for all channels, so a gain on the estimate
  changes nothing.

Arrays are ``(frames, channels)`` per stem, or ``(stems, frames, channels)`` for a set.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

#: BSSEval's frame, as SiSEC 2018 scores MUSDB18.
FRAME_SECONDS = 1.0
#: The BSSEval v4 ratios, in museval's order of return.
BSS_METRICS = ("SDR", "ISR", "SIR", "SAR")
#: Every metric a stem is scored with.
METRICS = ("SDR", "SIR", "ISR", "SAR", "uSDR", "SI-SDR")
#: What the MDX scorer adds to both energies, so silence scores 0 dB instead of NaN.
MDX_DELTA = 1e-7

Audio = npt.NDArray[np.floating]


def usdr(reference: Audio, estimate: Audio) -> float:
    """The MDX challenges' whole-track SDR of one stem, in dB."""
    ref = np.asarray(reference, dtype=np.float64)
    error = ref - np.asarray(estimate, dtype=np.float64)
    return float(
        10 * np.log10((np.sum(ref * ref) + MDX_DELTA) / (np.sum(error * error) + MDX_DELTA))
    )


def si_sdr(reference: Audio, estimate: Audio) -> float:
    """Scale-invariant SDR of one stem, in dB (``-inf`` for an estimate of silence,
    ``nan`` for a silent reference)."""
    ref = np.asarray(reference, dtype=np.float64).ravel()
    est = np.asarray(estimate, dtype=np.float64).ravel()
    energy = float(ref @ ref)
    if energy == 0.0:
        return math.nan
    target = (float(est @ ref) / energy) * ref
    noise = est - target
    signal, rest = float(target @ target), float(noise @ noise)
    if signal == 0.0:
        return -math.inf
    if rest == 0.0:
        return math.inf
    return 10 * math.log10(signal / rest)


def bss_eval_v4(references: Audio, estimates: Audio, *, sample_rate: int) -> dict[str, Audio]:
    """BSSEval v4 of a set of stems on 1 s frames (:mod:`bridge.evaluate.bsseval`).

    Args:
        references: ``(stems, frames, channels)``: the true stems, scored together (each
            one's interference is measured against the others); none silent.
        estimates: The same shape: the estimate of each reference, in order.
        sample_rate: Of both.

    Returns:
        ``SDR``, ``ISR``, ``SIR``, ``SAR``: each ``(stems, frames)`` in dB, NaN where a
        frame of a reference or estimate is silent.
    """
    from bridge.evaluate import bsseval

    frame = round(FRAME_SECONDS * sample_rate)
    ratios = bsseval.bss_eval(references, estimates, window=frame)
    return {"SDR": ratios.sdr, "ISR": ratios.isr, "SIR": ratios.sir, "SAR": ratios.sar}


def frame_median(values: Audio) -> float | None:
    """The median of one stem's frame values, silent (NaN) frames left out; ``None`` when
    every frame is silent, or when it is infinite (an estimate equal to its reference):
    JSON, where results go, has no infinities."""
    found = np.asarray(values, dtype=np.float64)
    found = found[~np.isnan(found)]
    median = float(np.median(found)) if found.size else math.nan
    return median if math.isfinite(median) else None
