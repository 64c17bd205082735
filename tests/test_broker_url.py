"""Broker URLs: what redis-py would connect with is read the same, the rest is refused,
and the password never shows in a message, a repr or a log line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.broker.url import BrokerUrl, check_exposure, parse_broker_url
from bridge.cli import EXIT_BROKER, EXIT_USAGE, main
from bridge.errors import SettingsError


def test_host_alone_gets_the_defaults() -> None:
    url = parse_broker_url("redis://gpu-box")
    assert url == BrokerUrl(url="redis://gpu-box", scheme="redis", host="gpu-box", port=6379, db=0)
    assert (url.username, url.password) == (None, None)
    assert url.redacted == "redis://gpu-box"


def test_every_part_is_read() -> None:
    url = parse_broker_url("rediss://studio:s3cr%40t%2F1@redis.studio.lan:6380/2")
    assert (url.scheme, url.host, url.port, url.db) == ("rediss", "redis.studio.lan", 6380, 2)
    assert url.username == "studio"
    assert url.password == "s3cr@t/1"  # percent-decoded
    assert url.redacted == "rediss://studio:***@redis.studio.lan:6380/2"


def test_query_string_is_kept_in_the_url() -> None:
    text = "rediss://:pw@redis:6380/1?ssl_cert_reqs=none"
    url = parse_broker_url(text)
    assert url.url == text
    assert (url.password, url.db) == ("pw", 1)
    assert url.redacted == "rediss://:***@redis:6380/1?ssl_cert_reqs=none"


def test_query_parameters_are_read_like_redis_py() -> None:
    # Given a db and a password in the query (redis-py honours both)
    url = parse_broker_url("redis://redis/0?db=5&password=p%26w")
    # Then the query's db wins over the path's, and the password is hidden when shown
    assert (url.db, url.password) == (5, "p&w")
    assert url.redacted == "redis://redis/0?db=5&password=***"


@pytest.mark.parametrize(
    ("text", "host", "port", "db"),
    [
        ("redis://[::1]:7000/3", "::1", 7000, 3),
        ("redis://10.0.0.7", "10.0.0.7", 6379, 0),
        ("redis://redis_1:6379/", "redis_1", 6379, 0),
        ("redis://h/15/", "h", 6379, 15),
        ("  REDIS://h:1/0  ", "h", 1, 0),
        ("redis://h:65535", "h", 65535, 0),
    ],
)
def test_accepted_forms(text: str, host: str, port: int, db: int) -> None:
    url = parse_broker_url(text)
    assert (url.scheme, url.host, url.port, url.db) == ("redis", host, port, db)


def test_unencoded_at_in_the_password_is_split_at_the_last_at() -> None:
    url = parse_broker_url("redis://:p@ss@redis")
    assert (url.host, url.password) == ("redis", "p@ss")
    assert url.redacted == "redis://:***@redis"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("http://redis:6379", "is not a Redis URL"),
        ("unix:///run/redis.sock", "is not a Redis URL"),
        ("redis:6379", "is not a Redis URL"),
        ("redis://", "has no host"),
        ("redis://:6379/0", "has no host"),
        ("redis://h:0", "port that is not a whole number from 1 to 65535"),
        ("redis://h:65536", "port that is not a whole number from 1 to 65535"),
        ("redis://h:port", "port that is not a whole number from 1 to 65535"),
        ("redis://h:", "port that is not a whole number from 1 to 65535"),
        ("redis://h/-1", "database that is not a whole number 0 or more"),
        ("redis://h/one", "database that is not a whole number 0 or more"),
        ("redis://h/1/2", "database that is not a whole number 0 or more"),
        ("redis://h/0?db=x", "db= that is not a whole number"),
        ("redis://::1", "write an IPv6 address in brackets"),
        ("redis://[nope]:1", "not an IPv6 address"),
        ("redis://my host", "not a host name or IP address"),
        ("redis://h/0#x", "has a '#' part"),
    ],
)
def test_refused_forms_name_the_problem_and_the_form(text: str, problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_broker_url(text)
    message = str(caught.value)
    assert caught.value.key == "broker"
    assert message.startswith(f"broker URL {text!r} "), message
    assert problem in message, message


def test_refusal_shows_the_allowed_form() -> None:
    with pytest.raises(SettingsError, match=r"use redis://\[\[user\]:password@\]host"):
        parse_broker_url("redis://h:99999")


@pytest.mark.parametrize(
    "text",
    [
        "redis://:hunter2@h:99999/0",  # bad port
        "redis://user:hunter2@h/x",  # bad db
        "redis://:hunter2@",  # no host
        "http://:hunter2@h",  # other scheme
        "redis://:hun#ter2@h",  # raw "#" in the password
        "redis://:hun/ter2@h",  # raw "/"
        "redis://:12?hunter2@h",  # raw "?" after digits that look like a port
        "redis://hunter2@h",  # a password without its colon
        "redis://h/0?password=hunter2&db=x",  # password in the query
    ],
)
def test_the_password_never_appears_in_an_error(text: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_broker_url(text)
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(caught.value.value)
    assert caught.value.__cause__ is None or "hunter2" not in str(caught.value.__cause__)


def test_the_password_stays_out_of_repr_and_str() -> None:
    url = parse_broker_url("redis://user:hunter2@h/0")
    assert "hunter2" not in repr(url)
    assert str(url) == "redis://user:***@h/0"
    assert url.password == "hunter2"
    assert url.url == "redis://user:hunter2@h/0"  # what connects


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LocalHost", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("[::1]", True),
        ("[::ffff:127.0.0.1]", True),
        ("redis.localhost", True),
        ("128.0.0.1", False),
        ("10.0.0.1", False),
        ("[::2]", False),
        ("gpu-box", False),
        ("localhost.studio.lan", False),
    ],
)
def test_is_loopback_reads_the_text_only(host: str, loopback: bool) -> None:
    assert parse_broker_url(f"redis://{host}:6379/0").is_loopback is loopback


@pytest.mark.parametrize(
    "text",
    [
        "redis://gpu-box",
        "rediss://studio:s3cr%40t%2F1@redis.studio.lan:6380/2?ssl_cert_reqs=none",
        "redis://:p@ss@redis/4",
        "redis://[::1]:7000/3",
        "redis://redis/0?db=5&password=p%26w",
    ],
)
def test_reads_what_redis_py_would_connect_with(text: str) -> None:
    connection = pytest.importorskip("redis.connection")
    # Given what redis-py makes of the URL the daemon and workers connect with
    expected = connection.parse_url(parse_broker_url(text).url)
    # Then the parsed parts agree with it (redis-py leaves out what is at its default)
    url = parse_broker_url(text)
    assert url.host == expected["host"]
    assert url.port == expected.get("port", 6379)
    assert url.db == expected.get("db", 0)
    assert url.username == expected.get("username")
    assert url.password == expected.get("password")


@pytest.mark.parametrize(
    ("url", "insecure", "refused"),
    [
        ("redis://10.0.0.5:6379/0", False, True),
        ("redis://10.0.0.5:6379/0", True, False),
        ("redis://:pw@10.0.0.5:6379/0", False, False),
        ("rediss://redis.lan:6380/0", False, True),
        ("redis://127.0.0.1:6379/0", False, False),
        ("redis://localhost:6379/0", False, False),
    ],
)
def test_password_less_redis_beyond_loopback_needs_insecure(
    url: str, insecure: bool, refused: bool
) -> None:
    parsed = parse_broker_url(url)
    if refused:
        with pytest.raises(SettingsError, match="has no password and is not on this machine"):
            check_exposure(parsed, insecure=insecure)
    else:
        check_exposure(parsed, insecure=insecure)


def test_commands_refuse_an_open_remote_broker(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["workers"], ["worker", "--device", "cpu"], ["serve"]):
        assert main([*command, "--broker", "redis://203.0.113.9:6379/0"]) == EXIT_USAGE
        assert "pass --insecure if the network is trusted" in capsys.readouterr().err
    # With --insecure the URL is allowed (and this documentation address cannot be reached)
    code = main(["workers", "--broker", "redis://203.0.113.9:6379/0", "--insecure"])
    assert code == EXIT_BROKER
    assert "cannot use the broker at redis://203.0.113.9:6379/0" in capsys.readouterr().err


# --- query parameters: only what redis-py's connection takes ----------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("redis://h?foo=1", "has a parameter 'foo' that redis-py does not know"),
        ("redis://h?foo", "has a parameter 'foo' that redis-py does not know"),
        ("redis://h?ssl_ca_certs=/ca.pem", "has ssl_ca_certs=, which only TLS uses"),
        ("redis://h?ssl_cert_reqs=none", "has ssl_cert_reqs=, which only TLS uses"),
        ("redis://h?db=1&db=2", "gives db= twice"),
        ("redis://h?db=", "has db= without a value"),
        ("redis://h?socket_timeout=soon", "socket_timeout= that is not a number of seconds"),
        ("redis://h?socket_timeout=0", "socket_timeout= that is not a number of seconds"),
        ("redis://h?socket_timeout=nan", "socket_timeout= that is not a number of seconds"),
        ("redis://h?health_check_interval=-1", "health_check_interval= that is not a whole"),
        ("redis://h?socket_keepalive=maybe", "socket_keepalive= that is not true or false"),
        ("rediss://h?ssl_cert_reqs=NONE", "ssl_cert_reqs= that is not none, optional or required"),
        ("redis://h?client_name=gpu%201", "client_name= that is not a name without blanks"),
        ("redis://a..b", "has a host name with an empty part"),
        ("redis://.", "has a host name with an empty part"),
        ("redis://" + "a" * 64, "one longer than 63 characters"),
        ("redis://" + "a." * 127 + "a", "(253 in all)"),
    ],
)
def test_refused_query_parameters_and_host_names(text: str, problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_broker_url(text)
    assert caught.value.key == "broker"
    assert str(caught.value).startswith(f"broker URL {text!r} ")
    assert problem in str(caught.value), str(caught.value)


def test_a_password_parameter_in_another_case_is_refused_and_hidden() -> None:
    # Given "Password" (redis-py only knows "password", and would crash on this one)
    with pytest.raises(SettingsError) as caught:
        parse_broker_url("redis://h:6379/0?Password=hunter2")
    # Then it is refused by name, the value hidden, the allowed names listed
    message = str(caught.value)
    assert message.startswith("broker URL 'redis://h:6379/0?Password=***' has a parameter")
    assert "'Password' that redis-py does not know" in message
    assert "use only these (in lower case): db, username, password" in message
    assert "hunter2" not in message


# One accepted value for every parameter the parser lets through.
_SAMPLES = {
    "db": "3",
    "username": "studio",
    "password": "p&w",
    "client_name": "gpu-1",
    "socket_timeout": "2.5",
    "socket_connect_timeout": "5",
    "socket_keepalive": "yes",
    "retry_on_timeout": "false",
    "health_check_interval": "30",
    "ssl_cert_reqs": "required",
    "ssl_ca_certs": "/etc/ssl/ca.pem",
    "ssl_ca_path": "/etc/ssl/certs",
    "ssl_certfile": "/etc/ssl/client.pem",
    "ssl_keyfile": "/etc/ssl/client.key",
    "ssl_password": "k",
    "ssl_check_hostname": "true",
}


def test_every_accepted_parameter_is_one_redis_py_connects_with() -> None:
    redis = pytest.importorskip("redis")
    from urllib.parse import urlencode

    from bridge.broker.url import QUERY

    # Given a URL with every parameter the parser accepts
    assert set(_SAMPLES) == set(QUERY)
    url = parse_broker_url("rediss://redis.lan:6380/0?" + urlencode(_SAMPLES))
    # Then redis-py builds a connection from it (an unknown keyword would raise here)
    connection = redis.Redis.from_url(url.url).connection_pool.make_connection()
    assert (connection.host, connection.port, connection.db) == ("redis.lan", 6380, 3)
    assert url.redacted.count("***") == 2  # password= and ssl_password=


@pytest.mark.parametrize(
    "query", ["?Password=x", "?foo=1", "?ssl_ca_certs=/ca.pem", "?socket_timeout=soon"]
)
def test_commands_refuse_a_bad_query_in_one_line(
    query: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a broker URL whose query redis-py would crash on at the first connection
    for command in (["workers"], ["worker", "--device", "cpu"]):
        # When a command is given it, Then it is a usage error in one line, no traceback
        assert main([*command, "--broker", f"redis://127.0.0.1:1/0{query}"]) == EXIT_USAGE
        err = capsys.readouterr().err
        assert err.startswith("stembridge: error: broker URL 'redis://127.0.0.1:1/0"), err
        assert err.count("\n") == 1


def test_with_password_logs_in_as_redis_py_reads_it() -> None:
    connection = pytest.importorskip("redis.connection")
    # Given a URL with a user but no password, and a password with URL characters
    url = parse_broker_url("redis://studio:@redis.lan:6380/2?db=3").with_password("p@ss/w#?%")
    # Then redis-py reads back the same user, password and database
    parts = connection.parse_url(url.url)
    assert (parts["username"], parts["password"], parts["db"]) == ("studio", "p@ss/w#?%", 3)
    assert url.password == "p@ss/w#?%"
    assert url.redacted == "redis://studio:***@redis.lan:6380/2?db=3"
    assert "p@ss" not in repr(url)


# --- the password from a file or the environment, not the command line ------------------


def password_file(folder: Path, text: str, mode: int = 0o600) -> Path:
    file = folder / "broker-password"
    file.write_text(text, encoding="utf-8")
    file.chmod(mode)
    return file


def test_a_password_file_gives_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a user-only password file (with the line break an editor adds)
    file = password_file(tmp_path, "hunter2\n")
    # When a command uses it with a broker beyond loopback that has no password in its URL
    code = main(["workers", "--broker", "redis://0.0.0.0:1/0", "--broker-password-file", str(file)])
    # Then the URL logs in with it (not refused as password-less; nothing listens there)
    assert code == EXIT_BROKER
    err = capsys.readouterr().err
    assert "cannot use the broker at redis://:***@0.0.0.0:1/0" in err, err
    assert "hunter2" not in err


def test_the_environment_gives_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STEMBRIDGE_BROKER_PASSWORD", "hunter2")
    assert main(["workers", "--broker", "redis://0.0.0.0:1/0"]) == EXIT_BROKER
    err = capsys.readouterr().err
    assert "cannot use the broker at redis://:***@0.0.0.0:1/0" in err, err
    assert "hunter2" not in err and "visible" not in err


@pytest.mark.parametrize(
    ("text", "mode", "problem"),
    [
        ("hunter2\n", 0o644, "other users may read this broker password file; run: chmod 600"),
        ("hunter2\n", 0o604, "other users may read this broker password file; run: chmod 600"),
        ("", 0o600, "the broker password file is empty"),
        ("\n", 0o600, "the broker password file is empty"),
        ("hunter2\nhunter2\n", 0o600, "has more than one line"),
        ("h" * 5000, 0o600, "longer than 4096 bytes for a broker password file"),
    ],
)
def test_a_bad_password_file_is_refused_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, mode: int, problem: str
) -> None:
    file = password_file(tmp_path, text, mode)
    code = main(["workers", "--broker", "redis://0.0.0.0:1/0", "--broker-password-file", str(file)])
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"stembridge: error: {file}: "), err
    assert problem in err and "hunter2" not in err
    assert file.read_text(encoding="utf-8") == text  # left as it was


def test_a_missing_or_undecodable_password_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope"
    assert main(["workers", "--broker", "redis://h", "--broker-password-file", str(missing)]) == 2
    assert f"{missing}: the broker password file cannot be read (No such file or directory)" in (
        capsys.readouterr().err
    )
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe")
    binary.chmod(0o600)
    assert main(["workers", "--broker", "redis://h", "--broker-password-file", str(binary)]) == 2
    assert f"{binary}: the broker password file is not UTF-8 text" in capsys.readouterr().err


def test_two_passwords_or_a_file_without_a_broker_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = password_file(tmp_path, "hunter2")
    url = "redis://:other@127.0.0.1:1/0"
    assert main(["workers", "--broker", url, "--broker-password-file", str(file)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "the broker URL redis://:***@127.0.0.1:1/0 holds a password and" in err, err
    assert "take the password out of the URL" in err and "other" not in err.split("error:")[1]
    assert main(["workers", "--broker-password-file", str(file)]) == EXIT_USAGE
    assert f"--broker-password-file {file} is given but no broker" in capsys.readouterr().err


def test_a_password_on_the_command_line_works_with_one_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["workers", "--broker", "redis://:hunter2@127.0.0.1:1/0"])
    assert code == EXIT_BROKER  # still used: nothing listens on port 1
    err = capsys.readouterr().err
    assert err.count("visible to every user of this machine (ps)") == 1, err
    assert "--broker-password-file" in err and "STEMBRIDGE_BROKER_PASSWORD" in err
    assert "hunter2" not in err


@pytest.mark.parametrize(("mode", "warned"), [(0o644, True), (0o600, False)])
def test_a_config_holding_the_password_warns_when_others_may_read_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: int, warned: bool
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[daemon]\nbroker = "redis://:hunter2@127.0.0.1:1/0"\n', encoding="utf-8")
    config.chmod(mode)
    assert main(["workers", "--config", str(config)]) == EXIT_BROKER
    err = capsys.readouterr().err
    assert (f"{config} holds the broker password and other users may read it" in err) is warned
    assert (f"run: chmod 600 '{config}'" in err) is warned
    assert "hunter2" not in err
