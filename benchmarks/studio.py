"""Studio scale-out cost: jobs through Redis and workers vs the same jobs run locally.

    python benchmarks/studio.py [--jobs 8] [--seconds 20] [--workers 1] [--tiny]

Starts a redis-server on loopback, a daemon with the broker and N worker
processes, submits the jobs, and times them from submission to the last job
done. The same jobs then run on a daemon without a broker (the warm local
worker). Reported: both wall times, jobs per hour, and the time the workers
spent separating (from the manifests), so the dispatch overhead per job is what
is left. On a machine with few cores, several CPU workers share those cores:
run one worker per GPU for the figure a studio cares about.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, write_clip, write_model

from bridge.jobs.store import JobStore
from bridge.pipeline.spec import PRIORITY_WATCHED, JobSpec
from bridge.settings import SeparationSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="audio per job")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--tiny", action="store_true", help="tiny network (smoke test)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = write_model(work / "models", official=not args.tiny, seed=5)
        env = {**os.environ, "STEMBRIDGE_MODEL_DIR": str(models), "STEMBRIDGE_OFFLINE": "1"}
        port = _free_port()
        redis = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        try:
            time.sleep(0.5)
            workers = [
                _start(["worker", "--broker", url, "--device", "cpu"], work / f"w{i}.log", env)
                for i in range(args.workers)
            ]
            studio = _run(work / "studio", args, env, ["--broker", url], wait_workers=url)
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
                worker.wait(timeout=120)
            local = _run(work / "local", args, env, [], wait_workers=None)
        finally:
            redis.terminate()
            redis.wait()

    report = {
        "machine": machine(),
        "network": "tiny" if args.tiny else "htdemucs configuration (random init)",
        "jobs": args.jobs,
        "audio_seconds_per_job": args.seconds,
        "workers": args.workers,
        "studio_wall_seconds": round(studio["wall"], 2),
        "studio_separate_seconds": round(studio["separate"], 2),
        "studio_jobs_per_hour": round(3600 * args.jobs / studio["wall"], 1),
        "local_wall_seconds": round(local["wall"], 2),
        "local_jobs_per_hour": round(3600 * args.jobs / local["wall"], 1),
        "studio_vs_local_wall_ratio": round(studio["wall"] / local["wall"], 3),
        "dispatch_overhead_seconds_per_job": round(
            (studio["wall"] * args.workers - studio["separate"]) / args.jobs, 3
        ),
    }
    print(json.dumps(report, indent=2))


def _run(
    folder: Path,
    args: argparse.Namespace,
    env: dict[str, str],
    flags: list[str],
    *,
    wait_workers: str | None,
) -> dict[str, float]:
    """One daemon, the jobs submitted at once, timed until the last is done."""
    folder.mkdir()
    config = folder / "config.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{folder / "state"}"\npoll_interval_seconds = 0.2\n'
        "[dashboard]\nenabled = false\n"
    )
    daemon = _start(["serve", "--config", str(config), *flags], folder / "daemon.log", env)
    if wait_workers:
        _wait_for_workers(wait_workers, args.workers, env)
    time.sleep(3)  # the daemon's start-up (and, locally, its model) is not timed
    store = JobStore(folder / "state")
    started = time.perf_counter()
    for index in range(args.jobs):
        clip = write_clip(folder / f"take{index}.wav", args.seconds, seed=index + 1)
        store.submit(
            JobSpec(
                input=str(clip),
                folder=str(folder / "stems" / clip.stem),
                separation=SeparationSettings(device="cpu"),
                priority=PRIORITY_WATCHED,
            )
        )
    while True:
        jobs = store.list(limit=10_000)
        if all(job.state in ("done", "failed") for job in jobs):
            break
        time.sleep(0.1)
    wall = time.perf_counter() - started
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(timeout=120)
    failed = [job.error for job in jobs if job.state != "done"]
    if failed:
        raise SystemExit(f"jobs failed: {failed}")
    separate = sum(
        json.loads(Path(job.manifest or "").read_text())["timings"]["total_seconds"] for job in jobs
    )
    return {"wall": wall, "separate": separate}


def _start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bridge", "-v", *args], stdout=out, stderr=out, env=env
        )


def _wait_for_workers(url: str, count: int, env: dict[str, str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        result = subprocess.run(
            [sys.executable, "-m", "bridge", "workers", "--broker", url, "--json"],
            capture_output=True,
            text=True,
            env=env,
        )
        if result.returncode == 0 and len(json.loads(result.stdout)) >= count:
            return
        time.sleep(0.5)
    raise SystemExit("the workers did not start")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    main()
