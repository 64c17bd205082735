"""Soak: a daemon fed renders for a long run, its memory and open files sampled.

    python benchmarks/soak.py [--minutes 10] [--seconds 2] [--tiny] [--every 20]

Starts ``stembridge watch`` on a folder and keeps dropping renders into it (a new one
as soon as the previous job ended) for ``--minutes``. Every ``--every`` jobs it samples
the daemon's resident memory (VmRSS), open file descriptors (/proc/PID/fd) and threads.
Reported: the samples, and the growth from the first sample after warm-up to the last,
in total and per 100 jobs. Flat means no leak of memory, files or threads.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, write_clip, write_model

from bridge.jobs.store import JobStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=2.0, help="audio per render")
    parser.add_argument("--every", type=int, default=20, help="sample every N jobs")
    parser.add_argument("--tiny", action="store_true", help="tiny network (more jobs per hour)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = write_model(work / "models", official=not args.tiny, seed=3)
        env = {**os.environ, "STEMBRIDGE_MODEL_DIR": str(models), "STEMBRIDGE_OFFLINE": "1"}
        renders, state = work / "renders", work / "state"
        renders.mkdir()
        config = work / "config.toml"
        config.write_text(
            f'[daemon]\nstate_dir = "{state}"\npoll_interval_seconds = 0.2\nstable_polls = 2\n'
        )
        with open(work / "daemon.log", "ab") as log:
            daemon = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bridge",
                    "watch",
                    str(renders),
                    "-o",
                    str(work / "stems"),
                    "--config",
                    str(config),
                ],
                stdout=log,
                stderr=log,
                env=env,
            )
        try:
            samples = _feed(daemon.pid, renders, state, args)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=120)

    warm, last = samples[1] if len(samples) > 1 else samples[0], samples[-1]
    jobs = last["jobs"] - warm["jobs"]
    growth = {key: last[key] - warm[key] for key in ("rss_mb", "open_files", "threads")}
    report = {
        "machine": machine(),
        "network": "tiny" if args.tiny else "htdemucs configuration (random init)",
        "minutes": args.minutes,
        "audio_seconds_per_job": args.seconds,
        "jobs": last["jobs"],
        "failed": last["failed"],
        "samples": samples,
        "growth_after_warm_up": growth,
        "rss_mb_per_100_jobs": round(100 * growth["rss_mb"] / jobs, 2) if jobs else None,
    }
    print(json.dumps(report, indent=2))


def _feed(pid: int, renders: Path, state: Path, args: argparse.Namespace) -> list[dict]:
    """Drop a render whenever the previous job ended; sample every ``args.every`` jobs."""
    deadline = time.monotonic() + 60 * args.minutes
    samples: list[dict] = []
    while not state.exists():
        time.sleep(0.1)
    store = JobStore(state)
    count = 0
    while time.monotonic() < deadline:
        clip = write_clip(renders.parent / f"take{count:05d}.wav", args.seconds, seed=count)
        clip.rename(renders / clip.name)
        count += 1
        while _ended(store) < count:
            time.sleep(0.05)
        if count % args.every == 1 or time.monotonic() >= deadline:
            samples.append(_sample(pid, store, count))
    return samples


def _ended(store: JobStore) -> int:
    return len(store.list(limit=1_000_000, states=("done", "failed", "cancelled")))


def _sample(pid: int, store: JobStore, jobs: int) -> dict:
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return {
        "jobs": jobs,
        "failed": len(store.list(limit=1_000_000, states=("failed",))),
        "rss_mb": round(int(status["VmRSS"].split()[0]) / 1024, 1),
        "open_files": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(status["Threads"]),
    }


if __name__ == "__main__":
    main()
