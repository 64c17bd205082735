"""Shared pieces of the benchmarks: test weights and audio, child processes with peak RSS.

Each side of a comparison runs in its own child process so that its peak resident
memory (``ru_maxrss`` from ``wait4``) is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from bridge.models.catalog import MODELS  # noqa: E402

from modelfiles import make_networks, write_hf_form  # noqa: E402
from signals import music  # noqa: E402


@dataclass(frozen=True)
class Measured:
    """One child run: its wall time, peak RSS and the JSON it printed last."""

    wall_seconds: float
    peak_rss_bytes: int
    result: dict


def comparison_parser(doc: str, *, seconds: float, device: str) -> argparse.ArgumentParser:
    """The options every StemBridge-vs-demucs comparison takes."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=seconds, help="clip length")
    parser.add_argument("--device", default=device)
    parser.add_argument("--tiny", action="store_true", help="tiny network (smoke test)")
    return parser


def write_inputs(work: Path, args: argparse.Namespace, *, seed: int) -> tuple[Path, Path]:
    """Weights (htdemucs configuration, or tiny) and a clip, for a comparison."""
    models = write_model(work / "models", official=not args.tiny, seed=seed)
    return models, write_clip(work / "clip.wav", args.seconds)


def write_model(folder: Path, *, official: bool, seed: int = 0) -> Path:
    """htdemucs weights (random init) in the Hugging Face form."""
    spec = MODELS["htdemucs"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_hf_form(folder, spec, make_networks(spec, seed=seed, official=official))
    return folder


def write_clip(
    path: Path, seconds: float, *, rate: int = 44100, subtype: str = "PCM_24", seed: int = 0
) -> Path:
    """A stereo test clip written block by block (long clips never sit in memory).

    Clips with different ``seed`` differ in content (StemBridge would reuse the
    result of identical audio instead of separating it again).
    """
    frames = int(seconds * rate)
    block = rate * 30
    with sf.SoundFile(str(path), "w", rate, 2, subtype=subtype) as file:
        for start in range(0, frames, block):
            n = min(block, frames - start)
            file.write(music(n, 2, seed=seed * 100_000 + start // block, rate=rate))
    return path


def run_child(args: list[str], env: dict[str, str] | None = None) -> Measured:
    """Run ``python args...`` and measure it; the child prints JSON (all, or its last line)."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        env={**os.environ, **(env or {})},
        text=True,
    )
    assert child.stdout is not None
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"child failed ({status}): {' '.join(args)}")
    try:
        result = json.loads(out)
    except json.JSONDecodeError:
        result = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    return Measured(wall, usage.ru_maxrss * 1024, result)


SOURCES = ["drums", "bass", "other", "vocals"]


def separate_with(
    side: str, models: Path, clip: Path, out: Path, *, device: str = "cpu", **options: object
) -> Measured:
    """Separate ``clip`` with one side (see ``sides.py``) in a child process."""
    flags = [
        f"--{key.replace('_', '-')}" + ("" if value is True else f"={value}")
        for key, value in options.items()
    ]
    script = str(ROOT / "benchmarks" / "sides.py")
    return run_child([script, side, str(models), str(clip), str(out), f"--device={device}", *flags])


def machine() -> str:
    """A one-line description of where the numbers came from."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def read_stems(result: Measured) -> dict[str, np.ndarray]:
    """The float WAV stems a side wrote, as ``(channels, frames)``."""
    folder = Path(result.result["folder"])
    return {
        name: sf.read(str(folder / f"{name}.wav"), dtype="float32", always_2d=True)[0].T
        for name in SOURCES
    }


def max_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """The largest absolute sample difference between two stem sets."""
    return max(float(np.abs(a[name] - b[name]).max()) for name in SOURCES)
