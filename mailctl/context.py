"""What a command runs against: the home folder, its validated settings, the local server,
and settings writes that the running services pick up at once."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mailctl.errors import CommandError, fail, warn

if TYPE_CHECKING:
    from server.directory import Entry
    from server.settings.models import Server, Settings
    from server.settings.paths import Home

_home_override: str | None = None


def set_home_override(path: str | None) -> None:
    global _home_override
    _home_override = path


def home() -> Home:
    from server.settings.host import adopt_server
    from server.settings.paths import Home

    where = Home.resolve(_home_override or os.environ.get("MAILCTL_HOME") or None)
    adopt_server(where.root)  # on a host of a several-host organization: its server
    return where


def load_settings() -> Settings:
    """The validated settings of home(); also refreshes the fast path's cache."""
    from server.settings import store

    try:
        snap = store.load(home())
    except store.SettingsError as exc:
        fail(exc.message, code=1)
    from mailctl import fast

    fast.write_cache(home(), snap)
    return snap.settings


def local_server(settings: Settings, name: str | None = None) -> tuple[str, Server]:
    """The server `name` (case-insensitive), else the local one: MAILCTL_SERVER, the only
    server, the one whose FQDN is this host's, or the first in the file."""
    from mailctl.views import pick_server

    key = pick_server(settings.Servers, name)
    if key is None:
        wanted = name or os.environ.get("MAILCTL_SERVER")
        fail(f"there is no server {wanted!r}", allowed=", ".join(settings.Servers))
    return key, settings.Servers[key]


def find_mailbox(settings: Settings, identity: str) -> Entry:
    """The directory entry (settings.toml or LDAP, as configured) of the mailbox named or
    addressed `identity`; exit 1 when there is none or the directory cannot be reached."""
    from server.directory import DirectoryUnavailable, find_entry

    try:
        entry = find_entry(settings, identity, home())
    except DirectoryUnavailable as exc:
        fail(f"the directory cannot be reached: {exc}", code=1)
    if entry is None:
        fail(f"there is no mailbox {identity!r}", code=1)
    return entry


def settings_written(where: Home) -> None:
    """Tell the running services of `where` to reload now (they also watch the file, this
    only makes it immediate). Costs a directory listing when nothing runs."""
    try:
        if not any(where.run.glob("*.pid")):
            return
    except OSError:
        return
    from server.control import services as control

    try:
        control.signal_reload(where)
    except Exception as exc:  # noqa: BLE001 - the write succeeded; the watch still reloads
        warn(f"note: could not signal the running services to reload ({exc})")


@contextlib.contextmanager
def edit_settings(what_if: bool = False) -> Iterator[Any]:
    """`server.settings.store.edit(home(), dry_run=what_if)`, then - when something was
    written - signal the running services to reload (see settings_written)."""
    from server.settings import store

    where = home()
    with store.edit(where, dry_run=what_if) as session:
        yield session
    if not what_if and session.changed():
        settings_written(where)
        # Leave the fast path's cache current, so a script's next get- is fast too.
        with contextlib.suppress(CommandError):
            load_settings()
