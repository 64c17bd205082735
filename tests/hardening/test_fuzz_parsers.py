"""Fuzzing every parser a user or a file can reach: no crash but a clear validation error.

Each property feeds a parser both random text or bytes and structure-aware documents
(the right shape with wrong types, out-of-range, huge, NaN and infinite numbers, deep
nesting, unknown keys, NUL characters, very long strings, non-UTF-8 bytes) and
accepts only two outcomes: a valid object, or the project's validation error naming
the file it read. ``@example`` rows are the inputs that once crashed a parser.

CI runs the ``ci`` profile (deterministic, a few hundred examples per parser); set
``HYPOTHESIS_PROFILE=long`` for a longer local run.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import sqlite3
import subprocess
import sys
import types
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from redis import Redis

from bridge.broker.channel import (
    EVENT_KINDS,
    EVENTS,
    EVENTS_PROCESSING,
    WORKER_PREFIX,
    Event,
    WorkerInfo,
)
from bridge.broker.dispatcher import Dispatcher
from bridge.broker.paths import PathMap
from bridge.broker.url import parse_broker_url
from bridge.cli import main
from bridge.config import Config, Rule, load_config
from bridge.effects.catalog import EFFECTS, REFUSED
from bridge.effects.presets import Preset, load_preset, parse_preset_file
from bridge.errors import (
    ConfigError,
    HostError,
    JobError,
    OutputError,
    PresetError,
    SettingsError,
)
from bridge.hosts.reaper import RECORD_NAME, config_chunk, install
from bridge.jobs.status_file import read_status, render_status
from bridge.jobs.store import Job, JobStore
from bridge.manifest import MANIFEST_NAME, read_manifest
from bridge.pipeline.folders import Writer, choose, holds_result
from bridge.pipeline.spec import JobSpec
from bridge.settings import EffectsSettings, OutputSettings, SeparationSettings, TimeRange

from processes import wait_for
from programs import required_program

_COMMON = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
}
# CI: the same examples on every run. Long: new random ones each time.
settings.register_profile("ci", max_examples=200, derandomize=True, **_COMMON)
settings.register_profile("long", max_examples=5000, derandomize=False, **_COMMON)
FUZZ = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
#: Tests that start a process or write many files per example run fewer of them.
FEW = settings(FUZZ, max_examples=max(FUZZ.max_examples // 4, 25))

CORE = Path(__file__).parents[2] / "integrations" / "common" / "stembridge_core.lua"
FAKE = Path(__file__).parents[1] / "reaper" / "fake_reaper.lua"

# --- values -----------------------------------------------------------------------------

_HUGE_INTS = st.sampled_from([2**63, -(2**63) - 1, 10**300, 10**400, -(10**4000)])
_ODD_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\0",
        "a\0b",
        "x" * 5000,
        "~",
        "~nobody/x",
        "../..",
        "/",
        "\\\\server\\share",
        "Z:",
        "é" * 300,
        "\ud800",
        "line\nbreak",
        "\u2028",
        "a=b",
        "nan",
        "1e999",
    ]
)
_SCALARS = st.one_of(
    st.booleans(),
    st.integers(),
    _HUGE_INTS,
    st.floats(),
    st.text(max_size=40),
    _ODD_TEXT,
)
_TOML_SCALARS = _SCALARS | st.datetimes() | st.dates() | st.times()


def _nested(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=8,
    )


TOML_VALUES = _nested(_TOML_SCALARS)
JSON_VALUES = _nested(_SCALARS | st.none())


def _deep(depth: int, opening: str, closing: str, middle: str = "1") -> str:
    return opening * depth + middle + closing * depth


def _table(
    keys: list[str], values: st.SearchStrategy[Any], size: int = 5
) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(keys) | st.text(max_size=8), values, max_size=size)


def _toml_key(key: str) -> str:
    return json.dumps(key, ensure_ascii=False)


def _toml(value: Any) -> str:
    """A TOML value (inline tables and arrays); strings as JSON-escaped basic strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else {math.inf: "inf", -math.inf: "-inf"}.get(value, repr(value))
        )
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return "{" + ", ".join(f"{_toml_key(k)} = {_toml(v)}" for k, v in value.items()) + "}"


