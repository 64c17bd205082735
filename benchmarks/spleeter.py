"""Spleeter on CPU: StemBridge (torch, no TensorFlow) vs spleeter 2.4.2 (TensorFlow 2.12,
its own venv: tests/references/spleeter_env.sh), same run, same weights, same clip.

    python benchmarks/spleeter.py [--seconds 60] [--models 4stems 2stems ...]
        [--filters 16,32,64,128,256,512] [--repeat N] [--work DIR]

The models are written once by spleeter's own graph code with random weights
(``tests/references/spleeter_reference.py``: a real ``tf.compat.v1.train.Saver``
checkpoint), by default at the released models' widths (16 to 512 filters), so both
sides do the released models' work. The clip is stereo 44.1 kHz tones and noise.

* spleeter: ``Separator("<config>.json", multiprocess=False).separate(waveform)`` in the
  venv's python on the clip as a ``.npy`` (its CLI would decode it with ffmpeg first):
  what ``spleeter separate`` runs, graph building and checkpoint restore included;
* StemBridge: ``stembridge separate clip.wav --model spleeter:<config> --bit-depth 32
  --no-exact-sum --no-pictures`` (decoding and writing the float WAV stems included).

Each side runs in its own process, in turns, ``--repeat`` times; the fastest run of each
counts. Reported: wall and CPU time of each process (imports, model load, separation,
files), the separation alone (spleeter: the ``Separator`` call; StemBridge: the
manifest's ``total_seconds``), the ratios spleeter / StemBridge, the peak RSS of each
process (``ru_maxrss`` through ``families.run``'s launcher) and the largest difference
between their stems, relative to the mix's peak.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np
import soundfile as sf
from common import machine
from families import run

ROOT = Path(__file__).resolve().parents[1]
REFERENCES = ROOT / "tests" / "references"
RATE = 44100


def venv_python() -> str:
    made = subprocess.run(
        ["bash", str(REFERENCES / "spleeter_env.sh")], capture_output=True, text=True, check=True
    )
    return made.stdout.strip().splitlines()[-1]


def clip(seconds: float, seed: int = 0) -> np.ndarray:
    """``(frames, 2)`` float32: two tones, a sweep of harmonics and noise, peak under 1."""
    frames = int(seconds * RATE)
    t = np.arange(frames) / RATE
    rng = np.random.default_rng(seed)
    tones = 0.25 * np.sin(2 * np.pi * 110 * t) + 0.15 * np.sin(2 * np.pi * (440 + 20 * t) * t)
    left = tones + 0.05 * rng.standard_normal(frames)
    right = 0.8 * tones + 0.05 * rng.standard_normal(frames)
    return np.stack([left, right], axis=1).astype(np.float32)


def spleeter_side(python: str, config: str, model: Path, mix: Path, out: Path, filters) -> dict:
    out.mkdir(parents=True)
    job = {"config": config, "folder": str(model), "input": str(mix), "output": str(out / "s.npz")}
    if filters:
        job["filters"] = filters
    jobs = out / "jobs.json"
    jobs.write_text(json.dumps({"separations": [job]}))
    measured = run([python, str(REFERENCES / "spleeter_reference.py"), str(jobs)], out, env={})
    printed = json.loads(measured.stdout.strip().splitlines()[-1])
    with np.load(out / "s.npz") as saved:
        stems = {name: saved[name] for name in saved.files}
    return {
        "wall_seconds": measured.wall_seconds,
        "cpu_seconds": measured.cpu_seconds,
        "peak_rss_bytes": measured.peak_rss_bytes,
        "separation_seconds": printed["seconds"],
        "stems": stems,
    }


def stembridge_side(config: str, models: Path, wav: Path, out: Path) -> dict:
    out.mkdir(parents=True)
    command = [sys.executable, "-m", "bridge", "separate", str(wav), "-o", str(out)]
    command += ["--model", f"spleeter:{config}", "--json", "--overwrite", "--bit-depth", "32"]
    command += ["--no-exact-sum", "--no-pictures"]
    env = {"STEMBRIDGE_OFFLINE": "1", "STEMBRIDGE_MODEL_DIR": str(models)}
    measured = run(command, out, env=env)
    (result,) = json.loads(measured.stdout)["results"]
    folder = Path(result["folder"])
    stems = {
        stem["name"]: sf.read(str(folder / stem["path"]), dtype="float32", always_2d=True)[0]
        for stem in result["stems"]
    }
    return {
        "wall_seconds": measured.wall_seconds,
        "cpu_seconds": measured.cpu_seconds,
        "peak_rss_bytes": measured.peak_rss_bytes,
        "separation_seconds": result["timings"]["total_seconds"],
        "stems": stems,
    }


def fastest(runs: list[dict]) -> dict:
    return min(runs, key=lambda r: r["wall_seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--models", nargs="+", default=["4stems"])
    parser.add_argument("--filters", default="", help="e.g. 4,8,8,8,8,8 (default: released)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    filters = [int(n) for n in args.filters.split(",")] if args.filters else None
    work = args.work or Path(tempfile.mkdtemp(prefix="spleeter-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    python = venv_python()
    models = work / "models"
    folders = sorted({name.split("-")[0] for name in args.models})
    written = [{"config": f, "folder": str(models / f), "seed": i} for i, f in enumerate(folders)]
    for job in written:
        if filters:
            job["filters"] = filters
    todo = [job for job in written if not (Path(job["folder"]) / "checkpoint").is_file()]
    if todo:
        (work / "write.json").write_text(json.dumps({"models": todo}))
        subprocess.run(
            [python, str(REFERENCES / "spleeter_reference.py"), str(work / "write.json")],
            check=True,
            capture_output=True,
        )
    mix = clip(args.seconds)
    np.save(work / "clip.npy", mix)
    sf.write(str(work / "clip.wav"), mix, RATE, subtype="FLOAT")
    rows = []
    for config in args.models:
        model = models / config.split("-")[0]
        theirs, ours = [], []
        for turn in range(args.repeat):
            theirs.append(
                spleeter_side(
                    python, config, model, work / "clip.npy", work / f"s-{config}-{turn}", filters
                )
            )
            ours.append(
                stembridge_side(config, models, work / "clip.wav", work / f"b-{config}-{turn}")
            )
        a, b = fastest(theirs), fastest(ours)
        peak = float(np.abs(mix).max())
        difference = max(float(np.abs(a["stems"][n] - b["stems"][n]).max()) for n in a["stems"])
        rows.append(
            {
                "model": f"spleeter:{config}",
                "seconds": args.seconds,
                "spleeter": {k: v for k, v in a.items() if k != "stems"},
                "stembridge": {k: v for k, v in b.items() if k != "stems"},
                "wall_ratio": a["wall_seconds"] / b["wall_seconds"],
                "cpu_ratio": a["cpu_seconds"] / b["cpu_seconds"],
                "separation_ratio": a["separation_seconds"] / b["separation_seconds"],
                "max_difference_of_peak": difference / peak,
            }
        )
    print(f"{datetime.now():%Y-%m-%d %H:%M}, {machine()}, filters {filters or 'released'}")
    print("model | side | wall s | CPU s | separation s | peak RSS MB")
    for row in rows:
        for side in ("spleeter", "stembridge"):
            r = row[side]
            print(
                f"{row['model']} | {side} | {r['wall_seconds']:.1f} | {r['cpu_seconds']:.1f} | "
                f"{r['separation_seconds']:.1f} | {r['peak_rss_bytes'] / 2**20:.0f}"
            )
        print(
            f"{row['model']} | spleeter/stembridge | wall {row['wall_ratio']:.2f}x, CPU "
            f"{row['cpu_ratio']:.2f}x, separation {row['separation_ratio']:.2f}x; largest "
            f"difference {row['max_difference_of_peak']:.1e} of the mix's peak"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
