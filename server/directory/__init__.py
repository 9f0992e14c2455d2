"""The directory: who the mailboxes are, how they prove it, and which server holds them.

Mailboxes and their switches live in settings.toml; password hashes (argon2id) live in
secrets/passwords.json, owner-only, never in settings or command output. A successful
verification is cached in memory (keyed by a keyed hash of the password, as Dovecot's auth
cache does) so clients that log in every few minutes do not pay argon2 each time; the cache
entry dies when the stored hash changes.

With a [Directory] section that has a Uri, the mailboxes and their hashes live in an LDAP
server instead (server/directory/ldap.py); `Directory` and `find_entry` are the same calls
either way, so no caller knows which backend answers. An LDAP directory that cannot be
asked raises `DirectoryUnavailable`: logins answer it with a temporary failure.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from server.directory.ldap import DirectoryError, DirectoryUnavailable, LdapDirectory
from server.settings.models import DirectorySettings, Mailbox, Server, Settings
from server.settings.paths import Home
from server.settings.store import atomic_write, locked
from server.settings.types import MailboxType

if TYPE_CHECKING:
    from argon2 import PasswordHasher

__all__ = [
    "Directory",
    "DirectoryError",
    "DirectoryUnavailable",
    "Entry",
    "find_entry",
    "may_use_protocol",
]


# argon2id, RFC 9106 "second recommended option" memory class scaled for a small server.
class Argon2Params(TypedDict):
    time_cost: int
    memory_cost: int
    parallelism: int


ARGON2_PARAMS: Argon2Params = {"time_cost": 2, "memory_cost": 19456, "parallelism": 1}


def _hasher() -> (
    PasswordHasher
):  # imported lazily: argon2 costs import time the CLI's get- commands skip
    from argon2 import PasswordHasher

    return PasswordHasher(**ARGON2_PARAMS)


def hash_password(password: str) -> str:
    return _hasher().hash(password)


@dataclass(frozen=True)
class Entry:
    name: str
    mailbox: Mailbox
    server: Server
    server_name: str


class Directory:
    def __init__(self, home: Home) -> None:
        self.home = home
        self._hashes: dict[str, str] = {}
        self._hashes_stamp: tuple[int, int] | None = None
        # A str: os.stat on it costs a login less than building and stat-ing a Path.
        self._hashes_path = str(home.secrets / "passwords.json")
        self._cache: dict[str, tuple[str, bytes]] = {}  # name -> (hash, keyed digest)
        self._cache_key = secrets.token_bytes(32)
        self._settings: Settings | None = None  # the last seen (stored_hash has none)
        # The dummy hash makes a login for an unknown user cost what a real one costs.
        self._dummy = hash_password(secrets.token_hex(16))

    # --- lookups -----------------------------------------------------------------
    def find(self, settings: Settings, identity: str) -> Entry | None:
        """The mailbox by name or address. Blocking with an LDAP directory (a search),
        which raises DirectoryUnavailable when it cannot be asked."""
        return find_entry(settings, identity, self.home)

    def cached_entry(self, settings: Settings, name: str) -> Entry | None:
        """Like find(), but never waits on the network: with an LDAP directory, the last
        answer it gave for `name` in this process (None if never asked). For the event
        loop of the web service, whose sign-in asked the directory."""
        client = self.ldap(settings)
        if client is None:
            return find_entry(settings, name)
        self._settings = settings
        hit = client.recent(name)
        return _entry(settings, hit.name, hit.mailbox) if hit else None

    def ldap(self, settings: Settings) -> LdapDirectory | None:
        """The LDAP directory in use (None: the Mailboxes table of settings.toml)."""
        return ldap_for(settings, self.home)

    def mailboxes(self, settings: Settings) -> dict[str, Mailbox]:
        """Every mailbox, by name (Get-Mailbox)."""
        client = self.ldap(settings)
        if client is None:
            return dict(settings.Mailboxes)
        return {f.name: f.mailbox for f in client.all(_default_server(settings))}

    # --- passwords ---------------------------------------------------------------
    def _password_file(self) -> Path:
        return self.home.secrets / "passwords.json"

    def _load_hashes(self) -> dict[str, str]:
        """The stored hashes, read again when the file's stamp changes (a stat per call)."""
        try:
            stat = os.stat(self._hashes_path)
        except FileNotFoundError:
            self._hashes, self._hashes_stamp = {}, None
            return self._hashes
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._hashes_stamp:
            self._hashes = json.loads(self._password_file().read_text())
            self._hashes_stamp = stamp
        return self._hashes

    def _digest(self, name: str, password: str) -> bytes:
        # hmac.digest: the one-shot form, no HMAC object set up per login.
        return hmac.digest(self._cache_key, f"{name}\0{password}".encode(), "sha256")

    def verify(self, settings: Settings, identity: str, password: str) -> Entry | None:
        """The entry when the password is right, else None. Blocking (argon2): call it from
        a worker thread in a server. Costs the same for unknown users as for known ones."""
        from argon2.exceptions import VerificationError, VerifyMismatchError

        client = self.ldap(settings)
        self._settings = settings
        if client is not None:
            found = client.find(identity, _default_server(settings))
            entry = _entry(settings, found.name, found.mailbox) if found else None
            bind = settings.Directory is not None and settings.Directory.LoginVerification == "Bind"
            if found is not None and entry is not None and bind:
                return entry if client.bind_as(found.dn, password) else None
            stored = found.password_hash if found and entry else None
        else:
            entry = self.find(settings, identity)
            stored = self._load_hashes().get(entry.name.lower()) if entry else None
        if entry is None or stored is None:
            try:
                _hasher().verify(self._dummy, password + "x")
            except VerificationError:
                pass
            return None
        cached = self._cache.get(entry.name.lower())
        digest = self._digest(entry.name.lower(), password)
        if cached and cached[0] == stored and hmac.compare_digest(cached[1], digest):
            return entry
        try:
            _hasher().verify(stored, password)
        except (VerifyMismatchError, VerificationError):
            return None
        except Exception:  # a corrupt hash must not become a crash or a login
            return None
        self._cache[entry.name.lower()] = (stored, digest)
        return entry

    def verify_cached(self, settings: Settings, identity: str, password: str) -> Entry | None:
        """The entry when this password was verified before against the hash stored now;
        None otherwise (then verify() decides). No argon2 and no blocking beyond a stat, so
        a server may call it on its event loop and save the worker-thread hand-off. Only a
        right password is answered early, which its OK tells the client anyway. With an LDAP
        directory, None: finding the entry is a search, which must not block an event loop."""
        if self.ldap(settings) is not None:
            return None
        entry = self.find(settings, identity)
        if entry is None:
            return None
        name = entry.name.lower()
        cached = self._cache.get(name)
        if cached is None or cached[0] != self._load_hashes().get(name):
            return None
        return entry if hmac.compare_digest(cached[1], self._digest(name, password)) else None

    def stored_hash(self, name: str) -> str | None:
        """The mailbox's stored password hash (None without a password), for what must end
        when the password changes (web sessions). A stat per call; re-read on change.
        With an LDAP directory: what the last lookup read (no network; the DN stands in
        for the hash when logins bind)."""
        client = self.ldap(self._settings) if self._settings is not None else None
        if client is not None:
            hit = client.recent(name)
            return (hit.password_hash or f"bind:{hit.dn}") if hit else None
        return self._load_hashes().get(name.lower())

    def set_password(self, name: str, password: str, settings: Settings | None = None) -> None:
        hashed = hash_password(password)
        client = ldap_for(settings, self.home) if settings is not None else None
        if settings is not None and client is not None:
            found = client.find(name, _default_server(settings))
            if found is None:
                raise DirectoryError(f"there is no mailbox {name!r} in the directory")
            client.set_password(found, hashed)
            return
        with locked(self.home):
            hashes = dict(self._load_hashes())
            hashes[name.lower()] = hashed
            self._write(hashes)

    def remove_password(self, name: str) -> None:
        with locked(self.home):
            hashes = dict(self._load_hashes())
            hashes.pop(name.lower(), None)
            self._write(hashes)

    def _write(self, hashes: dict[str, str]) -> None:
        self.home.secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(self._password_file(), json.dumps(hashes, indent=1).encode(), mode=0o600)
        self._hashes_stamp = None


