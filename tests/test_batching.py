"""Forward passes shared across jobs: the batcher with real threads, and two jobs on one
worker's model giving each its single-job stems."""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dramatiq
import numpy as np
import pytest
import redis
import soundfile as sf
from dramatiq.brokers.redis import RedisBroker

from bridge.broker.channel import ACTOR, EVENTS, NAMESPACE, QUEUE, Event
from bridge.broker.remote import StudioWorker
from bridge.cli import EXIT_USAGE, main
from bridge.errors import JobCancelled, ModelNotFound, SettingsError
from bridge.jobs.worker import ModelCache
from bridge.manifest import read_manifest
from bridge.models.batching import BatchingOptions, PassSharing, RunBatch, SharedPasses
from bridge.pipeline.run import NoResults, run_job
from bridge.pipeline.spec import JobSpec
from bridge.settings import EffectsSettings, OutputSettings, SeparationSettings

from processes import wait_for
from signals import SAMPLE_RATE, music, write_audio
from test_families import bs_roformer
from test_studio import RedisServer, redis_binary, server  # noqa: F401 (the fixtures)

#: Long enough that two threads released together always meet in one pass.
PATIENT = BatchingOptions(max_segments=8, wait_seconds=5.0)


class Network:
    """A stand-in forward pass: each row times ten plus the member; records every pass."""

    def __init__(self, fail_when: Callable[[np.ndarray], bool] = lambda batch: False) -> None:
        self.passes: list[tuple[int, int]] = []
        self.fail_when = fail_when
        self._lock = threading.Lock()

    def __call__(self, member: int, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            self.passes.append((member, len(batch)))
        if self.fail_when(batch):
            raise MemoryError("out of memory in this pass")
        return batch * 10 + member


def rows(job: int, count: int, start: int = 0) -> np.ndarray:
    """``count`` distinguishable segments of job ``job``, shape ``(count, 2, 3)``."""
    values = np.arange(start, start + count, dtype=np.float32)[:, None, None] + 1000 * job
    return np.broadcast_to(values, (count, 2, 3)).copy()


def in_threads(*work: Callable[[], object]) -> list[object]:
    """Run each callable on its own thread, released together; results (or exceptions)."""
    results: list[object] = [None] * len(work)
    start = threading.Barrier(len(work))

    def run(index: int) -> None:
        start.wait()
        try:
            results[index] = work[index]()
        except BaseException as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(work))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def joined_all(passes: SharedPasses, jobs: int, body: Callable[[int, RunBatch], object]) -> list:
    """``jobs`` jobs joined before any submits, each running ``body(job, run_batch)``."""
    ready = threading.Barrier(jobs)

    def job(index: int) -> Callable[[], object]:
        def run() -> object:
            with passes.join() as run_batch:
                ready.wait()
                return body(index, run_batch)

        return run

    return in_threads(*(job(i) for i in range(jobs)))


def test_requests_of_several_jobs_run_as_one_pass_and_each_gets_its_rows() -> None:
    # Given two jobs on one network, each asking for three passes of 2 segments
    network = Network()
    passes = SharedPasses(network, PATIENT)

    def body(job: int, run_batch: RunBatch) -> list[np.ndarray]:
        return [run_batch(1, rows(job, 2, start=2 * k)) for k in range(3)]

    # When they run at once
    results = joined_all(passes, 2, body)
    # Then each got its own rows, in order, from passes of 4 segments (both jobs)
    for job, outputs in enumerate(results):
        for k, output in enumerate(outputs):  # type: ignore[arg-type]
            np.testing.assert_array_equal(output, rows(job, 2, start=2 * k) * 10 + 1)
    assert network.passes == [(1, 4)] * 3


