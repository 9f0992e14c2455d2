"""settings.toml shared by the hosts of an organization (docs/architecture.md, "More than
one host").

The organization's document is kept in the directory with a version number
(server.directory.orgconfig). A host's settings.toml is a copy of it: MSExchangeADTopology
brings changes in, and every edit made with mailctl is published there first.

Publishing is compare-and-set: the write names the version it started from and fails if
another host wrote in between. The edit is then applied again to the newer document and
published again. "Applied again" means the edit's delta - the leaves (keys with a
non-table value) it set or removed, found by comparing the document before and after the
edit - so two admins who change different things both keep their change, and the last of
two who change the same key wins, as on one host. The merged document is validated like
any edit; a merge that would be invalid (both gave one address to two mailboxes) refuses
the later edit and changes nothing.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import tomlkit

VERSION_FILE = ".settings.shared-version"  # the organization version of this copy
ATTEMPTS = 20  # compare-and-set rounds before giving up (each lost round is another's write)
_REMOVED = object()


class SharedSettingsError(Exception):
    """The organization's copy cannot be read or written (unreachable, refused)."""


class Remote(Protocol):
    """The organization's settings.toml where every host can reach it."""

    def close(self) -> None: ...

    def read(self) -> tuple[str, int]:
        """The document and its version."""
        ...

    def swap(self, text: str, version: int) -> int | None:
        """Store `text` if the version is still `version`: the new version, or None when
        another writer came first (nothing was written)."""
        ...


@dataclass(frozen=True)
class Change:
    path: tuple[str, ...]
    value: Any  # _REMOVED: the key was removed


def delta(before: str, after: str) -> list[Change]:
    """The leaves `after` sets or removes compared with `before` (both TOML text)."""
    out: list[Change] = []
    _diff(tomllib.loads(before), tomllib.loads(after), (), out)
    return out


def _diff(
    old: dict[str, Any], new: dict[str, Any], path: tuple[str, ...], out: list[Change]
) -> None:
    for key, value in new.items():
        here = (*path, key)
        if isinstance(value, dict) and isinstance(old.get(key), dict):
            _diff(old[key], value, here, out)
        elif key not in old or old[key] != value:
            out.append(Change(here, value))
    for key in old:
        if key not in new:
            out.append(Change((*path, key), _REMOVED))


def apply(text: str, changes: list[Change]) -> str:
    """`text` with the changes made, keeping its comments and layout elsewhere."""
    doc = tomlkit.parse(text)
    for change in changes:
        node: Any = doc
        for key in change.path[:-1]:
            if key not in node or not isinstance(node[key], dict):
                if change.value is _REMOVED:
                    node = None
                    break
                node[key] = tomlkit.table()
            node = node[key]
        if node is None:
            continue
        last = change.path[-1]
        if change.value is _REMOVED:
            if last in node:
                del node[last]
        else:
            node[last] = change.value
    return tomlkit.dumps(doc)


def publish(
    remote: Remote,
    base: str,
    version: int,
    edited: str,
    validate: Any,
) -> tuple[str, int]:
    """Publish the edit that turned `base` (the organization's document at `version`) into
    `edited`. On a lost compare-and-set, re-read, re-apply the delta, validate (`validate`
    raises to refuse) and try again. Returns the text published and its version."""
    changes = delta(base, edited)
    text = edited
    for _ in range(ATTEMPTS):
        new_version = remote.swap(text, version)
        if new_version is not None:
            return text, new_version
        current, version = remote.read()
        text = apply(current, changes)
        validate(text)
    raise SharedSettingsError(
        f"the organization's settings changed {ATTEMPTS} times while this edit was being "
        "published; nothing was changed, try again"
    )


@dataclass
class SharedEdit:
    """An edit on a host of a several-host organization: the organization's document and
    version it started from, and where to publish it."""

    remote: Remote
    base: str
    version: int

    def publish(self, edited: str, validate: Any) -> str:
        """Publish (see publish()); the text published, which the host then writes."""
        text, self.version = publish(self.remote, self.base, self.version, edited, validate)
        return text


def start_edit(root: Path, local_text: str) -> SharedEdit | None:
    """The organization's current document for an edit on the home at `root`; None on a
    one-host install (no host.toml)."""
    remote = remote_for(root, local_text)
    if remote is None:
        return None
    try:
        base, version = remote.read()
    except SharedSettingsError:
        remote.close()
        raise
    return SharedEdit(remote, base, version)


def read_version(root: Path) -> int:
    try:
        return int((root / VERSION_FILE).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def write_version(root: Path, version: int) -> None:
    from server.settings.store import atomic_write

    atomic_write(root / VERSION_FILE, f"{version}\n".encode(), mode=0o600)


def remote_for(root: Path, settings_text: str) -> Remote | None:
    """The organization's document for the home at `root`, when host.toml names one (else
    None: a one-host install). The directory connection is [Directory] of the local copy."""
    from server.settings import host

    try:
        config = host.load(root)
    except host.HostFileError as exc:
        raise SharedSettingsError(str(exc)) from None
    if config is None:
        return None
    from server.directory.orgconfig import OrgSettings
    from server.settings.store import parse

    directory = parse(settings_text).Directory
    if directory is None or not directory.ldap():
        raise SharedSettingsError(
            f"host.toml says the settings are kept in the directory ({config.settings_dn}), "
            "but settings.toml has no [Directory] Uri"
        )
    return OrgSettings(directory, root, config.settings_dn)
