"""When a file being written counts as finished (with stat and the audio check injected)."""

from __future__ import annotations

import os
from pathlib import Path

from bridge.errors import UnreadableAudio
from bridge.watch.finished import GIVE_UP_POLLS, FinishedFiles


class FakeDisk:
    """Sizes and times per path, plus whether each file looks complete to the probe."""

    def __init__(self) -> None:
        self.files: dict[Path, tuple[int, int]] = {}
        self.incomplete: set[Path] = set()

    def stat(self, path: Path) -> os.stat_result:
        if path not in self.files:
            raise FileNotFoundError(path)
        size, mtime = self.files[path]
        return os.stat_result((0o100644, 0, 0, 1, 0, 0, size, 0, 0, 0, 0, 0, 0, 0, 0, 0, mtime))

    def check(self, path: Path) -> None:
        if path in self.incomplete:
            raise UnreadableAudio(f"{path}: the file is truncated (still being written)")


def tracker(disk: FakeDisk) -> FinishedFiles:
    return FinishedFiles(stable_polls=3, stat=disk.stat, check=disk.check)


def test_growing_file_is_finished_after_stable_polls() -> None:
    disk, path = FakeDisk(), Path("/r/take.wav")
    files = tracker(disk)
    disk.files[path] = (100, 1)
    files.touch(path)
    results = []
    for size in (200, 300, 300, 300, 300, 300):
        disk.files[path] = (size, size)
        results.append([p for p, _ in files.tick()])
    assert results == [[], [], [], [], [path], []]


def test_close_after_write_is_finished_at_once_and_duplicates_collapse() -> None:
    disk, path = FakeDisk(), Path("/r/take.wav")
    files = tracker(disk)
    disk.files[path] = (500, 7)
    for _ in range(5):
        files.touch(path, closed=True)
    assert [p for p, _ in files.tick()] == [path]
    assert files.tick() == [] and files.pending() == 0


def test_a_file_whose_header_promises_more_waits_then_gives_up() -> None:
    disk, path = FakeDisk(), Path("/r/take.wav")
    files = tracker(disk)
    disk.files[path] = (500, 7)
    disk.incomplete.add(path)
    files.touch(path, closed=True)
    ticks = 0
    while not files.tick():
        ticks += 1
        assert ticks < 1000
    assert ticks >= GIVE_UP_POLLS * 3


def test_deleted_and_empty_files_are_not_reported() -> None:
    disk = FakeDisk()
    files = tracker(disk)
    empty, gone = Path("/r/empty.wav"), Path("/r/gone.wav")
    disk.files[empty] = (0, 1)
    files.touch(empty, closed=True)
    files.touch(gone, closed=True)
    assert files.tick() == [] and files.pending() == 1
