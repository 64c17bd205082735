"""Compiled network cores (bridge.models.compiled): parity with the eager networks and their
references, the artefact reused by a second process, and bad artefacts rebuilt."""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from test_mdx23c import (
    SMALL_CHUNK,
    audio,
    reference_network,
    run_ours,
    run_reference,
    small_sections,
    write_model,
)
from test_parity import run_stembridge

from bridge.models.catalog import MODELS
from bridge.models.compiled import (
    ONNX_RUNTIME,
    Backend,
    CompiledNetwork,
    _environment,
    compiled_networks,
)
from bridge.models.families.mdx23c import load_mdx23c
from bridge.settings import SeparationSettings

from reference import demucs_bag, separate_reference
from signals import SAMPLE_RATE, music, write_audio

# ONNX Runtime is not PyTorch: its fused kernels sum in other orders (the issue allows 2e-4).
TOLERANCE = 2e-4
COMPILING = "compiling the HTDemucs network's core"


@pytest.fixture(scope="module")
def first_run(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A tiny htdemucs separated with its core compiled into a fresh cache (the first run)."""
    work = tmp_path_factory.mktemp("compiled")
    mix = music(3 * SAMPLE_RATE, seed=4)
    source = write_audio(work / "mix.wav", mix, subtype="FLOAT")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("bridge.models.compiled")
    logger.addHandler(handler)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("XDG_CACHE_HOME", str(work / "cache"))
        try:
            stems = run_stembridge(
                source, work / "out", tiny_models, SeparationSettings(compiled_core="on")
            )
        finally:
            logger.removeHandler(handler)
    artefacts = sorted((work / "cache").rglob("HTDemucs-*.onnx"))
    yield {
        "work": work,
        "mix": mix,
        "source": source,
        "stems": stems,
        "messages": [record.getMessage() for record in records],
        "artefacts": artefacts,
    }


def test_the_first_run_compiles_says_so_and_matches_eager_and_apply_model(
    first_run: dict, tiny_models: Path, tmp_path: Path
) -> None:
    # Given a first run with an empty cache (the fixture)
    # Then it said it was compiling, and left one artefact for the network and shape
    assert any(COMPILING in message for message in first_run["messages"])
    assert len(first_run["artefacts"]) == 1
    # And its stems match the eager engine's and demucs' apply_model within 1e-4
    eager = run_stembridge(
        first_run["source"], tmp_path, tiny_models, SeparationSettings(compiled_core="off")
    )
    spec = MODELS["htdemucs"]
    expected = separate_reference(demucs_bag(tiny_models, spec), first_run["mix"])
    for k, name in enumerate(spec.sources):
        compiled = first_run["stems"][name]
        np.testing.assert_allclose(compiled, eager[name], atol=TOLERANCE, rtol=0)
        np.testing.assert_allclose(compiled, expected[k], atol=TOLERANCE, rtol=0)


def test_a_second_process_loads_the_artefact_instead_of_compiling(
    first_run: dict, tiny_models: Path, tmp_path: Path
) -> None:
    # Given the artefact the first run left
    (artefact,) = first_run["artefacts"]
    written = artefact.stat().st_mtime_ns
    # When another process separates the same file with the same cache
    env = {
        **os.environ,
        "XDG_CACHE_HOME": str(first_run["work"] / "cache"),
        "STEMBRIDGE_MODEL_DIR": str(tiny_models),
    }
    command = [sys.executable, "-m", "bridge", "-v", "separate", str(first_run["source"])]
    command += ["--compiled-core", "on", "--no-exact-sum", "--device", "cpu", "-o", str(tmp_path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    # Then it loaded the artefact (its log says so, and says nothing of compiling), left
    # the file as it was, and gave the first run's stems
    assert f"compiled core loaded from {artefact}" in result.stderr.replace("\n", "")
    assert COMPILING not in result.stderr
    assert artefact.stat().st_mtime_ns == written
    for name, stem in first_run["stems"].items():
        again = sf.read(str(tmp_path / "mix" / f"{name}.wav"), dtype="float32", always_2d=True)
        np.testing.assert_allclose(again[0].T, stem, atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def mdx23c_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, object]:
    """python-audio-separator's MDX23C and ours from the same ``.ckpt`` + ``.yaml``."""
    from separator_reference import import_reference

    net_class = import_reference("separator.uvr_lib_v5.tfc_tdf_v3").TFC_TDF_net
    sections = small_sections()
    reference = reference_network(net_class, sections, seed=3)
    folder = tmp_path_factory.mktemp("mdx23c")
    config, checkpoint = write_model(folder, yaml.safe_dump(sections), reference.state_dict())
    return reference, load_mdx23c(config, checkpoint)


def test_an_mdx23c_compiled_core_matches_eager_and_the_reference(
    mdx23c_pair: tuple[torch.nn.Module, torch.nn.Module], tmp_path: Path
) -> None:
    # Given MDX23C's core compiled (ONNX Runtime)
    reference, ours = mdx23c_pair
    compiled = CompiledNetwork(ours, folder=tmp_path)
    # When a chunk (and a smaller batch after a larger one) goes through it
    chunks = audio(2, SMALL_CHUNK, seed=5)
    both = run_ours(compiled, chunks)
    one = run_ours(compiled, chunks[:1])
    # Then it compiled once and matches the eager network and python-audio-separator's
    assert (compiled.compiled, compiled.loaded) == (1, 0)
    torch.testing.assert_close(both, run_ours(ours, chunks), atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(both, run_reference(reference, chunks), atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(one, both[:1], atol=1e-6, rtol=0)


def _damage(artefact: Path) -> None:
    artefact.write_bytes(artefact.read_bytes()[:100])


def _other_torch(artefact: Path) -> None:
    sidecar = artefact.with_suffix(".json")
    record = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**record, "torch": "2.0.0"}))


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [(_damage, "its content changed"), (_other_torch, "it was built by torch 2.0.0")],
    ids=["damaged", "built-by-another-torch"],
)
def test_a_damaged_or_stale_artefact_is_rebuilt(
    spoil: object,
    reason: str,
    mdx23c_pair: tuple[torch.nn.Module, torch.nn.Module],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given an artefact built by one process and loaded by the next
    _, ours = mdx23c_pair
    chunk = audio(1, SMALL_CHUNK, seed=6)
    expected = run_ours(CompiledNetwork(ours, folder=tmp_path), chunk)
    loader = CompiledNetwork(ours, folder=tmp_path)
    run_ours(loader, chunk)
    assert (loader.compiled, loader.loaded) == (0, 1)
    (artefact,) = tmp_path.glob("Mdx23c-*.onnx")
    # When it is spoiled and the model loads again
    spoil(artefact)  # type: ignore[operator]
    again = CompiledNetwork(ours, folder=tmp_path)
    with caplog.at_level(logging.WARNING, logger="bridge.models.compiled"):
        result = run_ours(again, chunk)
    # Then it is compiled again, saying why, and gives the same output
    assert (again.compiled, again.loaded) == (1, 0)
    assert reason in caplog.text and "compiling it again" in caplog.text
    torch.testing.assert_close(result, expected, atol=0, rtol=0)


def test_a_core_the_backend_refuses_runs_eagerly(
    mdx23c_pair: tuple[torch.nn.Module, torch.nn.Module],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a backend that cannot compile this network
    def refuse(core: torch.nn.Module, inputs: tuple[torch.Tensor, ...], path: Path) -> None:
        raise RuntimeError("unsupported operator aten::frobnicate")

    def load(path: Path) -> None:
        raise AssertionError(f"nothing was built to load from {path}")

    _, ours = mdx23c_pair
    network = CompiledNetwork(ours, folder=tmp_path, backend=Backend("x", ".x", refuse, load))
    chunk = audio(1, SMALL_CHUNK, seed=7)
    # When a chunk goes through it
    with caplog.at_level(logging.WARNING, logger="bridge.models.compiled"):
        result = run_ours(network, chunk)
    # Then the log says why and it ran the eager network, exactly
    assert "did not compile (RuntimeError: unsupported operator aten::frobnicate)" in caplog.text
    assert "it runs eagerly" in caplog.text
    torch.testing.assert_close(result, run_ours(ours, chunk), atol=0, rtol=0)
    assert not list(tmp_path.glob("*.json"))


def test_which_networks_get_a_compiled_core(
    mdx23c_pair: tuple[torch.nn.Module, torch.nn.Module],
) -> None:
    # Given a small MDX23C (under a million parameters) and a network without a core (a
    # copy: compiled_networks swaps the layers of an eager network for oneDNN ones in
    # place, and the module's other tests export the fixture's network)
    ours = copy.deepcopy(mdx23c_pair[1])
    other = torch.nn.Linear(2, 2)
    # Then auto leaves the small one eager, on compiles it, off and the GPU never do
    networks = [ours, other]
    assert compiled_networks(networks, SeparationSettings(device="cpu")) == networks
    wrapped = compiled_networks(networks, SeparationSettings(device="cpu", compiled_core="on"))
    assert isinstance(wrapped[0], CompiledNetwork) and wrapped[1] is other
    off = SeparationSettings(device="cpu", compiled_core="off")
    assert compiled_networks(networks, off) == networks


def test_a_cache_folder_that_cannot_be_made_leaves_the_core_eager(
    mdx23c_pair: tuple[torch.nn.Module, torch.nn.Module],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a cache folder under a file (it cannot be made)
    _, ours = mdx23c_pair
    blocked = tmp_path / "cache"
    blocked.write_text("not a folder")
    network = CompiledNetwork(ours, folder=blocked / "compiled")
    chunk = audio(1, SMALL_CHUNK, seed=8)
    # When a chunk goes through it
    with caplog.at_level(logging.WARNING, logger="bridge.models.compiled"):
        result = run_ours(network, chunk)
    # Then it says why and runs the eager network: a separation never fails for the cache
    assert "did not compile" in caplog.text and "it runs eagerly" in caplog.text
    torch.testing.assert_close(result, run_ours(ours, chunk), atol=0, rtol=0)


def test_compiling_deletes_the_artefacts_another_torch_built_and_nothing_else(
    mdx23c_pair: tuple[torch.nn.Module, torch.nn.Module], tmp_path: Path
) -> None:
    # Given a cache folder holding a pair an older torch built on this machine, one built
    # for another CPU, another backend's, a record that cannot be read, and an artefact
    # without its record
    here = _environment(ONNX_RUNTIME)

    def pair(name: str, **changes: object) -> tuple[Path, Path]:
        (tmp_path / f"{name}.json").write_text(json.dumps({**here, **changes}))
        (tmp_path / f"{name}.onnx").write_bytes(b"old")
        return tmp_path / f"{name}.onnx", tmp_path / f"{name}.json"

    stale = pair("Mdx23c-0123-1x2", torch="1.0.0")
    elsewhere = pair("Mdx23c-4567-1x2", torch="1.0.0", cpu="another CPU")
    other_backend = pair("Mdx23c-89ab-1x2", torch="1.0.0", backend="openvino")
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "broken.onnx").write_bytes(b"?")
    (tmp_path / "building.onnx").write_bytes(b"half")
    # When a core is compiled into it
    network = CompiledNetwork(copy.deepcopy(mdx23c_pair[1]), folder=tmp_path)
    run_ours(network, audio(1, SMALL_CHUNK, seed=8))
    assert network.compiled == 1
    # Then only the older torch's pair is gone, and the new artefact is there
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in (*elsewhere, *other_backend))
    for name in ("broken.json", "broken.onnx", "building.onnx"):
        assert (tmp_path / name).exists()
    assert len(list(tmp_path.glob("Mdx23c-*.onnx"))) == 3
