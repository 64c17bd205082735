"""Shared fixtures: an isolated environment, tiny model files, audio writers, leak guards."""

from __future__ import annotations

import functools
import http.server
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.models.catalog import MODELS

from modelfiles import make_networks, write_demucs_form, write_hf_form


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test away from the user's folders, caches and the network."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(home / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # demucs' legacy checkpoint site, tried when the hub fails: a port that refuses at once.
    monkeypatch.setenv("STEMBRIDGE_DEMUCS_URL", "http://127.0.0.1:1/demucs/")
    monkeypatch.delenv("STEMBRIDGE_MODEL_DIR", raising=False)
    monkeypatch.delenv("STEMBRIDGE_OFFLINE", raising=False)


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every thread a test starts must be finished when it ends."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    for thread in leaked:
        thread.join(timeout=5)
    still = [t.name for t in leaked if t.is_alive()]
    assert not still, f"threads left running: {still}"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder: htdemucs (Hugging Face form), the others (demucs form)."""
    folder = tmp_path_factory.mktemp("models")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_hf_form(folder, MODELS["htdemucs"], make_networks(MODELS["htdemucs"], seed=1))
        for seed, name in enumerate(("htdemucs_ft", "htdemucs_6s", "hdemucs_mmi"), start=2):
            write_demucs_form(folder, MODELS[name], make_networks(MODELS[name], seed=seed))
    return folder


@pytest.fixture
def model_dir(tiny_models: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``STEMBRIDGE_MODEL_DIR`` pointing at the tiny models."""
    monkeypatch.setenv("STEMBRIDGE_MODEL_DIR", str(tiny_models))
    return tiny_models


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on loopback serving ``tmp_path / "site"``."""
    site = tmp_path / "site"
    site.mkdir()
    handler = functools.partial(_Files, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="files")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", site
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
