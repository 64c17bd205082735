"""The config file: examples parse, precedence holds, every bad key or value is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import load_config
from bridge.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_examples_are_valid(example: Path) -> None:
    config = load_config(example, required=True)
    # A studio worker's config only says where the broker is and how paths map.
    if "worker" in example.name:
        assert config.daemon.broker is not None and not config.rules
    else:
        assert config.rules, f"{example.name} watches no folder"


def test_rule_overrides_defaults_which_override_built_ins(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        """
[separation]
model = "htdemucs_ft"
stems = ["vocals", "instrumental"]
overlap = 0.5

[output]
bit_depth = 24

[[rule]]
name = "mixes"
folder = "~/Mixes"
stems = "drums,bass"
format = "flac"
output = "{dir}/../Stems/{rule}/{name}"
"""
    )
    config = load_config(path)
    (rule,) = config.rules
    assert config.separation.stems == ("vocals", "instrumental")
    assert rule.separation.model == "htdemucs_ft" and rule.separation.overlap == 0.5
    assert rule.separation.stems == ("drums", "bass")
    assert (rule.output_settings.format, rule.output_settings.bit_depth) == ("flac", 24)
    assert rule.folder == Path.home() / "Mixes"
    assert rule.stem_folder(Path("/music/a/take 1.wav")) == Path("/music/Stems/mixes/take 1")
    assert rule.matches(Path("X.WAV")) and not rule.matches(Path("x.txt"))


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[separation]\novelap = 0.5", "[separation] unknown key 'ovelap'; allowed keys are model"),
        (
            "[separation]\nshifts = true",
            "[separation] shifts = True is not allowed; use a whole number from 0 to 20",
        ),
        (
            "[separation]\noverlap = 2.0",
            "[separation] overlap = 2.0 is not allowed; use a number from 0 to 0.99",
        ),
        # A whole number where a fraction is asked is read as one, then checked.
        ("[separation]\noverlap = 1", "[separation] overlap = 1 is not allowed; use a number"),
        ("[separation]\nmodel = 'x'", "[separation] unknown model 'x'; choose one of htdemucs"),
        (
            "[output]\nbit_depth = 20",
            "[output] bit_depth = 20 is not allowed; use one of 16, 24, 32 (32 is float)",
        ),
        (
            "[daemon]\nstable_polls = 'many'",
            "[daemon] stable_polls = 'many' is not allowed; use a whole number, 1 or more",
        ),
        ("[deamon]\n", "unknown key 'deamon'; allowed keys are daemon"),
        ("[[rule]]\nname = 'x'", "[[rule]] 'x' missing key 'folder'; add folder = \"/path/to"),
        ("[[rule]]\nrecursive = true", "[[rule]] #1 missing key 'folder'"),
        ("[[rule]]\nfolder = 5", "[[rule]] #1 folder = 5 is not allowed; use the watched folder"),
        ("rule = 5", "rule = 5 is not allowed; use [[rule]] tables"),
        ("[[rule]]\nfolder = '/x'\nbogus = 1", "[[rule]] 'x' unknown key 'bogus'; allowed keys"),
        ("[[rule]]\nfolder = '/x'\nstems = ['guitar']", "[[rule]] 'x' unknown stem 'guitar'"),
        ("[[rule]]\nfolder = '/x'\noutput = '{dir}/{nme}'", "is not a valid template"),
        (
            "[[rule]]\nfolder = '/x'\npatterns = [1]",
            "[[rule]] 'x' patterns = [1] is not allowed; use a list of strings",
        ),
        (
            "[[rule]]\nfolder = '/a/x'\n[[rule]]\nfolder = '/b/x'",
            "two [[rule]] tables are named 'x'",
        ),
        ("[separation\n", "not valid TOML"),
        ('[paths]\n"/mnt/nas" = 5', "[paths] path map entry '/mnt/nas' = 5: the path on this"),
        ('[paths]\n"/mnt/nas" = ""', "the path on this machine must be a non-empty string"),
        ('[paths]\n"" = "Z:\\\\"', "the daemon's path must be a non-empty string"),
        ('[paths]\n"mnt" = "Z:\\\\"', "the daemon's path 'mnt' is not an absolute path"),
        ("paths = 'Z:'", "paths = 'Z:' is not allowed; use a table"),
        ("[daemon]\nbroker = 6379", "[daemon] broker = 6379 is not allowed; use a URL: redis://"),
        (
            "[daemon]\npoll_interval_seconds = nan",
            "[daemon] poll_interval_seconds = nan is not allowed; use a number, 0.01 or more",
        ),
        ("[daemon]\nstate_dir = 5", "[daemon] state_dir = 5 is not allowed; use a folder's path"),
        (
            "[dashboard]\nport = 70000",
            "[dashboard] port = 70000 is not allowed; use a whole number from 1 to 65535",
        ),
        ("[dashboard]\nadress = '0.0.0.0'", "[dashboard] unknown key 'adress'; allowed keys"),
        ("[dashboard]\nenabled = 1", "[dashboard] enabled = 1 is not allowed; use true or false"),
        ("[dashboard]\nhost = ''", "[dashboard] host = '' is not allowed; use 127.0.0.1"),
        ("[output]\npictures = 'no'", "[output] pictures = 'no' is not allowed; use true or false"),
        (
            "[output]\nbitrate_kbps = 128\nquality = 2",
            "[output] give either a constant MP3 bitrate or a VBR quality, not both",
        ),
        (
            "[effects]\nloudness_lufs = -14\nmatch_mix = true",
            "[effects] give either a loudness target or match-mix, not both",
        ),
    ],
)
def test_bad_config_names_file_key_and_fix(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert text.startswith(str(path)), text
    assert message in text, text


def test_missing_config_uses_defaults_unless_required(tmp_path: Path) -> None:
    assert load_config(tmp_path / "none.toml").rules == ()
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "none.toml", required=True)


def test_broker_and_paths_are_read(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        """
[daemon]
broker = "rediss://stembridge:s3cret@redis.studio.lan:6380/1"

