"""The fast path: `mailctl get-popsettings --output json` without typer, rich or pydantic.

Validating settings.toml costs ~150 ms of imports; shell scripts call get- commands in loops.
Every full run that loads the settings leaves the validated dump in run/settings.cache.json,
keyed by the sha256 of settings.toml and a fingerprint of the code that validates it. When
that key still matches, the answer is computed from the cached dump (views.py, the same code
the full path uses). Anything unusual (other commands, other options, no cache, a stale key)
returns None and the full command line handles it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

CACHE_NAME = "settings.cache.json"
FAST_COMMANDS = {"get-popsettings": "pop", "get-imapsettings": "imap"}


def _fingerprint() -> str:
    here = Path(__file__).resolve().parent
    settings_pkg = here.parent / "server" / "settings"
    parts = []
    for path in (settings_pkg / "models.py", settings_pkg / "types.py", here / "views.py"):
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
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{CACHE_NAME}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError:
        pass


def _parse(args: list[str]) -> dict[str, str] | None:
    """{command, output, server, home} for the simple lines we answer, else None."""
    if not args or args[0].lower() not in FAST_COMMANDS:
        return None
    found = {"command": FAST_COMMANDS[args[0].lower()]}
    names = {"output": "output", "o": "output", "server": "server", "home": "home"}
    i = 1
    while i < len(args):
        token = args[i]
        if not token.startswith("-"):
            return None
        if token.startswith("--"):
            word, sep, value = token[2:].partition("=")
        else:
            word, sep, value = token[1:].partition(":")
        key = names.get(word.lower())
        if key is None or key in found:
            return None
        if not sep:
            i += 1
            if i >= len(args):
                return None
            value = args[i]
        found[key] = value
        i += 1
    if found.get("output", "").lower() != "json":
        return None
    return found


def answer(args: list[str]) -> int | None:
    parsed = _parse(args)
    if parsed is None:
        return None
    from server.settings.paths import Home

    from . import views

    home = Home.resolve(parsed.get("home") or os.environ.get("MAILCTL_HOME") or None)
    try:
        raw = home.settings_file.read_bytes()
        cached = json.loads((home.run / CACHE_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(cached, dict) or cached.get("key") != _key(raw):
        return None
    dump = cached["settings"]
    server = views.pick_server(dump["Servers"], parsed.get("server"))
    if server is None:
        return None  # let the full path produce the error message
    data = views.protocol_settings(dump, server, parsed["command"])
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return 0
