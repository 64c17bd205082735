"""Warm latency of the daemon: a finished render to its last stem, against pure compute.

    python benchmarks/warm_latency.py [--seconds 30] [--files 3] [--tiny]

A daemon watches a folder with the model already warm (one warm-up render first).
For each render, the clock runs from the moment the writer closes the file to the
moment the manifest (written after the last stem) appears. Divided by the pure
network compute for the same clip (warm forward passes x segments), measured in
the same run. Beside it: the demucs CLI run once per file (model loaded each time),
on the same weights and clip, each file right after the daemon's render of it, and
the ratio is the median of those pairs'.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from common import comparison_parser, machine, run_child, write_clip

from bridge.models.catalog import MODELS

from modelfiles import make_networks, write_demucs_form, write_hf_form

ROOT = Path(__file__).resolve().parent.parent


def wait_for(path: Path, timeout: float = 600) -> float:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {path}")
        time.sleep(0.005)
    return time.monotonic()


def demucs_cli(work: Path, clip: Path, out: Path, device: str) -> float:
    """Seconds the demucs CLI takes to separate ``clip`` (its process, model load and all)."""
    started = time.monotonic()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "demucs",
            "-n",
            "htdemucs",
            "--repo",
            str(work / "demucs-repo"),
            "-d",
            device,
            "--shifts",
            "0",
            str(clip),
            "-o",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    return time.monotonic() - started


def main() -> None:
    parser = comparison_parser(__doc__, seconds=30.0, device="cpu")
    parser.add_argument("--files", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        spec = MODELS["htdemucs"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            networks = make_networks(spec, seed=9, official=not args.tiny)
            write_hf_form(work / "models", spec, networks)
            write_demucs_form(work / "demucs-repo", spec, networks)
        clip = write_clip(work / "clip.wav", args.seconds)
        pure = run_child(
            [
                str(ROOT / "benchmarks" / "sides.py"),
                "pure",
                str(work / "models"),
                str(clip),
                str(work / "unused"),
                f"--device={args.device}",
            ]
        ).result

        renders, stems = work / "renders", work / "stems"
        renders.mkdir()
        config = work / "config.toml"
        config.write_text(
            f'[daemon]\nstate_dir = "{work / "state"}"\npoll_interval_seconds = 0.1\n'
            "stable_polls = 3\n[dashboard]\nenabled = false\n"
        )
        env = {
            **os.environ,
            "STEMBRIDGE_MODEL_DIR": str(work / "models"),
            "STEMBRIDGE_OFFLINE": "1",
        }
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bridge",
                "watch",
                str(renders),
                "-o",
                str(stems),
                "--config",
                str(config),
                "--device",
                args.device,
            ],
            env=env,
        )
        try:
            write_clip(renders / "warmup.wav", 5, seed=99)
            wait_for(stems / "warmup" / "manifest.json")
            latencies, cli_times = [], []
            # One render, then the CLI on the same clip, and again: each pair close in
            # time, as the machine's speed drifts between minutes (the daemon idles
            # while the CLI runs).
            for n in range(args.files):
                target = renders / f"take{n}.wav"
                write_clip(target, args.seconds, seed=n + 1)
                closed = time.monotonic()
                done = wait_for(stems / f"take{n}" / "manifest.json")
                latencies.append(done - closed)
                cli_times.append(demucs_cli(work, clip, work / f"demucs{n}", args.device))
                print(
                    json.dumps(
                        {
                            "file": n,
                            "latency_seconds": round(latencies[-1], 2),
                            "demucs_cli_seconds": round(cli_times[-1], 2),
                        }
                    ),
                    flush=True,
                )
        finally:
            daemon.terminate()
            daemon.wait(timeout=120)

    median = statistics.median(latencies)
    ratios = [cli / daemon for cli, daemon in zip(cli_times, latencies, strict=True)]
    print(
        json.dumps(
            {
                "machine": machine(),
                "audio_seconds": args.seconds,
                "network": "tiny" if args.tiny else "htdemucs configuration (random init)",
                "pure_compute_seconds": round(pure["compute_seconds"], 2),
                "segments": pure["segments"],
                "daemon_latency_seconds": [round(x, 2) for x in latencies],
                "latency_over_compute": round(median / pure["compute_seconds"], 3),
                "demucs_cli_seconds_per_file": [round(x, 2) for x in cli_times],
                "demucs_cli_over_daemon_per_pair": [round(x, 2) for x in ratios],
                "demucs_cli_over_daemon": round(statistics.median(ratios), 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
