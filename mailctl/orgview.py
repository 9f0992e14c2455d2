"""Get-OrganizationConfig's row, from a settings dump (dict) and the home: shared by the
full command (mailctl/commands/organization.py) and the fast path (mailctl/fast.py), so it
imports nothing heavy (no pydantic, no typer)."""

from __future__ import annotations

from typing import Any

from mailctl import views


def organization_row(dump: dict[str, Any], home: Any) -> dict[str, Any]:
    """Where this host's settings come from: the organization's document in the directory
    (host.toml names it) and the copy's version, or this home alone."""
    from server.runtime.status import query_control
    from server.settings import host, shared
    from server.settings.names import TOPOLOGY

    config = host.load(home.root)
    this = config.server if config else views.pick_server(dump["Servers"], None)
    live = (query_control(home, TOPOLOGY, this) or {}).get("Details") or {} if this else {}
    return {
        "Name": dump["Organization"].get("Name", "First Organization"),
        "Domain": dump["Organization"]["Domain"],
        "Servers": list(dump["Servers"]),
        "ThisServer": this,
        "SettingsDN": config.settings_dn if config else None,
        "SettingsVersion": shared.read_version(home.root) if config else None,
        "Topology": ("Running" if live else "Stopped") if config else None,
        "LastCopy": live.get("LastCopy"),
        "LastError": live.get("LastError"),
    }
