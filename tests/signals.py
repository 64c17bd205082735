"""Test signals and audio files written by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 44100


def music(frames: int, channels: int = 2, *, seed: int = 0, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A deterministic test signal shaped ``(frames, channels)``: tones, noise and a DC offset."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / rate
    base = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 1375 * t)
    out = np.stack(
        [base * (0.6 + 0.2 * c) + 0.05 * rng.standard_normal(frames) for c in range(channels)],
        axis=1,
    )
    return (out + 0.01).astype(np.float32)


def write_audio(
    path: Path, data: np.ndarray, rate: int = SAMPLE_RATE, subtype: str | None = None
) -> Path:
    """Write ``(frames, channels)`` audio with soundfile; the format follows the extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, rate, subtype=subtype)
    return path
