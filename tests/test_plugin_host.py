"""Third-party plugins run in a child: a crash or a hang fails its job, nothing else."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from bridge.effects.chain import BLOCK_FRAMES, ChainStream
from bridge.effects.plugin_host import ChildProcessor
from bridge.effects.presets import EffectSpec
from bridge.errors import EffectError
from bridge.jobs.store import JobStore
from bridge.jobs.worker import ModelCache, Worker
from bridge.pipeline.spec import JobSpec
from bridge.settings import EffectsSettings, SeparationSettings

from plugins import build_vst3, load_crashing, load_half_gain, load_hanging
from programs import required_program
from signals import music, write_audio

RATE = 44100
LABEL = "test.toml stems.vocals"


@pytest.fixture(scope="module")
def native_plugins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real VST3 bundles that crash (SIGSEGV) or hang while pedalboard loads them."""
    required_program("gcc", "cc", package="gcc", purpose="the crashing VST3 is not built")
    folder = tmp_path_factory.mktemp("vst3")
    return {
        "crash": build_vst3(folder, "Crash", "raise(SIGSEGV);"),
        "hang": build_vst3(folder, "Hang", "for (;;) sleep(1000);"),
    }


def plugin(path: Path | str, **parameters: float) -> EffectSpec:
    return EffectSpec("plugin", tuple(parameters.items()), plugin_path=str(path))


def test_a_vst3_that_crashes_while_loading_fails_with_the_signal(
    native_plugins: dict[str, Path],
) -> None:
    with pytest.raises(EffectError) as caught:
        ChildProcessor([plugin(native_plugins["crash"])], sample_rate=RATE, label=LABEL)
    assert str(caught.value) == (
        f"{LABEL}: plugin Crash.vst3 crashed while loading (killed by SIGSEGV); the job "
        "failed and nothing was written; remove the plugin from the preset or update it"
    )


def test_a_vst3_that_hangs_while_loading_is_stopped(native_plugins: dict[str, Path]) -> None:
    with pytest.raises(
        EffectError, match=r"plugin Hang\.vst3 hung \(no answer in 2 s while loading\)"
    ):
        ChildProcessor(
            [plugin(native_plugins["hang"])], sample_rate=RATE, label=LABEL, load_timeout_seconds=2
        )


def test_a_plugin_that_crashes_mid_stream_fails_only_that_chain(tmp_path: Path) -> None:
    # Given a plugin that dies on its second block
    processor = ChildProcessor(
        [plugin(tmp_path / "Buggy.vst3")], sample_rate=RATE, label=LABEL, loader=load_crashing
    )
    chain = ChainStream(processor, channels=2, sample_rate=RATE)
    block = np.ones((2, BLOCK_FRAMES), dtype=np.float32)
    # When blocks flow, Then the first comes back processed and the second fails clearly
    np.testing.assert_allclose(chain.push(block), block * 0.5)
    with pytest.raises(
        EffectError, match=r"Buggy\.vst3 crashed while processing \(killed by SIGSEGV\)"
    ):
        chain.push(block)
    chain.close()
    # and this process goes on: a new chain works
    healthy = ChildProcessor(
        [plugin(tmp_path / "Good.vst3")], sample_rate=RATE, label=LABEL, loader=load_half_gain
    )
    np.testing.assert_allclose(healthy.process(block), block * 0.5)
    healthy.close()


def test_a_plugin_that_hangs_mid_stream_is_killed(tmp_path: Path) -> None:
    processor = ChildProcessor(
        [plugin(tmp_path / "Slow.vst3")],
        sample_rate=RATE,
        label=LABEL,
        loader=load_hanging,
        block_timeout_seconds=1,
    )
    with pytest.raises(EffectError, match=r"Slow\.vst3 hung \(no answer in 1 s while processing\)"):
        processor.process(np.zeros((2, BLOCK_FRAMES), dtype=np.float32))
    processor.close()


def test_unknown_plugin_parameter_lists_the_plugins_parameters(tmp_path: Path) -> None:
    with pytest.raises(
        EffectError,
        match=r"chain\[1\]: plugin .*Good\.vst3 has no parameter 'amount'; its parameters are gain",
    ):
        ChildProcessor(
            [plugin(tmp_path / "Good.vst3", amount=1.0)],
            sample_rate=RATE,
            label=LABEL,
            loader=load_half_gain,
        )


def test_built_in_effects_and_plugins_run_in_order_in_the_child(tmp_path: Path) -> None:
    specs = [EffectSpec("Gain", (("gain_db", 6.0),)), plugin(tmp_path / "Good.vst3", gain=0.25)]
    processor = ChildProcessor(specs, sample_rate=RATE, label=LABEL, loader=load_half_gain)
    block = np.full((2, BLOCK_FRAMES), 0.1, dtype=np.float32)
    np.testing.assert_allclose(processor.process(block), block * 10 ** (6 / 20) * 0.25, rtol=1e-5)
    processor.close()


def test_a_crashing_plugin_fails_its_job_and_the_worker_goes_on(
    tiny_models: Path, tmp_path: Path, native_plugins: dict[str, Path]
) -> None:
    # Given a preset with the crashing VST3 on vocals, and two jobs: one with it, one clean
    preset = tmp_path / "crashy.toml"
    preset.write_text(
        f'[stems.vocals]\nchain = [{{ plugin = "{native_plugins["crash"]}" }}]\n', encoding="utf-8"
    )
    source = write_audio(tmp_path / "in" / "mix.wav", music(RATE))
    store = JobStore(tmp_path / "state")
    separation = SeparationSettings(stems=("vocals", "instrumental"))
    crashy, _ = store.submit(
        JobSpec(
            input=str(source),
            folder=str(tmp_path / "crashy"),
            separation=separation,
            effects=EffectsSettings(preset=str(preset)),
        )
    )
    clean, _ = store.submit(
        JobSpec(input=str(source), folder=str(tmp_path / "clean"), separation=separation)
    )
    worker = Worker(store, models=ModelCache(folders=[tiny_models], offline=True), owner="w")
    # When one worker runs both, in one process
    for _ in range(2):
        job = store.claim("w")
        assert job is not None
        worker.run_job(job, threading.Event())
    # Then the crashy job failed with the plugin named, leaving no stems, and the other is done
    failed = store.get(crashy.id)
    assert (failed.state, failed.error_kind) == ("failed", "EffectError")
    assert "plugin Crash.vst3 crashed while loading (killed by SIGSEGV)" in (failed.error or "")
    assert not (tmp_path / "crashy").exists()
    assert store.get(clean.id).state == "done"
    assert sorted(p.name for p in (tmp_path / "clean").iterdir()) == [
        "instrumental.spectrogram.png",
        "instrumental.wav",
        "instrumental.waveform.png",
        "manifest.json",
        "vocals.spectrogram.png",
        "vocals.wav",
        "vocals.waveform.png",
    ]
