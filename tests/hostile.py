"""A corpus of hostile audio files, written by the tests.

Each entry is a file a studio could drop into a render folder: broken, lying,
extreme or odd. ``expect`` says what a correct StemBridge does with it: ``done``
(separate it correctly) or ``failed`` (a clear job error naming the file).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from signals import music, write_audio


@dataclass(frozen=True)
class Hostile:
    """One corpus entry: a file name, how to write it, and the outcome a user should see."""

    name: str
    write: Callable[[Path], None]
    expect: str
    frames: int = 0


def _bytes(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def _audio(
    data: np.ndarray, rate: int = 44100, subtype: str | None = None
) -> Callable[[Path], None]:
    return lambda path: write_audio(path, data, rate, subtype)


def _wav_bytes(frames: int = 4410, rate: int = 44100) -> bytes:
    """A valid 16-bit stereo WAV as bytes."""
    buffer = io.BytesIO()
    sf.write(buffer, music(frames, rate=rate), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _lying_header(path: Path) -> None:
    """A WAV whose RIFF and data sizes claim ten times the samples it holds."""
    data = bytearray(_wav_bytes())
    data_at = data.index(b"data")
    real = struct.unpack_from("<I", data, data_at + 4)[0]
    struct.pack_into("<I", data, data_at + 4, real * 10)
    struct.pack_into("<I", data, 4, len(data) - 8 + real * 9)
    path.write_bytes(bytes(data))


def _truncated(path: Path) -> None:
    data = _wav_bytes(44100)
    path.write_bytes(data[: len(data) // 2])


def _header_only(path: Path) -> None:
    data = _wav_bytes()
    path.write_bytes(data[: data.index(b"data") + 8])


def _random(size: int, seed: int) -> Callable[[Path], None]:
    return _bytes(np.random.default_rng(seed).bytes(size))


def _nan_inf() -> np.ndarray:
    audio = music(22050)
    audio[100:200, 0] = np.nan
    audio[300:400, 1] = np.inf
    audio[500:600, :] = -np.inf
    return audio


def _square(frames: int) -> np.ndarray:
    wave = np.where(np.sin(2 * np.pi * 100 * np.arange(frames) / 44100) >= 0, 1.0, -1.0)
    return np.stack([wave, wave], axis=1).astype(np.float32)


def corpus() -> list[Hostile]:
    """The hostile inputs, in a stable order."""
    second = 44100
    entries = [
        Hostile("empty.wav", _bytes(b""), "failed"),
        Hostile("header-only.wav", _header_only, "failed"),
        Hostile("truncated.wav", _truncated, "failed"),
        Hostile("random.wav", _random(50_000, 1), "failed"),
        Hostile("random.flac", _random(50_000, 2), "failed"),
        Hostile("random.mp3", _random(50_000, 3), "failed"),
        Hostile("text.wav", _bytes(b"not audio at all\n" * 100), "failed"),
        Hostile("lying-header.wav", _lying_header, "failed"),
        Hostile("8bit.wav", _audio(music(second // 2), subtype="PCM_U8"), "done", second // 2),
        Hostile("float-nan-inf.wav", _audio(_nan_inf(), subtype="FLOAT"), "failed"),
        Hostile("square-full-scale.wav", _audio(_square(second)), "done", second),
        Hostile("dc-only.wav", _audio(np.full((second, 2), 0.5, np.float32)), "done", second),
        Hostile("one-sample.wav", _audio(music(1)), "done", 1),
        Hostile("8khz.wav", _audio(music(8000, rate=8000), rate=8000), "done", 8000),
        Hostile("192khz.wav", _audio(music(192000 // 2, rate=192000), rate=192000), "done", 96000),
        Hostile("silence.wav", _audio(np.zeros((second, 2), np.float32)), "done", second),
    ]
    entries += [
        Hostile(f"{n}ch.wav", _audio(music(second // 4, channels=n)), "done", second // 4)
        for n in range(1, 9)
    ]
    return entries
