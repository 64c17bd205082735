"""``stembridge effects`` and ``presets show``: every parameter with the range it allows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.cli import EXIT_OK, main
from bridge.effects.catalog import EFFECTS, REFUSED


def test_effects_lists_every_effect_parameter_and_range(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # When the effects are listed as JSON
    assert main(["effects", "--json"]) == EXIT_OK
    listed = json.loads(capsys.readouterr().out)
    # Then every effect of the catalog is there with every parameter and its range
    assert list(listed["effects"]) == list(EFFECTS)
    for effect, parameters in EFFECTS.items():
        assert list(listed["effects"][effect]) == list(parameters)
        for name, parameter in parameters.items():
            assert listed["effects"][effect][name] == {
                "minimum": parameter.minimum,
                "maximum": parameter.maximum,
                "below_nyquist": parameter.below_nyquist,
            }
    # And the refused ones with the reason
    assert listed["refused"] == REFUSED


def test_effects_table_shows_the_ranges(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # wide enough that no cell wraps
    assert main(["effects"]) == EXIT_OK
    out = capsys.readouterr().out
    for expected in ("Compressor", "ratio", "1 to 30", "Invert", "no parameters", "PitchShift"):
        assert expected in out
    assert "below half the sample rate" in out


def test_presets_show_gives_each_value_with_its_range(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # When a bundled preset with a compressor is shown
    assert main(["presets", "show", "vocal-polish"]) == EXIT_OK
    out = capsys.readouterr().out
    # Then each value stands beside the range it may take
    assert "Compressor: threshold_db = -20 (-60 to 0), ratio = 3 (1 to 30)" in out
    assert "cutoff_frequency_hz = 90 (10 to 40000 and below half the sample rate)" in out
    assert "stembridge effects" in out
    # And --json keeps the chain's summary and adds every value's range
    assert main(["presets", "show", "vocal-polish", "--json"]) == EXIT_OK
    vocals = json.loads(capsys.readouterr().out)["stems"]["vocals"]
    assert vocals["chain"][0] == "HighpassFilter(cutoff_frequency_hz=90.0)"
    assert vocals["effects"][1] == {
        "effect": "Compressor",
        "parameters": {
            "threshold_db": {
                "value": -20.0,
                "minimum": -60.0,
                "maximum": 0.0,
                "below_nyquist": False,
            },
            "ratio": {"value": 3.0, "minimum": 1.0, "maximum": 30.0, "below_nyquist": False},
            "attack_ms": {"value": 5.0, "minimum": 0.1, "maximum": 500.0, "below_nyquist": False},
            "release_ms": {
                "value": 120.0,
                "minimum": 1.0,
                "maximum": 5000.0,
                "below_nyquist": False,
            },
        },
    }


def test_presets_show_says_a_plugin_keeps_its_own_ranges(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a preset with a third-party plugin (a bundle folder is all loading it needs)
    bundle = tmp_path / "DeEss.vst3"
    bundle.mkdir()
    preset = tmp_path / "mine.toml"
    preset.write_text(
        "[stems.vocals]\n"
        f'chain = [{{ plugin = "{bundle}", parameters = {{ amount = 0.4 }} }}, '
        '{ effect = "Invert" }]\n',
        encoding="utf-8",
    )
    # When it is shown, Then the plugin's values are listed and its ranges are its own
    assert main(["presets", "show", str(preset)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "1. plugin DeEss.vst3: amount = 0.4 (its own ranges, checked when loaded)" in out
    assert "2. Invert: no parameters" in out
    assert main(["presets", "show", str(preset), "--json"]) == EXIT_OK
    first = json.loads(capsys.readouterr().out)["stems"]["vocals"]["effects"][0]
    assert first == {"plugin": str(bundle), "name": None, "parameters": {"amount": {"value": 0.4}}}
