"""A job's status file, as Windows paths and line ends make it, read by the hosts' Lua."""

from __future__ import annotations

from pathlib import Path

from test_lua_core import lua  # noqa: F401 (lua: a fixture)
from test_lua_core import read_status as lua_read_status

from bridge.jobs.status_file import read_status, render_status
from bridge.jobs.store import JobStore
from bridge.pipeline.spec import JobSpec


def test_lf_and_crlf_status_files_read_the_same_in_lua_and_python(
    lua: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    # Given a job on Windows paths, and its status file with LF and with CRLF line ends
    store = JobStore(tmp_path / "state")
    job, _ = store.submit(
        JobSpec(input=r"C:\Renders\take 1.wav", folder=r"C:\Renders\Stems\take 1")
    )
    lf = render_status(job).encode("utf-8")
    crlf = lf.replace(b"\n", b"\r\n")
    # When the hosts' Lua reads each (REAPER's 5.4, Ardour's 5.3)
    from_lf, _ = lua_read_status(lua, lf, tmp_path)
    from_crlf, _ = lua_read_status(lua, crlf, tmp_path)
    # Then both say the same, the folder as Windows wrote it, no CR left in a value
    assert from_lf == from_crlf
    assert from_lf[b"folder"] == rb"C:\Renders\Stems\take 1"
    assert from_lf[b"state"] == b"queued" and from_lf[b"job"] == job.id.encode()
    # And so does Python's reader
    (tmp_path / "crlf.status").write_bytes(crlf)
    assert read_status(tmp_path / "crlf.status")["folder"] == r"C:\Renders\Stems\take 1"
