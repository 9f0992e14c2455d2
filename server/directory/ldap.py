"""Mailboxes kept in an LDAP server (OpenLDAP, Active Directory, Samba AD).

Settings' [Directory] section names the server and a Mapping from mailbox fields to LDAP
attributes (server/settings/models.py, DirectoryMapping). This module turns entries into
`Mailbox` models and back; `server.directory.Directory` is the one interface the services
and mailctl use, whichever backend holds the mailboxes.

Every network call is bounded by ConnectTimeout and OperationTimeout. Any failure to reach
the server, or an answer that does not come in time, is `DirectoryUnavailable`, which the
front ends turn into a temporary failure; the next call connects again, so a server that
comes back is used again without restarting anything.

The client is ldap3 (pure Python): see docs/architecture.md, "Directory".
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.settings.models import DirectoryMapping, DirectorySettings, Mailbox
from server.settings.types import parse_bytesize

SCHEMA_FILE = Path(__file__).with_name("mailctl.schema")
# The scheme prefix slapd's argon2 password module (pw-argon2) uses: a hash stored this way
# also lets the directory itself check binds.
ARGON2_PREFIX = "{ARGON2}"
STALE_SECONDS = 300.0
_PREFIXED = re.compile(r"^([A-Za-z0-9]+):(.*)$", re.S)


class DirectoryUnavailable(Exception):
    """The directory could not be asked (down, unreachable, too slow, refused our bind)."""


class DirectoryError(Exception):
    """The directory refused a change (exists already, schema violation, no rights)."""


@dataclass(frozen=True)
class Found:
    """A mailbox as read from the directory."""

    name: str
    mailbox: Mailbox
    dn: str
    password_hash: str | None


# --------------------------------------------------------------------------- mapping


def smtp_addresses(values: Iterable[str]) -> tuple[str | None, list[str]]:
    """AD's proxyAddresses: the primary (the "SMTP:" value) and every SMTP address.

    "smtp:" (lower case) marks a secondary address, "SMTP:" the primary; other types
    (X500:, SIP:, X400:) are not mail addresses and are left out. A value without a type
    prefix is taken as a plain SMTP address, as OpenLDAP's mail-like attributes hold them."""
    primary: str | None = None
    addresses: list[str] = []
    for raw in values:
        value = raw.strip()
        match = _PREFIXED.match(value)
        if match and "@" not in match.group(1):
            kind, address = match.group(1), match.group(2).strip()
            if kind.lower() != "smtp":
                continue
            if kind == "SMTP" and primary is None:
                primary = address
        else:
            address = value
        if address and address.lower() not in (a.lower() for a in addresses):
            addresses.append(address)
    return primary, addresses


def server_name(value: str) -> str:
    """The server a home-server value names: "MBX01", Exchange's legacy form
    "/o=Org/ou=.../cn=Servers/cn=MBX01", or a DN "CN=MBX01,CN=Servers,..."."""
    text = value.strip()
    lowered = text.lower()
    if "/cn=" in lowered:
        return text[lowered.rindex("/cn=") + 4 :].strip()
    if lowered.startswith("cn="):
        return text[3:].split(",", 1)[0].strip()
    return text


def _quota(value: str, unit: int) -> Any:
    text = value.strip()
    if text.isdigit():
        return int(text) * unit
    return parse_bytesize(text)


def _first(attrs: dict[str, list[str]], name: str) -> str | None:
    if not name:
        return None
    values = attrs.get(name.lower()) or []
    return values[0] if values else None


def entry_to_mailbox(
    attrs: dict[str, list[str]],
    mapping: DirectoryMapping,
    default_server: str,
) -> tuple[str, Mailbox] | None:
    """An LDAP entry (attribute names lower-cased, values as strings) as a mailbox; None
    when it has no name or no address. Raises ValueError for values the model refuses."""
    name = _first(attrs, mapping.Name)
    if not name:
        return None
    primary = _first(attrs, mapping.PrimarySmtpAddress)
    proxy_primary, aliases = smtp_addresses(
        attrs.get(mapping.EmailAddresses.lower(), []) if mapping.EmailAddresses else []
    )
    primary = primary or proxy_primary or (aliases[0] if aliases else None)
    if not primary:
        return None
    fields: dict[str, Any] = {
        "PrimarySmtpAddress": primary,
        "EmailAddresses": [a for a in aliases if a.lower() != primary.lower()],
        "DisplayName": _first(attrs, mapping.DisplayName) or "",
        "Server": server_name(_first(attrs, mapping.Server) or "") or default_server,
    }
    for field in ("Type", "PopEnabled", "ImapEnabled", "UseDatabaseQuotaDefaults"):
        value = _first(attrs, getattr(mapping, field))
        if value is not None:
            fields[field] = value
    for field in ("IssueWarningQuota", "ProhibitSendQuota", "ProhibitSendReceiveQuota"):
        value = _first(attrs, getattr(mapping, field))
        if value is not None:
            fields[field] = _quota(value, mapping.QuotaUnit)
    return name, Mailbox(**fields)


