"""Tiny evaluation datasets written by the tests: synthetic sources whose mixture is their
sum, in each layout ``stembridge evaluate`` reads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from signals import SAMPLE_RATE, write_audio

SOURCES = ("vocals", "drums", "bass", "other")
#: Short, so the museval reference some tests compare against stays quick.
SECONDS = 2.0


def sources(seed: int, stems: Sequence[str] = SOURCES, seconds: float = SECONDS) -> dict:
    """Distinct deterministic stereo stems: a vibrato voice, noise bursts, a bass tone, a
    chord; stems named otherwise get filtered noise."""
    rng = np.random.default_rng(seed)
    frames = round(seconds * SAMPLE_RATE)
    t = np.arange(frames) / SAMPLE_RATE
    made = {
        "vocals": np.sin(2 * np.pi * (330 + 20 * seed) * t + 3 * np.sin(2 * np.pi * 5 * t)),
        "drums": rng.standard_normal(frames) * (np.sin(2 * np.pi * 2 * t) > 0.6),
        "bass": np.sin(2 * np.pi * (55 + 5 * seed) * t),
        "other": sum(np.sin(2 * np.pi * f * t) for f in (523.0, 659.0, 784.0)) / 3,
    }
    out = {}
    for index, stem in enumerate(stems):
        mono = made.get(stem, np.convolve(rng.standard_normal(frames), np.ones(8) / 8, "same"))
        pan = 0.4 + 0.1 * index
        # Each channel its own noise floor: real stems are never exact copies across
        # channels, which BSSEval's distortion filters cannot be fitted to.
        air = 0.05 * rng.standard_normal((frames, 2))
        out[stem] = (0.2 * (np.stack([mono * pan, mono * (1 - pan)], axis=1) + air)).astype(
            np.float32
        )
    return out


def write_track(
    folder: Path, stems: Mapping[str, np.ndarray], *, mixture: bool = True, ext: str = "wav"
) -> Path:
    """``folder/mixture.<ext>`` (the sum) and ``folder/<stem>.<ext>``, 32-bit float."""
    for stem, audio in stems.items():
        write_audio(folder / f"{stem}.{ext}", audio, subtype="FLOAT")
    if mixture:
        mix = np.sum(list(stems.values()), axis=0)
        write_audio(folder / f"mixture.{ext}", mix, subtype="FLOAT")
    return folder


def folders_dataset(root: Path, tracks: int, stems: Sequence[str] = SOURCES) -> Path:
    """``root/<track>/mixture.wav + <stem>.wav``: ``Song 1``, ``Song 2``..."""
    for index in range(1, tracks + 1):
        write_track(root / f"Song {index}", sources(index, stems))
    return root


def musdb18hq(root: Path, tracks: int) -> Path:
    """MUSDB18-HQ's layout: ``test/<track>/`` and a ``train/`` beside it."""
    folders_dataset(root / "test", tracks)
    write_track(root / "train" / "Train Song", sources(99))
    return root


def estimates(root: Path, dataset: Path, *, swap: bool = False, subtype: str = "PCM_24") -> Path:
    """``root/<track>/<stem>.wav`` from each track's own references (PCM, so the error is
    the rounding: SDR near 140 dB at 24 bits); ``swap`` gives each stem another's audio."""
    import soundfile as sf

    for track in sorted(p for p in dataset.iterdir() if p.is_dir()):
        stems = sorted(p.stem for p in track.glob("*.wav") if p.stem != "mixture")
        for index, stem in enumerate(stems):
            source = stems[(index + 1) % len(stems)] if swap else stem
            audio, rate = sf.read(str(track / f"{source}.wav"), dtype="float32")
            write_audio(root / track.name / f"{stem}.wav", audio, rate, subtype=subtype)
    return root