def test_a_lone_job_runs_at_once() -> None:
    network = Network()
    passes = SharedPasses(network, BatchingOptions(max_segments=8, wait_seconds=30.0))
    with passes.join() as run_batch:
        started = time.monotonic()
        out = run_batch(0, rows(0, 1))
        elapsed = time.monotonic() - started
    np.testing.assert_array_equal(out, rows(0, 1) * 10)
    assert elapsed < 1.0


def test_a_job_between_passes_delays_another_only_for_the_wait() -> None:
    # Given a job that joined but does not ask for a pass (it is decoding, say)
    network = Network()
    passes = SharedPasses(network, BatchingOptions(max_segments=8, wait_seconds=0.3))
    with passes.join(), passes.join() as run_batch:
        # When the other asks
        started = time.monotonic()
        run_batch(0, rows(0, 1))
        elapsed = time.monotonic() - started
    # Then it waits the bounded time, no more, and runs alone
    assert 0.25 <= elapsed < 3.0
    assert network.passes == [(0, 1)]


def test_a_request_that_came_during_a_pass_waits_for_that_pass_s_job_to_ask_again() -> None:
    # Given a slow pass of job 0, during which job 1 asks
    running = threading.Event()
    network = Network()

    def slow(member: int, batch: np.ndarray) -> np.ndarray:
        running.set()
        time.sleep(0.3)
        return network(member, batch)

    passes = SharedPasses(slow, BatchingOptions(max_segments=8, wait_seconds=0.2))

    def body(job: int, run_batch: RunBatch) -> list[np.ndarray]:
        if job == 1:
            running.wait(timeout=30)
            return [run_batch(0, rows(1, 1))]
        return [run_batch(0, rows(0, 1)), run_batch(0, rows(0, 1, start=1))]

    # When job 0 asks again as soon as its pass ends
    results = joined_all(passes, 2, body)
    # Then job 1's request went with it, though it had waited longer than the wait
    assert network.passes == [(0, 1), (0, 2)]
    np.testing.assert_array_equal(results[1][0], rows(1, 1) * 10)  # type: ignore[index]
    np.testing.assert_array_equal(results[0][1], rows(0, 1, start=1) * 10)  # type: ignore[index]


def test_a_job_that_leaves_stops_the_others_waiting_for_it() -> None:
    network = Network()
    passes = SharedPasses(network, BatchingOptions(max_segments=8, wait_seconds=30.0))
    leaving = threading.Event()

    def idle() -> None:
        with passes.join():
            leaving.wait(timeout=30)
            time.sleep(0.2)  # the other is waiting for it by now

    def asking() -> float:
        with passes.join() as run_batch:
            leaving.set()
            started = time.monotonic()
            run_batch(0, rows(0, 1))
            return time.monotonic() - started

    _, elapsed = in_threads(idle, asking)
    assert isinstance(elapsed, float) and elapsed < 10.0


def test_a_pass_never_carries_more_than_the_maximum() -> None:
    # Given three jobs asking for 2 segments at a time and a maximum of 4 per pass
    network = Network()
    passes = SharedPasses(network, BatchingOptions(max_segments=4, wait_seconds=5.0))

    def body(job: int, run_batch: RunBatch) -> list[np.ndarray]:
        return [run_batch(0, rows(job, 2, start=2 * k)) for k in range(2)]

    results = joined_all(passes, 3, body)
    for job, outputs in enumerate(results):
        for k, output in enumerate(outputs):  # type: ignore[arg-type]
            np.testing.assert_array_equal(output, rows(job, 2, start=2 * k) * 10)
    sizes = [size for _, size in network.passes]
    assert sum(sizes) == 12 and max(sizes) == 4


def test_a_batch_larger_than_the_maximum_still_runs_alone() -> None:
    network = Network()
    passes = SharedPasses(network, BatchingOptions(max_segments=2))
    with passes.join() as run_batch:
        out = run_batch(0, rows(0, 5))
    np.testing.assert_array_equal(out, rows(0, 5) * 10)
    assert network.passes == [(0, 5)]


