"""The settings store: settings.toml in the home folder.

Reads are cheap (stdlib tomllib + one pydantic validation). Writes go through `edit()`: a file
lock serializes writers across processes, the whole document is validated before anything is
written, and the new file replaces the old one atomically (temp file, fsync, rename, fsync of
the folder), so a reader or a crash never sees half a file. tomlkit keeps the admin's comments,
key order and formatting of every line the edit does not touch.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomlkit
from pydantic import ValidationError
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import Table

from server.settings.models import Settings
from server.settings.paths import Home

if TYPE_CHECKING:
    from server.settings.shared import SharedEdit


class SettingsError(Exception):
    """The settings file is missing, unreadable, or fails validation. `line` when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class SettingsMissing(SettingsError):
    """There is no settings.toml yet (the home was never initialised)."""


@dataclass(frozen=True)
class Snapshot:
    settings: Settings
    version: str  # sha256 of the file's bytes: what `get-service` reports as in force
    mtime_ns: int


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem: the key path, what was wrong, what is allowed."""
    lines = []
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif item["type"] == "missing":
            message = "required key is missing"
        lines.append(f"{path}: {message}" if path else message)
    return "\n".join(lines)


def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """Best-effort line number of a key path in the TOML text, for error messages."""
    if not loc:
        return None
    key = str(loc[-1])
    tables = [str(p) for p in loc[:-1]]
    in_table = not tables
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("["):
            header = stripped.strip("[]").replace('"', "").replace("'", "")
            in_table = header.split(".") == tables or header == ".".join(tables)
            if not tables and in_table:
                in_table = False
            if str(loc[-1]) == header.split(".")[-1] and header.split(".")[:-1] == tables:
                return number
        elif in_table and stripped.split("=", 1)[0].strip().strip('"') == key:
            return number
    return None


def parse(text: str) -> Settings:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = None
        marker = "(at line "
        if marker in str(exc):
            line = int(str(exc).split(marker, 1)[1].split(",", 1)[0])
        raise SettingsError(f"settings.toml is not valid TOML: {exc}", line) from None
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]["loc"] if exc.errors() else ()
        line = _line_of(text, tuple(first))
        where = f" (line {line})" if line else ""
        raise SettingsError(
            f"settings.toml is invalid{where}: {describe_validation_error(exc)}", line
        ) from None


def load(home: Home) -> Snapshot:
    try:
        raw = home.settings_file.read_bytes()
        stat = home.settings_file.stat()
    except FileNotFoundError:
        raise SettingsMissing(
            f"no settings at {home.settings_file}; run `mailctl init` (or `mailctl run`) first"
        ) from None
    except OSError as exc:
        raise SettingsError(f"cannot read {home.settings_file}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SettingsError(f"settings.toml is not UTF-8 text (byte {exc.start})") from None
    settings = parse(text)
    return Snapshot(settings, hashlib.sha256(raw).hexdigest()[:12], stat.st_mtime_ns)


def dump_value(value: Any) -> Any:
    """Plain TOML values: None has no TOML form, so the key is left out (= default)."""
    if isinstance(value, dict):
        return {k: dump_value(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [dump_value(v) for v in value]
    return value


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextmanager
def locked(home: Home) -> Iterator[None]:
    home.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(home.root / ".settings.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class Edit:
    """A settings.toml being edited: `set(path, value)` / `remove(path)` on the tomlkit
    document; `commit()` validates everything and writes only if something changed."""

    def __init__(self, home: Home, text: str) -> None:
        self.home = home
        self.original = text
        self.doc = tomlkit.parse(text)

    def table(self, *path: str, create: bool = True) -> Table:
        node: Any = self.doc
        for key in path:
            if key not in node:
                if not create:
                    raise KeyError(".".join(path))
                node[key] = tomlkit.table()
            node = node[key]
        return node

    def set(self, path: tuple[str, ...], value: Any) -> None:
        table = self.table(*path[:-1])
        value = dump_value(value)
        if value is None:
            if path[-1] in table:
                del table[path[-1]]
        elif isinstance(value, dict):
            table[path[-1]] = value
        elif path[-1] in table and table[path[-1]] == value:
            return  # unchanged: keep the original spelling and layout of the line
        else:
            table[path[-1]] = value

    def remove(self, path: tuple[str, ...]) -> None:
        table = self.table(*path[:-1], create=False)
        if path[-1] in table:
            del table[path[-1]]

    def validate(self) -> Settings:
        return parse(tomlkit.dumps(self.doc))

    @property
    def text(self) -> str:
        return tomlkit.dumps(self.doc)

    def changed(self) -> bool:
        return self.text != self.original


@contextmanager
def edit(home: Home, dry_run: bool = False) -> Iterator[Edit]:
    """Lock, load, let the caller change the document, validate, write atomically.
    An exception inside the block (or a validation error) writes nothing."""
    try:
        lock = locked(home)
        lock.__enter__()
    except OSError as exc:
        raise SettingsError(_cannot_write(home, exc)) from None
    shared: SharedEdit | None = None
    try:
        try:
            text = home.settings_file.read_text("utf-8")
        except FileNotFoundError:
            raise SettingsMissing(
                f"no settings at {home.settings_file}; run `mailctl init` (or `mailctl run`) first"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise SettingsError(f"cannot read {home.settings_file}: {why}") from None
        shared = _shared_start(home, text)
        if shared is not None:
            text = shared.base
        try:
            session = Edit(home, text)
        except TOMLKitError as exc:
            line = getattr(exc, "line", None)
            raise SettingsError(
                f"settings.toml is not valid TOML{f' (line {line})' if line else ''}: "
                f"{str(exc).split(' at line ')[0]}; fix it by hand (nothing was changed)",
                line,
            ) from None
        yield session
        try:
            session.validate()
        except SettingsError as exc:
            # The file on disk is fine: it is the change that is refused.
            why = re.sub(r"^settings\.toml is invalid(?: \(line \d+\))?: ", "", exc.message)
            raise SettingsError(f"refused, settings.toml left unchanged: {why}") from None
        if session.changed() and not dry_run:
            written = session.text
            if shared is not None:
                written = _shared_publish(shared, session)
            try:
                atomic_write(home.settings_file, written.encode("utf-8"))
            except OSError as exc:
                raise SettingsError(_cannot_write(home, exc)) from None
            if shared is not None:
                from server.settings.shared import write_version

                write_version(home.root, shared.version)
    finally:
        if shared is not None:
            shared.remote.close()
        lock.__exit__(None, None, None)


def _shared_start(home: Home, text: str) -> SharedEdit | None:
    """On a host of a several-host organization (host.toml), the organization's document
    the edit starts from (server.settings.shared); None on a one-host install."""
    from server.settings import shared

    try:
        return shared.start_edit(home.root, text)
    except shared.SharedSettingsError as exc:
        raise SettingsError(f"{exc}; nothing was changed") from None


def _shared_publish(state: SharedEdit, session: Edit) -> str:
    """Publish the edit to the organization (compare-and-set, re-applied on a conflict);
    the text to write locally."""
    from server.settings import shared

    def validate(text: str) -> None:
        try:
            parse(text)
        except SettingsError as exc:
            why = re.sub(r"^settings\.toml is invalid(?: \(line \d+\))?: ", "", exc.message)
            raise SettingsError(
                f"refused: with another admin's change made meanwhile it would be invalid: "
                f"{why}; nothing was changed"
            ) from None

    try:
        return state.publish(session.text, validate)
    except shared.SharedSettingsError as exc:
        raise SettingsError(f"{exc}; nothing was changed") from None


def _cannot_write(home: Home, exc: OSError) -> str:
    where = exc.filename or home.root
    return (
        f"cannot write in {home.root} ({where}: {exc.strerror}); is the home folder "
        f"read-only or owned by another user? Nothing was changed"
    )


HEADER = """\
# mailctl settings store. Keys are the Exchange cmdlet parameter names:
# `mailctl get-popsettings` and this file say the same thing. Edit by hand or with mailctl;
# every running service reloads on save, and an invalid file leaves them on the last good one.
"""


def create(home: Home, settings: Settings) -> None:
    """Write a fresh settings.toml (refuses to overwrite one)."""
    home.create_folders()
    doc = tomlkit.document()
    for line in HEADER.strip().splitlines():
        doc.add(tomlkit.comment(line.removeprefix("# ")))
    doc.add(tomlkit.nl())
    data = dump_value(settings.model_dump(mode="json"))
    for key, value in data.items():
        doc[key] = value
    with locked(home):
        if home.settings_file.exists():
            raise SettingsError(f"{home.settings_file} exists already")
        atomic_write(home.settings_file, tomlkit.dumps(doc).encode("utf-8"))
