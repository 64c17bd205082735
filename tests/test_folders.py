"""Stem folder reservations: one writer per folder, dead writers taken over, nothing of a
live or finished job ever removed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bridge import atomic
from bridge.errors import OutputError
from bridge.manifest import MANIFEST_NAME
from bridge.pipeline.folders import (
    RESERVATION_NAME,
    STALE_SECONDS,
    FolderBusy,
    Superseded,
    Writer,
    adopt,
    choose,
    holds_result,
    read_holder,
    reserve_for,
)

NAMES = ["vocals"]


def never(folder: Path) -> bool:
    return False


def pick(folder: Path, writer: Writer, **options: object):  # type: ignore[no-untyped-def]
    return choose(
        folder, writer, names=NAMES, extension="wav", holds=options.pop("holds", never), **options
    )  # type: ignore[arg-type]


def finished(folder: Path, job: str, identity: str = "id") -> dict[str, int]:
    """A finished result of ``job`` in ``folder``: its files and their inodes."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocals.wav").write_bytes(b"RIFF" + job.encode())
    manifest = {"job_id": job, "identity": identity, "input": {}, "stems": []}
    manifest["stems"] = [{"name": "vocals", "path": "vocals.wav"}]
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    return {p.name: p.stat().st_ino for p in folder.iterdir()}


def reserve_in_child(folder: Path, job: str) -> None:
    """Reserve ``folder`` for ``job`` in a process that then dies without releasing it."""
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from bridge.pipeline.folders import Writer, choose\n"
        "folder, reservation = choose(Path(sys.argv[1]), Writer(sys.argv[2], 1), "
        "names=['vocals'], extension='wav', overwrite=False, holds=lambda f: False)\n"
        "tag = reservation.writer.tag\n"
        "(folder / f'.stembridge-{tag}-0000-vocals.wav.part').write_bytes(b'half')\n"
        "os._exit(9)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(folder), job], timeout=60)
    assert done.returncode == 9


def test_a_free_folder_is_reserved_and_released(tmp_path: Path) -> None:
    folder = tmp_path / "out" / "song"
    chosen, reservation = pick(folder, Writer("a1", 1), overwrite=False)
    assert chosen == folder and reservation is not None
    holder = read_holder(folder)
    assert holder is not None and holder.job == "a1" and not holder.gone()
    reservation.release()
    assert read_holder(folder) is None
    # The local lock leaves nothing behind either
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["song"]


def test_a_folder_a_live_writer_holds_is_never_shared(tmp_path: Path) -> None:
    # Given job A writing into song/
    folder = tmp_path / "song"
    _, first = pick(folder, Writer("a1", 1), overwrite=False)
    assert first is not None
    # When job B asks for the same folder
    chosen, second = pick(folder, Writer("b2", 1), overwrite=False)
    # Then it gets song (2), and A still holds song/
    assert chosen == tmp_path / "song (2)" and second is not None
    assert read_holder(folder).job == "a1"  # type: ignore[union-attr]
    first.release()
    second.release()


def test_a_folder_with_another_result_is_left_alone(tmp_path: Path) -> None:
    folder = tmp_path / "song"
    before = finished(folder, "a1", identity="other")
    chosen, reservation = pick(folder, Writer("b2", 1), overwrite=False)
    assert chosen == tmp_path / "song (2)" and reservation is not None
    reservation.release()
    assert {p.name: p.stat().st_ino for p in folder.iterdir()} == before


def test_a_folder_that_holds_the_result_is_used_as_it_is(tmp_path: Path) -> None:
    folder = tmp_path / "song"
    before = finished(folder, "a1", identity="same")
    chosen, reservation = pick(
        folder,
        Writer("b2", 1),
        overwrite=False,
        holds=lambda f: holds_result(f, "same", NAMES, "wav"),
    )
    assert (chosen, reservation) == (folder, None)
    assert {p.name: p.stat().st_ino for p in folder.iterdir()} == before


def test_a_dead_writers_folder_is_taken_over_and_its_leftovers_removed(tmp_path: Path) -> None:
    # Given a process that reserved song/, left a temporary there and died
    folder = tmp_path / "song"
    reserve_in_child(folder, "a1")
    assert read_holder(folder).gone()  # type: ignore[union-attr]
    # When another job asks for it
    chosen, reservation = pick(folder, Writer("b2", 1), overwrite=False)
    # Then it takes song/ over, and the dead writer's temporary is gone
    assert chosen == folder and reservation is not None
    assert read_holder(folder).job == "b2"  # type: ignore[union-attr]
    assert [p.name for p in folder.iterdir()] == [RESERVATION_NAME]
    reservation.release()