def toml_document(data: dict[str, Any]) -> bytes:
    """``data`` as TOML; lone surrogates become invalid UTF-8, as a damaged file has."""
    text = "".join(f"{_toml_key(key)} = {_toml(value)}\n" for key, value in data.items())
    return text.encode("utf-8", "surrogatepass")


def json_bytes(data: Any) -> bytes:
    try:
        text = json.dumps(data, ensure_ascii=False)
    except ValueError:  # an int too long to print: what such a file would hold
        text = "1" * 5000
    return text.encode("utf-8", "surrogatepass")


def conforms(value: Any, hint: Any) -> bool:
    """Whether ``value`` has the type the dataclass field says (recursing into dataclasses)."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(conforms(value, arg) for arg in get_args(hint))
    if hint is Any:
        return True
    if origin is Literal:  # one of the choices, as its own type (True is not 1)
        return any(type(value) is type(arg) and value == arg for arg in get_args(hint))
    if hint is type(None):
        return value is None
    if origin is tuple:
        args = get_args(hint)
        if args[-1] is Ellipsis:
            return isinstance(value, tuple) and all(conforms(item, args[0]) for item in value)
        return (
            isinstance(value, tuple)
            and len(value) == len(args)
            and all(conforms(item, arg) for item, arg in zip(value, args, strict=True))
        )
    if origin in (dict, list):
        return isinstance(value, origin)
    if hint is float:
        return isinstance(value, float)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if dataclasses.is_dataclass(hint):
        hints = get_type_hints(hint)
        return isinstance(value, hint) and all(
            conforms(getattr(value, f.name), hints[f.name])
            for f in dataclasses.fields(hint)
            if f.init
        )
    return isinstance(value, hint)


def names_file(exc: BaseException, path: Path) -> bool:
    return str(path) in str(exc)


# --- config TOML ------------------------------------------------------------------------


def _keys(klass: type) -> list[str]:
    return [f.name for f in dataclasses.fields(klass)]


_PLAUSIBLE = st.sampled_from(
    [
        "htdemucs",
        "htdemucs_6s",
        "vocals,drums",
        ["vocals", "instrumental"],
        [1, 2],
        "no_vocals",
        "cpu",
        "cuda:99",
        0,
        20,
        21,
        0.25,
        0.99,
        1.0,
        7.8,
        "wav",
        "mp3",
        24,
        44100,
        320,
        "auto",
        "clean",
        "vocal-polish",
        "nope.toml",
        "x" * 300 + ".toml",
        "other",
        -14.0,
        -1.0,
        "redis://localhost:6379/0",
        "redis://:pw@host:99999/0",
        "redis://h/" + "1" * 5000,
        "redis://h:" + "1" * 5000,
        "/tmp",
        "{dir}/Stems/{name}",
        "{dir.real}",
        "{name[0]}",
        "{dir:>99999999999}",
        "{dir:>1000000000}",
        "{}",
        "{0}",
        "{rule!z}",
        ["*.wav"],
    ]
)
_FIELD_VALUES = _PLAUSIBLE | TOML_VALUES
_RULE_KEYS = [
    "name",
    "folder",
    "recursive",
    "patterns",
    "ignore",
    "output",
    "polling",
    *_keys(SeparationSettings),
    *_keys(OutputSettings),
    *_keys(EffectsSettings),
]
_DAEMON_KEYS = ["state_dir", "poll_interval_seconds", "stable_polls", "scan_existing", "broker"]
_PATHS = st.sampled_from(["/mnt/nas", "Z:\\", "Z:/Studio", "//server/share", "Z:x", "rel"])
CONFIG_DOCUMENTS = st.fixed_dictionaries(
    {},
    optional={
        "daemon": _table(_DAEMON_KEYS, _FIELD_VALUES),
        "separation": _table(_keys(SeparationSettings), _FIELD_VALUES),
        "output": _table(_keys(OutputSettings), _FIELD_VALUES),
        "effects": _table(_keys(EffectsSettings), _FIELD_VALUES),
        "rule": st.lists(
            st.fixed_dictionaries({"folder": _PLAUSIBLE | st.text()}).flatmap(
                lambda d: _table(_RULE_KEYS, _FIELD_VALUES).map(lambda t: {**d, **t})
            ),
            max_size=3,
        )
        | TOML_VALUES,
        "paths": st.dictionaries(_PATHS | st.text(max_size=8), _PATHS | TOML_VALUES, max_size=3),
        "unknown": TOML_VALUES,
    },
)


def check_config(path: Path) -> None:
    try:
        config = load_config(path, required=True)
    except ConfigError as exc:
        assert names_file(exc, path), exc
        return
    assert conforms(config, Config)
    assert math.isfinite(config.daemon.poll_interval_seconds) and config.daemon.stable_polls >= 1
    for rule in config.rules:
        assert conforms(rule, Rule)
        rule.stem_folder(Path("/renders/mix.wav"))
        rule.matches(Path("/renders/mix.wav"))
    config.paths.to_local("/mnt/nas/x.wav")


@FUZZ
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
@example(b"a = 1" + b"0" * 5000)
@example(b"a = " + _deep(3000, "[", "]").encode())
@example(b"\xff\xfe")
def test_config_file_bytes(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(raw)
    check_config(path)


@FUZZ
@given(CONFIG_DOCUMENTS)
@example({"separation": {"overlap": 10**400}})
@example({"daemon": {"poll_interval_seconds": 10**400}})
@example({"daemon": {"poll_interval_seconds": math.nan, "stable_polls": -5}})
@example({"rule": [{"folder": "/r", "output": "{dir.real}"}]})
@example({"rule": [{"folder": "/r", "output": "{name[x]}"}]})
@example({"rule": [{"folder": "/r", "output": "{dir:>1000000000}"}]})
@example({"effects": {"preset": "x" * 300 + ".toml"}})
@example({"separation": {"stems": [1]}})
@example({"daemon": {"broker": "redis://h/" + "1" * 5000}})
def test_config_documents(tmp_path: Path, document: dict[str, Any]) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(toml_document(document))
    check_config(path)


# --- effects presets --------------------------------------------------------------------

_EFFECT_NAMES = st.sampled_from([*EFFECTS, *REFUSED, "NoSuchEffect"])
_PARAMETERS = st.sampled_from(sorted({key for keys in EFFECTS.values() for key in keys}))


def _links() -> st.SearchStrategy[Any]:
    effect = st.builds(
        lambda name, values: {"effect": name, **values},
        _EFFECT_NAMES,
        st.dictionaries(_PARAMETERS, _PLAUSIBLE | _TOML_SCALARS, max_size=3),
    )
    plugin = st.fixed_dictionaries(
        {
            "plugin": st.sampled_from(["x.vst3", "~/x.vst3", "/nonexistent.vst3", "x.dll"])
            | _SCALARS
        },
        optional={
            "name": _TOML_SCALARS,
            "parameters": st.dictionaries(st.text(max_size=6), TOML_VALUES, max_size=3)
            | _TOML_SCALARS,
        },
    )
    return effect | plugin | TOML_VALUES


PRESET_DOCUMENTS = st.fixed_dictionaries(
    {},
    optional={
        "description": _TOML_SCALARS,
        "loudness": _table(["target_lufs", "match_mix", "true_peak_dbtp"], _FIELD_VALUES)
        | TOML_VALUES,
        "stems": st.dictionaries(
            st.sampled_from(["vocals", "*", "drums"]) | st.text(max_size=8),
            st.fixed_dictionaries(
                {},
                optional={
                    "chain": st.lists(_links(), max_size=3) | TOML_VALUES,
                    "tail_seconds": _FIELD_VALUES,
                },
            )
            | TOML_VALUES,
            max_size=3,
        ),
        "unknown": TOML_VALUES,
    },
)


def check_preset(path: Path) -> None:
    try:
        preset = parse_preset_file(path, name="fuzz")
    except PresetError as exc:
        assert names_file(exc, path), exc
        return
    assert conforms(preset, Preset)
    for treatment in preset.stems.values():
        for spec in treatment.chain:
            spec.describe()
    try:
        preset.check_sample_rate(44100)
    except PresetError as exc:
        assert names_file(exc, path), exc


@FUZZ
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
@example(b"a = 1" + b"0" * 5000)
@example(b"a = " + _deep(3000, "{b = ", "}").encode())
@example(b"a = " + _deep(3000, "[", "]").encode())
def test_preset_file_bytes(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_bytes(raw)
    check_preset(path)


@FUZZ
@given(PRESET_DOCUMENTS)
@example({"stems": {"vocals": {"tail_seconds": 10**400}}})
@example({"stems": {"vocals": {"chain": [{"effect": "Gain", "gain_db": 10**400}]}}})
def test_preset_documents(tmp_path: Path, document: dict[str, Any]) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_bytes(toml_document(document))
    check_preset(path)


@FUZZ
@given(_PLAUSIBLE.filter(lambda v: isinstance(v, str)) | st.text(max_size=300) | _ODD_TEXT)
@example("x" * 300 + ".toml")
@example("clean\n")
def test_preset_names(tmp_path: Path, name: str) -> None:
    try:
        load_preset(name, user_dir=tmp_path)
    except PresetError as exc:
        assert repr(name) in str(exc) or str(Path(os.path.expanduser(name))) in str(exc), exc


# --- job specs (store rows, broker messages, host scripts) ------------------------------

_SPEC_FIELDS = {
    "separation": _keys(SeparationSettings),
    "output": _keys(OutputSettings),
    "effects": _keys(EffectsSettings),
    "time_range": _keys(TimeRange),
}
_JSON_FIELD_VALUES = _PLAUSIBLE | JSON_VALUES
SPEC_DOCUMENTS = st.fixed_dictionaries(
    {"input": st.just("/r/mix.wav") | JSON_VALUES, "folder": st.just("/r/mix") | JSON_VALUES},
    optional={
        **{
            name: _table(keys, _JSON_FIELD_VALUES) | JSON_VALUES
            for name, keys in _SPEC_FIELDS.items()
        },
        "origin": JSON_VALUES,
        "priority": JSON_VALUES,
        "source": JSON_VALUES,
        "unknown": JSON_VALUES,
    },
)


def check_spec(text: str) -> None:
    try:
        spec = JobSpec.from_json(text)
    except JobError:
        return
    assert conforms(spec, JobSpec)
    assert JobSpec.from_json(spec.to_json()) == spec
    spec.identity("0" * 64)


@FUZZ
@given(st.text(max_size=300))
@example(_deep(100_000, "[", "]"))
@example('{"input": "/a", "folder": "/b", "priority": ' + "1" * 5000 + "}")
def test_job_spec_text(text: str) -> None:
    check_spec(text)


@FUZZ
@given(SPEC_DOCUMENTS)
@example({"input": "/a", "folder": "/b", "separation": {"overlap": 10**400}})
@example({"input": "/a", "folder": "/b", "separation": {"stems": [1]}})
@example({"input": "/a", "folder": "/b", "separation": {"overlap": 1}})
@example({"input": "/a", "folder": "/b", "effects": {"preset": 5}})
@example({"input": "/a", "folder": "/b", "effects": {"exact_sum": "yes"}})
@example({"input": "/a", "folder": "/b", "separation": {"stems": ""}})
def test_job_spec_documents(document: dict[str, Any]) -> None:
    check_spec(json_bytes(document).decode("utf-8", "replace"))


@FEW
@given(
    SPEC_DOCUMENTS.map(lambda d: json_bytes(d).decode("utf-8", "replace")) | st.text(max_size=100)
)
@example('{"input": "/a", "folder": "/b", "added_in_a_newer_version": 1}')
def test_job_store_rows(tmp_path: Path, text: str) -> None:
    # Given a queued job whose stored spec was edited (or written by another version)
    store = JobStore(tmp_path / f"state-{uuid.uuid4().hex}")
    job, _ = store.submit(JobSpec(input="/r/mix.wav", folder="/r/mix"))
    with closing(sqlite3.connect(store.path)) as db, db:
        db.execute("UPDATE jobs SET spec = ? WHERE id = ?", (text, job.id))
    # When the daemon takes the next job, then a host lists and asks for it
    claimed = store.claim("daemon")
    listed = store.list()
    # Then the job runs, or fails saying why, and the store keeps answering
    try:
        found = store.get(job.id)
    except JobError as exc:
        assert names_file(exc, store.path) and job.id in str(exc), exc
        assert claimed is None and listed == []
        with closing(sqlite3.connect(store.path)) as db:
            state, error = db.execute(
                "SELECT state, error FROM jobs WHERE id = ?", (job.id,)
            ).fetchone()
        assert state == "failed" and "submit the file again" in error
    else:
        assert claimed is not None and claimed.spec == found.spec
        assert [j.id for j in listed] == [job.id]


# --- broker messages --------------------------------------------------------------------

EVENT_DOCUMENTS = st.fixed_dictionaries(
    {"kind": st.sampled_from(EVENT_KINDS) | JSON_VALUES},
    optional={
        "job": st.just("3f9a1c2b7d10") | JSON_VALUES,
        "worker": st.just("host:1") | JSON_VALUES,
        "data": _table(
            ["fraction", "stage", "identity", "manifest", "reused_from", "error", "error_kind"],
            _JSON_FIELD_VALUES,
        )
        | JSON_VALUES,
    },
)


def check_event(raw: bytes) -> None:
    try:
        event = Event.from_json(raw)
    except ValueError:
        return
    assert conforms(event, Event)
    # What the daemon's dispatcher reads from each kind of event.
    data = event.data
    if event.kind == "progress":
        assert isinstance(data["fraction"], float) and 0 <= data["fraction"] <= 1
        assert isinstance(data["stage"], str)
    elif event.kind == "identity":
        assert isinstance(data["identity"], str)
    elif event.kind == "done":
        assert isinstance(data["manifest"], str)
        assert isinstance(data.get("reused_from"), str | None)
    elif event.kind == "failed":
        assert isinstance(data["error"], str)
        assert isinstance(data.get("error_kind", ""), str)
    assert Event.from_json(event.to_json()) == event


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
@example(_deep(100_000, "[", "]").encode())
@example(b'{"kind": "progress", "job": "1"}')
def test_event_bytes(raw: bytes) -> None:
    check_event(raw)


@FUZZ
@given(EVENT_DOCUMENTS)
@example({"kind": "progress", "job": "1", "data": {"fraction": "x", "stage": "s"}})
@example({"kind": "done", "job": "1", "data": {}})
def test_event_documents(document: dict[str, Any]) -> None:
    check_event(json_bytes(document))


WORKER_DOCUMENTS = st.fixed_dictionaries(
    {},
    optional={
        name: st.just(good) | _JSON_FIELD_VALUES
        for name, good in {
            "id": "host:1",
            "device": "cpu",
            "concurrency": 1,
            "current_jobs": ["a"],
            "jobs_done": 0,
            "started": 1.0,
            "last_seen": 2.0,
            "unknown": 0,
        }.items()
    },
)


def check_worker(raw: bytes) -> None:
    try:
        worker = WorkerInfo.from_json(raw)
    except ValueError:
        return
    assert conforms(worker, WorkerInfo)
    assert worker.concurrency >= 0


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
@example(b"[]")
@example(_deep(100_000, "[", "]").encode())
def test_worker_entry_bytes(raw: bytes) -> None:
    check_worker(raw)


@FUZZ
@given(WORKER_DOCUMENTS)
@example({"id": "h", "device": "cpu", "concurrency": "8"})
def test_worker_entry_documents(document: dict[str, Any]) -> None:
    check_worker(json_bytes(document))


@pytest.fixture(scope="module")
def redis_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    """A real Redis on a Unix socket (no port to collide with)."""
    binary = required_program(
        "redis-server", package="redis-server", purpose="the dispatcher is not fed bad events"
    )
    folder = tmp_path_factory.mktemp("redis")
    socket = folder / "redis.sock"
    args = [binary, "--port", "0", "--unixsocket", str(socket), "--save", "", "--dir", str(folder)]
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    client = Redis(unix_socket_path=str(socket))
    try:
        wait_for(lambda: socket.exists() and client.ping(), timeout=30, what="redis-server")
        yield client
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=30)


@FEW
@given(
    st.lists(EVENT_DOCUMENTS.map(json_bytes) | st.binary(max_size=100), min_size=1, max_size=8),
    st.lists(WORKER_DOCUMENTS.map(json_bytes) | st.binary(max_size=50), max_size=3),
)
@example([b"\xff"], [])
def test_dispatcher_drops_what_it_cannot_read(
    tmp_path: Path, redis_client: Redis, events: list[bytes], workers: list[bytes]
) -> None:
    # Given events and worker entries in Redis that no StemBridge wrote
    redis_client.flushall()
    redis_client.rpush(EVENTS, *events)
    for index, entry in enumerate(workers):
        redis_client.set(f"{WORKER_PREFIX}{index}", entry)
    store = JobStore(tmp_path / f"state-{uuid.uuid4().hex}")
    dispatcher = Dispatcher(
        store, url=parse_broker_url("redis://localhost"), connect_redis=lambda _: redis_client
    )
    # When the daemon's dispatcher runs two rounds
    dispatcher.round()
    dispatcher.round()
    # Then every event was taken and none is left to fail the next round
    assert redis_client.llen(EVENTS) == 0
    assert redis_client.llen(EVENTS_PROCESSING) == 0


# --- status files -----------------------------------------------------------------------

STATUS_TEXTS = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(["state", "progress", "stage", "job", "stem.vocals", "stem.", "origin"])
            | st.text(max_size=10),
            st.text(max_size=40) | _ODD_TEXT,
        ).map(lambda kv: f"{kv[0]}={kv[1]}"),
        st.text(max_size=40),
    ),
    max_size=12,
).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))
STATUS_BYTES = STATUS_TEXTS | st.binary(max_size=300)


@FUZZ
@given(STATUS_BYTES)
@example(b"state=done\xff\n")
def test_read_status(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "job.status"
    path.write_bytes(raw)
    values = read_status(path)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in values.items())


@FEW
@given(st.lists(STATUS_BYTES, min_size=1, max_size=40))
@example([b"state=done\xff\nstem.=x\n" + b"=" * 10_000, b"", b"\0\0\n\r\n"])
@example([b"progress=1e999\n", b"progress=nan\n", b"progress=-0x1p99\n"])
@example([b"state=\nstate=\nstate=\r0", b"state=done\r\n"])
def test_lua_read_status(tmp_path: Path, texts: list[bytes]) -> None:
    lua = required_program("lua5.4", package="lua5.4", purpose="the Lua status reader is not run")
    for index, raw in enumerate(texts):
        (tmp_path / f"{index}.status").write_bytes(raw)
    resource = tmp_path / "REAPER"
    resource.mkdir(exist_ok=True)
    install(resource, command=["stembridge"])
    lib = resource / "Scripts" / "StemBridge" / "stembridge_lib.lua"
    # One process reads them all with the shared module as a polling script does and draws
    # each job's progress bar; it prints each file's state in hex, or the Lua error.
    driver = tmp_path / "driver.lua"
    driver.write_text(
        f"dofile({json.dumps(str(FAKE))})\n"
        f"local core = dofile({json.dumps(str(CORE))})\n"
        f"local lib = dofile({json.dumps(str(lib))})\n"
        "local function poll(path)\n"
        "  local job = { plan = { name = 'item' }, state = 'queued', stage = 'queued',\n"
        "                progress = 0 }\n"
        "  core.apply_status(job, core.read_status(path))\n"
        "  lib.draw({ job })\n"
        "  return (job.state:gsub('.', function(c) return ('%02x'):format(c:byte()) end))\n"
        "end\n"
        f"for index = 0, {len(texts) - 1} do\n"
        "  local ok, state = pcall(poll, ('%d.status'):format(index))\n"
        "  io.write(ok and state or ('ERROR ' .. tostring(state)), '\\n')\n"
        "end\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [lua, str(driver)], capture_output=True, timeout=60, cwd=tmp_path, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().split("\n")[:-1] == [lua_state(raw).hex() for raw in texts]


def lua_state(raw: bytes) -> bytes:
    """The state a host script reads: the last ``state=`` line, split at LF, CR dropped."""
    state = b"queued"
    for line in raw.split(b"\n"):
        key, sep, value = line.removesuffix(b"\r").partition(b"=")
        if sep and key == b"state":
            state = value
    return state


# --- manifests read back (reuse, watched folders, status files) -------------------------

MANIFEST_DOCUMENTS = st.fixed_dictionaries(
    {},
    optional={
        "identity": st.just("id") | JSON_VALUES,
        "input": st.fixed_dictionaries(
            {},
            optional={"path": JSON_VALUES, "size_bytes": JSON_VALUES, "mtime_ns": JSON_VALUES},
        )
        | JSON_VALUES,
        "stems": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "name": st.sampled_from(["vocals", "x\nstate=done", "a=b"]) | JSON_VALUES,
                    "path": st.sampled_from(["vocals.wav", "/etc/passwd"]) | JSON_VALUES,
                },
            )
            | JSON_VALUES,
            max_size=3,
        )
        | JSON_VALUES,
    },
)
MANIFEST_BYTES = MANIFEST_DOCUMENTS.map(json_bytes) | st.binary(max_size=200)


def _job(folder: Path) -> Job:
    return Job(
        id="3f9a1c2b7d10",
        spec=JobSpec(input="/r/mix.wav", folder=str(folder)),
        folder=str(folder),
        status_file=folder.parent / ".stembridge" / "3f9a1c2b7d10.status",
        state="done",
        progress=1.0,
        stage="done",
        attempts=1,
        error=None,
        error_kind=None,
        manifest=str(folder / MANIFEST_NAME),
        reused_from=None,
        cancel_requested=False,
        owner=None,
        created=0.0,
        updated=0.0,
        started=0.0,
        finished=0.0,
    )


@FUZZ
@given(MANIFEST_BYTES)
@example(b"[]")
@example(_deep(100_000, "[", "]").encode())
@example(json_bytes({"stems": [{"name": "x\nstate=failed", "path": "x.wav"}]}))
@example(json_bytes({"identity": "id", "input": []}))
def test_manifest_readers(tmp_path: Path, raw: bytes) -> None:
    folder = tmp_path / "Stems"
    folder.mkdir(exist_ok=True)
    path = folder / MANIFEST_NAME
    path.write_bytes(raw)
    try:
        manifest = read_manifest(path)
    except OutputError as exc:
        assert names_file(exc, path), exc
    else:
        assert isinstance(manifest, dict)
    # The status file of a job whose manifest was edited stays one line per key.
    job = _job(folder)
    status = tmp_path / "job.status"
    status.write_text(render_status(job), encoding="utf-8")
    values = read_status(status)
    assert (values["job"], values["state"]) == (job.id, "done")
    chosen, reservation = choose(
        folder,
        Writer("3f9a1c2b7d10", 1),
        names=["vocals"],
        extension="wav",
        overwrite=False,
        holds=lambda candidate: holds_result(candidate, "id", ["vocals"], "wav"),
    )
    assert chosen.parent == folder.parent and reservation is not None
    reservation.release()


# --- REAPER install record --------------------------------------------------------------

RECORD_DOCUMENTS = st.fixed_dictionaries(
    {},
    optional={
        "files": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "name": st.sampled_from(["a.lua", "../x", RECORD_NAME]) | JSON_VALUES,
                    "sha256": st.just("0" * 64) | JSON_VALUES,
                },
            )
            | JSON_VALUES,
            max_size=3,
        )
        | JSON_VALUES,
        "format": JSON_VALUES,
    },
)


@FUZZ
@given(RECORD_DOCUMENTS.map(json_bytes) | st.binary(max_size=200))
@example(b"\xff")
@example(_deep(100_000, "[", "]").encode())
def test_reaper_install_record(tmp_path: Path, raw: bytes) -> None:
    resource = tmp_path / "REAPER"
    folder = resource / "Scripts" / "StemBridge"
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / RECORD_NAME
    record.write_bytes(raw)
    try:
        install(resource, command=[sys.executable, "-m", "bridge"], dry_run=True)
    except HostError as exc:
        assert names_file(exc, record), exc


_ARGUMENTS = (
    st.text(max_size=30)
    | _ODD_TEXT.filter(lambda t: "\ud800" not in t)
    | st.binary(max_size=20).map(os.fsdecode)
)


@FEW
@given(st.lists(st.lists(_ARGUMENTS, min_size=1, max_size=4), min_size=1, max_size=20))
@example([[os.fsdecode(b"/opt/py\xff/bin/python"), "-m", "bridge"]])
def test_lua_config_reads_back(tmp_path: Path, commands: list[list[str]]) -> None:
    lua = required_program("lua5.4", package="lua5.4", purpose="the Lua config is not read")
    for index, command in enumerate(commands):
        (tmp_path / f"{index}.lua").write_bytes(config_chunk(command).encode("utf-8"))
    # One process loads every chunk as the scripts do and prints each argument in hex.
    driver = tmp_path / "driver.lua"
    driver.write_text(
        f"for index = 0, {len(commands) - 1} do\n"
        "  local config = loadfile(('%d.lua'):format(index), 't', {})()\n"
        "  local words = {}\n"
        "  for i, word in ipairs(config.command) do\n"
        "    words[i] = word:gsub('.', function(c) return ('%02x'):format(c:byte()) end)\n"
        "  end\n"
        "  io.write(table.concat(words, ' '), '\\n')\n"
        "end\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [lua, str(driver)], capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False
    )
    assert result.returncode == 0, result.stderr
    expected = [" ".join(os.fsencode(word).hex() for word in command) for command in commands]
    assert result.stdout.split("\n")[:-1] == expected


# --- broker URL, path map ---------------------------------------------------------------

_URL_PARTS = st.tuples(
    st.sampled_from(["redis", "rediss", "REDIS", "http", ""]),
    st.sampled_from(["", ":pw@", "user:p%40w@", "nocolon@", ":%ff@", "a@b@"]) | st.text(max_size=8),
    st.sampled_from(["localhost", "[::1]", "[::1", "[zz]", "10.0.0.1", "", "h_st"])
    | st.sampled_from(["a..b", "a" * 64])
    | st.text(max_size=8),
    st.sampled_from(["", ":6379", ":0", ":99999", ":" + "9" * 5000, ":x"]),
    st.sampled_from(["", "/0", "/x", "/" + "1" * 5000, "/1/"]),
    st.sampled_from(["", "?db=1", "?db=" + "1" * 5000, "?password=x", "?db=", "#f"])
    | st.sampled_from(["?Password=x", "?foo=1", "?ssl_ca_certs=/ca.pem", "?db=1&db=2"])
    | st.sampled_from(["?socket_timeout=x", "?socket_timeout=2.5&ssl_check_hostname=no"]),
)


@FUZZ
@given(_URL_PARTS.map(lambda p: f"{p[0]}://{''.join(p[1:])}") | st.text(max_size=80))
@example("redis://h/" + "1" * 5000)
@example("redis://h?db=" + "1" * 5000)
@example("redis://h?Password=x")
@example("redis://h?ssl_ca_certs=/ca.pem")
def test_broker_url(text: str) -> None:
    try:
        url = parse_broker_url(text)
    except SettingsError as exc:
        assert exc.key == "broker"
        return
    assert 1 <= url.port <= 65535 and url.db >= 0
    assert str(url) == url.redacted
    assert isinstance(url.is_loopback, bool)
    # and redis-py builds its connection from it: a keyword it does not know, or a host
    # name the resolver cannot encode, would be a traceback at the first connection
    Redis.from_url(url.url).connection_pool.make_connection()
    if ":" not in url.host:
        url.host.encode("idna")


@FUZZ
@given(
    st.lists(
        st.tuples(_PATHS | JSON_VALUES, _PATHS | JSON_VALUES) | JSON_VALUES,
        max_size=3,
    ),
    st.lists(_PATHS | st.text(max_size=20), max_size=3),
)
def test_path_map(pairs: list[Any], paths: list[str]) -> None:
    try:
        mapping = PathMap(tuple(pairs))
    except SettingsError:
        return
    for path in paths:
        assert isinstance(mapping.to_local(path), str)
        assert isinstance(mapping.to_daemon(path), str)


# --- the command line: time range, stems, origin ----------------------------------------

_NUMBERS = st.sampled_from(
    ["0", "-1", "nan", "inf", "1e999", "1" * 5000, "x", ""]
) | st.floats().map(str)


@FEW
@given(
    _NUMBERS,
    _NUMBERS,
    st.sampled_from(["vocals", "vocals,,drums", "=", "a=vocals+vocals", ",", "no_"])
    | st.text(max_size=20),
    st.sampled_from(["{}", "[]", "1" * 5000, _deep(100_000, "[", "]"), "{"]) | st.text(max_size=20),
)
@example("0", "1", "vocals", "1" * 5000)
@example("0", "1", "vocals", _deep(100_000, "[", "]"))
def test_submit_arguments(tmp_path: Path, start: str, length: str, stems: str, origin: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f"[daemon]\nstate_dir = {json.dumps(str(tmp_path / 'state'))}\n")
    audio = tmp_path / "mix.wav"
    audio.write_bytes(b"RIFF")
    argv = ["submit", str(audio), "--config", str(config), "--start", start, "--stems", stems]
    argv += ["--length", length, "--origin", origin]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refusing a flag's value
        assert exc.code == 2
        return
    assert code in (0, 2, 4), code
