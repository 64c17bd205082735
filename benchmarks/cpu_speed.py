"""CPU speed: StemBridge vs demucs' apply_model on the same weights and audio, same run.

    python benchmarks/cpu_speed.py [--seconds 30] [--device cpu]

Writes a randomly initialised network in the released htdemucs configuration
(41.98 M parameters) and a stereo clip, runs each side in its own process, and
reports wall times, the speed ratio, peak RSS and the largest difference
between the two sides' stems. Two more StemBridge runs price the post-processing:
exact-sum (the default without effects) and the vocal-polish effects preset.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from common import (
    comparison_parser,
    machine,
    max_difference,
    read_stems,
    separate_with,
    write_inputs,
)


def main() -> None:
    args = comparison_parser(__doc__, seconds=30.0, device="cpu").parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models, clip = write_inputs(work, args, seed=7)
        theirs = separate_with("demucs", models, clip, work / "demucs", device=args.device)
        ours = separate_with("stembridge", models, clip, work / "ours", device=args.device)
        error = max_difference(read_stems(theirs), read_stems(ours))
        exact = separate_with(
            "stembridge", models, clip, work / "exact", device=args.device, exact_sum=True
        )
        polish = separate_with(
            "stembridge", models, clip, work / "polish", device=args.device, preset="vocal-polish"
        )

    ours_seconds = ours.result["file_seconds"]
    report = {
        "machine": machine(),
        "audio_seconds": args.seconds,
        "network": "tiny" if args.tiny else "htdemucs configuration (random init)",
        "demucs_apply_model_seconds": round(theirs.result["apply_model_seconds"], 2),
        "demucs_file_to_file_seconds": round(theirs.result["file_seconds"], 2),
        "stembridge_file_to_file_seconds": round(ours_seconds, 2),
        "speed_ratio_vs_apply_model": round(theirs.result["apply_model_seconds"] / ours_seconds, 3),
        "speed_ratio_file_to_file": round(theirs.result["file_seconds"] / ours_seconds, 3),
        "demucs_peak_rss_mb": round(theirs.peak_rss_bytes / 2**20),
        "stembridge_peak_rss_mb": round(ours.peak_rss_bytes / 2**20),
        "max_abs_difference": error,
        "stembridge_exact_sum_seconds": round(exact.result["file_seconds"], 2),
        "stembridge_vocal_polish_seconds": round(polish.result["file_seconds"], 2),
        "exact_sum_peak_rss_mb": round(exact.peak_rss_bytes / 2**20),
        "vocal_polish_peak_rss_mb": round(polish.peak_rss_bytes / 2**20),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