def test_other_members_and_shapes_never_share_a_pass() -> None:
    network = Network()
    passes = SharedPasses(network, PATIENT)

    def body(job: int, run_batch: RunBatch) -> np.ndarray:
        batch = rows(job, 1) if job < 2 else rows(job, 1)[..., :2]  # job 2: shorter segments
        return run_batch(job % 2, batch)  # jobs 0 and 2 member 0, job 1 member 1

    results = joined_all(passes, 3, body)
    np.testing.assert_array_equal(results[0], rows(0, 1) * 10)
    np.testing.assert_array_equal(results[1], rows(1, 1) * 10 + 1)
    np.testing.assert_array_equal(results[2], rows(2, 1)[..., :2] * 10)
    assert sorted(network.passes) == [(0, 1), (0, 1), (1, 1)]


def test_a_failing_pass_fails_every_job_in_it_and_the_next_pass_works() -> None:
    # Given a network that runs out of memory on any pass holding job 1's first segment
    network = Network(fail_when=lambda batch: bool((batch == 1000).any()))
    passes = SharedPasses(network, PATIENT)

    def body(job: int, run_batch: RunBatch) -> object:
        try:
            run_batch(0, rows(job, 1))
        except MemoryError as exc:
            failed: object = exc
        else:
            failed = None
        return failed, run_batch(0, rows(job, 1, start=1))

    # When both jobs' first segments share that pass
    results = joined_all(passes, 2, body)
    # Then both got the error, and their next pass ran
    for job, (failed, after) in enumerate(results):  # type: ignore[misc]
        assert isinstance(failed, MemoryError)
        np.testing.assert_array_equal(after, rows(job, 1, start=1) * 10)
    assert network.passes == [(0, 2), (0, 2)]


def test_options_refuse_nonsense(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SettingsError, match="cross-job batch 0"):
        BatchingOptions(max_segments=0)
    with pytest.raises(SettingsError, match="wait -1"):
        BatchingOptions(max_segments=2, wait_seconds=-1)
    # The worker's flag says so before it reaches for the broker
    assert main(["worker", "--device", "cpu", "--cross-job-batch", "0"]) == EXIT_USAGE
    assert "cross-job batch 0 is not allowed; use 1 (no sharing)" in capsys.readouterr().err


# --- two jobs on one worker's model --------------------------------------------------

FLOAT_WAV = OutputSettings(format="wav", bit_depth=32)
#: A segment through a batch of 1 or of 2 differs in its last bits on a CPU (the matrix
#: kernels block a batch of 2 differently: 1.3e-7 on the tiny network's raw output, up to
#: 2.2e-8 on its stems, whose peaks are about 0.05), so not bit for bit; 5x that margin.
TOLERANCE = 1e-7


def job_spec(source: Path, out: Path, **separation: Any) -> JobSpec:
    return JobSpec(
        input=str(source),
        folder=str(out / source.stem),
        separation=SeparationSettings(device="cpu", **separation),
        output=FLOAT_WAV,
        effects=EffectsSettings(exact_sum=False),  # the model's own output, nothing added
    )


def run_with(
    cache: ModelCache, job_id: str, spec: JobSpec, *, cancel: threading.Event | None = None
) -> dict[str, np.ndarray]:
    with cache.session() as model_for:
        result = run_job(job_id, spec, results=NoResults(), model_for=model_for, cancel=cancel)
    return {
        stem["name"]: sf.read(str(result.folder / stem["path"]), dtype="float32")[0]
        for stem in read_manifest(result.manifest)["stems"]
    }


def run_alone(
    cache: ModelCache, sources: list[Path], out: Path, **separation: Any
) -> list[dict[str, np.ndarray]]:
    """Each render separated on its own, one after the other: the stems to compare with."""
    return [
        run_with(cache, f"alone{i}00000", job_spec(source, out, **separation))
        for i, source in enumerate(sources)
    ]


