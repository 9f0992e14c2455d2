"""The fast path: get- commands with `--output json` without typer, rich or pydantic.

Validating settings.toml costs ~150 ms of imports; shell scripts call get- commands in loops.
Every full run that loads the settings (and every settings write) leaves the validated dump
in run/settings.cache.json, keyed by the sha256 of settings.toml and a fingerprint of the
code that validates it. When that key still matches, the answer is computed from the cached
dump by mailctl.views, the same code the full path uses. Anything unusual (other commands or
options, an abbreviated parameter, no cache, a stale key, no match for an identity) returns
None and the full command line handles it, errors included.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mailctl import views

CACHE_NAME = "settings.cache.json"


class Read:
    """A get- command the fast path answers: its view, and whether it takes a positional
    identity (-Identity) and --server. (Not a dataclass: importing dataclasses costs more
    than the whole answer.)"""

    __slots__ = ("answer", "identity", "server", "flags", "live", "identity_word")

    def __init__(
        self,
        # (cached, given) -> rows; with live=True also the home: (cached, given, home)
        answer: Callable[..., Any | None],
        *,
        identity: bool = False,
        server: bool = True,
        flags: tuple[str, ...] = (),
        live: bool = False,
        identity_word: str = "identity",
    ) -> None:
        self.answer = answer
        self.identity = identity
        self.server = server
        self.flags = flags  # switches without a value, e.g. "internal"
        self.live = live  # also asks the running services: answer(cached, given, home)
        self.identity_word = identity_word  # how the positional is named: -Identity, -Name


def _protocol(protocol: str) -> Callable[[dict[str, Any], dict[str, str]], Any | None]:
    def answer(dump: dict[str, Any], given: dict[str, str]) -> Any | None:
        server = views.pick_server(dump["Servers"], given.get("server"))
        return None if server is None else views.protocol_settings(dump, server, protocol)

    return answer


def _connectors(dump: dict[str, Any], given: dict[str, str]) -> Any | None:
    identity = given.get("identity")
    names = views.find_connectors(dump["ReceiveConnectors"], identity, given.get("server"))
    return views.connector_rows(dump, names) if names or not identity else None


def _mailboxes(rows: Callable[[dict[str, Any], list[str]], Any]) -> Callable[..., Any | None]:
    def answer(dump: dict[str, Any], given: dict[str, str]) -> Any | None:
        if (dump.get("Directory") or {}).get("Uri"):
            return None  # the mailboxes are in LDAP, not in this cache: the full path asks it
        identity = given.get("identity")
        names = views.match_mailboxes(dump["Mailboxes"], identity)
        return rows(dump, names) if names or not identity else None

    return answer


def _owa(dump: dict[str, Any], given: dict[str, str]) -> Any | None:
    named = views.owa_server(given.get("identity"), given.get("server"))
    server = None if named is None else views.pick_server(dump["Servers"], named or None)
    return None if server is None else views.owa_row(dump, server)


def _connection_settings(cached: dict[str, Any], given: dict[str, str]) -> Any | None:
    dump, identity = cached["settings"], given.get("identity")
    if identity is None:
        server = views.pick_server(dump["Servers"], given.get("server"))
    else:
        name = views.find_mailbox(dump["Mailboxes"], identity)
        if name is None:
            return None
        server = views.pick_server(dump["Servers"], dump["Mailboxes"][name]["Server"])
    shown = cached.get("published", {}).get(server)
    if shown is None:
        return None
    scope = "Internal" if "internal" in given else "External"
    return views.connection_rows(shown[scope], for_json=True)


def _settings(answer: Callable[..., Any | None]) -> Callable[..., Any | None]:
    """A view of the settings dump alone (most commands)."""
    return lambda cached, given: answer(cached["settings"], given)


def _services(cached: dict[str, Any], given: dict[str, str], home: Any) -> Any | None:
    """get-service: startup types from the cached settings, the rest from the run files,
    the process table and the control sockets (server.runtime.status, as the full path)."""
    from fnmatch import fnmatchcase

    from server.runtime.status import service_status
    from server.settings.names import SERVICE_DISPLAY_NAMES, default_startup

    dump = cached["settings"]
    server = views.pick_server(dump["Servers"], given.get("server"))
    if server is None:
        return None
    wanted = (given.get("identity") or "*").lower()
    names = [
        n
        for n, shown in SERVICE_DISPLAY_NAMES.items()
        if fnmatchcase(n.lower(), wanted) or fnmatchcase(shown.lower(), wanted)
    ]
    if not names:
        return None  # the full path says "Cannot find any service"
    from server.runtime.filemodes import too_open

    startup = dump["Servers"][server].get("Services") or {}
    exposed = too_open(home)  # as control.get_service: the files as they are now
    return [
        views.service_row(
            {
                **service_status(home, n, server, startup.get(n) or default_startup(n)),
                "TooOpenPaths": exposed,
            }
        )
        for n in names
    ]


def _organization(cached: dict[str, Any], _given: dict[str, str], home: Any) -> Any:
    from mailctl.orgview import organization_row

    return organization_row(cached["settings"], home)


def _statistics(cached: dict[str, Any], given: dict[str, str], home: Any) -> Any | None:
    """get-mailboxstatistics: the quotas from the cache, ItemCount and TotalItemSize read
    from each mailbox.db with plain sqlite3 (server.store.usage, as the store counts)."""
    import sqlite3

    from server.store.usage import read_totals

    boxes, quotas = cached["settings"]["Mailboxes"], cached.get("quotas")
    identity = given.get("identity")
    names = views.match_mailboxes(boxes, identity)
    if quotas is None or (identity and not names):
        return None
    rows = []
    for name in names:
        if name not in quotas:
            return None
        try:
            items, octets = read_totals(str(home.database(boxes[name]["Server"])), name)
        except sqlite3.Error:
            return None  # the full path opens (and repairs) the store
        rows.append(views.statistics_row(name, boxes[name], items, octets, quotas[name]))
    return rows


def _certificates(_cached: dict[str, Any], given: dict[str, str], home: Any) -> Any | None:
    """get-exchangecertificate: the certificate index, certs/certificates.json."""
    try:
        index = json.loads((home.certs / "certificates.json").read_text())
    except FileNotFoundError:
        index = {}
    except (OSError, ValueError):
        return None
    rows = [
        views.certificate_row(
            thumb.upper(), e["Subject"], e["DnsNames"], e["NotAfter"], e["Services"]
        )
        for thumb, e in index.items()
    ]
    wanted = given.get("identity")
    if wanted is None:
        return rows
    return next((r for r in rows if r["Thumbprint"] == wanted.upper()), None)


def _moves(cached: dict[str, Any], given: dict[str, str], home: Any) -> Any | None:
    """get-moverequest(statistics): the requests in the home's moves/ folder, as stored
    (server/moves/request.py)."""
    from server.store.usage import mailbox_key

    boxes, folder = cached["settings"]["Mailboxes"], home.root / "moves"
    identity = given.get("identity")
    if identity is None:
        paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
    else:
        names = views.match_mailboxes(boxes, identity)
        if len(names) != 1:
            return None
        paths = [folder / f"{mailbox_key(names[0])}.json"]
    rows = []
    for path in paths:
        try:
            rows.append(views.move_row(json.loads(path.read_text("utf-8")), boxes))
        except (OSError, ValueError, KeyError, TypeError):
            return None  # none for that mailbox, or unreadable: the full path says so
    return sorted(rows, key=lambda r: r["Identity"].lower())


FAST_COMMANDS: dict[str, Read] = {
    "get-moverequest": Read(_moves, identity=True, server=False, live=True),
    "get-moverequeststatistics": Read(_moves, identity=True, server=False, live=True),
    "get-popsettings": Read(_settings(_protocol("pop"))),
    "get-imapsettings": Read(_settings(_protocol("imap"))),
    "get-receiveconnector": Read(_settings(_connectors), identity=True),
    "get-mailbox": Read(_settings(_mailboxes(views.mailbox_rows)), identity=True, server=False),
    "get-mailboxstatistics": Read(_statistics, identity=True, server=False, live=True),
    "get-casmailbox": Read(_settings(_mailboxes(views.cas_rows)), identity=True, server=False),
    "get-owavirtualdirectory": Read(_settings(_owa), identity=True),
    "get-connectionsettings": Read(_connection_settings, identity=True, flags=("internal",)),
    "get-service": Read(_services, identity=True, live=True, identity_word="name"),
    "get-exchangecertificate": Read(
        _certificates, identity=True, server=False, live=True, identity_word="thumbprint"
    ),
    "get-adserversettings": Read(
        _settings(lambda dump, _given: views.directory_row(dump)), server=False
    ),
    "get-organizationconfig": Read(_organization, server=False, live=True),
}


def _fingerprint() -> str:
    here = Path(__file__).resolve().parent
    settings_pkg = here.parent / "server" / "settings"
    parts = []
    sources = ("models.py", "types.py", "published.py")
    quota = here.parent / "server" / "store" / "quota.py"  # the cached quotas
    for path in (*(settings_pkg / name for name in sources), quota, here / "views.py"):
        try:
            st = path.stat()
        except OSError:
            return "none"
        parts.append(f"{st.st_mtime_ns}:{st.st_size}")
    return ",".join(parts)


def _key(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest() + "/" + _fingerprint()


def write_cache(home: Any, snapshot: Any) -> None:
    """Best effort: a home we may read but not write simply gets no fast path."""
    try:
        raw = home.settings_file.read_bytes()
        if hashlib.sha256(raw).hexdigest()[:12] != snapshot.version:
            return  # the file changed since it was validated
        path = home.run / CACHE_NAME
        key = _key(raw)
        try:
            if json.loads(path.read_text()).get("key") == key:
                return
        except (OSError, ValueError):
            pass
        data = {"key": key, "settings": snapshot.settings.model_dump(mode="json")}
        try:
            data["quotas"] = _quotas(snapshot.settings)
        except Exception:  # noqa: BLE001 - get-mailboxstatistics then takes the full path
            pass
        try:
            data["published"] = _published(snapshot.settings)
        except Exception:  # noqa: BLE001 - get-connectionsettings then takes the full path
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{CACHE_NAME}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError:
        pass


def _quotas(settings: Any) -> dict[str, list[int | None]]:
    """The quotas in force per mailbox (warning, send, receive), as server.store.quota
    derives them from the models, which the fast path does not load."""
    from server.store import quota

    out = {}
    for name, box in settings.Mailboxes.items():
        limits = quota.limits(box)
        out[name] = [limits.warning, limits.send, limits.receive]
    return out


def _published(settings: Any) -> dict[str, dict[str, Any]]:
    """What get-connectionsettings shows, per server and scope: derived by
    server.settings.published from the models, which the fast path does not load."""
    from server.settings.published import published

    return {
        server: {
            scope: published(settings, server=server, scope=scope).as_dict()
            for scope in ("External", "Internal")
        }
        for server in settings.Servers
    }


def _parse(args: list[str]) -> tuple[Read, dict[str, str]] | None:
    """The command and {output, server, home, identity} for the simple lines we answer."""
    if not args or args[0].lower() not in FAST_COMMANDS:
        return None
    read = FAST_COMMANDS[args[0].lower()]
    names = {"output": "output", "o": "output", "home": "home"}
    if read.server:
        names["server"] = "server"
    if read.identity:
        names[read.identity_word] = "identity"
    names.update((flag, flag) for flag in read.flags)
    found: dict[str, str] = {}
    i = 1
    while i < len(args):
        token = args[i]
        i += 1
        if token == "|":
            return None
        if not token.startswith("-") or token == "-":
            key, value = "identity", token
            if not read.identity:
                return None
        else:
            if token.startswith("--"):
                word, sep, value = token[2:].partition("=")
            else:
                word, sep, value = token[1:].partition(":")
            key = names.get(word.lower(), "")
            if not key or (key == "identity" and token.startswith("--")):
                return None
            if key in read.flags:
                if sep or key in found:
                    return None  # -Internal:$false and the like: the full path decides
                found[key] = ""
                continue
            if not sep:
                if i >= len(args):
                    return None
                value = args[i]
                i += 1
        if key in found:
            return None
        found[key] = value
    if found.get("output", "").lower() != "json":
        return None
    return read, found


def _help(args: list[str]) -> int | None:
    """`mailctl --help`: the text the index keeps (mailctl.reference writes it from the
    commands), where the terminal is wide enough that click would print exactly that."""
    if args not in (["--help"], ["-h"]):
        return None
    try:
        columns = (
            int(os.environ.get("COLUMNS") or 0)
            or os.get_terminal_size((sys.__stdout__ or sys.stdout).fileno()).columns
        )
    except (OSError, ValueError, AttributeError):
        columns = 80  # shutil.get_terminal_size's fallback, as click uses it
    if columns < 80:
        return None
    from mailctl.command_index import HELP

    sys.stdout.write(HELP)
    return 0


def answer(args: list[str]) -> int | None:
    if args and args[0] in ("--help", "-h"):
        return _help(args)
    parsed = _parse(args)
    if parsed is None:
        return None
    read, given = parsed
    from server.settings.paths import Home

    home = Home.resolve(given.get("home") or os.environ.get("MAILCTL_HOME") or None)
    if not os.environ.get("MAILCTL_SERVER") and os.path.exists(home.root / "host.toml"):
        from server.settings.host import adopt_server

        adopt_server(home.root)
    try:
        raw = home.settings_file.read_bytes()
        cached = json.loads((home.run / CACHE_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(cached, dict) or cached.get("key") != _key(raw):
        return None
    data = read.answer(cached, given, home) if read.live else read.answer(cached, given)
    if data is None:
        return None  # let the full path produce the error message
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return 0