[paths]
"/mnt/nas" = 'Z:\\'
"/mnt/nas/Archive" = '\\\\archive\\old'
"""
    )
    config = load_config(path)
    broker = config.daemon.broker
    assert broker is not None
    assert (broker.scheme, broker.host, broker.port, broker.db) == (
        "rediss",
        "redis.studio.lan",
        6380,
        1,
    )
    assert broker.password == "s3cret"
    assert "s3cret" not in repr(config)
    assert config.paths.to_local("/mnt/nas/Song A/x.wav") == "Z:\\Song A\\x.wav"
    assert config.paths.to_local("/mnt/nas/Archive/x.wav") == "\\\\archive\\old\\x.wav"


def test_without_broker_or_paths_nothing_changes(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[daemon]\nstable_polls = 2\n")
    config = load_config(path)
    assert config.daemon.broker is None
    assert config.paths.pairs == ()
    assert config.paths.to_local("/mnt/nas/a.wav") == "/mnt/nas/a.wav"


def test_bad_broker_names_file_and_key_but_not_the_password(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[daemon]\nbroker = "redis://:hunter2@redis:99999/0"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: [daemon] broker URL 'redis://:***@redis:99999/0'"), text
    assert "port that is not a whole number from 1 to 65535" in text
    assert caught.value.key == "broker"
    assert "hunter2" not in text and "hunter2" not in repr(caught.value.value)


def test_dashboard_and_pictures_are_read(tmp_path: Path) -> None:
    # Given a config that moves the dashboard and turns pictures off
    path = tmp_path / "config.toml"
    path.write_text(
        '[dashboard]\nhost = "0.0.0.0"\nport = 9000\n[output]\npictures = false\n'
        '[[rule]]\nfolder = "/x"\n'
    )
    # When it is loaded
    config = load_config(path)
    # Then both are there, and the rules inherit the pictures setting
    assert (config.dashboard.enabled, config.dashboard.host, config.dashboard.port) == (
        True,
        "0.0.0.0",
        9000,
    )
    assert config.output.pictures is False and config.rules[0].output_settings.pictures is False
    defaults = load_config(tmp_path / "none.toml")
    assert (defaults.dashboard.host, defaults.dashboard.port) == ("127.0.0.1", 8737)
    assert defaults.output.pictures is True
