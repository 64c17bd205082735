"""Watcher rules and supervision, with an injected observer factory."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from watchdog.observers.api import BaseObserver

from bridge.config import Config, DaemonSettings, Rule
from bridge.jobs.store import JobStore
from bridge.pipeline.spec import JobSpec
from bridge.watch.watcher import FolderWatcher


class FakeObserver(BaseObserver):
    """An observer that can die; it never watches anything."""

    def __init__(self) -> None:
        super().__init__(emitter_class=object)  # type: ignore[arg-type]
        self.dead = False

    def start(self) -> None:
        self.started = True

    def is_alive(self) -> bool:
        return not self.dead

    def stop(self) -> None:
        self.dead = True

    def join(self, timeout: float | None = None) -> None:
        return None

    def schedule(self, handler, path, *, recursive=False, event_filter=None):  # type: ignore[no-untyped-def,override]
        return None


@pytest.fixture
def watched(tmp_path: Path) -> Path:
    folder = tmp_path / "renders"
    folder.mkdir()
    return folder


def make(
    tmp_path: Path, watched: Path, observers: list[FakeObserver]
) -> tuple[FolderWatcher, Rule]:
    rule = Rule(name="r", folder=watched, recursive=True, output=str(watched / "Stems/{name}"))
    config = Config(daemon=DaemonSettings(state_dir=tmp_path / "state"), rules=(rule,))

    def factory(rule: Rule, poll: float) -> BaseObserver:
        observers.append(FakeObserver())
        return observers[-1]

    return FolderWatcher(config, JobStore(tmp_path / "state"), make_observer=factory), rule


def test_a_dead_observer_is_restarted_and_logged(
    tmp_path: Path, watched: Path, caplog: pytest.LogCaptureFixture
) -> None:
    observers: list[FakeObserver] = []
    watcher, _ = make(tmp_path, watched, observers)
    watcher.supervise()
    observers[0].dead = True
    with caplog.at_level(logging.WARNING):
        watcher.supervise()
    assert len(observers) == 2 and not observers[1].dead
    assert "observer of" in caplog.text and "starting it again" in caplog.text


def test_own_files_are_never_taken(tmp_path: Path, watched: Path) -> None:
    observers: list[FakeObserver] = []
    watcher, rule = make(tmp_path, watched, observers)
    store = JobStore(tmp_path / "state")
    store.submit(JobSpec(input=str(watched / "a.wav"), folder=str(watched / "Stems" / "a")))
    watcher.supervise()
    (watched / "Stems" / "b").mkdir(parents=True)
    (watched / "Stems" / "b" / "manifest.json").write_text("{}")
    assert watcher.wanted(rule, watched / "take.wav")
    assert not watcher.wanted(rule, watched / "Stems" / "a" / "vocals.wav")
    assert not watcher.wanted(rule, watched / "Stems" / "a (2)" / "vocals.wav")
    assert not watcher.wanted(rule, watched / "Stems" / "b" / "vocals.wav")
    assert not watcher.wanted(rule, watched / ".stembridge-1234abcd-take.wav.part")
    assert not watcher.wanted(rule, watched / "Stems" / ".stembridge" / "x.wav")
    assert not watcher.wanted(rule, watched / "notes.txt")


def test_health_tells_watching_missing_and_restarted_folders(tmp_path: Path, watched: Path) -> None:
    # Given a supervised folder
    observers: list[FakeObserver] = []
    watcher, _ = make(tmp_path, watched, observers)
    watcher.supervise()
    assert [(h.rule, h.folder, h.mode, h.state, h.restarts) for h in watcher.health()] == [
        ("r", str(watched), "events", "watching", 0)
    ]
    # When its observer dies, then it shows stopped until restarted, and counts the restart
    observers[0].dead = True
    assert watcher.health()[0].state == "stopped"
    watcher.supervise()
    assert (watcher.health()[0].state, watcher.health()[0].restarts) == ("watching", 1)
    # When the folder disappears, then it shows missing
    watched.rmdir()
    watcher.supervise()
    assert watcher.health()[0].state == "missing"
    watcher.stop()
