"""The time-domain Demucs (v2/v3) on CPU: StemBridge vs demucs' apply_model, same run.

    python benchmarks/demucs_models.py [--seconds 60] [--size released|tiny] [--repeat N]

Writes one randomly initialised time-domain ``Demucs`` network in demucs' own form
(``0d19c1c6-<sha8>.th``, saved with ``demucs.states.save_with_checksum``; ``released``:
the class at its defaults, 64 channels and 6 levels, 133.8 M parameters, with mdx's 44 s
segment; ``tiny``: a smoke test) and a stereo 44.1 kHz 24-bit clip, then separates the clip
with each side in a process of its own, the sides taking turns ``--repeat`` times:

* demucs: ``demucs.pretrained.get_model("0d19c1c6", repo=FOLDER)`` and
  ``apply_model(shifts=0, overlap=0.25)`` on the whole file, normalised as
  ``demucs.api.Separator`` does, float WAV stems written;
* StemBridge: ``stembridge separate CLIP --model 0d19c1c6 --bit-depth 32 --no-exact-sum
  --no-pictures`` with ``STEMBRIDGE_MODEL_DIR`` at the folder (the raw stems).

* StemBridge again with glibc's allocator left as it is: the same command through a
  launcher that turns ``bridge.models.runner.keep_freed_memory`` into a no-op (StemBridge
  tells glibc to keep freed memory on the CPU, which is faster but raises the peak RSS).

Reported: each side's best wall time (process start to exit: imports, load, separation,
writing), its peak RSS (``ru_maxrss`` from ``wait4``: the child's own), the ratio
demucs / StemBridge, and the largest difference between the two sides' stems.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from common import machine, write_clip  # noqa: E402
from demucs_bags import write_bag  # noqa: E402

from bridge.models.catalog import get_spec  # noqa: E402

SIGNATURE = "0d19c1c6"
SOURCES = ("drums", "bass", "other", "vocals")

_DEMUCS_SIDE = """\
import sys
from pathlib import Path
import soundfile as sf
import torch
from demucs.apply import apply_model
from demucs.pretrained import get_model

folder, clip, out = map(Path, sys.argv[1:4])
model = get_model(sys.argv[4], repo=folder)
data, rate = sf.read(str(clip), dtype="float32", always_2d=True)
wav = torch.from_numpy(data.T.copy())
ref = wav.mean(0)
mean, std = ref.mean(), ref.std() + 1e-8
stems = apply_model(model, ((wav - mean) / std)[None], shifts=0, overlap=0.25)[0] * std + mean
out.mkdir(parents=True, exist_ok=True)
for name, stem in zip(model.sources, stems, strict=True):
    sf.write(str(out / f"{name}.wav"), stem.numpy().T, rate, subtype="FLOAT")
"""


_DEFAULT_ALLOCATOR = """\
import sys

import bridge.models.runner

# Measuring glibc's default behaviour: the setting is skipped, nothing else changes.
bridge.models.runner.keep_freed_memory = lambda: False
from bridge.cli import main

raise SystemExit(main(sys.argv[1:]))
"""


def measure(command: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS bytes of one child process run to its end."""
    started = time.perf_counter()
    child = subprocess.Popen(command, env={**os.environ, **(env or {})}, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    assert child.stderr is not None
    error = child.stderr.read().decode(errors="replace")
    child.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{error}")
    return wall, usage.ru_maxrss * 1024


def read(folder: Path) -> dict[str, np.ndarray]:
    return {name: sf.read(str(folder / f"{name}.wav"), dtype="float32")[0] for name in SOURCES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--size", choices=["released", "tiny"], default="released")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spec = get_spec(SIGNATURE)
            write_bag(work / "models", spec, definition={"models": [SIGNATURE]}, size=args.size)
        (work / "models" / spec.bag_file).unlink()  # a signature alone has no bag file
        clip = write_clip(work / "clip.wav", args.seconds)
        script = work / "demucs_side.py"
        script.write_text(_DEMUCS_SIDE)
        launcher = work / "default_allocator.py"
        launcher.write_text(_DEFAULT_ALLOCATOR)
        theirs: list[tuple[float, int]] = []
        ours: list[tuple[float, int]] = []
        plain: list[tuple[float, int]] = []
        models = str(work / "models")
        for run in range(args.repeat):
            reference = [sys.executable, str(script), models, str(clip), str(work / f"demucs{run}")]
            theirs.append(measure([*reference, SIGNATURE]))
            separate = [sys.executable, "-m", "bridge", "separate", str(clip)]
            flags = ["--model", SIGNATURE, "--bit-depth", "32", "--no-exact-sum", "--no-pictures"]
            ours.append(
                measure(
                    [*separate, "-o", str(work / f"ours{run}"), *flags, "--overwrite"],
                    env={"STEMBRIDGE_MODEL_DIR": models},
                )
            )
            unkept = [sys.executable, str(launcher), "separate", str(clip)]
            plain.append(
                measure(
                    [*unkept, "-o", str(work / f"plain{run}"), *flags, "--overwrite"],
                    env={"STEMBRIDGE_MODEL_DIR": models},
                )
            )
        a, b = read(work / "demucs0"), read(work / "ours0" / "clip")
        difference = max(float(np.abs(a[name] - b[name]).max()) for name in SOURCES)
    demucs_best, ours_best, plain_best = min(theirs), min(ours), min(plain)
    print(
        json.dumps(
            {
                "machine": machine(),
                "audio_seconds": args.seconds,
                "network": f"time-domain Demucs {SIGNATURE} ({args.size}, random init)",
                "runs": args.repeat,
                "demucs_seconds": round(demucs_best[0], 2),
                "stembridge_seconds": round(ours_best[0], 2),
                "ratio_demucs_over_stembridge": round(demucs_best[0] / ours_best[0], 3),
                "demucs_peak_rss_mb": round(max(r for _, r in theirs) / 2**20),
                "stembridge_peak_rss_mb": round(max(r for _, r in ours) / 2**20),
                "stembridge_default_allocator_seconds": round(plain_best[0], 2),
                "stembridge_default_allocator_peak_rss_mb": round(max(r for _, r in plain) / 2**20),
                "max_abs_difference": difference,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
