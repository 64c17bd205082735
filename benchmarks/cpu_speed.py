"""CPU speed: StemBridge vs demucs' apply_model on the same weights and audio, same run.

    python benchmarks/cpu_speed.py [--seconds 30] [--device cpu] [--tiny] [--repeat N]

Writes a randomly initialised network in the released htdemucs configuration
(41.98 M parameters) and a stereo clip, runs each side in its own process, and
reports wall times, speed ratios, peak RSS and the largest difference between the
two sides' stems. StemBridge runs as users get it (eager networks, their layers on
oneDNN's kernels: bridge.models.onednn), on torch's own kernels (``--cpu-kernels
torch``), and twice with the compiled core on a cache folder of its own: the first run
compiles the network's core into it (bridge.models.compiled), the warm run loads that
artefact. Two more runs price the post-processing: exact-sum (the default without
effects) and the vocal-polish effects preset.

Ratios against apply_model divide demucs' ``apply_model`` time by StemBridge's time
from its model being loaded to its last stem written; file-to-file ratios divide whole
process wall times (start, imports, model load, decoding, separating, writing), which
for the first run include compiling. StemBridge's side is the ``stembridge separate``
command (see ``sides.py``).

A shared machine's speed drifts by 10 % and more from one minute to the next, so
``--repeat N`` runs demucs and the default side N times, one after the other in pairs,
and reports each pair's ratios with their median; the other runs are compared with the
pair whose demucs time is the median.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from pathlib import Path

from common import (
    Measured,
    comparison_parser,
    machine,
    max_difference,
    read_stems,
    separate_with,
    write_inputs,
)


def main() -> None:
    parser = comparison_parser(__doc__, seconds=30.0, device="cpu")
    parser.add_argument("--repeat", type=int, default=1, help="demucs/default pairs to run")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # The children find the cache folder through platformdirs: an empty one here.
        os.environ["XDG_CACHE_HOME"] = str(work / "cache")
        models, clip = write_inputs(work, args, seed=7)

        def ours(name: str, **options: object) -> Measured:
            return separate_with(
                "stembridge", models, clip, work / name, device=args.device, **options
            )

        pairs = [
            (
                separate_with("demucs", models, clip, work / f"demucs{i}", device=args.device),
                ours(f"eager{i}", no_compiled_core=True),
            )
            for i in range(args.repeat)
        ]
        theirs, eager = sorted(pairs, key=lambda pair: pair[0].wall_seconds)[len(pairs) // 2]
        plain = ours("plain", no_compiled_core=True, cpu_kernels="torch")
        first = ours("first")
        warm = ours("warm")
        reference = read_stems(theirs)
        runs = {"eager": eager, "plain": plain, "first": first, "warm": warm}
        errors = {name: max_difference(reference, read_stems(run)) for name, run in runs.items()}
        exact = ours("exact", no_compiled_core=True, exact_sum=True)
        polish = ours("polish", no_compiled_core=True, preset="vocal-polish")
        artefacts = sorted(p.name for p in (work / "cache").rglob("*.onnx"))

    apply_seconds = theirs.result["apply_model_seconds"]

    def side(run: Measured, name: str) -> dict:
        return {
            "after_load_seconds": round(run.result["file_seconds"], 2),
            "process_wall_seconds": round(run.wall_seconds, 2),
            "ratio_vs_apply_model": round(apply_seconds / run.result["file_seconds"], 3),
            "ratio_file_to_file": round(theirs.wall_seconds / run.wall_seconds, 3),
            "peak_rss_mb": round(run.peak_rss_bytes / 2**20),
            "max_abs_difference_vs_demucs": errors.get(name),
        }

    def ratios(pair: tuple[Measured, Measured]) -> dict:
        demucs, stembridge = pair
        return {
            "vs_apply_model": round(
                demucs.result["apply_model_seconds"] / stembridge.result["file_seconds"], 3
            ),
            "file_to_file": round(demucs.wall_seconds / stembridge.wall_seconds, 3),
            "demucs_wall_seconds": round(demucs.wall_seconds, 2),
            "stembridge_wall_seconds": round(stembridge.wall_seconds, 2),
        }

    paired = [ratios(pair) for pair in pairs]
    report = {
        "machine": machine(),
        "audio_seconds": args.seconds,
        "network": "tiny" if args.tiny else "htdemucs configuration (random init)",
        "demucs": {
            "apply_model_seconds": round(apply_seconds, 2),
            "after_load_seconds": round(theirs.result["file_seconds"], 2),
            "process_wall_seconds": round(theirs.wall_seconds, 2),
            "peak_rss_mb": round(theirs.peak_rss_bytes / 2**20),
        },
        "stembridge_default_onednn": side(eager, "eager"),
        "default_pairs": paired,
        "default_median_ratio_vs_apply_model": statistics.median(
            pair["vs_apply_model"] for pair in paired
        ),
        "default_median_ratio_file_to_file": statistics.median(
            pair["file_to_file"] for pair in paired
        ),
        "stembridge_torch_kernels": side(plain, "plain"),
        "stembridge_compiled_first_run": side(first, "first"),
        "stembridge_compiled_warm_run": side(warm, "warm"),
        "stembridge_exact_sum": side(exact, "exact"),
        "stembridge_vocal_polish": side(polish, "polish"),
        "artefacts": artefacts,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
