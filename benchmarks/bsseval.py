"""BSSEval v4 scoring time and peak memory: StemBridge's bridge.evaluate.bsseval vs museval.

    python benchmarks/bsseval.py [--seconds 60 180] [--stems 4]

For each length, four stereo references like music and estimates that leak into each
other are written to .npy files; each side scores them on 1 s frames in its own
process (museval.evaluate, as SiSEC 2018; our bss_eval_v4), and the wall time, peak RSS
and the largest difference between the two sides' frame values are printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import machine, run_child, write_clip

SIDE = """
import json, sys, time
import numpy as np
refs, ests = np.load(sys.argv[2], mmap_mode="r"), np.load(sys.argv[3], mmap_mode="r")
start = time.perf_counter()
if sys.argv[1] == "museval":
    import museval
    values = museval.evaluate(np.asarray(refs), np.asarray(ests), win=44100, hop=44100)
else:
    from bridge.evaluate.metrics import BSS_METRICS, bss_eval_v4
    found = bss_eval_v4(refs, ests, sample_rate=44100)
    values = [found[name] for name in BSS_METRICS]
np.save(sys.argv[4], np.stack(values))
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def write_set(folder: Path, seconds: float, stems: int) -> tuple[Path, Path]:
    """References (each a different excerpt of the benchmark music) and estimates."""
    import soundfile as sf

    refs = []
    for index in range(stems):
        clip = write_clip(folder / f"ref{index}.wav", seconds, subtype="FLOAT", seed=index + 1)
        refs.append(sf.read(str(clip), dtype="float32")[0])
    references = np.stack(refs)
    rng = np.random.default_rng(0)
    estimates = (
        references
        + 0.1 * rng.standard_normal(references.shape).astype(np.float32)
        + 0.2 * np.roll(references, 1, axis=0)
    )
    np.save(folder / "refs.npy", references)
    np.save(folder / "ests.npy", estimates)
    return folder / "refs.npy", folder / "ests.npy"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[60, 180])
    parser.add_argument("--stems", type=int, default=4)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        script = work / "side.py"
        script.write_text(SIDE)
        for seconds in args.seconds:
            refs, ests = write_set(work, seconds, args.stems)
            sides = {}
            for side in ("museval", "stembridge"):
                out = work / f"{side}.npy"
                measured = run_child([str(script), side, str(refs), str(ests), str(out)])
                sides[side] = (measured, np.load(out))
            (theirs, expected), (ours, found) = sides["museval"], sides["stembridge"]
            rows.append(
                {
                    "seconds": seconds,
                    "museval_s": round(theirs.result["seconds"], 2),
                    "stembridge_s": round(ours.result["seconds"], 2),
                    "speedup": round(theirs.result["seconds"] / ours.result["seconds"], 2),
                    "museval_peak_mb": theirs.peak_rss_bytes // 2**20,
                    "stembridge_peak_mb": ours.peak_rss_bytes // 2**20,
                    "max_abs_db": float(np.nanmax(np.abs(found - expected))),
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr)
    print(json.dumps({"machine": machine(), "stems": args.stems, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
