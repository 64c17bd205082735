"""Run the daemon as a login service: a systemd user unit (Linux) or a launchd agent (macOS)."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from bridge import atomic
from bridge.errors import OutputError, SettingsError

SYSTEMD_NAME = "stembridge.service"
LAUNCHD_LABEL = "io.stembridge.daemon"


@dataclass(frozen=True)
class ServiceFile:
    """A service definition and where it belongs.

    Attributes:
        path: Where the file is installed.
        text: Its content.
        enable: The command that starts it now and at every login.
    """

    path: Path
    text: str
    enable: str


def service_file(
    *, platform: str = sys.platform, home: Path | None = None, config: Path | None = None
) -> ServiceFile:
    """The service definition for this platform, running ``python -m bridge serve``.

    Raises:
        SettingsError: The platform has no supported service manager (Windows).
    """
    home = home or Path.home()
    command = [sys.executable, "-m", "bridge", "serve"]
    if config is not None:
        command += ["--config", str(config.expanduser().resolve())]
    if platform.startswith("linux"):
        text = (
            "[Unit]\n"
            "Description=StemBridge daemon: stems from render folders\n"
            "After=default.target\n\n"
            "[Service]\n"
            f"ExecStart={shlex.join(command)}\n"
            "Restart=on-failure\n"
            "RestartSec=5\n"
            "# SIGTERM: the running job is stopped at its next step and queued again.\n"
            "KillSignal=SIGTERM\n"
            "TimeoutStopSec=60\n\n"
            "[Install]\n"
            "WantedBy=default.target\n"
        )
        return ServiceFile(
            path=home / ".config" / "systemd" / "user" / SYSTEMD_NAME,
            text=text,
            enable="systemctl --user daemon-reload && systemctl --user enable --now stembridge",
        )
    if platform == "darwin":
        arguments = "".join(f"    <string>{escape(part)}</string>\n" for part in command)
        text = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" '
            '"http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n'
            '<plist version="1.0">\n<dict>\n'
            f"  <key>Label</key>\n  <string>{LAUNCHD_LABEL}</string>\n"
            f"  <key>ProgramArguments</key>\n  <array>\n{arguments}  </array>\n"
            "  <key>RunAtLoad</key>\n  <true/>\n"
            "  <key>KeepAlive</key>\n  <dict><key>SuccessfulExit</key><false/></dict>\n"
            "</dict>\n</plist>\n"
        )
        path = home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
        return ServiceFile(
            path=path, text=text, enable=f"launchctl load -w {shlex.quote(str(path))}"
        )
    raise SettingsError(
        f"no service manager is supported on {platform}; run `stembridge serve` from a "
        "startup script instead",
        key="platform",
        value=platform,
    )


def install(service: ServiceFile, *, force: bool = False) -> bool:
    """Write the service file; returns whether anything changed.

    Raises:
        OutputError: A different file is already there and ``force`` is off.
    """
    if service.path.exists():
        if service.path.read_text(encoding="utf-8") == service.text:
            return False
        if not force:
            raise OutputError(
                f"{service.path} already exists with other content; pass --force to replace "
                "it, or --print to see the new one",
                path=service.path,
            )
    service.path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(service.path, service.text.encode("utf-8"))
    return True