def find_entry(
    settings: Settings, identity: str, home: Home | None = None, stale_ok: bool = False
) -> Entry | None:
    """The mailbox by name or address, with the server that holds it. With an LDAP
    directory: blocking (a search), DirectoryUnavailable when it cannot be asked (unless
    stale_ok and it answered for this name in the last minutes)."""
    client = ldap_for(settings, home)
    if client is not None:
        hit = client.find(identity, _default_server(settings), stale_ok=stale_ok)
        return _entry(settings, hit.name, hit.mailbox) if hit else None
    found = settings.mailbox(identity)
    if found is None:
        return None
    name, box = found
    return Entry(name, box, settings.server(box.Server), settings.server_name(box.Server))


def _entry(settings: Settings, name: str, box: Mailbox) -> Entry | None:
    try:
        return Entry(name, box, settings.server(box.Server), settings.server_name(box.Server))
    except KeyError:
        return None  # a home server this organization does not have


def _default_server(settings: Settings) -> str:
    # A directory entry without a home server belongs to the (first) server: a one-host
    # organization need not set it.
    return next(iter(settings.Servers))


_clients: dict[tuple[str, str], LdapDirectory] = {}
_clients_lock = threading.Lock()


def ldap_for(settings: Settings | None, home: Home | None = None) -> LdapDirectory | None:
    """The process's client of the LDAP directory settings name (None: the file directory).
    One per configuration, so its connection is reused; a changed configuration (live
    reload) gets a new one."""
    config: DirectorySettings | None = settings.Directory if settings is not None else None
    if config is None or not config.ldap():
        return None
    root = (home or resolve_home_env()).root
    key = (config.model_dump_json(), str(root))
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            for old in [k for k in _clients if k[1] == str(root)]:
                _clients.pop(old).close()
            client = _clients[key] = LdapDirectory(config, Path(root))
        return client


