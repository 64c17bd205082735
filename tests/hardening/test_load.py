"""Load: 200 concurrent ``submit`` calls and 1,000 renders dropped at once, while the daemon
works. Every job is recorded once, and nobody is told the database is locked.

Memory and open files over a long run: benchmarks/soak.py."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf

from bridge.jobs.store import JobStore

from processes import wait_for, watch_daemon

RATE = 44100
SUBMITS = 200
DROPS = 1000


def drop(folder: Path, count: int) -> None:
    """Write ``count`` distinct tiny renders, each appearing whole (renamed into place)."""
    rng = np.random.default_rng(0)
    for n in range(count):
        temp = folder.parent / f"drop{n:04d}.wav"
        sf.write(str(temp), rng.uniform(-0.5, 0.5, (RATE // 20, 2)), RATE, subtype="PCM_16")
        temp.rename(folder / temp.name)


def test_concurrent_submits_and_a_thousand_drops_are_each_recorded_once(
    model_dir: Path, tmp_path: Path
) -> None:
    renders, submitted = tmp_path / "renders", tmp_path / "submitted"
    renders.mkdir()
    submitted.mkdir()
    rng = np.random.default_rng(1)
    for n in range(SUBMITS):
        sf.write(str(submitted / f"s{n:03d}.wav"), rng.uniform(-0.5, 0.5, (RATE // 20, 2)), RATE)
    daemon = watch_daemon(tmp_path, renders, tmp_path / "stems", "--stems", "vocals")
    config = tmp_path / "config.toml"
    try:
        dropper = threading.Thread(target=drop, args=(renders, DROPS))
        dropper.start()
        calls = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bridge",
                    "submit",
                    str(path),
                    "--config",
                    str(config),
                    "--stems",
                    "vocals",
                    "-o",
                    str(tmp_path / "stems"),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for path in sorted(submitted.iterdir())
        ]
        results = [(call.wait(timeout=600), *call.communicate()) for call in calls]
        dropper.join()
        for code, _out, err in results:
            assert code == 0, err
            assert "locked" not in err.lower(), err
        ids = [out.strip() for _code, out, _err in results]
        assert len(set(ids)) == SUBMITS
        store = JobStore(tmp_path / "state")
        total = SUBMITS + DROPS
        wait_for(lambda: len(store.list(limit=10_000)) >= total, timeout=300, what="jobs")
        time.sleep(2)  # a late duplicate would show up now
        assert daemon.stop() == 0
        # Every job is recorded once and ended or waits its turn: none lost, none twice
        jobs = store.list(limit=10_000)
        inputs = Counter(Path(job.spec.input).name for job in jobs)
        assert len(inputs) == total and set(inputs.values()) == {1}
        assert {job.state for job in jobs} <= {"done", "queued"}, Counter(j.error for j in jobs)
        assert set(ids) <= {job.id for job in jobs}
        assert "database is locked" not in daemon.output()
    finally:
        if daemon.process.poll() is None:
            daemon.kill()
