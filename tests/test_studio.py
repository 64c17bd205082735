"""Studio scale-out: a real redis-server, a real daemon and real worker processes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from bridge.atomic import is_temporary
from bridge.cli import EXIT_BROKER
from bridge.jobs.store import JobStore
from bridge.pipeline.folders import RESERVATION_NAME
from bridge.pipeline.spec import PRIORITY_INTERACTIVE, PRIORITY_WATCHED, JobSpec
from bridge.settings import SeparationSettings

from processes import DaemonProcess, all_final, wait_for, write_config
from programs import required_program
from signals import music, write_audio

PASSWORD = "s3cret"
VOCALS = SeparationSettings(stems=("vocals",))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """``redis-server`` on loopback with a password, no persistence."""

    def __init__(self, folder: Path, port: int, *, tls: bool = False) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
        listen = ["--port", str(port)]
        connect: dict[str, object] = {}
        if tls:
            cert = self._certificate(folder)
            self.url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={cert}"
            listen = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert)]
            listen += ["--tls-key-file", str(folder / "key.pem"), "--tls-auth-clients", "no"]
            connect = {"ssl": True, "ssl_ca_certs": str(cert)}
        self.process = subprocess.Popen(
            [
                "redis-server",
                *listen,
                "--bind",
                "127.0.0.1",
                "--requirepass",
                PASSWORD,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host="127.0.0.1", port=port, password=PASSWORD, **connect)
        wait_for(lambda: _pings(client), timeout=20, what="redis-server")

    @staticmethod
    def _certificate(folder: Path) -> Path:
        """A self-signed certificate for 127.0.0.1, made with openssl."""
        openssl = required_program("openssl", package="openssl", purpose="TLS is not tested")
        cert = folder / "cert.pem"
        key = folder / "key.pem"
        subprocess.run(
            [
                *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
                *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
                *("-addext", "subjectAltName=IP:127.0.0.1"),
            ],
            check=True,
            capture_output=True,
        )
        return cert

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="module")
def redis_binary() -> str:
    return required_program(
        "redis-server", package="redis-server", purpose="the studio scale-out is not tested"
    )


@pytest.fixture
def server(redis_binary: str, tmp_path: Path) -> Iterator[RedisServer]:
    redis_server = RedisServer(tmp_path / "redis", free_port())
    yield redis_server
    redis_server.stop()


class Studio:
    """A daemon and its workers for one test; everything is stopped at the end."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        self.tmp = tmp_path
        self.url = url
        self.config = write_config(tmp_path / "config.toml", tmp_path / "state")
        self.store = JobStore(tmp_path / "state")
        self.processes: list[DaemonProcess] = []
        self.daemon: DaemonProcess | None = None

    def start_daemon(self, config: Path | None = None) -> DaemonProcess:
        self.daemon = self._start(
            ["serve", "--config", str(config or self.config), "--broker", self.url], "daemon"
        )
        return self.daemon

    def start_worker(self, name: str, config: Path | None = None) -> DaemonProcess:
        args = ["worker", "--broker", self.url, "--device", "cpu", "--heartbeat-timeout", "3"]
        return self._start([*args, "--config", str(config or self.config)], name)

    def _start(self, args: list[str], name: str) -> DaemonProcess:
        process = DaemonProcess(args, self.tmp / f"{name}.log")
        self.processes.append(process)
        return process

    def submit(
        self, count: int, *, seconds: float = 0.5, priority: int = PRIORITY_WATCHED
    ) -> list[str]:
        ids = []
        for index in range(count):
            source = write_audio(
                self.tmp / "renders" / f"take {index}.wav",
                music(int(seconds * 44100), seed=index + int(seconds * 1000) + priority),
            )
            spec = JobSpec(
                input=str(source),
                folder=str(self.tmp / "stems" / source.stem),
                separation=VOCALS,
                priority=priority,
                source="watch:test" if priority == PRIORITY_WATCHED else "submit",
            )
            ids.append(self.store.submit(spec)[0].id)
        return ids

    def workers(self) -> list[dict]:
        result = subprocess.run(
            [sys.executable, "-m", "bridge", "workers", "--broker", self.url, "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def stop(self) -> None:
        for process in self.processes:
            if process.process.poll() is None:
                process.stop()


@pytest.fixture
def studio(server: RedisServer, tmp_path: Path, model_dir: Path) -> Iterator[Studio]:
    setup = Studio(tmp_path, server.url)
    yield setup
    setup.stop()


def separations(studio: Studio) -> int:
    """How many times any worker wrote a set of stems (the engine logs each one)."""
    return sum(
        process.output().count("separated ")
        for process in studio.processes
        if process is not studio.daemon
    )


def assert_one_clean_set_each(studio: Studio, ids: list[str]) -> None:
    folders = sorted(p.name for p in (studio.tmp / "stems").iterdir() if p.is_dir())
    assert not any("(2)" in name for name in folders), folders
    for job_id in ids:
        job = studio.store.get(job_id)
        assert job.state == "done", (job.state, job.error)
        folder = Path(job.spec.folder)
        assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
            "manifest.json",
            "vocals.spectrogram.png",
            "vocals.wav",
            "vocals.waveform.png",
        ]
        assert not [p for p in folder.iterdir() if is_temporary(p)]
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        assert manifest["job_id"] == job_id


def test_two_workers_share_twenty_jobs_each_done_once(studio: Studio) -> None:
    # Given a daemon on the broker, two workers and twenty queued jobs
    studio.start_daemon()
    first, second = studio.start_worker("worker-a"), studio.start_worker("worker-b")
    wait_for(lambda: len(studio.workers()) == 2, timeout=90, what="two live workers")
    ids = studio.submit(20)
    # When they run
    jobs = wait_for(lambda: all_final(studio.store, 20), timeout=240, what="20 jobs to end")
    # Then every job is done, with one output set each, written once
    assert {job.state for job in jobs} == {"done"}
    assert_one_clean_set_each(studio, ids)
    assert separations(studio) == 20
    assert "separated " in first.output() and "separated " in second.output()
    # and the status files hosts read say so
    for job in jobs:
        assert "state=done" in job.status_file.read_text(encoding="utf-8")


def test_a_worker_killed_mid_job_loses_nothing(studio: Studio) -> None:
    # Given two workers and one long job
    studio.start_daemon()
    workers = {studio.start_worker(name).process.pid: name for name in ("worker-a", "worker-b")}
    wait_for(lambda: len(studio.workers()) == 2, timeout=90, what="two live workers")
    (job_id,) = studio.submit(1, seconds=40)
    # When the worker running it is killed (-9) in the middle of separating
    busy = wait_for(
        lambda: (
            [w for w in studio.workers() if job_id in w["current_jobs"]]
            and studio.store.get(job_id).progress > 0.1
        ),
        timeout=120,
        what="the job to be half way",
    )
    running = [w for w in studio.workers() if job_id in w["current_jobs"]]
    assert busy and running
    pid = int(running[0]["id"].rsplit(":", 1)[1])
    victim = next(p for p in studio.processes if p.process.pid == pid)
    victim.kill()
    # Then the job is handed to the other worker and completes: one output set, no temp file
    job = wait_for(
        lambda: studio.store.get(job_id).state in ("done", "failed") and studio.store.get(job_id),
        timeout=180,
        what="the job to end on the other worker",
    )
    assert job.state == "done", job.error
    assert_one_clean_set_each(studio, [job_id])
    assert "separated " not in victim.output()
    assert separations(studio) == 1
    assert workers[pid] in ("worker-a", "worker-b")


def test_daemon_restart_while_workers_run_loses_and_repeats_nothing(studio: Studio) -> None:
    studio.start_daemon()
    studio.start_worker("worker-a")
    studio.start_worker("worker-b")
    wait_for(lambda: len(studio.workers()) == 2, timeout=90, what="two live workers")
    ids = studio.submit(10, seconds=3)
    # When the daemon is stopped while jobs run, and started again a bit later
    wait_for(
        lambda: any(job.state == "done" for job in studio.store.list()),
        timeout=120,
        what="a first job done",
    )
    assert studio.daemon is not None
    studio.daemon.stop()
    time.sleep(2)
    studio.start_daemon()
    # Then every job ends done, each separated exactly once
    wait_for(lambda: all_final(studio.store, 10), timeout=240, what="10 jobs to end")
    assert_one_clean_set_each(studio, ids)
    assert separations(studio) == 10


def test_interactive_jobs_overtake_queued_folder_batches(studio: Studio) -> None:
    # Given folder jobs queued before an interactive one, and no worker yet
    studio.start_daemon()
    batch = studio.submit(3, priority=PRIORITY_WATCHED)
    time.sleep(0.5)
    (interactive,) = studio.submit(1, priority=PRIORITY_INTERACTIVE)
    # When one worker starts
    studio.start_worker("worker-a")
    wait_for(lambda: all_final(studio.store, 4), timeout=180, what="4 jobs to end")
    # Then the interactive job started first
    started = {job.id: job.started or 0 for job in studio.store.list()}
    assert started[interactive] < min(started[job_id] for job_id in batch)


def test_workers_lists_device_jobs_and_last_seen(studio: Studio) -> None:
    studio.start_worker("worker-a")
    (worker,) = wait_for(studio.workers, timeout=90, what="a live worker")
    assert worker["device"] == "cpu" and worker["concurrency"] == 1
    assert worker["current_jobs"] == [] and worker["jobs_done"] == 0
    assert time.time() - worker["last_seen"] < 30


def test_dashboard_shows_the_live_workers(studio: Studio) -> None:
    # Given a daemon on the broker with its dashboard, and one worker
    port = free_port()
    config = write_config(studio.tmp / "dashboard.toml", studio.tmp / "state", dashboard_port=port)
    daemon = studio.start_daemon(config)
    studio.start_worker("worker-a")
    wait_for(lambda: "daemon ready" in daemon.output(), what="the daemon to start")

    # When the dashboard is asked for the workers
    def listed() -> list[dict]:
        answer = httpx.get(f"http://127.0.0.1:{port}/api/workers", timeout=10).json()
        assert answer["broker"] is True
        return list(answer["workers"])

    (worker,) = wait_for(listed, timeout=90, what="the worker on the dashboard")
    # Then it shows what the worker announced in the broker's registry
    assert worker["device"] == "cpu" and worker["current_jobs"] == []
    assert worker["jobs_done"] == 0 and time.time() - worker["last_seen"] < 30


def test_wrong_password_is_a_clear_error(server: RedisServer, tmp_path: Path) -> None:
    url = f"redis://:wrong@127.0.0.1:{server.port}/0"
    for command in (["worker", "--device", "cpu"], ["workers"]):
        result = subprocess.run(
            [sys.executable, "-m", "bridge", *command, "--broker", url],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == EXIT_BROKER
        assert f"cannot use the broker at redis://:***@127.0.0.1:{server.port}/0" in result.stderr
        assert "wrong" not in result.stderr


def test_redis_down_keeps_jobs_queued_and_recovers(
    redis_binary: str, tmp_path: Path, model_dir: Path
) -> None:
    # Given a daemon whose Redis is not running yet, and two jobs submitted to it
    port = free_port()
    studio = Studio(tmp_path, f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
    try:
        daemon = studio.start_daemon()
        ids = studio.submit(2)
        wait_for(lambda: "cannot reach the broker" in daemon.output(), timeout=60, what="error")
        time.sleep(1)
        # Then it keeps serving with the jobs safe in its own store
        assert daemon.process.poll() is None
        assert {studio.store.get(job_id).state for job_id in ids} == {"queued"}
        assert PASSWORD not in daemon.output()
        # When Redis comes back and a worker joins, Then the jobs are done
        server = RedisServer(tmp_path / "redis", port)
        try:
            studio.start_worker("worker-a")
            wait_for(lambda: all_final(studio.store, 2), timeout=180, what="2 jobs to end")
            assert_one_clean_set_each(studio, ids)
            assert "connected to the broker" in daemon.output()
        finally:
            studio.stop()
            server.stop()
    finally:
        studio.stop()


def test_paths_are_mapped_between_daemon_and_worker(studio: Studio) -> None:
    # Given a share the daemon sees as .../daemon-view and the worker as .../share
    share = studio.tmp / "share"
    share.mkdir()
    view = studio.tmp / "daemon-view"
    view.symlink_to(share)
    worker_config = write_config(
        studio.tmp / "worker.toml",
        studio.tmp / "worker-state",
        f'\n[paths]\n"{view}" = "{share}"\n',
    )
    studio.start_daemon()
    studio.start_worker("worker-a", config=worker_config)
    source = write_audio(share / "take.wav", music(22050, seed=99))
    spec = JobSpec(
        input=str(view / source.name), folder=str(view / "stems" / "take"), separation=VOCALS
    )
    job_id = studio.store.submit(spec)[0].id
    # When the job runs on the worker
    job = wait_for(
        lambda: studio.store.get(job_id).state == "done" and studio.store.get(job_id),
        timeout=180,
        what="the job to be done",
    )
    # Then the worker worked on its own paths, and the daemon got its own back
    assert job.manifest == str(view / "stems" / "take" / "manifest.json")
    manifest = json.loads((share / "stems" / "take" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["input"]["path"] == str(share / "take.wav")


def test_jobs_wait_in_the_daemon_until_a_worker_can_take_them_and_travel_as_json(
    studio: Studio, server: RedisServer
) -> None:
    from bridge.broker.channel import NAMESPACE, QUEUE, WORKER_PREFIX, WorkerInfo

    client = redis.Redis(host="127.0.0.1", port=server.port, password=PASSWORD)
    # Given a daemon and no worker: jobs stay in the daemon's store, none go to Redis
    studio.start_daemon()
    first, second = studio.submit(2)
    time.sleep(2)
    assert client.hlen(f"{NAMESPACE}:{QUEUE}.msgs") == 0
    assert {studio.store.get(first).state, studio.store.get(second).state} == {"queued"}
    # When a worker with room for one job announces itself (but consumes nothing)
    entry = WorkerInfo(id="elsewhere:1", device="cuda:0", concurrency=1, last_seen=time.time())
    client.set(WORKER_PREFIX + entry.id, entry.to_json(), ex=60)
    # Then exactly one job is sent, as a JSON message holding the job id and its spec
    wait_for(lambda: client.hlen(f"{NAMESPACE}:{QUEUE}.msgs") == 1, timeout=30, what="a message")
    time.sleep(1)
    (raw,) = client.hvals(f"{NAMESPACE}:{QUEUE}.msgs")
    message = json.loads(raw)
    job_id, spec, folder, attempt = message["args"]
    assert job_id == first
    assert JobSpec.from_json(spec).input == studio.store.get(first).spec.input
    # with the stem folder the daemon reserved for it, and the attempt
    assert (folder, attempt) == (studio.store.get(first).folder, 1)
    assert (Path(folder) / RESERVATION_NAME).is_file()
    assert studio.store.get(second).state == "queued"


def test_cancel_reaches_a_job_running_on_a_worker(studio: Studio) -> None:
    # Given a long job half way on a worker
    studio.start_daemon()
    worker = studio.start_worker("worker-a")
    (job_id,) = studio.submit(1, seconds=40)
    wait_for(lambda: studio.store.get(job_id).progress > 0.1, timeout=120, what="half way")
    # When it is cancelled the way `stembridge cancel` does
    studio.store.cancel(job_id)
    # Then the worker stops it, nothing is written, and the worker takes the next job
    job = wait_for(
        lambda: studio.store.get(job_id).state != "running" and studio.store.get(job_id),
        timeout=60,
        what="the job to stop",
    )
    assert job.state == "cancelled"
    assert "state=cancelled" in job.status_file.read_text(encoding="utf-8")
    folder = Path(job.spec.folder)
    assert not folder.exists() or not [p for p in folder.iterdir() if p.is_file()]
    (next_job,) = studio.submit(1, seconds=0.5, priority=PRIORITY_INTERACTIVE)
    wait_for(lambda: studio.store.get(next_job).state == "done", timeout=120, what="next job")
    assert worker.process.poll() is None


def test_a_stopped_worker_hands_its_job_back(studio: Studio) -> None:
    # Given a long job half way on the only worker
    studio.start_daemon()
    worker = studio.start_worker("worker-a")
    (job_id,) = studio.submit(1, seconds=40)
    wait_for(lambda: studio.store.get(job_id).progress > 0.1, timeout=120, what="half way")
    # When the worker is stopped (SIGTERM, as systemd does)
    assert worker.stop() == 0
    # Then the job is queued again in the daemon, with nothing written
    job = wait_for(
        lambda: studio.store.get(job_id).state == "queued" and studio.store.get(job_id),
        timeout=60,
        what="the job to be queued again",
    )
    folder = Path(job.spec.folder)
    assert not folder.exists() or not [p for p in folder.iterdir() if p.is_file()]
    # and a worker that joins later finishes it, once
    studio.start_worker("worker-b")
    wait_for(lambda: studio.store.get(job_id).state == "done", timeout=180, what="done")
    assert_one_clean_set_each(studio, [job_id])
    assert separations(studio) == 1


def test_a_tls_broker_url_works_end_to_end(
    redis_binary: str, tmp_path: Path, model_dir: Path
) -> None:
    # Given Redis that only speaks TLS, and rediss:// URLs with the CA to trust
    server = RedisServer(tmp_path / "redis", free_port(), tls=True)
    studio = Studio(tmp_path, server.url)
    try:
        studio.start_daemon()
        studio.start_worker("worker-a")
        (job_id,) = studio.submit(1)
        # When a job is submitted, Then it travels over TLS both ways and is done
        wait_for(lambda: studio.store.get(job_id).state == "done", timeout=180, what="done")
        assert_one_clean_set_each(studio, [job_id])
        assert studio.workers()[0]["jobs_done"] == 1
    finally:
        studio.stop()
        server.stop()


LAUNCHER = Path(__file__).parent / "crashpoint.py"


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_daemon_killed_while_handing_a_job_over_sends_it_exactly_once(
    studio: Studio, when: str
) -> None:
    # Given a live worker, two queued jobs, and a daemon that dies by SIGKILL just before
    # (the message never reaches Redis) or just after (it does) its first hand-over
    studio.start_worker("worker-a")
    wait_for(lambda: len(studio.workers()) == 1, timeout=90, what="a live worker")
    ids = studio.submit(2)
    killed = subprocess.run(
        [
            sys.executable,
            str(LAUNCHER),
            "bridge.broker.dispatcher._enqueue",
            "1",
            when,
            "--",
            "-v",
            "serve",
            "--config",
            str(studio.config),
            "--broker",
            studio.url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    claimed = [job for job in studio.store.list() if job.state == "running"]
    assert [job.stage for job in claimed] == ["starting"]
    # When the daemon starts again
    studio.start_daemon()
    # Then both jobs are done, and each was separated exactly once
    wait_for(lambda: all_final(studio.store, 2), timeout=180, what="both jobs to end")
    assert_one_clean_set_each(studio, ids)
    assert separations(studio) == 2
    assert studio.daemon is not None
    if when == "before":
        assert "the daemon stopped before sending it; queued again" in studio.daemon.output()
    else:
        assert "queued again" not in studio.daemon.output()


def test_a_daemon_and_a_worker_log_in_without_the_password_on_their_command_lines(
    server: RedisServer, tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a Redis that takes a password, URLs without it, and a user-only password file
    url = f"redis://127.0.0.1:{server.port}/0"
    password_file = tmp_path / "broker-password"
    password_file.write_text(PASSWORD + "\n", encoding="utf-8")
    password_file.chmod(0o600)
    studio = Studio(tmp_path, url)
    try:
        # When the daemon takes the password from the environment, the worker from the file
        monkeypatch.setenv("STEMBRIDGE_BROKER_PASSWORD", PASSWORD)
        daemon = studio.start_daemon()
        monkeypatch.delenv("STEMBRIDGE_BROKER_PASSWORD")
        wait_for(lambda: "connected to the broker" in daemon.output(), what="the daemon to log in")
        worker_args = ["worker", "--broker", url, "--broker-password-file", str(password_file)]
        worker = studio._start(
            [*worker_args, "--device", "cpu", "--config", str(studio.config)], "worker"
        )
        # Then both log in: a job goes to the worker and comes back done
        (job_id,) = studio.submit(1)
        wait_for(lambda: studio.store.get(job_id).state == "done", timeout=180, what="done")
        assert_one_clean_set_each(studio, [job_id])
        # and neither command line (what ps shows every user) nor log holds the password
        for process in (daemon, worker):
            command_line = Path(f"/proc/{process.process.pid}/cmdline").read_bytes()
            assert url.encode() in command_line
            assert PASSWORD.encode() not in command_line
            assert PASSWORD not in process.output()
    finally:
        studio.stop()
