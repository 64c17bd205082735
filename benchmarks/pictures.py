"""What the stem pictures cost: seconds per minute of stereo stem, and peak memory.

    python benchmarks/pictures.py [--minutes 1 10 120] [--subtype PCM_24]

For each length a stereo stem is written (block by block), then a child process
draws its waveform and spectrogram (``bridge.pictures.draw_stem_pictures``, as a
job does for each stem) and reports its wall time; the child's peak RSS shows
that memory does not grow with the stem's length.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import machine, run_child, write_clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 120])
    parser.add_argument("--subtype", default="PCM_24", help="the stem's sample format")
    parser.add_argument("--draw", type=Path, help=argparse.SUPPRESS)  # the child's side
    args = parser.parse_args()
    if args.draw is not None:
        from bridge.pictures import draw_stem_pictures

        started = time.perf_counter()
        draw_stem_pictures({"vocals": args.draw})
        print(json.dumps({"seconds": time.perf_counter() - started}))
        return

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.minutes:
            stem = write_clip(Path(tmp) / "vocals.wav", minutes * 60, subtype=args.subtype)
            child = run_child([__file__, "--draw", str(stem)])
            seconds = float(child.result["seconds"])
            rows.append(
                {
                    "minutes": minutes,
                    "seconds": round(seconds, 2),
                    "seconds_per_minute": round(seconds / minutes, 3),
                    "peak_rss_mb": round(child.peak_rss_bytes / 2**20),
                }
            )
            stem.unlink()
    print(json.dumps({"machine": machine(), "subtype": args.subtype, "rows": rows}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
