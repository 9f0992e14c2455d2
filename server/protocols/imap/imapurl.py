"""IMAP URLs (RFC 5092) naming one message or part, as CATENATE (RFC 4469) and URLAUTH
(RFC 4467) use them: parsing, validation and the URLAUTH verifier.

Accepted forms:
    imap://[user[;AUTH=type]@]host[:port]/mailbox[;UIDVALIDITY=n]/;UID=n
        [/;SECTION=section][/;PARTIAL=origin[.length]][[;EXPIRE=date-time];URLAUTH=access
        [:mechanism:token]]
    /mailbox[;UIDVALIDITY=n]/;UID=n[/;SECTION=...][/;PARTIAL=...]   (absolute path)

The mailbox name is percent-encoded UTF-8 (RFC 5092 section 3.2); the keys (UID, SECTION,
...) are case-insensitive. Anything else (message lists, relative paths other than an
absolute path, a port that is not a number) is refused with UrlError.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, unquote_to_bytes

from server.protocols.imap import requests as rq
from server.protocols.imap.lexer import Cursor
from server.protocols.imap.parser import parse_section

#: The one URLAUTH mechanism this server offers (RFC 4467 section 7: "INTERNAL").
INTERNAL = "INTERNAL"
KEY_BYTES = 32


class UrlError(ValueError):
    """Not a URL this server can use; the text says why (for [BADURL] answers)."""


@dataclass(frozen=True)
class ImapUrl:
    mailbox: str
    uid: int
    uidvalidity: int | None = None
    section: rq.Section | None = None
    partial: tuple[int, int | None] | None = None
    user: str | None = None  # absolute URLs: the mailbox owner (iuserinfo)
    host: str | None = None
    port: int | None = None
    expire: datetime | None = None
    access: str | None = None  # "user+name", "submit+name", "authuser", "anonymous"
    mechanism: str | None = None  # upper-case
    token: str | None = None  # hex, lower-case
    rump: str = ""  # the URL up to the access identifier: what the verifier signs

    @property
    def absolute(self) -> bool:
        return self.host is not None


_SCHEME = re.compile(r"imap://", re.IGNORECASE)
_PARAM = re.compile(r";([A-Za-z]+)=([^;/]*)")
_NZ = re.compile(r"[1-9][0-9]{0,9}\Z")
_NUMBER = re.compile(r"[0-9]{1,10}\Z")
_HEX = re.compile(r"[0-9A-Fa-f]{32,}\Z")
_MECH = re.compile(r"[A-Za-z0-9\-.]+\Z")
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})\Z",
    re.IGNORECASE,
)


def _decode(text: str, what: str) -> str:
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise UrlError(f"{what} is not percent-encoded UTF-8") from None


def _nz(value: str, what: str) -> int:
    if not _NZ.match(value) or int(value) > 0xFFFFFFFF:
        raise UrlError(f"Invalid {what}")
    return int(value)


def _section(text: str) -> rq.Section:
    raw = _decode(text, "SECTION").encode("utf-8")
    cur = Cursor([b"[" + raw + b"]"])
    try:
        section = parse_section(cur)
        cur.end()
    except ValueError:
        raise UrlError("Invalid SECTION") from None
    return section


def _partial(text: str) -> tuple[int, int | None]:
    origin, dot, length = text.partition(".")
    if not _NUMBER.match(origin) or (dot and not _NZ.match(length)):
        raise UrlError("Invalid PARTIAL")
    return int(origin), int(length) if dot else None


def parse(url: str, base_mailbox: str | None = None) -> ImapUrl:
    """One IMAP URL naming a message or part (see the module docstring). With a
    `base_mailbox` (the selected mailbox), a relative ";UID=n..." names a message of it
    (RFC 5092 section 7: a relative URL against the mailbox's URL)."""
    if any(c in url for c in ' \r\n\x00"') or not url.isascii():
        raise UrlError("The URL has characters a URL may not have")
    user = host = None
    port = None
    rest = url
    if base_mailbox is not None and url[:5].upper() == ";UID=":
        rest = "/" + quote(base_mailbox.encode("utf-8"), safe="") + "/" + url
    if _SCHEME.match(url):
        rest = url[7:]
        server, slash, rest = rest.partition("/")
        if not slash:
            raise UrlError("The URL names no message")
        userinfo, at, hostport = server.rpartition("@")
        if at:
            enc_user = userinfo.split(";", 1)[0]
            if not enc_user:
                raise UrlError("The URL names no user")
            user = _decode(enc_user, "User name")
        host, colon, port_text = hostport.partition(":")
        if not host:
            raise UrlError("The URL names no server")
        if colon:
            if not _NUMBER.match(port_text):
                raise UrlError("Invalid port")
            port = int(port_text)
        rest = "/" + rest
    if not rest.startswith("/") or rest.startswith("//"):
        raise UrlError("Only absolute IMAP URLs and absolute paths are accepted")
    rest = rest[1:]
    # enc-mailbox [;UIDVALIDITY=n] "/" ;UID=n ...: the mailbox ends at the "/;UID=".
    m = re.search(r"/;uid=", rest, re.IGNORECASE)
    if m is None:
        raise UrlError("The URL names no message (;UID=)")
    mailbox_ref, tail = rest[: m.start()], rest[m.start() + 1 :]
    uidvalidity = None
    v = re.search(r";uidvalidity=", mailbox_ref, re.IGNORECASE)
    if v is not None:
        uidvalidity = _nz(mailbox_ref[v.end() :], "UIDVALIDITY")
        mailbox_ref = mailbox_ref[: v.start()]
    if not mailbox_ref:
        raise UrlError("The URL names no mailbox")
    mailbox = _decode(mailbox_ref, "Mailbox name")  # UTF-8, not modified UTF-7
    if mailbox.upper() == "INBOX":
        mailbox = "INBOX"
    # The URLAUTH part, if any, starts at ";EXPIRE=" or ";URLAUTH=".
    auth = re.search(r";(expire|urlauth)=", tail, re.IGNORECASE)
    auth_text = ""
    if auth is not None:
        tail, auth_text = tail[: auth.start()], tail[auth.start() :]
    uid = None
    section = partial = None
    for i, piece in enumerate(tail.split("/")):
        pm = _PARAM.fullmatch(piece)
        if pm is None:
            raise UrlError("Invalid URL part")
        key, value = pm.group(1).upper(), pm.group(2)
        if i == 0 and key == "UID":
            uid = _nz(value, "UID")
        elif key == "SECTION" and section is None and partial is None and i > 0:
            section = _section(value)
        elif key == "PARTIAL" and partial is None and i > 0:
            partial = _partial(value)
        else:
            raise UrlError(f"Unexpected ;{key}= in the URL")
    assert uid is not None
    expire = access = mechanism = token = None
    rump = url
    if auth_text:
        if host is None:
            raise UrlError("URLAUTH needs an absolute URL")
        am = re.fullmatch(
            r"(?:;expire=([^;]+))?;urlauth=([^:;/]+)(?::([^:]+):([^:]+))?", auth_text, re.IGNORECASE
        )
        if am is None:
            raise UrlError("Invalid URLAUTH")
        if am.group(1) is not None:
            if not _RFC3339.match(am.group(1)):
                raise UrlError("Invalid EXPIRE")
            expire = datetime.fromisoformat(am.group(1).upper().replace("Z", "+00:00"))
        access = _access(am.group(2))
        if am.group(3) is not None:
            if not _MECH.match(am.group(3)) or not _HEX.match(am.group(4)):
                raise UrlError("Invalid URLAUTH verifier")
            mechanism, token = am.group(3).upper(), am.group(4).lower()
            rump = url[: len(url) - len(am.group(3)) - len(am.group(4)) - 2]
    return ImapUrl(
        mailbox,
        uid,
        uidvalidity,
        section,
        partial,
        user,
        host,
        port,
        expire,
        access,
        mechanism,
        token,
        rump,
    )


def _access(text: str) -> str:
    lower = text.lower()
    if lower in ("authuser", "anonymous"):
        return lower
    kind, plus, name = text.partition("+")
    if plus and kind.lower() in ("user", "submit") and name:
        return f"{kind.lower()}+{_decode(name, 'Access user')}"
    raise UrlError("Invalid URLAUTH access identifier")


def badurl(url: str) -> str:
    """The text of a [BADURL ...] response code: the URL as sent, bare (RFC 4469
    erratum 4046), with what may not stand there ("]", controls, 8-bit) percent-encoded."""
    return "".join(
        c if 0x20 < ord(c) < 0x7F and c != "]" else "".join(f"%{b:02X}" for b in c.encode("utf-8"))
        for c in url
    )


def verifier(key: bytes, rump: str) -> str:
    """The INTERNAL mechanism's token for a URL rump: HMAC-SHA256 under the mailbox's
    access key, as hex (RFC 4467 section 7 leaves the algorithm to the server)."""
    return hmac.new(key, rump.encode("utf-8"), hashlib.sha256).hexdigest()


def verify(key: bytes, url: ImapUrl) -> bool:
    """True when `url` carries a valid INTERNAL verifier under `key` (constant time)."""
    if url.mechanism != INTERNAL or url.token is None:
        return False
    return hmac.compare_digest(verifier(key, url.rump), url.token)


def authorized(url: ImapUrl, user: str | None) -> bool:
    """RFC 4467 section 3: may `user` (None: not logged in) use the URL's access?"""
    access = url.access or ""
    if access == "anonymous":
        return True
    if user is None:
        return False
    if access == "authuser":
        return True
    if access.startswith("user+"):
        return same_user(access[5:], user)
    return False  # submit+: only a submission server, which this is not


def same_user(a: str, b: str) -> bool:
    """Names the same user: case-insensitive, with or without the domain part."""
    a, b = a.lower(), b.lower()
    return a == b or a.partition("@")[0] == b or b.partition("@")[0] == a
