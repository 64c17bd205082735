"""One schema: each setting's rule is declared once, and every way of giving a setting
(flags, the config file, a job spec, code) applies it alike, with the same words."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest

from bridge import schema
from bridge.cli import EXIT_OK, EXIT_USAGE, main
from bridge.config import DaemonSettings, DashboardSettings, Rule, load_config
from bridge.effects.presets import LoudnessTarget, StemTreatment
from bridge.errors import ConfigError, JobError, SettingsError
from bridge.jobs.store import JobStore
from bridge.pipeline.spec import JobSpec
from bridge.settings import EffectsSettings, OutputSettings, SeparationSettings, TimeRange

from processes import write_config
from signals import music, write_audio

SECTIONS = {
    "separation": SeparationSettings,
    "output": OutputSettings,
    "effects": EffectsSettings,
    "time_range": TimeRange,
}
CHECKED = (
    *SECTIONS.values(),
    DaemonSettings,
    DashboardSettings,
    Rule,
    JobSpec,
    LoudnessTarget,
    StemTreatment,
)

# One refused value per kind of rule: (section, key, flag and its text, the value as
# TOML and JSON give it, what the message says to use).
REFUSED = [
    ("separation", "shifts", ["--shifts", "21"], 21, "use a whole number from 0 to 20"),
    ("separation", "overlap", ["--overlap", "1.5"], 1.5, "use a number from 0 to 0.99"),
    ("separation", "device", ["--device", "gpu"], "gpu", "use auto, cpu, cuda or cuda:N"),
    ("separation", "batch_size", ["--batch-size", "0"], 0, "use a whole number from 1 to 256"),
    (
        "output",
        "sample_rate",
        ["--sample-rate", "100"],
        100,
        "use a whole number from 8000 to 384000 Hz",
    ),
    ("output", "quality", ["--quality", "11"], 11.0, "use a number from 0 to 10"),
    ("effects", "preset", ["--preset", " "], " ", "use a preset name (stembridge presets list)"),
    ("effects", "loudness_lufs", ["--loudness", "5"], 5.0, "use a number from -70 to 0 LUFS"),
    ("effects", "true_peak_dbtp", ["--true-peak", "3"], 3.0, "use a number from -30 to 0 dBTP"),
    ("time_range", "length_seconds", ["--length", "0"], 0.0, "use a number above 0 seconds"),
    ("time_range", "start_seconds", ["--start", "-1"], -1.0, "use a number, 0 or more seconds"),
]


def _toml(value: Any) -> str:
    return json.dumps(value)  # numbers and plain strings are written alike in TOML


@pytest.mark.parametrize(
    ("section", "key", "flags", "value", "use"), REFUSED, ids=[case[1] for case in REFUSED]
)
def test_a_value_is_refused_alike_by_flags_config_job_specs_and_code(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    section: str,
    key: str,
    flags: list[str],
    value: Any,
    use: str,
) -> None:
    said = f"{key} = {value!r} is not allowed; {use}"
    # Given in code
    with pytest.raises(SettingsError) as caught:
        SECTIONS[section](**{key: value})
    assert str(caught.value).startswith(said), caught.value
    assert (caught.value.key, caught.value.value) == (key, value)
    # Given in a job spec (a host script's, or a store row)
    document = {"input": "/r/mix.wav", "folder": "/r/mix", section: {key: value}}
    with pytest.raises(JobError) as caught_spec:
        JobSpec.from_json(json.dumps(document))
    assert str(caught_spec.value).startswith(f"job spec: {section}.{said}"), caught_spec.value
    # Given in the config file (the time range is a job's own, not a config section)
    if section != "time_range":
        path = tmp_path / "config.toml"
        path.write_text(f"[{section}]\n{key} = {_toml(value)}\n", encoding="utf-8")
        with pytest.raises(ConfigError) as caught_config:
            load_config(path)
        assert str(caught_config.value).startswith(f"{path}: [{section}] {said}")
    # Given as a flag: a usage error, and no job queued
    source = write_audio(tmp_path / "mix.wav", music(4410))
    config = write_config(tmp_path / "cli.toml", tmp_path / "state")
    assert main(["submit", str(source), "--config", str(config), *flags]) == EXIT_USAGE
    assert said in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "state").exists() or JobStore(tmp_path / "state").list() == []


def test_whole_numbers_are_read_as_floats_so_equal_settings_stay_equal(tmp_path: Path) -> None:
    # Given overlap 0 written as a whole number in code, a config file and a job spec
    config = tmp_path / "config.toml"
    config.write_text("[separation]\noverlap = 0\n[effects]\nloudness_lufs = -16\n")
    from_config = load_config(config)
    spec = JobSpec.from_json(
        json.dumps(
            {
                "input": "/a.wav",
                "folder": "/a",
                "separation": {"overlap": 0},
                "effects": {"loudness_lufs": -16},
            }
        )
    )
    in_code = JobSpec(
        input="/a.wav",
        folder="/a",
        separation=SeparationSettings(overlap=0),
        effects=EffectsSettings(loudness_lufs=-16),
    )
    # Then every one holds the float, so they compare, serialise and identify equal
    for separation in (from_config.separation, spec.separation, in_code.separation):
        assert type(separation.overlap) is float and separation.overlap == 0.0
    assert from_config.effects == spec.effects == in_code.effects
    assert spec == in_code and spec.to_json() == in_code.to_json()
    assert spec.identity("0" * 64) == in_code.identity("0" * 64)


@pytest.mark.parametrize("kind", CHECKED, ids=lambda kind: kind.__name__)
def test_no_number_setting_takes_nan_or_infinity(kind: type[Any]) -> None:
    # Every float a class declares (a one-sided range alone would let infinity in)
    floats = [field for field in schema.fields(kind) if field.kind.base is float]
    for field in floats:
        for bad in (math.nan, math.inf, -math.inf):
            with pytest.raises(SettingsError) as caught:
                _build_with(kind, field.name, bad)
            assert caught.value.key == field.name
            assert f"{field.name} = {bad!r} is not allowed; use a number" in str(caught.value)
    if kind in (SeparationSettings, OutputSettings, TimeRange, EffectsSettings):
        assert floats  # the classes known to hold numbers are seen to


def _build_with(kind: type[Any], name: str, value: Any) -> Any:
    required = {"folder": Path("/r")} if kind is Rule else {}
    if kind is JobSpec:
        required = {"input": "/a.wav", "folder": "/a"}
    return kind(**{**required, name: value})


def test_flags_are_made_from_the_declarations(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # When separate's help is printed (on one line: argparse also wraps after a "-")
    monkeypatch.setenv("COLUMNS", "100000")
    with pytest.raises(SystemExit) as done:
        main(["separate", "--help"])
    assert done.value.code == EXIT_OK
    text = " ".join(capsys.readouterr().out.split())
    # Then every declared flag is there, with its choices and what it allows
    for kind in SECTIONS.values():
        for field in schema.fields(kind):
            flag = field.setting.flag
            assert flag is not None, f"{kind.__name__}.{field.name} has no flag"
            assert flag in text
            if field.kind.choices and not field.setting.metavar:
                assert "{" + ",".join(map(str, field.kind.choices)) + "}" in text
            if field.kind.base is not bool and field.setting.text is None:
                assert field.kind.allowed in text, field.name


def test_flags_override_the_config_which_overrides_the_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a config with separation, output and effects defaults
    source = write_audio(tmp_path / "mix.wav", music(4410))
    config = write_config(
        tmp_path / "config.toml",
        tmp_path / "state",
        '[separation]\nshifts = 2\noverlap = 0.5\n[output]\nformat = "flac"\n'
        "[effects]\nmatch_mix = true\n",
    )
    # When a job is submitted with some flags
    argv = ["submit", str(source), "--config", str(config), "--json"]
    assert main([*argv, "--overlap", "0.75", "--loudness", "-16", "--no-pictures"]) == EXIT_OK
    job = JobStore(tmp_path / "state").get(json.loads(capsys.readouterr().out)["id"])
    # Then the flags win, the config fills in the rest, the defaults what neither says
    spec = job.spec
    assert (spec.separation.shifts, spec.separation.overlap, spec.separation.model) == (
        2,
        0.75,
        "htdemucs",
    )
    assert (spec.output.format, spec.output.pictures, spec.output.dither) == ("flac", False, "auto")
    # and a loudness flag replaces the config's match-mix (they exclude each other)
    assert (spec.effects.loudness_lufs, spec.effects.match_mix) == (-16.0, False)


# A spec as the previous version stored it (its JSON and identity were recorded then).
STORED = (
    '{"effects": {"exact_sum": null, "loudness_lufs": -16.0, "match_mix": false, '
    '"preset": "broadcast", "residual_stem": "other", "true_peak_dbtp": -2.0}, '
    '"folder": "/r/mix", "input": "/r/mix.wav", "origin": {"track": 3}, "output": '
    '{"bit_depth": 24, "bitrate_kbps": null, "dither": "auto", "format": "flac", '
    '"overwrite": false, "pictures": true, "quality": null, "sample_rate": 48000}, '
    '"priority": 10, "separation": {"batch_size": null, "device": "auto", "model": '
    '"htdemucs", "overlap": 0.5, "precision": "fp32", "segment_seconds": 5.0, "shifts": 1, '
    '"stems": ["vocals", "instrumental"]}, "source": "watch:mixes", "time_range": '
    '{"length_seconds": 8.0, "start_seconds": 1.5}}'
)
STORED_IDENTITY = "5016e37a309315ee1e69d581bf4c1edc05702f23380eec53697ea0d736bd1ac0"
DEFAULT_IDENTITY = "42c1a32e94d7a70a70a162e9bec8fc36ca01711ef81feb74a0824e7bfd665c03"


def test_specs_stored_by_the_previous_version_load_with_their_identity() -> None:
    spec = JobSpec.from_json(STORED)
    # Written again, it has the keys added since at their defaults
    stored = json.loads(STORED)
    stored["separation"].update(
        ensemble=None,
        ensemble_weights=None,
        model_config=None,
        wiener_iterations=None,
        residual=False,
        compiled_core="off",
        cpu_kernels="onednn",
    )
    assert json.loads(spec.to_json()) == stored
    assert spec.identity("ab" * 32, "cd" * 32) == STORED_IDENTITY
    # and one from before pictures and effects existed takes their defaults
    older = JobSpec.from_json(
        '{"input": "/r/a.wav", "folder": "/r/a", "output": {"format": null}, '
        '"separation": {"stems": []}, "time_range": {"start_seconds": 0}}'
    )
    assert older == JobSpec(input="/r/a.wav", folder="/r/a")
    assert older.identity("ab" * 32) == DEFAULT_IDENTITY


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"folder": "/a"}, "job spec: missing key 'input'"),
        ({"input": "/a", "folder": "/b", "colour": 1}, "job spec: unknown key 'colour'; allowed"),
        (
            {"input": "/a", "folder": "/b", "output": {"colour": 1}},
            "job spec: output: unknown key 'colour'; allowed keys are format, bit_depth",
        ),
        ({"input": "/a", "folder": "/b", "output": 5}, "job spec: output = 5 is not allowed"),
        ({"input": 5, "folder": "/b"}, "job spec: input = 5 is not allowed; use the input file"),
        (
            {"input": "/a", "folder": "/b", "priority": 2**63},
            "job spec: priority = 9223372036854775808 is not allowed; use a whole number from",
        ),
        (
            {"input": "/a", "folder": "/b", "separation": {"model": "x"}},
            "job spec: separation: unknown model 'x'",
        ),
        (
            {"input": "/a", "folder": "/b", "output": {"bitrate_kbps": 128, "quality": 1}},
            "job spec: output: give either a constant MP3 bitrate or a VBR quality",
        ),
    ],
)
def test_bad_job_specs_name_the_place(document: dict[str, Any], message: str) -> None:
    with pytest.raises(JobError) as caught:
        JobSpec.from_json(json.dumps(document))
    assert str(caught.value).startswith(message), caught.value


def test_stems_may_be_a_comma_list_wherever_they_are_given(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[separation]\nstems = "vocals, instrumental"\n')
    spec = JobSpec.from_json('{"input": "/a", "folder": "/b", "separation": {"stems": "vocals,"}}')
    assert load_config(config).separation.stems == ("vocals", "instrumental")
    assert spec.separation.stems == ("vocals",)


def test_a_rule_made_in_code_is_checked_like_one_from_a_file() -> None:
    rule = Rule(folder=Path("/renders/Mixes"))
    assert rule.name == "Mixes" and rule.output == "{dir}/Stems/{name}"
    with pytest.raises(SettingsError, match=r"output = '\{dir\}/\{nme\}' is not a valid template"):
        dataclasses.replace(rule, output="{dir}/{nme}")
    with pytest.raises(SettingsError, match=r"patterns = \[1\] is not allowed; use a list"):
        Rule(folder=Path("/r"), patterns=[1])  # type: ignore[arg-type]


def test_messages_name_their_place_in_the_document() -> None:
    section, nested = schema.Where("[separation]"), schema.Where("separation", dotted=True)
    assert (section.key("shifts"), section.label) == ("[separation] shifts", "[separation] ")
    assert (nested.key("shifts"), nested.label) == ("separation.shifts", "separation: ")
    assert nested.child("x").key("y") == "separation.x.y"
    assert (schema.Where().key("shifts"), schema.Where().label) == ("shifts", "")
    assert schema.shown("x" * 100) == repr("x" * 100)[:77] + "..."


def test_only_declared_classes_have_a_schema() -> None:
    @dataclasses.dataclass
    class Plain:
        x: int = 0

    with pytest.raises(TypeError, match=r"Plain is not declared with @schema\.settings"):
        schema.fields(Plain)
