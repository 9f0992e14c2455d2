"""What is this host's alone when an organization spans several hosts (host.toml).

settings.toml is the organization's document: on a host that joined an organization it is
a copy of the one kept in the directory (server.settings.shared). Which server this host
is, and where that document lives, cannot be in it - every host has the same copy - so
they are in host.toml beside it, which is never shared. Without host.toml the home is a
one-host install and nothing here applies.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

HOST_FILE = "host.toml"
SERVER_ENV = "MAILCTL_SERVER"


@dataclass(frozen=True)
class HostConfig:
    server: str  # this host's server (a key of settings.toml's Servers)
    settings_dn: str  # the directory entry that holds the organization's settings.toml


class HostFileError(Exception):
    pass


def host_file(root: Path) -> Path:
    return root / HOST_FILE


def load(root: Path) -> HostConfig | None:
    """host.toml of the home at `root`; None on a one-host install."""
    path = host_file(root)
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise HostFileError(f"cannot read {path}: {exc}") from None
    server, dn = data.get("Server"), data.get("SettingsDN")
    if not isinstance(server, str) or not server or not isinstance(dn, str) or not dn:
        raise HostFileError(f"{path}: Server and SettingsDN are both needed")
    return HostConfig(server, dn)


def dump(config: HostConfig) -> str:
    import tomlkit

    doc = tomlkit.document()
    doc.add(tomlkit.comment("This host's part of a mailctl organization; never shared."))
    doc.add(tomlkit.comment("Server: which server of settings.toml this host runs."))
    doc.add(tomlkit.comment("SettingsDN: the directory entry settings.toml is a copy of."))
    doc["Server"] = config.server
    doc["SettingsDN"] = config.settings_dn
    return tomlkit.dumps(doc)


def adopt_server(root: Path) -> None:
    """Make this host's server the default of the process (what MAILCTL_SERVER does), so
    every command without -Server means this host's server. An explicit MAILCTL_SERVER wins;
    an unreadable host.toml is reported by the commands that need it."""
    if os.environ.get(SERVER_ENV):
        return
    try:
        config = load(root)
    except HostFileError:
        return
    if config is not None:
        os.environ[SERVER_ENV] = config.server
