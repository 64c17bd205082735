"""Studio scale-out cost: jobs through Redis and workers vs the same jobs run locally.

    python benchmarks/studio.py [--jobs 8] [--seconds 20] [--workers 1] [--tiny]
    python benchmarks/studio.py --cross-job-batch 4 --concurrency 4 [--jobs 8] [--seconds 5]

Starts a redis-server on loopback, a daemon with the broker and N worker
processes, submits the jobs, and times them from submission to the last job
done. The same jobs then run on a daemon without a broker (the warm local
worker). Reported: both wall times, jobs per hour, and the time the workers
spent separating (from the manifests), so the dispatch overhead per job is what
is left. On a machine with few cores, several CPU workers share those cores:
run one worker per GPU for the figure a studio cares about.

With ``--cross-job-batch B``: one worker running ``--concurrency`` jobs at once, first
with each job in its own forward passes (``--cross-job-batch 1``), then with up to B
segments of the running jobs in one pass; reported: both wall times, their ratio and
the worker's peak RSS in each run. Several short renders is the case it is for.
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
from collections.abc import Iterator
from contextlib import contextmanager
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
    parser.add_argument("--concurrency", type=int, default=1, help="jobs at once per worker")
    parser.add_argument("--device", default="cpu", help="the workers' device (cpu, cuda:0...)")
    parser.add_argument(
        "--cross-job-batch",
        type=int,
        metavar="B",
        help="compare one worker's jobs in their own passes with up to B segments shared",
    )
    args = parser.parse_args()
    if args.cross_job_batch is not None:
        _compare_batching(args)
        return

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = write_model(work / "models", official=not args.tiny, seed=5)
        env = {**os.environ, "STEMBRIDGE_MODEL_DIR": str(models), "STEMBRIDGE_OFFLINE": "1"}
        with _redis() as url:
            flags = ["--device", args.device, "--concurrency", str(args.concurrency)]
            workers = [
                _start(["worker", "--broker", url, *flags], work / f"w{i}.log", env)
                for i in range(args.workers)
            ]
            studio = _run(work / "studio", args, env, ["--broker", url], wait_workers=url)
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
                worker.wait(timeout=120)
            local = _run(work / "local", args, env, [], wait_workers=None)

    report = {
        **_report_head(args),
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


def _compare_batching(args: argparse.Namespace) -> None:
    """One worker, its jobs in their own passes and then sharing them, timed alike."""
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = write_model(work / "models", official=not args.tiny, seed=5)
        env = {**os.environ, "STEMBRIDGE_MODEL_DIR": str(models), "STEMBRIDGE_OFFLINE": "1"}
        for name, batch in (("own_passes", 1), ("shared_passes", args.cross_job_batch)):
            with _redis() as url:
                flags = ["--concurrency", str(args.concurrency), "--cross-job-batch", str(batch)]
                worker = _start(
                    ["worker", "--broker", url, "--device", args.device, *flags],
                    work / f"{name}.log",
                    env,
                )
                timed = _run(work / name, args, env, ["--broker", url], wait_workers=url)
                worker.send_signal(signal.SIGTERM)
                _, _, usage = os.wait4(worker.pid, 0)
                runs[name] = {**timed, "worker_peak_rss_mb": usage.ru_maxrss // 1024}
    own, shared = runs["own_passes"], runs["shared_passes"]
    report = {
        **_report_head(args),
        "cross_job_batch": args.cross_job_batch,
        "own_passes_wall_seconds": round(own["wall"], 2),
        "shared_passes_wall_seconds": round(shared["wall"], 2),
        "shared_vs_own_wall_ratio": round(shared["wall"] / own["wall"], 3),
        "own_passes_worker_peak_rss_mb": own["worker_peak_rss_mb"],
        "shared_passes_worker_peak_rss_mb": shared["worker_peak_rss_mb"],
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


@contextmanager
def _redis() -> Iterator[str]:
    """A redis-server of this run's own on a free port; its URL."""
    port = _free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        redis.terminate()
        redis.wait()


def _report_head(args: argparse.Namespace) -> dict:
    """What every report of this benchmark starts with."""
    return {
        "machine": machine(),
        "network": "tiny" if args.tiny else "htdemucs configuration (random init)",
        "jobs": args.jobs,
        "audio_seconds_per_job": args.seconds,
        "device": args.device,
        "concurrency": args.concurrency,
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    main()
