"""Who may read the dashboard and who may change jobs through it.

The rules, checked for every request by :class:`Guard`:

* **Host header.** It must name the address the dashboard is bound to (or, on
  loopback, ``localhost``/``127.0.0.1``/``[::1]``) with its port; anything else is
  refused, which defeats DNS rebinding (a hostile page whose name suddenly points
  at 127.0.0.1 still sends its own name). Bound to every address (``0.0.0.0``,
  ``::``), any name with the right port is taken, since the machine has many
  names there: every request then needs the token anyway.
* **Reads** (the JSON API and stem files): free on loopback; off loopback they need
  the token, as ``Authorization: Bearer <token>`` or the session cookie that
  signing in with the token sets (HttpOnly, SameSite=Strict).
* **Changes** (retry, cancel: POST only) need all of: an ``Origin`` (or, without
  one, a ``Referer``) that is the dashboard's own origin; the per-process CSRF
  secret in the ``X-StemBridge-CSRF`` header (pages get it from ``/api/session``,
  which other sites cannot read: no CORS); and, once a token exists, the token
  (bearer or session). On loopback without a token the first two are what stop a
  web page in the user's browser from cancelling jobs.

The token itself is never stored: ``<state dir>/dashboard-token.sha256`` holds its
SHA-256 (mode 0600), read on every check, so ``stembridge dashboard token`` rotates
it (and ends existing sessions) without restarting the daemon.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

from bridge import atomic
from bridge.errors import ConfigError
from bridge.permissions import private_folder

TOKEN_FILE = "dashboard-token.sha256"
CSRF_HEADER = "x-stembridge-csrf"
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
_EVERY_ADDRESS = ("0.0.0.0", "::")


def token_path(state_dir: Path) -> Path:
    """Where the token's hash lives."""
    return state_dir / TOKEN_FILE


def create_token(state_dir: Path) -> str:
    """Make a new token (replacing any earlier one) and store its hash, user-only.

    Returns:
        The token: shown once, never stored.
    """
    token = secrets.token_urlsafe(32)
    try:
        private_folder(state_dir)  # the hash lets anyone who can replace it in
    except PermissionError as exc:
        raise ConfigError(exc.strerror or str(exc), key="state_dir", value=str(state_dir)) from exc
    atomic.write_bytes(token_path(state_dir), (_digest(token) + "\n").encode(), mode=0o600)
    return token


def stored_digest(state_dir: Path) -> str | None:
    """The stored token hash, or ``None`` when no token was made."""
    try:
        return token_path(state_dir).read_text(encoding="ascii").strip() or None
    except FileNotFoundError:
        return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` only reaches this machine."""
    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_binding(host: str, state_dir: Path) -> None:
    """Refuse to listen beyond loopback before a token exists.

    Raises:
        ConfigError: ``host`` is not loopback and there is no token.
    """
    if not is_loopback(host) and stored_digest(state_dir) is None:
        raise ConfigError(
            f"the dashboard would listen on {host}, beyond this machine, without a token; "
            "run `stembridge dashboard token` first (it prints the token to sign in with), "
            "or bind it to 127.0.0.1",
            key="host",
            value=host,
        )


class Guard:
    """Applies the rules of this module for one running dashboard.

    Args:
        host: The address the dashboard is bound to.
        port: Its port.
        state_dir: Where the token hash is.
    """

    def __init__(self, *, host: str, port: int, state_dir: Path) -> None:
        self.loopback = is_loopback(host)
        self.cookie = f"stembridge_session_{port}"
        self.csrf = secrets.token_urlsafe(32)
        self._state_dir = state_dir
        self._any_name = host in _EVERY_ADDRESS
        names = [*_LOOPBACK_NAMES, host] if self.loopback else [host]
        bracketed = [f"[{name}]" if ":" in name and "[" not in name else name for name in names]
        self._hosts = {f"{name}:{port}".lower() for name in bracketed}
        self._port_suffix = f":{port}"
        self._sessions: dict[str, str] = {}  # session id -> the token hash it was made with
        self._lock = threading.Lock()

    def host_allowed(self, host_header: str | None) -> bool:
        """Whether the request was addressed to this dashboard (see the module docstring)."""
        if host_header is None:
            return False
        if self._any_name:
            return host_header.endswith(self._port_suffix)
        return host_header.lower() in self._hosts

    def token_exists(self) -> bool:
        """Whether a token has been made."""
        return stored_digest(self._state_dir) is not None

    def signed_in(self, *, authorization: str | None, session: str | None) -> bool:
        """Whether the request carries the current token, as bearer or session."""
        digest = stored_digest(self._state_dir)
        if digest is None:
            return False
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(_digest(value.strip()), digest):
            return True
        if session is None:
            return False
        with self._lock:
            made_with = self._sessions.get(session)
        return made_with is not None and hmac.compare_digest(made_with, digest)

    def may_read(self, *, authorization: str | None, session: str | None) -> bool:
        """Reads are free on loopback, and need the token elsewhere."""
        return self.loopback or self.signed_in(authorization=authorization, session=session)

    def may_change(
        self,
        *,
        host_header: str,
        origin: str | None,
        referer: str | None,
        csrf: str | None,
        authorization: str | None,
        session: str | None,
    ) -> str | None:
        """Why a state-changing request is refused, or ``None`` when it is allowed."""
        if not self.same_origin(host_header=host_header, origin=origin, referer=referer):
            return "the request does not come from the dashboard's own page (Origin/Referer)"
        if csrf is None or not hmac.compare_digest(_bytes(csrf), self.csrf.encode()):
            return "the request lacks the dashboard's CSRF header; reload the page"
        token_needed = self.token_exists() or not self.loopback
        if token_needed and not self.signed_in(authorization=authorization, session=session):
            return "sign in with the dashboard token (stembridge dashboard token)"
        return None

    def same_origin(self, *, host_header: str, origin: str | None, referer: str | None) -> bool:
        """Whether Origin (or, without it, Referer) is ``http://<host header>``."""
        source = origin if origin is not None else referer
        if not source or source == "null":
            return False
        try:
            parts = urlsplit(source)
        except ValueError:  # "http://[::1": not a URL, so not the dashboard's
            return False
        return parts.scheme == "http" and parts.netloc.lower() == host_header.lower()

    def sign_in(self, token: str) -> str | None:
        """A new session id for a correct token, ``None`` for a wrong one."""
        digest = stored_digest(self._state_dir)
        if digest is None or not hmac.compare_digest(_digest(token), digest):
            return None
        session = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[session] = digest
        return session


def dashboard_url(host: str, port: int) -> str:
    """Where a browser opens the dashboard bound to ``host:port``.

    Bound to every address, it names this machine (any of its names is taken there).
    """
    if host in _EVERY_ADDRESS:
        host = socket.gethostname()
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _bytes(text: str) -> bytes:
    # Headers and JSON may hold any character, even a lone surrogate; none is in a secret.
    return text.encode("utf-8", "surrogatepass")


def _digest(token: str) -> str:
    return hashlib.sha256(_bytes(token)).hexdigest()
