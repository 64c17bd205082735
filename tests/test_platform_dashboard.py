"""The dashboard shows the device a job actually ran on (its manifest's), not ``auto``."""

from __future__ import annotations

import json
from pathlib import Path

from test_dashboard import client_for, done_job

from bridge.jobs.store import JobStore


def test_a_finished_job_shows_the_device_it_ran_on(tmp_path: Path) -> None:
    # Given a job asked for "auto" whose manifest says it ran on the MPS device
    store = JobStore(tmp_path / "state")
    job = done_job(store, tmp_path)
    assert job.spec.separation.device == "auto" and job.manifest
    manifest = json.loads(Path(job.manifest).read_text())
    Path(job.manifest).write_text(json.dumps({**manifest, "settings": {"device": "mps"}}))
    client, _ = client_for(tmp_path, store)
    # Then the job's answer names that device, and the page shows it before the spec's
    assert client.get(f"/api/jobs/{job.id}").json()["device"] == "mps"
    script = client.get("/static/job.js").text
    assert "job.device || sep.device" in script
    # And a manifest edited to hold something else there is answered with no device
    Path(job.manifest).write_text(json.dumps({**manifest, "settings": ["mps"]}))
    assert client.get(f"/api/jobs/{job.id}").json()["device"] is None
