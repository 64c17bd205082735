"""Peak memory against input length: StemBridge vs demucs' apply_model, same small network.

    python benchmarks/memory.py [--minutes 1 10 60] [--preset NAME]

For each length a stereo 16-bit WAV is written, then each side separates it in
its own process (StemBridge through the real ``stembridge separate`` command, with
its defaults: exact-sum on; ``--preset broadcast`` adds the staged loudness pass);
the peak RSS of each process and its wall time are reported.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import machine, run_child, separate_with, write_clip, write_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 60])
    parser.add_argument("--skip-demucs", action="store_true", help="measure StemBridge only")
    parser.add_argument("--preset", default="clean", help="StemBridge effects preset")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = write_model(work / "models", official=False, seed=3)
        for minutes in args.minutes:
            clip = write_clip(work / f"clip{minutes:g}.wav", minutes * 60, subtype="PCM_16")
            ours = run_child(
                [
                    "-m",
                    "bridge",
                    "separate",
                    str(clip),
                    "-o",
                    str(work / "ours"),
                    "--json",
                    "--overwrite",
                    "--preset",
                    args.preset,
                ],
                env={"STEMBRIDGE_MODEL_DIR": str(models), "STEMBRIDGE_OFFLINE": "1"},
            )
            row = {
                "minutes": minutes,
                "preset": args.preset,
                "stembridge_peak_rss_mb": round(ours.peak_rss_bytes / 2**20),
                "stembridge_seconds": round(ours.wall_seconds, 1),
            }
            if not args.skip_demucs:
                theirs = separate_with("demucs", models, clip, work / "demucs")
                row["demucs_peak_rss_mb"] = round(theirs.peak_rss_bytes / 2**20)
                row["demucs_seconds"] = round(theirs.wall_seconds, 1)
            rows.append(row)
            clip.unlink()
            print(json.dumps(row), flush=True)
    print(json.dumps({"machine": machine(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