def renders(folder: Path) -> list[Path]:
    """Two short renders of different lengths."""
    return [
        write_audio(folder / f"take{i}.wav", music(int(seconds * SAMPLE_RATE), seed=i))
        for i, seconds in enumerate((4.0, 5.5))
    ]


def shared_passes(caplog: pytest.LogCaptureFixture) -> list[int]:
    """How many jobs each logged forward pass carried."""
    return [
        int(m.group(1))
        for record in caplog.records
        if (m := re.search(r"from (\d+) jobs", record.getMessage()))
    ]


def assert_same_stems(got: object, want: dict[str, np.ndarray]) -> None:
    assert isinstance(got, dict), got
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=TOLERANCE, err_msg=name)


def test_two_jobs_sharing_passes_get_their_single_job_stems(
    tiny_models: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given two renders, each separated alone
    sources = renders(tmp_path)
    alone = ModelCache(folders=[tiny_models], offline=True)
    expected = run_alone(alone, sources, tmp_path / "alone")
    # When both run at once on one worker's model, sharing its passes
    shared = ModelCache(folders=[tiny_models], offline=True, batching=PATIENT)
    caplog.set_level(logging.DEBUG, logger="bridge.models.batching")
    results = in_threads(
        *(
            lambda i=i, source=source: run_with(
                shared, f"shared{i}0000", job_spec(source, tmp_path / "shared")
            )
            for i, source in enumerate(sources)
        )
    )
    # Then passes carried segments of both jobs, and each job has its single-job stems
    assert 2 in shared_passes(caplog), shared_passes(caplog)
    for got, want in zip(results, expected, strict=True):
        assert_same_stems(got, want)


class OnSharedPass(logging.Handler):
    """Sets ``event`` when a pass carried two jobs."""

    def __init__(self, event: threading.Event) -> None:
        super().__init__(logging.DEBUG)
        self.event = event

    def emit(self, record: logging.LogRecord) -> None:
        if "from 2 jobs" in record.getMessage():
            self.event.set()


def test_a_job_cancelled_mid_way_leaves_the_other_its_stems(
    tiny_models: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given two jobs sharing passes, the longer one cancelled after their first shared pass
    sources = renders(tmp_path)
    alone = ModelCache(folders=[tiny_models], offline=True)
    expected = run_with(alone, "alone0000000", job_spec(sources[0], tmp_path / "alone"))
    shared = ModelCache(folders=[tiny_models], offline=True, batching=PATIENT)
    caplog.set_level(logging.DEBUG, logger="bridge.models.batching")
    cancel = threading.Event()
    trigger = OnSharedPass(cancel)
    logging.getLogger("bridge.models.batching").addHandler(trigger)
    specs = [job_spec(source, tmp_path / "shared") for source in sources]
    try:
        finished, cancelled = in_threads(
            lambda: run_with(shared, "shared000000", specs[0]),
            lambda: run_with(shared, "shared100000", specs[1], cancel=cancel),
        )
    finally:
        logging.getLogger("bridge.models.batching").removeHandler(trigger)
    # Then that one stopped, and the other has its single-job stems
    assert isinstance(cancelled, JobCancelled), cancelled
    assert_same_stems(finished, expected)


def test_a_job_s_model_stays_loaded_while_another_job_loads_another(tiny_models: Path) -> None:
    cache = ModelCache(folders=[tiny_models], offline=True)
    htdemucs = SeparationSettings(device="cpu")
    other = SeparationSettings(device="cpu", model="hdemucs_mmi")
    # Given a job holding htdemucs while another job takes another model
    with cache.session() as first:
        held = first(htdemucs)
        with cache.session() as second:
            second(other)
        # Then a third job gets the very networks the first holds
        with cache.session() as third:
            again = third(htdemucs)
        assert again._networks is held._networks  # type: ignore[union-attr]
    # ...and once no job holds it, another model's job replaces it
    cache.model(other)
    assert cache.model(htdemucs)._networks is not held._networks  # type: ignore[union-attr]


def hub_after(gate: threading.Event, tiny_models: Path, folder: Path, calls: list[str]) -> Any:
    """A stand-in for hf_hub_download serving ``tiny_models``' files once ``gate`` is set."""

    def download(repo_id: str, filename: str) -> str:
        calls.append(filename)
        assert gate.wait(60), "the test never let the download finish"
        target = folder / repo_id.replace("/", "--")
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tiny_models / filename, target / filename)
        return str(target / filename)

    return download


def without_htdemucs(tiny_models: Path, folder: Path) -> Path:
    """The tiny models less htdemucs, which a cache on this folder must download."""
    shutil.copytree(tiny_models, folder, ignore=shutil.ignore_patterns("htdemucs.*", "955717e8*"))
    return folder


def test_a_loaded_model_is_handed_out_while_another_thread_downloads(
    tiny_models: Path, tmp_path: Path
) -> None:
    # Given a job holding hdemucs_mmi, and another thread's job needing htdemucs, which
    # is not on disk and whose download has not finished
    gate, calls = threading.Event(), []
    cache = ModelCache(
        folders=[without_htdemucs(tiny_models, tmp_path / "installed")],
        download=hub_after(gate, tiny_models, tmp_path / "hub", calls),
        offline=False,
    )
    mmi = SeparationSettings(device="cpu", model="hdemucs_mmi")

    def job(settings: SeparationSettings) -> Any:
        with cache.session() as model_for:
            return model_for(settings)

    with cache.session() as first, ThreadPoolExecutor(2) as pool:
        held = first(mmi)
        slow = pool.submit(job, SeparationSettings(device="cpu"))
        try:
            wait_for(lambda: calls, timeout=30)
            # When a third job asks for the loaded model
            again = pool.submit(job, mmi).result(timeout=20)
        finally:
            gate.set()
        # Then it had it at once, the very networks, and the download went on
        assert again._networks is held._networks
        assert slow.result(timeout=60).sources == ("drums", "bass", "other", "vocals")


def test_two_threads_wanting_one_model_load_it_once(tiny_models: Path, tmp_path: Path) -> None:
    # Given two threads asking at once for a model that must be downloaded
    gate, calls = threading.Event(), []
    cache = ModelCache(
        folders=[without_htdemucs(tiny_models, tmp_path / "installed")],
        download=hub_after(gate, tiny_models, tmp_path / "hub", calls),
        offline=False,
    )
    settings = SeparationSettings(device="cpu")
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(cache.model, settings)
        wait_for(lambda: calls, timeout=30)
        second = pool.submit(cache.model, settings)
        time.sleep(0.2)  # the second is waiting for the first's load by now
        gate.set()
        a, b = first.result(timeout=60), second.result(timeout=60)
    # Then each file came down once and both jobs have the same networks
    assert sorted(calls) == ["955717e8.safetensors", "htdemucs.yaml"]
    assert a._networks is b._networks  # type: ignore[union-attr]


def test_a_failed_load_leaves_the_cache_able_to_load_again(
    tiny_models: Path, tmp_path: Path
) -> None:
    # Given a hub that is unreachable the first time only
    gate = threading.Event()
    gate.set()
    working = hub_after(gate, tiny_models, tmp_path / "hub", [])
    failures = [OSError("network is unreachable")]

    def download(repo_id: str, filename: str) -> str:
        if failures:
            raise failures.pop()
        return str(working(repo_id, filename))

    cache = ModelCache(
        folders=[without_htdemucs(tiny_models, tmp_path / "installed")],
        download=download,
        offline=False,
    )
    # When the first job's load fails
    with pytest.raises(ModelNotFound, match="network is unreachable"):
        cache.model(SeparationSettings(device="cpu"))
    # Then the next job, on another thread, loads it rather than waiting for ever
    with ThreadPoolExecutor(1) as pool:
        model = pool.submit(cache.model, SeparationSettings(device="cpu")).result(timeout=60)
    assert model.sources == ("drums", "bass", "other", "vocals")


def test_each_precision_has_its_own_passes() -> None:
    sharing = PassSharing(PATIENT)
    fp32 = sharing.passes("fp32", Network())
    assert sharing.passes("fp32", Network()) is fp32
    assert sharing.passes("fp16", Network()) is not fp32


def test_two_jobs_on_one_chunked_model_get_their_single_job_stems(tmp_path: Path) -> None:
    # Given a BS-RoFormer (its passes are not shared across jobs, but its model is), two
    # windows a sample to keep it short
    model = {"model": str(bs_roformer(tmp_path / "models")), "overlap": 0.5}
    sources = renders(tmp_path)
    expected = run_alone(ModelCache(offline=True), sources, tmp_path / "alone", **model)
    # When two threads run a job each on one cache's model
    shared = ModelCache(offline=True, batching=PATIENT)
    results = in_threads(
        *(
            lambda i=i, source=source: run_with(
                shared, f"shared{i}0000", job_spec(source, tmp_path / "shared", **model)
            )
            for i, source in enumerate(sources)
        )
    )
    # Then each has exactly its single-job stems (the same passes, one at a time)
    for got, want in zip(results, expected, strict=True):
        assert isinstance(got, dict), got
        assert got.keys() == want.keys()
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_a_studio_worker_running_two_jobs_gives_each_its_single_job_stems(
    server: RedisServer,  # noqa: F811 (the fixture)
    tiny_models: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a studio worker taking two jobs at once on one model, and two renders
    sources = renders(tmp_path)
    alone = ModelCache(folders=[tiny_models], offline=True)
    expected = run_alone(alone, sources, tmp_path / "alone")
    client = redis.Redis.from_url(server.url)
    models = ModelCache(folders=[tiny_models], offline=True, batching=PATIENT)
    worker = StudioWorker(client, device="cpu", concurrency=2, models=models)
    caplog.set_level(logging.DEBUG, logger="bridge.models.batching")
    stop = threading.Event()
    serving = threading.Thread(target=worker.run, args=(stop,))
    serving.start()
    try:
        # When the daemon's messages for both arrive
        broker = RedisBroker(client=client, namespace=NAMESPACE, middleware=[])
        for i, source in enumerate(sources):
            spec = job_spec(source, tmp_path / "studio")
            broker.enqueue(
                dramatiq.Message(
                    queue_name=QUEUE,
                    actor_name=ACTOR,
                    args=(f"studio{i}00000", spec.to_json(), spec.folder, 1),
                    kwargs={},
                    options={},
                    message_id=f"studio{i}00000-1",
                )
            )
        ends = wait_for(lambda: ended(client, 2), timeout=120, what="both jobs to end")
    finally:
        stop.set()
        serving.join(timeout=60)
    # Then both are done with their single-job stems, from passes that carried both
    assert sorted(event.kind for event in ends) == ["done", "done"], ends
    assert 2 in shared_passes(caplog), shared_passes(caplog)
    for event in ends:
        manifest = read_manifest(Path(event.data["manifest"]))
        stems = {
            stem["name"]: sf.read(
                str(Path(event.data["manifest"]).parent / stem["path"]), dtype="float32"
            )[0]
            for stem in manifest["stems"]
        }
        assert_same_stems(stems, expected[int(event.job[len("studio")])])


def ended(client: redis.Redis, count: int) -> list[Event] | None:
    """The end events in the daemon's list, once there are ``count``."""
    events = [Event.from_json(raw) for raw in client.lrange(EVENTS, 0, -1)]
    ends = [event for event in events if event.kind in ("done", "failed", "cancelled")]
    return ends if len(ends) == count else None
