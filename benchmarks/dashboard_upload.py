"""Dashboard uploads: throughput and the server's peak memory, a small file against a large one.

    flock /tmp/bench.lock python benchmarks/dashboard_upload.py [--minutes 1 60]

For each length a 24-bit stereo WAV is written, and a dashboard (the real app behind
uvicorn on its thread, as the daemon runs it, with a fresh job store) is started in a
child process; the file is streamed to it once over loopback as the page sends it (the
raw body, 1 MiB at a time), then the child stops and reports its own peak RSS (VmHWM,
Linux: ``ru_maxrss`` would carry the parent's across exec) when ready and at the end. The
reference for time is copying the same file on the same disk (``shutil.copyfile``);
for memory, the first (shortest) length: an upload that is streamed to disk, never held
whole, costs the server the same memory whatever the file's size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import machine, write_clip

SERVER = """
import json, sys
from pathlib import Path
from bridge.dashboard.app import create_app
from bridge.dashboard.auth import Guard
from bridge.dashboard.intake import JobDefaults
from bridge.dashboard.server import DashboardServer
from bridge.dashboard.uploads import Uploads
from bridge.jobs.store import JobStore
work, port = Path(sys.argv[1]), int(sys.argv[2])
guard = Guard(host="127.0.0.1", port=port, state_dir=work / "state")
app = create_app(store=JobStore(work / "state"), guard=guard, folders=list, workers=None,
                 uploads=Uploads(work / "uploads", max_bytes=10**12), defaults=JobDefaults())
def peak():  # VmHWM: this process's own; ru_maxrss keeps the parent's across exec
    line = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
    return int(line.split()[1]) * 1024
with DashboardServer(app, host="127.0.0.1", port=port):
    print(json.dumps({"csrf": guard.csrf, "ready_rss": peak()}), flush=True)
    sys.stdin.read()
print(json.dumps({"peak_rss": peak()}))
"""
CHUNK = 1024 * 1024


def upload_once(clip: Path, work: Path, port: int) -> dict[str, float]:
    """Start a dashboard, upload ``clip`` to it, stop it; its time and peak RSS."""
    child = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(work), str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    ready = json.loads(child.stdout.readline())
    csrf = ready["csrf"]
    url = f"http://127.0.0.1:{port}"

    def body():
        with open(clip, "rb") as file:
            while chunk := file.read(CHUNK):
                yield chunk

    started = time.perf_counter()
    response = httpx.post(
        f"{url}/api/uploads",
        params={"name": clip.name},
        content=body(),
        headers={
            "origin": url,
            "x-stembridge-csrf": csrf,
            "content-type": "application/octet-stream",
            "content-length": str(clip.stat().st_size),
        },
        timeout=600,
    )
    seconds = time.perf_counter() - started
    child.stdin.close()
    peak = json.loads(child.stdout.read().strip().splitlines()[-1])["peak_rss"]
    child.wait()
    if response.status_code != 201:
        raise SystemExit(f"the upload was refused: {response.text}")
    return {"seconds": seconds, "peak_rss": peak, "ready_rss": ready["ready_rss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 60])
    parser.add_argument("--port", type=int, default=18799)
    args = parser.parse_args()
    print(machine())
    rows = []
    with tempfile.TemporaryDirectory(prefix="upload-bench-") as tmp:
        for minutes in args.minutes:
            work = Path(tmp) / f"{minutes}"
            work.mkdir()
            clip = write_clip(work / "clip.wav", minutes * 60)
            size = clip.stat().st_size
            started = time.perf_counter()
            shutil.copyfile(clip, work / "copy.wav")
            os.sync()
            copy_seconds = time.perf_counter() - started
            (work / "copy.wav").unlink()
            measured = upload_once(clip, work, args.port)
            rows.append((minutes, size, copy_seconds, measured))
            shutil.rmtree(work)
    base_rss = rows[0][3]["peak_rss"]
    print(
        f"{'minutes':>8} {'MB':>8} {'upload s':>9} {'MB/s':>7} {'x copy':>7} "
        f"{'ready MB':>8} {'peak MB':>8} {'x first':>8}"
    )
    for minutes, size, copy_seconds, measured in rows:
        print(
            f"{minutes:8g} {size / 1e6:8.1f} {measured['seconds']:9.2f} "
            f"{size / 1e6 / measured['seconds']:7.1f} "
            f"{measured['seconds'] / copy_seconds:7.2f} {measured['ready_rss'] / 1e6:8.1f} "
            f"{measured['peak_rss'] / 1e6:8.1f} "
            f"{measured['peak_rss'] / base_rss:8.3f}"
        )


if __name__ == "__main__":
    main()
