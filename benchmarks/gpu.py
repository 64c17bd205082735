"""GPU throughput and parity: StemBridge (batched, fp32/fp16/bf16) vs demucs' apply_model.

    python benchmarks/gpu.py [--seconds 180] [--batch-sizes 1 8 16] [--precisions fp32 fp16 bf16]

Same weights (the htdemucs configuration, random init), same clip, same GPU, one
run. demucs runs as its API does (mix on the host, segments moved to the GPU one
by one); StemBridge runs file to file. Reports x realtime for each and the
largest difference of each StemBridge variant from demucs' fp32 stems.
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
    parser = comparison_parser(__doc__, seconds=180.0, device="cuda")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "fp16", "bf16"])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models, clip = write_inputs(work, args, seed=5)
        theirs = separate_with("demucs", models, clip, work / "demucs", device=args.device)
        reference = read_stems(theirs)
        demucs_speed = args.seconds / theirs.result["apply_model_seconds"]
        rows = []
        for precision in args.precisions:
            for batch in args.batch_sizes:
                ours = separate_with(
                    "stembridge",
                    models,
                    clip,
                    work / f"ours-{precision}-{batch}",
                    device=args.device,
                    batch_size=batch,
                    precision=precision,
                )
                speed = args.seconds / ours.result["file_seconds"]
                rows.append(
                    {
                        "precision": precision,
                        "batch_size": batch,
                        "x_realtime": round(speed, 1),
                        "ratio_vs_demucs": round(speed / demucs_speed, 2),
                        "max_abs_difference": max_difference(read_stems(ours), reference),
                        "peak_host_rss_mb": round(ours.peak_rss_bytes / 2**20),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    print(
        json.dumps(
            {
                "machine": machine(),
                "audio_seconds": args.seconds,
                "demucs_x_realtime": round(demucs_speed, 1),
                "demucs_peak_host_rss_mb": round(theirs.peak_rss_bytes / 2**20),
                "stembridge": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