def _ldap_bool(value: bool) -> str:
    return "TRUE" if value else "FALSE"


def _ldap_quota(size: Any, unit: int) -> str | None:
    if size.bytes is None:
        return None  # Unlimited: no value
    if unit == 1:
        return str(size)
    return str(-(-size.bytes // unit))


def mailbox_to_attrs(box: Mailbox, mapping: DirectoryMapping) -> dict[str, list[str]]:
    """The mapped attributes of a mailbox (an empty list: no value). Fields whose mapping
    is empty are not written."""
    out: dict[str, list[str]] = {}

    def put(field: str, values: list[str]) -> None:
        attr = getattr(mapping, field)
        if attr:
            out.setdefault(attr, [])
            out[attr] += [v for v in values if v not in out[attr]]

    addresses: list[str] = []
    for address in box.addresses():  # Exchange lists the primary in EmailAddresses too
        if address.lower() not in (a.lower() for a in addresses):
            addresses.append(address)
    if mapping.PrimarySmtpAddress:
        put("PrimarySmtpAddress", [box.PrimarySmtpAddress])
        # Exchange lists the primary among EmailAddresses too; its own attribute has it.
        aliases = [a for a in box.EmailAddresses if a.lower() != box.PrimarySmtpAddress.lower()]
    else:
        aliases = addresses
    if mapping.EmailAddresses.lower() == "proxyaddresses":
        put(
            "EmailAddresses",
            [("SMTP:" if a == box.PrimarySmtpAddress else "smtp:") + a for a in addresses],
        )
    else:
        put("EmailAddresses", aliases)
    put("DisplayName", [box.DisplayName] if box.DisplayName else [])
    put("Server", [box.Server])
    put("Type", [box.Type.value])
    put("PopEnabled", [_ldap_bool(box.PopEnabled)])
    put("ImapEnabled", [_ldap_bool(box.ImapEnabled)])
    put("UseDatabaseQuotaDefaults", [_ldap_bool(box.UseDatabaseQuotaDefaults)])
    for field in ("IssueWarningQuota", "ProhibitSendQuota", "ProhibitSendReceiveQuota"):
        value = _ldap_quota(getattr(box, field), mapping.QuotaUnit)
        put(field, [value] if value else [])
    return out


def unmapped_fields(mapping: DirectoryMapping, fields: Iterable[str]) -> list[str]:
    """The mailbox fields among `fields` the directory has no attribute for."""
    mapped = {f for f in DirectoryMapping.model_fields if getattr(mapping, f, "")}
    return [f for f in fields if f not in mapped]


def identity_filter(identity: str, mapping: DirectoryMapping) -> str:
    """The search filter for a login name, address or domain\\name."""
    from ldap3.utils.conv import escape_filter_chars

    wanted = escape_filter_chars(identity.strip().rsplit("\\", 1)[-1])
    terms = [f"({mapping.Name}={wanted})"]
    for attr in (*mapping.LoginNames, mapping.PrimarySmtpAddress):
        if attr:
            terms.append(f"({attr}={wanted})")
    if mapping.EmailAddresses:
        terms.append(f"({mapping.EmailAddresses}={wanted})")
        terms.append(f"({mapping.EmailAddresses}=smtp:{wanted})")
    return f"(&{mapping.Filter}(|{''.join(terms)}))"


# --------------------------------------------------------------------------- the client


class LdapDirectory:
    """One LDAP server as the mailbox directory. Thread-safe: one service-account
    connection, used under a lock (logins run in worker threads)."""

    def __init__(self, config: DirectorySettings, home_root: Path) -> None:
        if not config.Uri:
            raise ValueError("an LDAP directory needs Directory.Uri")
        self.config = config
        self.uri: str = config.Uri
        self.home_root = home_root
        self._lock = threading.Lock()
        self._conn: Any = None
        self._recent: dict[str, tuple[Found, float]] = {}

    # --- connections -------------------------------------------------------------
    def _server(self) -> Any:
        import ldap3

        tls = None
        if self.uri.lower().startswith("ldaps://"):
            import ssl

            # ldap3 checks no certificate unless told to: a directory holds the passwords.
            tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=self.config.TlsCaFile)
        return ldap3.Server(
            self.uri,
            connect_timeout=self.config.ConnectTimeout,
            get_info=ldap3.NONE,
            tls=tls,
        )

    def _bind_password(self) -> str | None:
        if not self.config.BindPasswordFile:
            return None
        path = Path(self.config.BindPasswordFile)
        if not path.is_absolute():
            path = self.home_root / path
        try:
            return path.read_text().rstrip("\r\n")
        except OSError as exc:
            raise DirectoryUnavailable(f"cannot read BindPasswordFile: {exc}") from None

    def _connect(self, user: str | None, password: str | None) -> Any:
        """A bound connection; DirectoryUnavailable when the server cannot be reached,
        None when it refused these credentials."""
        import ldap3
        from ldap3.core.exceptions import LDAPException

        try:
            conn = ldap3.Connection(
                self._server(),
                user=user,
                password=password,
                receive_timeout=self.config.OperationTimeout,
                auto_referrals=False,
                raise_exceptions=False,
                read_only=False,
            )
            if not conn.bind():
                result = conn.result or {}
                conn.unbind()
                if result.get("result") == 49:  # invalidCredentials
                    return None
                raise DirectoryUnavailable(f"bind refused: {result.get('description')}")
            return conn
        except LDAPException as exc:
            raise DirectoryUnavailable(f"{self.config.Uri}: {exc}") from None
        except OSError as exc:
            raise DirectoryUnavailable(f"{self.config.Uri}: {exc}") from None

    def _service_conn(self) -> Any:
        if self._conn is None:
            conn = self._connect(self.config.BindDN, self._bind_password())
            if conn is None:
                raise DirectoryUnavailable("the directory refused BindDN's password")
            self._conn = conn
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.unbind()
            except Exception:  # noqa: BLE001 - the socket is already broken
                pass

    def _call(self, op: str, *args: Any, **kw: Any) -> tuple[bool, Any]:
        """One operation on the service connection. A connection broken since its last use
        (the server restarted) is replaced once; the second failure is the server's."""
        # One call at a time on the connection; a caller queued behind one that waits on a
        # silent server gives up after as long as one call may take, so none waits longer.
        if not self._lock.acquire(
            timeout=self.config.ConnectTimeout + self.config.OperationTimeout
        ):
            raise DirectoryUnavailable(f"{self.config.Uri}: no answer in time")
        try:
            return self._call_locked(op, *args, **kw)
        finally:
            self._lock.release()

    def _call_locked(self, op: str, *args: Any, **kw: Any) -> tuple[bool, Any]:
        from ldap3.core.exceptions import LDAPException

        for attempt in (1, 2):
            fresh = self._conn is None
            conn = self._service_conn()
            started = time.monotonic()
            try:
                ok = getattr(conn, op)(*args, **kw)
            except (LDAPException, OSError) as exc:
                self._drop()
                # A silent server (the call ran out its time) gets no second wait.
                slow = time.monotonic() - started >= self.config.OperationTimeout * 0.9
                if attempt == 2 or fresh or slow:
                    raise DirectoryUnavailable(f"{self.config.Uri}: {exc}") from None
                continue
            result = conn.result or {}
            code = result.get("result", 0)
            # 51 busy, 52 unavailable, 81 server down: not an answer.
            if not ok and code in (51, 52, 81) or conn.closed:
                self._drop()
                if attempt == 2 or fresh:
                    raise DirectoryUnavailable(f"{self.config.Uri}: {result.get('description')}")
                continue
            return bool(ok), (conn.response, result)
        raise AssertionError("unreachable")

    # --- reads -------------------------------------------------------------------
    def _attributes(self) -> list[str]:
        mapping = self.config.Mapping
        names = [
            getattr(mapping, f)
            for f in DirectoryMapping.model_fields
            if isinstance(getattr(mapping, f), str) and f not in ("Filter",)
        ]
        return sorted({n for n in names if n})

    def _search(self, filter_: str, limit: int = 0) -> list[tuple[str, dict[str, list[str]]]]:
        import ldap3

        ok, (response, result) = self._call(
            "search",
            self.config.BaseDN,
            filter_,
            search_scope=ldap3.SUBTREE,
            attributes=self._attributes(),
            size_limit=limit,
            time_limit=self.config.OperationTimeout,
        )
        if not ok and result.get("result") not in (0, 4, 32):  # 4 sizeLimit, 32 noSuchObject
            raise DirectoryUnavailable(f"search failed: {result.get('description')}")
        found = []
        for item in response or []:
            if item.get("type") != "searchResEntry":
                continue
            raw = item.get("raw_attributes") or {}
            attrs = {
                k.lower(): [
                    v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in vals
                ]
                for k, vals in raw.items()
            }
            found.append((item["dn"], attrs))
        return found

    def _found(self, dn: str, attrs: dict[str, list[str]], default_server: str) -> Found | None:
        try:
            parsed = entry_to_mailbox(attrs, self.config.Mapping, default_server)
        except ValueError:
            return None  # an entry the model refuses is not a usable mailbox
        if parsed is None:
            return None
        stored = _first(attrs, self.config.Mapping.Password)
        if stored and stored.upper().startswith(ARGON2_PREFIX):
            stored = stored[len(ARGON2_PREFIX) :]
        elif stored and not stored.startswith("$argon2"):
            stored = None  # another scheme: only the directory can check it (Bind)
        return Found(parsed[0], parsed[1], dn, stored)

    def find(self, identity: str, default_server: str, stale_ok: bool = False) -> Found | None:
        """The mailbox `identity` names. stale_ok: when the directory cannot be asked, the
        last answer of the past STALE_SECONDS will do (a back end checking the hand-over
        of a login the front end verified a moment ago); logins never pass it."""
        if not identity.strip():
            return None
        key = identity.strip().lower()
        try:
            hits = self._search(identity_filter(identity, self.config.Mapping), limit=2)
        except DirectoryUnavailable:
            last = self._recent.get(key)
            if stale_ok and last is not None and time.monotonic() - last[1] < STALE_SECONDS:
                return last[0]
            raise
        found = [f for f in (self._found(dn, a, default_server) for dn, a in hits) if f]
        # Two entries answering to one name: neither may log in as the other.
        result = found[0] if len(found) == 1 else None
        if result is not None:
            if len(self._recent) > 10000:
                self._recent.clear()
            self._recent[key] = (result, time.monotonic())
        else:
            self._recent.pop(key, None)
        return result

    def recent(self, identity: str) -> Found | None:
        """The last answer find() had for `identity`, however old; no network. For what
        must not wait on the directory (a web page of a signed-in user)."""
        last = self._recent.get(identity.strip().lower())
        return last[0] if last else None

    def all(self, default_server: str) -> list[Found]:
        hits = self._search(self.config.Mapping.Filter)
        found = [f for f in (self._found(dn, a, default_server) for dn, a in hits) if f]
        return sorted(found, key=lambda f: f.name.lower())

    def bind_as(self, dn: str, password: str) -> bool:
        """Whether the directory accepts `password` for `dn` (LoginVerification Bind)."""
        if not password:
            return False  # an empty password would be an unauthenticated bind (RFC 4513 5.1.2)
        conn = self._connect(dn, password)
        if conn is None:
            return False
        conn.unbind()
        return True

    # --- writes ------------------------------------------------------------------
    def _checked(self, ok: bool, result: dict[str, Any], what: str) -> None:
        if not ok:
            raise DirectoryError(
                f"{what}: {result.get('description')} {result.get('message') or ''}".strip()
            )

    def dn_for(self, name: str) -> str:
        from ldap3.utils.dn import escape_rdn

        return f"{self.config.Mapping.Name}={escape_rdn(name)},{self.config.BaseDN}"

    def create(self, name: str, box: Mailbox, password_hash: str | None) -> str:
        mapping = self.config.Mapping
        attrs: dict[str, Any] = {k: v for k, v in mailbox_to_attrs(box, mapping).items() if v}
        attrs[mapping.Name] = [name]
        classes = {c.lower() for c in mapping.ObjectClasses}
        if classes & {"inetorgperson", "person", "organizationalperson"}:
            attrs.setdefault("cn", [box.DisplayName or name])
            attrs.setdefault("sn", [name])
        if password_hash and mapping.Password:
            attrs[mapping.Password] = [ARGON2_PREFIX + password_hash]
        dn = self.dn_for(name)
        ok, (_, result) = self._call("add", dn, list(mapping.ObjectClasses), attrs)
        self._checked(ok, result, f"adding {dn}")
        return dn

    def update(self, found: Found, box: Mailbox) -> None:
        import ldap3

        old = mailbox_to_attrs(found.mailbox, self.config.Mapping)
        new = mailbox_to_attrs(box, self.config.Mapping)
        changes = {
            attr: [(ldap3.MODIFY_REPLACE, values)]
            for attr, values in new.items()
            if values != old.get(attr)
        }
        if changes:
            ok, (_, result) = self._call("modify", found.dn, changes)
            self._checked(ok, result, f"changing {found.dn}")

    def set_password(self, found: Found, password_hash: str) -> None:
        import ldap3

        if not self.config.Mapping.Password:
            raise DirectoryError("Mapping.Password is empty: set the password in the directory")
        ok, (_, result) = self._call(
            "modify",
            found.dn,
            {
                self.config.Mapping.Password: [
                    (ldap3.MODIFY_REPLACE, [ARGON2_PREFIX + password_hash])
                ]
            },
        )
        self._checked(ok, result, f"setting the password of {found.dn}")

    def delete(self, found: Found) -> None:
        ok, (_, result) = self._call("delete", found.dn)
        self._checked(ok, result, f"removing {found.dn}")

    def close(self) -> None:
        with self._lock:
            self._drop()