def may_use_protocol(entry: Entry, protocol: str) -> str | None:
    """Why this mailbox may not log in with POP3/IMAP4 (None when it may): reference
    section 5 - no Anonymous or Guest, no Administrator mailbox, PopEnabled/ImapEnabled."""
    box = entry.mailbox
    kinds = {box.Type, box.reserved_type(entry.name)}  # by name too, whatever the Type
    for kind in (MailboxType.Anonymous, MailboxType.Guest):
        if kind in kinds:
            return f"{kind.value} accounts cannot use {protocol}"
    if MailboxType.Administrator in kinds:
        return f"the Administrator mailbox cannot be opened with {protocol}"
    enabled = box.PopEnabled if protocol == "POP3" else box.ImapEnabled
    if not enabled:
        return f"{protocol} is disabled for this mailbox"
    return None


def proxy_secret_path(home: Home) -> Path:
    return home.secrets / "proxy-secret"


def proxy_secret(home: Home) -> str:
    """The secret front and back ends prove to each other that they know (without sending
    it: server/protocols/handover.py); made on first use, owner-only."""
    path = proxy_secret_path(home)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    with locked(home):
        if not path.exists():
            home.secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
            atomic_write(path, secrets.token_urlsafe(32).encode(), mode=0o600)
    return path.read_text().strip()


class ProxySecret:
    """The proxy secret as bytes (the HMAC key of server/protocols/handover.py), read from
    disk again only when its file changes: one stat per hand-over instead of a read."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self.path = proxy_secret_path(home)
        self._signature: tuple[int, int, int] | None = None
        self._value = b""

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def cached(self) -> bytes | None:
        """The secret when the file is unchanged since the last load(), else None."""
        signature = self._stat()
        if signature is not None and signature == self._signature:
            return self._value
        return None

    def load(self) -> bytes:
        """Read (or make, under the home lock) the secret. Blocking."""
        # Stat first, read second: a file replaced in between is read again next time.
        signature = self._stat()
        self._value = proxy_secret(self.home).encode()
        self._signature = signature if signature is not None else self._stat()
        return self._value


def resolve_home_env() -> Home:
    return Home.resolve(os.environ.get("MAILCTL_HOME"))
