"""Broker URLs: what redis-py would connect with is read the same, the rest is refused,
and the password never shows in a message, a repr or a log line."""

from __future__ import annotations

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
