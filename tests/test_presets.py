"""Effects presets: bundled ones load, user ones are found, and every mistake is named."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from bridge.cli import EXIT_OK, EXIT_USAGE, main
from bridge.config import load_config
from bridge.effects.plan import plan_effects
from bridge.effects.presets import list_presets, load_preset, parse_preset_file, user_preset_dir
from bridge.errors import ConfigError, PresetError, SettingsError
from bridge.models.catalog import MODELS
from bridge.settings import EffectsSettings
from bridge.stems import plan_stems

from processes import write_config
from signals import music, write_audio
from trust import OTHER_UID, give_to_another_user, plugin_bundle

SOURCES = MODELS["htdemucs"].sources


def write_preset(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_every_bundled_preset_loads() -> None:
    names = {name for name, _, origin in list_presets() if origin == "bundled"}
    assert {"clean", "vocal-polish", "drum-punch", "bass-tight", "broadcast"} <= names
    for name in names:
        preset = load_preset(name)
        assert preset.description
        assert preset.sha256


def test_broadcast_is_minus_23_lufs_with_a_true_peak_ceiling() -> None:
    loudness = load_preset("broadcast").loudness
    assert loudness is not None
    assert (loudness.target_lufs, loudness.true_peak_dbtp) == (-23.0, -1.0)


def test_user_preset_is_found_and_hides_a_bundled_one(tmp_path: Path) -> None:
    # Given a user preset called like a bundled one, and one of its own name
    folder = user_preset_dir()
    write_preset(folder, "clean", 'description = "mine"\n')
    write_preset(folder, "warm", '[stems."*"]\nchain = [{ effect = "LowShelfFilter" }]\n')
    # Then the user's wins, and both are listed as the user's
    assert load_preset("clean").description == "mine"
    assert load_preset("warm").for_stem("bass").chain[0].effect == "LowShelfFilter"
    origins = {name: origin for name, _, origin in list_presets()}
    assert origins["clean"] == origins["warm"] == "user"
    assert origins["broadcast"] == "bundled"


def test_preset_by_path(tmp_path: Path) -> None:
    path = write_preset(
        tmp_path, "x", '[stems.vocals]\nchain = [{ effect = "Gain", gain_db = -3 }]\n'
    )
    preset = load_preset(str(path))
    assert preset.for_stem("vocals").chain[0].parameters == (("gain_db", -3.0),)
    assert preset.for_stem("drums").chain == ()


@pytest.mark.parametrize(
    ("text", "place", "allowed"),
    [
        (
            '[stems.vocals]\nchain = [{ effect = "Flanger" }]\n',
            "stems.vocals.chain[1].effect = 'Flanger'",
            "Compressor",
        ),
        (
            '[stems.vocals]\nchain = [{ effect = "Compressor", treshold_db = -20 }]\n',
            "stems.vocals.chain[1]: unknown key 'treshold_db'",
            "allowed keys are effect, threshold_db, ratio, attack_ms, release_ms",
        ),
        (
            '[stems.drums]\nchain = [{ effect = "Compressor", ratio = 0.5 }]\n',
            "stems.drums.chain[1].ratio = 0.5",
            "a number from 1 to 30",
        ),
        (
            '[stems.bass]\nchain = [{ effect = "Gain", gain_db = "loud" }]\n',
            "stems.bass.chain[1].gain_db = 'loud'",
            "a number from -60 to 24",
        ),
        (
            '[stems.bass]\nchain = [{ effect = "Gain", gain_db = true }]\n',
            "stems.bass.chain[1].gain_db = True",
            "a number",
        ),
        (
            'colour = "red"\n',
            "unknown key 'colour'",
            "allowed keys are description, loudness, stems",
        ),
        ('[stems."vo cals"]\n', "stems.vo cals", "a stem name"),
        ("[stems.vocals]\nchain = 3\n", "stems.vocals.chain = 3", "a list"),
        ("[stems.vocals]\ntail_seconds = 99\n", "stems.vocals.tail_seconds = 99", "0 to 30"),
        ("[loudness]\ntrue_peak_dbtp = -1\n", "loudness", "exactly one of target_lufs"),
        (
            "[loudness]\ntarget_lufs = -23\nmatch_mix = true\n",
            "loudness",
            "exactly one of target_lufs",
        ),
        ("[loudness]\ntarget_lufs = 5\n", "loudness.target_lufs = 5", "-70 to 0"),
        (
            '[stems.vocals]\nchain = [{ effect = "PitchShift", semitones = 2 }]\n',
            "stems.vocals.chain[1].effect = 'PitchShift'",
            "spotify/pedalboard#415",
        ),
        (
            '[stems.vocals]\nchain = [{ plugin = "nowhere/Comp.vst3" }]\n',
            "stems.vocals.chain[1].plugin = 'nowhere/Comp.vst3'",
            "does not exist",
        ),
        (
            '[stems.vocals]\nchain = [{ plugin = "/usr/lib/libc.so" }]\n',
            "stems.vocals.chain[1].plugin",
            "a plugin bundle ending in .vst3",
        ),
        ("[stems.vocals\n", "not valid TOML", "fix the syntax"),
    ],
)
def test_preset_errors_name_file_place_and_allowed_values(
    tmp_path: Path, text: str, place: str, allowed: str
) -> None:
    # Given a preset with one mistake
    path = write_preset(tmp_path, "bad", text)
    # When it is loaded, Then the error names the file, the place and what is allowed
    with pytest.raises(PresetError) as caught:
        parse_preset_file(path, name="bad")
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert place in message
    assert allowed in message
    assert caught.value.path == path


@pytest.mark.parametrize(
    ("preset_key", "job_key", "value"),
    [("target_lufs", "loudness_lufs", 5), ("true_peak_dbtp", "true_peak_dbtp", -31)],
)
def test_a_presets_loudness_follows_the_jobs_loudness_rule(
    tmp_path: Path, preset_key: str, job_key: str, value: int
) -> None:
    # Given the same value as a preset's [loudness] and as a job's effects setting
    extra = "" if preset_key == "target_lufs" else "match_mix = true\n"
    path = write_preset(tmp_path, "loud", f"[loudness]\n{extra}{preset_key} = {value}\n")
    with pytest.raises(PresetError) as in_preset:
        parse_preset_file(path, name="loud")
    with pytest.raises(SettingsError) as in_job:
        EffectsSettings(**{job_key: value})
    # Then both are refused with the same allowed values (what leaving it out means
    # differs), each at its own place
    allowed = str(in_job.value).removeprefix(f"{job_key} = {value} is not allowed; use ")
    rule = allowed.partition(", or leave it out")[0]
    assert rule.startswith("a number from ")
    assert str(in_preset.value).startswith(
        f"{path}: loudness.{preset_key} = {value} is not allowed; use {rule}, or leave it out"
    )
    assert in_preset.value.key == f"loudness.{preset_key}"


def test_frequency_above_nyquist_is_refused_for_the_output_rate(tmp_path: Path) -> None:
    # Given a low-pass at 30 kHz: fine for 96 kHz stems, impossible for 44.1 kHz ones
    path = write_preset(
        tmp_path,
        "air",
        '[stems.vocals]\nchain = [{ effect = "LowpassFilter", cutoff_frequency_hz = 30000 }]\n',
    )
    preset = load_preset(str(path))
    preset.check_sample_rate(96000)
    with pytest.raises(
        PresetError, match=r"stems\.vocals\.chain\[1\]\.cutoff_frequency_hz = 30000 Hz"
    ):
        preset.check_sample_rate(44100)


def test_unknown_preset_lists_the_available_ones() -> None:
    with pytest.raises(PresetError, match="available: bass-tight, broadcast, clean"):
        load_preset("nope")
    with pytest.raises(PresetError, match="letters, digits"):
        load_preset("bad name!")


def test_exact_sum_defaults_on_without_effects_and_off_with_them() -> None:
    stems = plan_stems(["vocals", "instrumental"], SOURCES)
    clean = plan_effects(EffectsSettings(), stems=stems, model_sources=SOURCES)
    assert clean.residual_source == "other" and clean.expect_sum
    polished = plan_effects(
        EffectsSettings(preset="vocal-polish"), stems=stems, model_sources=SOURCES
    )
    assert polished.residual_source is None and not polished.expect_sum
    only_vocals = plan_effects(
        EffectsSettings(), stems=plan_stems(["vocals"], SOURCES), model_sources=SOURCES
    )
    assert only_vocals.residual_source is None and not only_vocals.expect_sum


def test_exact_sum_with_effects_is_refused() -> None:
    stems = plan_stems([], SOURCES)
    with pytest.raises(SettingsError, match="exact-sum cannot hold when preset 'drum-punch'"):
        plan_effects(
            EffectsSettings(preset="drum-punch", exact_sum=True), stems=stems, model_sources=SOURCES
        )
    with pytest.raises(SettingsError, match="residual stem 'guitar' is not a source"):
        plan_effects(EffectsSettings(residual_stem="guitar"), stems=stems, model_sources=SOURCES)


def test_job_loudness_overrides_the_preset() -> None:
    stems = plan_stems([], SOURCES)
    plan = plan_effects(
        EffectsSettings(preset="broadcast", loudness_lufs=-16.0, true_peak_dbtp=-2.0),
        stems=stems,
        model_sources=SOURCES,
    )
    assert plan.loudness is not None
    assert (plan.loudness.target_lufs, plan.loudness.true_peak_dbtp) == (-16.0, -2.0)
    ceiling_only = plan_effects(
        EffectsSettings(preset="broadcast", true_peak_dbtp=-3.0), stems=stems, model_sources=SOURCES
    )
    assert ceiling_only.loudness is not None
    assert (ceiling_only.loudness.target_lufs, ceiling_only.loudness.true_peak_dbtp) == (
        -23.0,
        -3.0,
    )


def test_config_with_a_bad_preset_stops_at_load(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[effects]\npreset = "nope"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"config\.toml: \[effects\] preset = 'nope': no preset"):
        load_config(config)
    config.write_text(
        f'[[rule]]\nfolder = "{tmp_path}"\npreset = "broadcast"\nloudness_lufs = -16\n',
        encoding="utf-8",
    )
    rule = load_config(config).rules[0]
    assert (rule.effects.preset, rule.effects.loudness_lufs) == ("broadcast", -16.0)


def test_presets_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["presets", "list", "--json"]) == EXIT_OK
    rows = json.loads(capsys.readouterr().out)
    assert {"clean", "broadcast"} <= {row["name"] for row in rows}
    assert main(["presets", "show", "vocal-polish", "--json"]) == EXIT_OK
    shown = json.loads(capsys.readouterr().out)
    assert shown["stems"]["vocals"]["chain"][0] == "HighpassFilter(cutoff_frequency_hz=90.0)"
    assert main(["presets", "show", "nope"]) == EXIT_USAGE
    assert "no preset named 'nope'" in capsys.readouterr().err


def test_separate_with_a_bad_preset_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an input and a preset with an out-of-range value
    source = write_audio(tmp_path / "in" / "mix.wav", music(44100))
    preset = write_preset(
        tmp_path, "loud", '[stems.vocals]\nchain = [{ effect = "Gain", gain_db = 40 }]\n'
    )
    # When separate runs with it
    code = main(["separate", str(source), "-o", str(tmp_path / "out"), "--preset", str(preset)])
    # Then it is refused before any audio is touched: usage error, no output at all
    assert code == EXIT_USAGE
    assert "stems.vocals.chain[1].gain_db = 40" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["mix.wav"]


# --- who could have changed a preset, or a plug-in it names -----------------------------


def _plugin_preset(folder: Path, bundle: Path) -> Path:
    return write_preset(folder, "deess", f'[stems.vocals]\nchain = [{{ plugin = "{bundle}" }}]\n')


def test_a_preset_other_users_may_write_is_refused_by_separate_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a world-writable preset (anyone could have put a plug-in in it)
    source = write_audio(tmp_path / "in" / "mix.wav", music(44100))
    preset = write_preset(tmp_path, "shared", '[stems.vocals]\nchain = [{ effect = "Gain" }]\n')
    preset.chmod(0o666)
    before = preset.read_bytes()
    # When separate is asked to use it
    code = main(["separate", str(source), "-o", str(tmp_path / "out"), "--preset", str(preset)])
    # Then it is refused, saying which file, why, and the fix; nothing is written or changed
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{preset}: other users may write to it (mode 666)" in err, err
    assert f"run: chmod go-w '{preset}'" in err
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["mix.wav"]
    assert preset.read_bytes() == before and stat.S_IMODE(preset.stat().st_mode) == 0o666


def test_a_preset_owned_by_another_user_is_refused_by_submit_and_no_job_is_queued(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a preset another user owns (not writable by anyone else: the owner is the point)
    source = write_audio(tmp_path / "in" / "mix.wav", music(44100))
    preset = write_preset(tmp_path, "theirs", 'description = "theirs"\n')
    preset.chmod(0o644)
    give_to_another_user(preset)
    config = write_config(tmp_path / "config.toml", tmp_path / "state")
    # When a job is submitted with it
    code = main(["submit", str(source), "--preset", str(preset), "--config", str(config)])
    # Then it is refused with the owner named, and no job (not even a store) exists
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{preset}: owned by another user (uid {OTHER_UID})" in err, err
    assert "use one you own" in err
    assert not (tmp_path / "state").exists()
    assert not (tmp_path / "in" / ".stembridge").exists()


def test_a_user_preset_found_by_name_is_checked_like_a_path(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a preset in the user's preset folder that others may write to
    preset = write_preset(user_preset_dir(), "shared", 'description = "anyone\'s"\n')
    preset.chmod(0o646)
    # When it is shown by name, Then it is refused like any other
    assert main(["presets", "show", "shared"]) == EXIT_USAGE
    assert f"{preset}: other users may write to it (mode 646)" in capsys.readouterr().err
    # and the list says why next to it, while the bundled presets (trusted as the
    # installed package is) are listed as usual
    assert main(["presets", "list", "--json"]) == EXIT_OK
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert "other users may write to it" in rows["shared"]["error"]
    assert rows["broadcast"]["error"] is None and rows["broadcast"]["origin"] == "bundled"


@pytest.mark.parametrize("loose", ["bundle", "library"])
def test_a_plugin_other_users_may_write_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], loose: str
) -> None:
    # Given a private preset naming a plug-in whose bundle, or the library deep inside
    # it (the code itself), anyone may write to
    bundle, library = plugin_bundle(tmp_path / "vst3", "DeEss")
    preset = _plugin_preset(tmp_path / "presets", bundle)
    exposed = bundle if loose == "bundle" else library
    exposed.chmod(0o777)
    # When the preset is loaded
    assert main(["presets", "show", str(preset)]) == EXIT_USAGE
    # Then the message names the preset, the place, the exposed part and the fix
    err = capsys.readouterr().err
    assert f"{preset}: stems.vocals.chain[1].plugin = '{bundle}': {exposed}: " in err, err
    assert "other users may write to it (mode 777)" in err
    assert f"run: chmod -R go-w '{bundle}'" in err
    assert stat.S_IMODE(exposed.stat().st_mode) == 0o777  # left as it was


def test_a_plugin_owned_by_another_user_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle, library = plugin_bundle(tmp_path / "vst3", "DeEss")
    give_to_another_user(library)
    preset = _plugin_preset(tmp_path / "presets", bundle)
    assert main(["presets", "show", str(preset)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{library}: owned by another user (uid {OTHER_UID})" in err, err
    assert "use one you (or root) installed" in err


def test_a_private_preset_and_plugin_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a preset and a plug-in only this user may change; the preset writable by the
    # user's own group, which nobody else is in (a umask 002 system)
    bundle, _ = plugin_bundle(tmp_path / "vst3", "DeEss")
    preset = _plugin_preset(tmp_path / "presets", bundle)
    preset.chmod(0o664)
    assert main(["presets", "show", str(preset), "--json"]) == EXIT_OK
    shown = json.loads(capsys.readouterr().out)
    assert shown["stems"]["vocals"]["chain"] == ["plugin DeEss.vst3()"]