def test_a_writer_elsewhere_is_trusted_until_it_stops_refreshing(tmp_path: Path) -> None:
    # Given song/ reserved by a worker on another machine
    folder = tmp_path / "song"
    reserve_for(folder, Writer("a1", 1, owner="broker:studio-redis:6379/0"))
    chosen, reservation = pick(folder, Writer("b2", 1), overwrite=False)
    assert chosen == tmp_path / "song (2)" and reservation is not None
    reservation.release()
    # When it has not refreshed the reservation for longer than the bound
    old = time.time() - STALE_SECONDS - 5
    os.utime(folder / RESERVATION_NAME, (old, old))
    # Then the folder is taken over
    chosen, reservation = pick(folder, Writer("c3", 1), overwrite=False)
    assert chosen == folder and reservation is not None
    reservation.release()


def test_the_same_job_adopts_the_reservation_made_for_it(tmp_path: Path) -> None:
    # Given the daemon reserved song/ for job a1 before sending it to a worker
    folder = tmp_path / "song"
    reserve_for(folder, Writer("a1", 1, owner="broker:studio"))
    # When the worker (another writer of the same job) adopts it
    reservation = adopt(folder, Writer("a1", 1), holds=never)
    assert reservation is not None
    # Then the daemon's record is replaced
    assert read_holder(folder).tag == reservation.writer.tag  # type: ignore[union-attr]
    # And when a second delivery of the job on another machine (no shared lock) adopts it,
    # the first writer finds out before it publishes
    reservation.hand_over()
    stolen = adopt(folder, Writer("a1", 1), holds=never)
    assert stolen is not None
    with pytest.raises(Superseded, match="took this stem folder over"):
        reservation.check_current()
    stolen.release()


def test_another_jobs_reservation_cannot_be_adopted(tmp_path: Path) -> None:
    folder = tmp_path / "song"
    reserve_for(folder, Writer("a1", 1, owner="broker:studio"))
    with pytest.raises(OutputError, match="held by job a1"):
        adopt(folder, Writer("b2", 1), holds=never)


def test_overwrite_waits_for_the_folders_writer(tmp_path: Path) -> None:
    # Given job A writing song/
    folder = tmp_path / "song"
    _, first = pick(folder, Writer("a1", 1), overwrite=False)
    assert first is not None
    # When job B may overwrite: without waiting it is told, and waiting it gets song/
    with pytest.raises(FolderBusy, match="another job is writing it"):
        pick(folder, Writer("b2", 1), overwrite=True, poll_seconds=None)
    threading.Timer(0.5, first.release).start()
    started = time.monotonic()
    chosen, second = pick(folder, Writer("b2", 1), overwrite=True, poll_seconds=0.05)
    assert chosen == folder and second is not None and time.monotonic() - started >= 0.4
    second.release()


def test_an_abandoned_reservation_removes_only_its_own_files(tmp_path: Path) -> None:
    # Given song (2)/ reserved by job B, which wrote a temporary and published one file
    folder = tmp_path / "out" / "song"
    _, reservation = pick(folder, Writer("b2", 1), overwrite=False)
    assert reservation is not None
    tag = reservation.writer.tag
    temp = atomic.write_temp(folder / "vocals.wav", b"b's vocals", tag=tag)
    journal = atomic.Journal(folder, tag=tag, key="id-b")
    journal.publish([(temp, folder / "vocals.wav")])
    # and a user's file that B did not write
    (folder / "notes.txt").write_text("mine")
    # When B fails: its journal is undone and the reservation abandoned
    journal.undo()
    atomic.write_temp(folder / "manifest.json", b"{}", tag=tag)
    reservation.abandon()
    # Then only the user's file is left, and the folders stay
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_a_journal_never_takes_back_a_file_someone_else_wrote_since(tmp_path: Path) -> None:
    folder = tmp_path / "song"
    folder.mkdir()
    temp = atomic.write_temp(folder / "vocals.wav", b"first", tag="a1.1.0000")
    journal = atomic.Journal(folder, tag="a1.1.0000", key="k")
    journal.publish([(temp, folder / "vocals.wav")])
    # Another writer replaced vocals.wav after the first one published it
    atomic.write_bytes(folder / "vocals.wav", b"second")
    assert journal.undo() == []
    assert (folder / "vocals.wav").read_bytes() == b"second"


def test_a_killed_writers_half_set_is_taken_back_by_the_next_one(tmp_path: Path) -> None:
    # Given a writer that published one of its files and died (its journal is left)
    folder = tmp_path / "song"
    folder.mkdir()
    temp = atomic.write_temp(folder / "vocals.wav", b"half", tag="a1.1.0000")
    atomic.Journal(folder, tag="a1.1.0000", key="k").publish([(temp, folder / "vocals.wav")])
    # When the next writer of the folder reserves it
    _, reservation = pick(folder, Writer("a1", 2), overwrite=False)
    assert reservation is not None
    # Then that file and the journal are gone: the set never finished
    assert [p.name for p in folder.iterdir()] == [RESERVATION_NAME]
    reservation.release()
