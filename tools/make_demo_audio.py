"""Synthesise ``examples/demo.flac``: a few seconds of music to separate on a fresh machine.

Drums, bass, chords and a sung vowel, each made here from sines, filtered noise and
formant filters (nothing recorded, nothing downloaded), so the README's first command
has something to separate and the file may ship with the code. Deterministic: the
noise is seeded, so running it again writes the same samples.

    python tools/make_demo_audio.py [OUTPUT]     # default: examples/demo.flac
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

SAMPLE_RATE = 44100
BEATS_PER_MINUTE = 120
#: Chord roots, one per bar (A minor, F, G): MIDI note numbers.
ROOTS = (57, 53, 55)
#: Chord shapes above each root (minor for the first bar, major for the others).
SHAPES = ((0, 3, 7), (0, 4, 7), (0, 4, 7))
BARS = len(ROOTS)
#: The voice's melody: (beat it starts on, beats it lasts, MIDI note).
MELODY = ((0, 2, 69), (2, 1, 72), (3, 1, 71), (4, 3, 69), (7, 1, 65), (8, 2, 67), (10, 2, 71))
#: Formants of an open "ah" vowel: (centre Hz, bandwidth Hz, gain).
FORMANTS = ((800.0, 80.0, 1.0), (1150.0, 90.0, 0.5), (2900.0, 120.0, 0.25))
#: Each part's level and its place between left (-1) and right (+1).
MIX = {"drums": (0.9, 0.0), "bass": (0.7, 0.0), "chords": (0.35, -0.3), "voice": (0.45, 0.2)}


def midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12)


def beat_frames() -> int:
    return round(SAMPLE_RATE * 60 / BEATS_PER_MINUTE)


def total_frames() -> int:
    return beat_frames() * 4 * BARS


def drums(rng: np.random.Generator) -> np.ndarray:
    """Kick on 1 and 3, snare on 2 and 4, closed hi-hat on every eighth."""
    out = np.zeros(total_frames())
    beat = beat_frames()
    t = np.arange(int(0.35 * SAMPLE_RATE)) / SAMPLE_RATE
    sweep = 2 * np.pi * np.cumsum(45 + 75 * np.exp(-t / 0.03)) / SAMPLE_RATE
    kick = np.sin(sweep) * np.exp(-t / 0.12)
    noise = rng.standard_normal(len(t))
    band = signal.butter(2, (1200, 6000), "bandpass", fs=SAMPLE_RATE, output="sos")
    snare = 0.4 * signal.sosfilt(band, noise) * np.exp(-t / 0.035)
    snare += 0.4 * np.sin(2 * np.pi * 185 * t) * np.exp(-t / 0.05)
    high = signal.butter(4, 7000, "highpass", fs=SAMPLE_RATE, output="sos")
    hat = 0.15 * signal.sosfilt(high, rng.standard_normal(len(t))) * np.exp(-t / 0.008)
    for number in range(4 * BARS):
        start = number * beat
        hit = kick if number % 2 == 0 else snare
        out[start : start + len(hit)] += hit[: len(out) - start]
        for eighth in (start, start + beat // 2):
            out[eighth : eighth + len(hat)] += hat[: len(out) - eighth]
    return out


def bass() -> np.ndarray:
    """The chord root an octave down, in eighths, a few harmonics, plucked."""
    out = np.zeros(total_frames())
    step = beat_frames() // 2
    t = np.arange(step) / SAMPLE_RATE
    for number in range(len(out) // step):
        hz = midi_hz(ROOTS[number // 8 % len(ROOTS)] - 24)
        note = sum(np.sin(2 * np.pi * k * hz * t) / k**1.5 for k in range(1, 5))
        out[number * step : (number + 1) * step] = note * np.exp(-t / 0.18)
    return out


def chords() -> np.ndarray:
    """A soft pad: each triad as a few harmonics per note, faded in and out per bar."""
    bar = beat_frames() * 4
    t = np.arange(bar) / SAMPLE_RATE
    fade = np.minimum(1.0, np.minimum(t / 0.05, (t[-1] - t) / 0.1))
    parts = []
    for root, shape in zip(ROOTS, SHAPES, strict=True):
        notes = [midi_hz(root + interval) for interval in shape]
        pad = sum(np.sin(2 * np.pi * k * hz * t) / k**2 for hz in notes for k in (1, 2, 3))
        parts.append(pad * fade / len(notes))
    return np.concatenate(parts)


def voice() -> np.ndarray:
    """A sung "ah": a pulse train with vibrato through three formant resonators."""
    total = total_frames()
    pitch = np.zeros(total)
    envelope = np.zeros(total)
    beat = beat_frames()
    for start, beats, note in MELODY:
        begin, end = start * beat, (start + beats) * beat
        t = np.arange(end - begin) / SAMPLE_RATE
        pitch[begin:end] = midi_hz(note)
        envelope[begin:end] = np.minimum(1.0, np.minimum(t / 0.04, (t[-1] - t) / 0.08))
    t = np.arange(total) / SAMPLE_RATE
    vibrato = 1 + 0.006 * np.sin(2 * np.pi * 5.5 * t)
    phase = 2 * np.pi * np.cumsum(pitch * vibrato) / SAMPLE_RATE
    # The harmonics of a glottal pulse, falling 12 dB an octave, up to 4 kHz.
    source = sum(np.sin(k * phase) / k**2 * (k * pitch < 4000) for k in range(1, 40))
    out = np.zeros(total)
    for centre, width, gain in FORMANTS:
        radius = np.exp(-np.pi * width / SAMPLE_RATE)
        angle = 2 * np.pi * centre / SAMPLE_RATE
        denominator = [1.0, -2 * radius * np.cos(angle), radius**2]
        out += gain * signal.lfilter([1 - radius], denominator, source)
    return out * envelope


def demo() -> np.ndarray:
    """The mix, ``(frames, 2)`` float64, peaking at -1 dBFS."""
    rng = np.random.default_rng(20261201)
    parts = {"drums": drums(rng), "bass": bass(), "chords": chords(), "voice": voice()}
    mix = np.zeros((total_frames(), 2))
    for name, part in parts.items():
        level, pan = MIX[name]
        part = level * part / np.max(np.abs(part))
        mix[:, 0] += part * np.sqrt((1 - pan) / 2)
        mix[:, 1] += part * np.sqrt((1 + pan) / 2)
    return mix * (10 ** (-1 / 20) / np.max(np.abs(mix)))


def main(argv: list[str]) -> int:
    target = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent / "examples"
    if target.suffix != ".flac":
        target = target / "demo.flac"
    sf.write(str(target), demo(), SAMPLE_RATE, subtype="PCM_16", format="FLAC")
    print(f"wrote {target} ({target.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
