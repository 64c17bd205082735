"""The StemBridge side of every benchmark: ``Separator`` + ``separate_file``, as the CLI runs them.

Run as a child process:
``python benchmarks/stembridge_side.py MODELS INPUT OUTDIR [--device D] [--batch-size B]
[--precision P]``. Stems are float WAV (for the parity check); one JSON line with
timings is printed last.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bridge.separate import prepare, separate_file
from bridge.separation.separator import Separator
from bridge.settings import OutputSettings, SeparationSettings, TimeRange


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", type=Path)
    parser.add_argument("input", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()

    started = time.perf_counter()
    settings = SeparationSettings(
        device=args.device, batch_size=args.batch_size, precision=args.precision
    )
    separator = Separator.load(settings, folders=[args.models], offline=True)
    loaded = time.perf_counter()
    prepared = prepare(
        args.input,
        out_dir=args.out,
        stems=settings.stem_plans,
        output=OutputSettings(format="wav", bit_depth=32, overwrite=True),
        time_range=TimeRange(),
    )
    manifest = separate_file(prepared, separator=separator, overwrite=True)
    finished = time.perf_counter()
    print(
        json.dumps(
            {
                "load_seconds": loaded - started,
                "separate_seconds": finished - loaded,
                "total_seconds": finished - started,
                "audio_seconds": manifest.range.length_seconds,
                "folder": str(prepared.folder),
                "batch_size": separator.batch_size,
            }
        )
    )


if __name__ == "__main__":
    main()
