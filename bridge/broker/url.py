"""The broker's address: a ``redis://`` or ``rediss://`` URL, checked once at start.

The URL is read the way redis-py reads it (that is what connects with it): user
name and password percent-decoded; ``username``, ``password`` and ``db`` also
accepted in the query string, the user part winning for the first two and the
query winning for ``db``. redis-py hands every other query parameter to its
connection as a keyword, so one it does not know (``?foo=1``, ``?Password=x``, or
``?ssl_ca_certs=`` on a ``redis://`` URL, which has no TLS) would end the program
with a traceback at the first connection: only the parameters in :data:`QUERY` are
accepted, the ``ssl_*`` ones only with ``rediss://``, each value checked. A URL is
refused here, naming the problem, rather than failing later with a connection
error that does not say why.

Passwords never reach a message or a log: :attr:`BrokerUrl.redacted` (also its
``str``) shows ``***`` instead, and the ``repr`` leaves the URL and password out.
A password need not be in the URL at all: :func:`read_password_file` and
:meth:`BrokerUrl.with_password` give it from a file (or the environment), since a
command line is visible to every user of the machine.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn
from urllib.parse import parse_qsl, quote, unquote

from bridge.errors import SettingsError
from bridge.permissions import readable_by_others

SCHEMES = ("redis", "rediss")
#: A password longer than this is not what a password file holds (a wrong file).
MAX_PASSWORD_BYTES = 4096
DEFAULT_PORT = 6379
DEFAULT_DB = 0
FORM = "redis://[[user]:password@]host[:port][/db] (rediss:// for TLS)"

# Host names as Redis deployments use them (DNS names, Docker/Kubernetes service names
# with "_"), or IPv4 addresses; IPv6 goes in brackets and is checked by ipaddress.
_HOST_NAME = re.compile(r"[A-Za-z0-9._~-]+")
_DIGITS = re.compile(r"[0-9]+")
# Redis keeps a database index in a C int; longer digit strings are refused before int().
_MAX_DB = 2**31 - 1
# DNS limits, which the system's resolver enforces with an exception, not an error.
_MAX_LABEL = 63
_MAX_HOST_NAME = 253
_SECONDS = re.compile(r"[0-9]{1,5}(\.[0-9]{1,6})?")
_BOOLEANS = ("true", "false", "yes", "no", "1", "0")
_CERT_REQS = ("none", "optional", "required")

#: The query parameters a broker URL may carry: name -> what its value must be. Those
#: starting with ``ssl_`` are for ``rediss://`` only.
QUERY: dict[str, str] = {
    "db": f"a whole number 0 or more up to {_MAX_DB} (like db=0)",
    "username": "a user name",
    "password": "a password",
    "client_name": "a name without blanks",
    "socket_timeout": "a number of seconds above 0 (like 10)",
    "socket_connect_timeout": "a number of seconds above 0 (like 5)",
    "socket_keepalive": "true or false",
    "retry_on_timeout": "true or false",
    "health_check_interval": "a whole number of seconds (like 30)",
    "ssl_cert_reqs": "none, optional or required",
    "ssl_ca_certs": "the path of a CA certificate file (PEM)",
    "ssl_ca_path": "the path of a folder of CA certificates",
    "ssl_certfile": "the path of this client's certificate (PEM)",
    "ssl_keyfile": "the path of this client's private key (PEM)",
    "ssl_password": "the password of the private key",
    "ssl_check_hostname": "true or false",
}


@dataclass(frozen=True)
class BrokerUrl:
    """Where the studio's Redis is and how to log in.

    Build it with :func:`parse_broker_url`.

    Attributes:
        url: The URL as given (surrounding blanks removed, scheme in lower case); this is
            what connects. Holds the password: show :attr:`redacted` instead.
        scheme: ``redis``, or ``rediss`` for TLS.
        host: Host name or IP address (an IPv6 address without its brackets).
        port: TCP port, 6379 unless given.
        db: Redis database number, 0 unless given.
        username: ACL user name, percent-decoded; ``None`` for the default user.
        password: Password, percent-decoded; ``None`` when none is given.
    """

    url: str = field(repr=False)
    scheme: str
    host: str
    port: int = DEFAULT_PORT
    db: int = DEFAULT_DB
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def redacted(self) -> str:
        """The URL with its password replaced by ``***``, for logs and messages."""
        return _redact(self.url)

    @property
    def is_loopback(self) -> bool:
        """Whether the host is this machine (``localhost``, 127.0.0.0/8, ``::1``).

        Decided from the text alone, without DNS lookups: a name that merely resolves
        to 127.0.0.1 does not count.
        """
        host = self.host.lower()
        if host.endswith("."):
            host = host[:-1]
        if host == "localhost" or host.endswith(".localhost"):
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return address.ipv4_mapped.is_loopback
        return address.is_loopback

    def with_password(self, password: str) -> BrokerUrl:
        """This URL (one without a password) logging in with ``password``, which came
        from a file or the environment instead of the command line, where every user
        of the machine can read it (``ps``)."""
        scheme, _, rest = self.url.partition("://")
        end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
        userinfo, _, hostport = rest[:end].rpartition("@")
        user = userinfo.partition(":")[0]
        url = f"{scheme}://{user}:{quote(password, safe='')}@{hostport}{rest[end:]}"
        return dataclasses.replace(self, url=url, password=password)

    def __str__(self) -> str:
        return self.redacted


def parse_broker_url(text: str) -> BrokerUrl:
    """Check and split a broker URL.

    Args:
        text: ``redis://[[user]:password@]host[:port][/db]`` or the same with
            ``rediss://`` (TLS), optionally followed by a query string such as
            ``?ssl_cert_reqs=none`` (kept in :attr:`BrokerUrl.url`). Special
            characters in the user name or password are percent-encoded
            (``@`` as ``%40``, ``/`` as ``%2F``, ``#`` as ``%23``).

    Returns:
        The parsed URL.

    Raises:
        SettingsError: (``key="broker"``) Another scheme, no host, a port outside 1 to
            65535, a database that is not a whole number 0 or more, or a part that
            cannot be read. The message shows the URL with its password hidden.
    """
    text = text.strip()
    scheme, separator, rest = text.partition("://")
    if not separator or scheme.lower() not in SCHEMES:
        _refuse(text, "is not a Redis URL (it must start with redis:// or rediss://)")
    scheme = scheme.lower()
    url = f"{scheme}://{rest}"

    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    if "@" in tail:
        # A password with a raw "/", "?" or "#" splits the URL in the wrong place.
        _refuse(
            url,
            "has an '@' after the host",
            "percent-encode '@', '/', '?' and '#' in the user name and password "
            f"(%40, %2F, %3F, %23); the form is {FORM}",
        )
    if "#" in tail:
        _refuse(
            url, "has a '#' part", f"percent-encode '#' in a password as %23; the form is {FORM}"
        )
    path, _, query = tail.partition("?")

    userinfo, at, hostport = authority.rpartition("@")
    username = password = None
    if at:
        raw_user, colon, raw_password = userinfo.partition(":")
        if not colon:
            # redis-py would take it as a user name and fail to log in; it is most
            # likely a password without its colon.
            _refuse(
                url,
                "has a user part without a ':'",
                "write the password after a colon: redis://:password@host "
                "(or redis://user:password@host)",
            )
        username = unquote(raw_user) or None
        password = unquote(raw_password) or None

    host, port = _host_and_port(url, hostport)
    db = DEFAULT_DB
    if path not in ("", "/"):
        number = path[1:].removesuffix("/")
        found = _whole_number(number, _MAX_DB)
        if found is None:
            _refuse(
                url,
                f"has a database that is not a whole number 0 or more up to {_MAX_DB} (like /0)",
            )
        db = found

    values = _query(url, scheme, query)
    if "db" in values:
        db = int(values["db"])
    if username is None and "username" in values:
        username = values["username"]
    if password is None and "password" in values:
        password = values["password"]

    return BrokerUrl(
        url=url,
        scheme=scheme,
        host=host,
        port=port,
        db=db,
        username=username,
        password=password,
    )


def _query(url: str, scheme: str, query: str) -> dict[str, str]:
    """The query's parameters, each known to redis-py's connection, given once, with a
    value of the right form."""
    values: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in QUERY:
            _refuse(
                url,
                f"has a parameter {name!r} that redis-py does not know",
                f"use only these (in lower case): {', '.join(QUERY)}",
            )
        if name.startswith("ssl_") and scheme != "rediss":
            _refuse(url, f"has {name}=, which only TLS uses", "start the URL with rediss://")
        if name in values:
            _refuse(url, f"gives {name}= twice", "keep one")
        if not value:
            _refuse(url, f"has {name}= without a value", f"give {QUERY[name]}, or leave it out")
        if not _query_value_allowed(name, value):
            _refuse(url, f"has a {name}= that is not {QUERY[name]}", "fix it, or leave it out")
        values[name] = value
    return values


def _query_value_allowed(name: str, value: str) -> bool:
    if name == "db":
        return _whole_number(value, _MAX_DB) is not None
    if name == "health_check_interval":
        return _whole_number(value, 86400) is not None
    if name in ("socket_timeout", "socket_connect_timeout"):
        return _SECONDS.fullmatch(value) is not None and float(value) > 0
    if name in ("socket_keepalive", "retry_on_timeout", "ssl_check_hostname"):
        return value.lower() in _BOOLEANS
    if name == "ssl_cert_reqs":
        return value in _CERT_REQS
    if name == "client_name":
        return value.isprintable() and " " not in value
    return True  # names, passwords and paths: whatever the user wrote


def _host_and_port(url: str, hostport: str) -> tuple[str, int]:
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            _refuse(url, "has a '[' without its ']'", "write an IPv6 host as [::1]")
        host, after = hostport[1:close], hostport[close + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            _refuse(url, "has a bracketed host that is not an IPv6 address (like [::1])")
        if after and not after.startswith(":"):
            _refuse(url, "has text after the IPv6 address", f"use {FORM}")
        port_text = after[1:] if after else None
    else:
        if hostport.count(":") > 1:
            _refuse(
                url,
                "has more than one ':' after the host",
                "write an IPv6 address in brackets, like redis://[::1]:6379/0",
            )
        host, colon, port_text_raw = hostport.partition(":")
        port_text = port_text_raw if colon else None
        if not host:
            _refuse(url, "has no host", f"name the Redis machine: {FORM}")
        if not _HOST_NAME.fullmatch(host):
            _refuse(
                url,
                "has a host that is not a host name or IP address",
                "use letters, digits, '.', '-' and '_' (or [IPv6])",
            )
        labels = host.removesuffix(".").split(".")
        if len(host) > _MAX_HOST_NAME or not all(0 < len(part) <= _MAX_LABEL for part in labels):
            _refuse(
                url,
                f"has a host name with an empty part or one longer than {_MAX_LABEL} characters",
                f"use names of 1 to {_MAX_LABEL} characters between the dots "
                f"({_MAX_HOST_NAME} in all)",
            )
    if port_text is None:
        return host, DEFAULT_PORT
    port = _whole_number(port_text, 65535)
    if port is None or port < 1:
        _refuse(url, "has a port that is not a whole number from 1 to 65535 (Redis: 6379)")
    return host, port


def _whole_number(text: str, highest: int) -> int | None:
    """``text`` as a number from 0 to ``highest``; ``None`` when it is not one (never
    calling ``int`` on thousands of digits, which Python refuses with a ValueError)."""
    if not _DIGITS.fullmatch(text) or len(text.lstrip("0")) > len(str(highest)):
        return None
    number = int(text)
    return number if number <= highest else None


def _refuse(text: str, problem: str, fix: str = f"use {FORM}") -> NoReturn:
    shown = _redact(text)
    raise SettingsError(f"broker URL {shown!r} {problem}; {fix}", key="broker", value=shown)


def _redact(text: str) -> str:
    """Hide the password, assuming the worst about where the user part ends.

    Everything up to the last ``@`` counts as the user part (a password may hold a
    raw ``/``, ``?`` or ``#``); query parameters named like a password are hidden too.
    """
    scheme, separator, rest = text.partition("://")
    if not separator:
        scheme, rest = "", text
    at = rest.rfind("@")
    if at >= 0:
        user, colon, _ = rest[:at].partition(":")
        rest = (f"{user}:***@" if colon else "***@") + rest[at + 1 :]
    head, question, query = rest.partition("?")
    if question:
        query, hash_mark, fragment = query.partition("#")
        query = "&".join(_redact_parameter(part) for part in query.split("&"))
        rest = f"{head}?{query}{hash_mark}{fragment}"
    return f"{scheme}{separator}{rest}"


def _redact_parameter(part: str) -> str:
    name, equals, _ = part.partition("=")
    if equals and "password" in unquote(name.replace("+", " ")).lower():
        return f"{name}=***"
    return part


def read_password_file(file: Path) -> str:
    """The broker password kept in ``file`` (``~`` expanded): its text, without a final
    line break.

    Raises:
        SettingsError: (``key="broker_password_file"``) The file cannot be read, other
            users may read it, it is empty, has more than one line, is not UTF-8 or is
            longer than :data:`MAX_PASSWORD_BYTES`. The message never holds the password.
    """

    file = file.expanduser()

    def refuse(problem: str, fix: str) -> NoReturn:
        raise SettingsError(
            f"{file}: {problem}; {fix}", key="broker_password_file", value=str(file)
        )

    if readable_by_others(file):
        refuse("other users may read this broker password file", f"run: chmod 600 '{file}'")
    try:
        with file.open("rb") as stream:
            raw = stream.read(MAX_PASSWORD_BYTES + 1)
    except OSError as exc:
        refuse(f"the broker password file cannot be read ({exc.strerror})", "check the path")
    if len(raw) > MAX_PASSWORD_BYTES:
        refuse(
            f"longer than {MAX_PASSWORD_BYTES} bytes for a broker password file",
            "check that it is the right file (it holds the password alone)",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        refuse("the broker password file is not UTF-8 text", "write the password as text")
    password = text.removesuffix("\n").removesuffix("\r")
    if not password:
        refuse("the broker password file is empty", "write the Redis password in it")
    if "\n" in password or "\r" in password:
        refuse(
            "the broker password file has more than one line",
            "write the password alone on one line",
        )
    return password


def check_exposure(url: BrokerUrl, *, insecure: bool) -> None:
    """Refuse a Redis beyond this machine that takes no password, unless told it is fine.

    Whoever can reach such a Redis can read every job (file paths) and queue work.

    Raises:
        SettingsError: The URL has no password and its host is not loopback, and
            ``insecure`` is not set.
    """
    if url.password or url.is_loopback or insecure:
        return
    raise SettingsError(
        f"the broker {url.redacted} has no password and is not on this machine: anyone who "
        "can reach it could read and queue jobs; set a Redis password and give it with "
        "--broker-password-file FILE or $STEMBRIDGE_BROKER_PASSWORD, or pass --insecure if "
        "the network is trusted",
        key="broker",
        value=url.redacted,
    )
