"""Hostile names and links in watched and output folders: nothing is executed, nothing is
written outside the output roots, and the daemon keeps serving."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf

from bridge.atomic import is_temporary
from bridge.jobs.status_file import read_status
from bridge.jobs.store import Job, JobStore
from bridge.names import folder_name

from processes import (
    NO_ROOT_OVERRIDE,
    DaemonProcess,
    all_final,
    stem_set,
    visible_files,
    wait_for,
    watch_daemon,
    write_config,
)
from signals import music, write_audio

RATE = 44100

# Each would run a command if it ever reached a shell unquoted.
NAMES = [
    "with space.wav",
    'it\'s "quoted".wav',
    "semi;colon; touch PWNED1.wav",
    "$(touch PWNED2).wav",
    "`touch PWNED3`.wav",
    "| touch PWNED4 &.wav",
    "Ünïcødé – ✓ 日本語.wav",  # noqa: RUF001 (the en dash is the point)
    "-starts-with-dash.wav",
    "new\nline.wav",
    ("long" * 60)[:240] + ".wav",
]


class Daemon:
    """A daemon watching ``renders/`` into ``stems/``, killed at the end whatever happened."""

    def __init__(self, tmp_path: Path, *extra: str, prefix: tuple[str, ...] = ()) -> None:
        self.watched, self.out = tmp_path / "renders", tmp_path / "stems"
        self.watched.mkdir(exist_ok=True)
        self.process = watch_daemon(
            tmp_path, self.watched, self.out, "--stems", "vocals", *extra, prefix=prefix
        )
        self.store = JobStore(tmp_path / "state")

    def jobs(self, count: int, timeout: float = 120) -> dict[str, Job]:
        jobs = wait_for(lambda: all_final(self.store, count), timeout=timeout, what="the jobs")
        return {Path(job.spec.input).name: job for job in jobs}


@pytest.fixture
def start(model_dir: Path, tmp_path: Path) -> Iterator[type[Daemon]]:
    started: list[Daemon] = []

    def make(*extra: str, prefix: tuple[str, ...] = ()) -> Daemon:
        daemon = Daemon(tmp_path, *extra, prefix=prefix)
        started.append(daemon)
        return daemon

    yield make  # type: ignore[misc]
    for daemon in started:
        if daemon.process.process.poll() is None:
            daemon.process.kill()


def done_status(job: Job) -> dict[str, str] | None:
    status = read_status(job.status_file)
    return status if status["state"] == "done" else None


def test_hostile_names_are_separated_and_nothing_is_executed(
    start: type[Daemon], tmp_path: Path
) -> None:
    daemon = start()
    for n, name in enumerate(NAMES):
        write_audio(daemon.watched / name, music(RATE // 4, seed=n))
    jobs = daemon.jobs(len(NAMES))
    assert sorted(jobs) == sorted(NAMES)
    for name, job in jobs.items():
        if "\n" in name:
            assert job.state == "failed"
            assert "line break" in (job.error or "") and repr(str(daemon.watched / name)) in (
                job.error or ""
            )
            continue
        assert job.state == "done", (name, job.error)
        # The stem folder is named after the file, made safe ("|" cannot be in a Windows name)
        folder = Path(job.folder)
        assert folder == daemon.out / folder_name(Path(name).stem)
        assert visible_files(folder) == stem_set("vocals")
        # The status file follows the store a moment later
        status = wait_for(lambda job=job: done_status(job), what=f"{name}'s status file")
        assert status["stem.vocals"] == str(folder / "vocals.wav")
    pwned = [p for p in tmp_path.rglob("PWNED*") if not p.name.endswith(".wav")]
    pwned += list(Path.cwd().glob("PWNED*")) + list(Path.home().glob("PWNED*"))
    assert pwned == []
    assert daemon.process.stop() == 0


def test_links_in_the_watched_folder_are_not_followed_out_of_it(
    start: type[Daemon], tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    write_audio(elsewhere / "private.wav", music(RATE // 4))
    daemon = start("--polling", "--recursive")
    watched = daemon.watched
    (watched / "loop").symlink_to(watched, target_is_directory=True)
    (watched / "sub").mkdir()
    (watched / "sub" / "up").symlink_to(watched, target_is_directory=True)
    (watched / "outside").symlink_to(elsewhere, target_is_directory=True)
    (watched / "private.wav").symlink_to(elsewhere / "private.wav")
    (watched / "dangling.wav").symlink_to(tmp_path / "nowhere.wav")
    write_audio(watched / "real.wav", music(RATE // 4))
    jobs = daemon.jobs(1)
    assert list(jobs) == ["real.wav"] and jobs["real.wav"].state == "done"
    # Nothing else turns up later, and the daemon is still serving
    write_audio(watched / "later.wav", music(RATE // 4, seed=1))
    jobs = daemon.jobs(2)
    assert sorted(jobs) == ["later.wav", "real.wav"]
    assert "symbolic link" in daemon.process.output()
    assert daemon.process.stop() == 0


def test_a_stem_folder_that_is_a_link_out_of_the_output_root_is_not_written_through(
    start: type[Daemon], tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "stems"
    out.mkdir()
    (out / "take").symlink_to(elsewhere, target_is_directory=True)
    (out / ".stembridge").symlink_to(elsewhere, target_is_directory=True)
    daemon = start()
    write_audio(daemon.watched / "take.wav", music(RATE // 4))
    job = daemon.jobs(1)["take.wav"]
    assert job.state == "done", job.error
    assert list(elsewhere.iterdir()) == []
    assert visible_files(out / "take (2)") == stem_set("vocals")
    assert daemon.process.stop() == 0


def test_a_read_only_output_folder_fails_the_job_clearly_and_later_jobs_succeed(
    start: type[Daemon], tmp_path: Path
) -> None:
    out = tmp_path / "stems"
    out.mkdir()
    out.chmod(0o555)
    daemon = start(prefix=NO_ROOT_OVERRIDE)
    write_audio(daemon.watched / "take.wav", music(RATE // 4))
    job = daemon.jobs(1)["take.wav"]
    assert job.state == "failed"
    assert str(out) in (job.error or "") and "permission" in (job.error or "").lower(), job.error
    assert [p for p in out.rglob("*")] == []
    # Once the folder is writable again, the next render goes through
    out.chmod(0o755)
    write_audio(daemon.watched / "next.wav", music(RATE // 4, seed=1))
    job = daemon.jobs(2)["next.wav"]
    assert job.state == "done"
    wait_for(lambda: done_status(job), what="next.wav's status file")
    assert sf.info(str(out / "next" / "vocals.wav")).frames == RATE // 4
    assert not [p for p in out.rglob("*") if is_temporary(p)]
    assert os.access(out, os.W_OK)
    assert daemon.process.stop() == 0


# Names whose plain stem would leave the output root, land in it, or reach a home folder.
CLIMBING = ["...wav", "..wav", "~root.wav", "CON.wav", ".hidden.wav"]


def render(path: Path, seed: int) -> None:
    """A short render at ``path``, written under a plain name outside its folder first
    (libsndfile takes the format from the extension, and "...wav" has none for it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = write_audio(path.parent.parent / f"staged-{seed}.wav", music(RATE // 4, seed=seed))
    staged.rename(path)


def test_names_that_would_climb_out_stay_inside_the_output_root(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bridge.cli import EXIT_OK, main

    renders = tmp_path / "renders" / "..."
    out = tmp_path / "renders" / "out"
    for n, name in enumerate(CLIMBING):
        render(renders / name, seed=n)
    home = sorted(Path.home().iterdir())
    # When each is separated into OUT
    for name in CLIMBING:
        code = main(["separate", str(renders / name), "-o", str(out), "--stems", "vocals"])
        assert code == EXIT_OK, capsys.readouterr().err
    # Then every stem folder is a folder of its own inside OUT, and nothing is anywhere else
    folders = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert folders == ["_CON", "hidden", "root", "untitled", "untitled (2)"]
    for folder in folders:
        assert visible_files(out / folder) == stem_set("vocals")
    assert sorted(p.name for p in (tmp_path / "renders").iterdir()) == ["...", "out"]
    assert sorted(p.name for p in renders.iterdir()) == sorted(CLIMBING)
    assert sorted(Path.home().iterdir()) == home


@pytest.mark.parametrize(
    "template",
    ["{dir}/Stems/{name}", "{dir}/{name} Stems", "{dir}/../Stems/{name}", "{name}/stems"],
)
def test_the_example_templates_keep_hostile_names_inside_their_root(
    model_dir: Path, tmp_path: Path, template: str
) -> None:
    # Given a daemon whose rule uses one of the examples' templates
    watched = tmp_path / "project" / "renders"
    watched.mkdir(parents=True)
    config = write_config(
        tmp_path / "config.toml",
        tmp_path / "state",
        f'[[rule]]\nfolder = "{watched}"\noutput = "{template}"\nstems = ["vocals"]\n',
    )
    daemon = DaemonProcess(["serve", "--config", str(config)], tmp_path / "daemon.log")
    try:
        wait_for(lambda: "daemon ready" in daemon.output(), what="the daemon to start")
        store = JobStore(tmp_path / "state")
        home = sorted(Path.home().iterdir())
        # "~root" is root's home, whatever $HOME says: a name must never lead there
        root_home = Path(os.path.expanduser("~root"))
        root_home_before = sorted(root_home.iterdir()) if root_home.is_dir() else []
        # When hostile names are rendered, then an ordinary one
        for n, name in enumerate(CLIMBING):
            render(watched / name, seed=n)
        wait_for(lambda: all_final(store, len(CLIMBING)), timeout=180, what="the jobs")
        write_audio(watched / "later.wav", music(RATE // 4, seed=99))
        jobs = wait_for(lambda: all_final(store, len(CLIMBING) + 1), timeout=120, what="later.wav")
        # Then every job is done in a folder of its own under the template's root...
        root = {
            "{dir}/Stems/{name}": watched / "Stems",
            "{dir}/{name} Stems": watched,
            "{dir}/../Stems/{name}": tmp_path / "project" / "Stems",
            "{name}/stems": watched,
        }[template]
        folders = set()
        for job in jobs:
            assert job.state == "done", (job.spec.input, job.error)
            folder = Path(job.folder)
            assert folder.is_relative_to(root) and folder != root, folder
            assert visible_files(folder) == stem_set("vocals")
            folders.add(folder)
        assert len(folders) == len(jobs)
        # ... never in the watched folder itself (whose later renders would be ignored), and
        # nothing reached a home folder
        assert not (watched / "manifest.json").exists()
        assert sorted(Path.home().iterdir()) == home
        if root_home.is_dir():
            assert sorted(root_home.iterdir()) == root_home_before
    finally:
        assert daemon.stop() == 0


SEPARATORS = ["ls\u2028sep.wav", "par\u2029sep.wav", "nel\u0085sep.wav"]


def test_names_with_line_separators_are_refused_and_status_files_stay_exact(
    start: type[Daemon], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bridge.cli import EXIT_INPUT, main

    daemon = start()
    for n, name in enumerate(SEPARATORS):
        write_audio(daemon.watched / name, music(RATE // 4, seed=n))
    write_audio(daemon.watched / "plain.wav", music(RATE // 4, seed=9))
    jobs = daemon.jobs(len(SEPARATORS) + 1)
    # Then each such render fails with a line naming it (escaped), and the status file a
    # host reads says so, with the folder exactly as the store has it
    for name in SEPARATORS:
        job = jobs[name]
        assert job.state == "failed" and "line break" in (job.error or ""), job.error
        status = wait_for(
            lambda job=job: (
                read_status(job.status_file).get("state") == "failed"
                and read_status(job.status_file)
            ),
            what=f"{name!r}'s status file",
        )
        assert status["folder"] == job.folder and status["error"] == job.error
        raw = job.status_file.read_bytes().decode("utf-8")
        assert not any(char in raw for char in "\u2028\u2029\u0085")
    assert jobs["plain.wav"].state == "done"
    assert sorted(p.name for p in daemon.out.iterdir() if not p.name.startswith(".")) == ["plain"]
    # And submit and separate refuse such a file before any job or folder exists
    source = daemon.watched / SEPARATORS[0]
    config = str(tmp_path / "config.toml")
    for command in (
        ["submit", str(source), "--config", config],
        ["separate", str(source), "-o", str(tmp_path / "x")],
    ):
        assert main(command) == EXIT_INPUT
        assert "line break" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert len(daemon.store.list()) == len(SEPARATORS) + 1
    assert daemon.process.stop() == 0
