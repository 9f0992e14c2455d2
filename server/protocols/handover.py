"""The front-end to back-end hand-over: mutual challenge-response over the proxy secret, sans-IO.

Why not a password: before this, the front end logged in to the back end with SASL PLAIN and
the proxy secret itself. Whoever answered on the back-end port (any local user, while the
back end was stopped; anyone on the path of a plain hop) received the secret and could then
open every mailbox. Here the secret never crosses the wire: each side proves it knows the
secret with an HMAC-SHA256 over fresh nonces from BOTH sides, and the front end checks the
back end's proof before it says who the user is or where they connect from.

The exchange (one CRLF-terminated ASCII line each; nonces are 32 random bytes, base64url
without padding; proofs are lower-case hex)::

    BE: MCHO1 CHALLENGE <protocol> <server> <nonce_b>
    FE: MCHO1 HELLO <nonce_f>
    BE: MCHO1 PROOF <mac_b>      mac_b = HMAC(secret, "backend",  protocol, server, nonce_b, nonce_f)
        (the front end verifies mac_b, and closes without another byte when it is wrong)
    FE: MCHO1 LOGIN <mailbox> <proxy> <mac_f>
                                 mac_f = HMAC(secret, "frontend", protocol, server, nonce_b, nonce_f,
                                              mailbox, proxy)
    BE: MCHO1 OK                 then the protocol, already authenticated (IMAP: PREAUTH greeting)
     or MCHO1 NO <text>          the mailbox may not be opened here (text: for the client)

`mailbox` is the mailbox name (UTF-8, base64url) and `proxy` the PROXY protocol v2 header
with the real client address (server/protocols/proxyv2.py, base64url). Fields are
length-prefixed inside the MAC, and each side's MAC has its own label, so no proof can be
read as another (a back end's proof is never a front end's, IMAP's never POP3's, one
server's never another's).

What this gives (docs/security.md has the threat model):
- An impostor on the back-end port learns a nonce and the protocol name, nothing else: it
  cannot produce mac_b, so the front end stops before LOGIN.
- A replayed LOGIN (or HELLO, or PROOF) fails at the real back end, whose nonce_b is new
  for every connection.
- The back end does nothing for a peer that has not proved itself but compute one HMAC; the
  I/O layer bounds the bytes (MAX_INPUT) and the time (server/backend/service.py).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import struct
from dataclasses import dataclass

from server.protocols import proxyv2

TAG = b"MCHO1"
NONCE_LEN = 32
MAC_LEN = 32
# Everything a front end sends in the hand-over fits in well under this (two lines: a nonce;
# a mailbox name, a PROXY header and a MAC). The back end reads no more than this before the
# peer has proved itself.
MAX_INPUT = 4096
MAX_LINE = 2048
_LABEL = b"mailctl-handover-v1\0"


class HandoverError(Exception):
    """The peer broke the hand-over: bad syntax, wrong proof, wrong order, too much data."""


class ImpostorError(HandoverError):
    """The back end did not prove it knows the proxy secret (or is not the server and
    protocol asked for): the front end has told it nothing about the user."""


class HandoverRefused(HandoverError):
    """The back end checked the front end and refused the mailbox; `text` is its reason."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_LEN)


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(field: bytes, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(field + b"=" * (-len(field) % 4))
    except (binascii.Error, ValueError):
        raise HandoverError(f"malformed {what}") from None


def _nonce(field: bytes) -> bytes:
    nonce = _unb64(field, "nonce")
    if len(nonce) != NONCE_LEN:
        raise HandoverError("malformed nonce")
    return nonce


def _proof(field: bytes) -> bytes:
    try:
        mac = bytes.fromhex(field.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise HandoverError("malformed proof") from None
    if len(mac) != MAC_LEN:
        raise HandoverError("malformed proof")
    return mac


def mac(secret: bytes, role: bytes, *fields: bytes) -> bytes:
    """HMAC-SHA256 keyed by the proxy secret over a label, the role and length-prefixed
    fields (so no two different field lists hash the same bytes)."""
    # One message and the one-shot hmac.digest: the same MAC as feeding the parts one by
    # one, without an HMAC object and a call per part (one per login on the hand-off path).
    parts = [_LABEL, role]
    for f in fields:
        parts += (struct.pack("!I", len(f)), f)
    return hmac.digest(secret, b"".join(parts), "sha256")


def backend_mac(secret: bytes, protocol: str, server: str, nonce_b: bytes, nonce_f: bytes) -> bytes:
    return mac(secret, b"backend", protocol.encode(), server.lower().encode(), nonce_b, nonce_f)


def frontend_mac(
    secret: bytes,
    protocol: str,
    server: str,
    nonce_b: bytes,
    nonce_f: bytes,
    mailbox: str,
    proxy: bytes,
) -> bytes:
    return mac(
        secret,
        b"frontend",
        protocol.encode(),
        server.lower().encode(),
        nonce_b,
        nonce_f,
        mailbox.encode("utf-8"),
        proxy,
    )


def _line(*parts: bytes) -> bytes:
    return b" ".join((TAG, *parts)) + b"\r\n"


def _split(line: bytes, verb: bytes, count: int | None) -> list[bytes]:
    """The fields after `MCHO1 <verb>`; `count` None: the rest as one field (free text)."""
    if not line.endswith(b"\r\n"):
        raise HandoverError("line not terminated by CRLF")
    body = line[:-2]
    if count is None:
        head, _, rest = body.partition(b" ")
        verb_found, _, rest = rest.partition(b" ")
        if head != TAG or verb_found != verb:
            raise HandoverError(f"expected {verb.decode()}")
        return [rest]
    fields = body.split(b" ")
    if len(fields) != count + 2 or fields[0] != TAG or fields[1] != verb:
        raise HandoverError(f"expected {verb.decode()}")
    return fields[2:]


class _Lines:
    """A CRLF line splitter with a hard bound on what it buffers and on all it takes in."""

    def __init__(self, max_total: int) -> None:
        self.buffer = b""
        self.taken = 0
        self.max_total = max_total

    def feed(self, data: bytes) -> None:
        self.taken += len(data)
        if self.taken > self.max_total:
            raise HandoverError("hand-over too long")
        self.buffer += data
        if b"\n" not in self.buffer and len(self.buffer) > MAX_LINE:
            raise HandoverError("hand-over line too long")

    def next(self) -> bytes | None:
        end = self.buffer.find(b"\n")
        if end < 0:
            return None
        line, self.buffer = self.buffer[: end + 1], self.buffer[end + 1 :]
        if len(line) > MAX_LINE:
            raise HandoverError("hand-over line too long")
        return line


def decode_proxy(proxy: bytes) -> proxyv2.ProxyInfo | None:
    """The real client from a hand-over's PROXY v2 header (None for LOCAL). The header must
    be exactly one: bytes after it would otherwise ride along unchecked into the session."""
    try:
        client, used = proxyv2.decode(proxy)
    except proxyv2.ProxyHeaderError as exc:
        raise HandoverError(f"bad PROXY header: {exc}") from None
    if used != len(proxy):
        raise HandoverError("bad PROXY header: trailing bytes")
    return client


@dataclass(frozen=True)
class Accepted:
    """The front end proved itself: the mailbox it hands over and the real client."""

    mailbox: str
    client: proxyv2.ProxyInfo | None
    proxy_header: bytes


class BackendHandshake:
    """The back end's side. Use::

    hs = BackendHandshake(secret, "IMAP4", "MBX01")
    send(hs.challenge())
    while hs.accepted is None:           # under a fixed deadline, at most MAX_INPUT bytes
        data = read(hs.room())           # never more than the hand-over may still take
        send(hs.receive(data))           # raises HandoverError: close, say nothing
    ... check the mailbox, then send(hs.ok()) or send(hs.refuse(text))
    """

    def __init__(
        self, secret: bytes, protocol: str, server: str, nonce: bytes | None = None
    ) -> None:
        self.secret, self.protocol, self.server = secret, protocol, server
        self.nonce = nonce or new_nonce()
        self.peer_nonce: bytes | None = None
        self.accepted: Accepted | None = None
        self._lines = _Lines(MAX_INPUT)
        self._state = "start"

    def challenge(self) -> bytes:
        assert self._state == "start"
        self._state = "hello"
        return _line(b"CHALLENGE", self.protocol.encode(), self.server.encode(), _b64(self.nonce))

    def room(self) -> int:
        """How many more bytes the hand-over may take."""
        return max(self._lines.max_total - self._lines.taken, 0)

    def receive(self, data: bytes) -> bytes:
        """Take peer bytes; returns what to send (possibly nothing)."""
        if self._state in ("done", "start"):
            raise HandoverError("unexpected data")
        self._lines.feed(data)
        out = b""
        while (line := self._lines.next()) is not None:
            out += self._on_line(line)
        return out

    def _on_line(self, line: bytes) -> bytes:
        if self._state == "hello":
            (nonce_f,) = _split(line, b"HELLO", 1)
            self.peer_nonce = _nonce(nonce_f)
            if hmac.compare_digest(self.peer_nonce, self.nonce):
                raise HandoverError("reflected nonce")
            self._state = "login"
            return _line(
                b"PROOF",
                backend_mac(self.secret, self.protocol, self.server, self.nonce, self.peer_nonce)
                .hex()
                .encode(),
            )
        if self._state == "login":
            mailbox_f, proxy_f, mac_f = _split(line, b"LOGIN", 3)
            proof = _proof(mac_f)
            proxy = _unb64(proxy_f, "PROXY header")
            raw_mailbox = _unb64(mailbox_f, "mailbox")
            try:
                mailbox = raw_mailbox.decode("utf-8")
            except UnicodeDecodeError:
                raise HandoverError("malformed mailbox") from None
            assert self.peer_nonce is not None
            expected = frontend_mac(
                self.secret, self.protocol, self.server, self.nonce, self.peer_nonce, mailbox, proxy
            )
            # Checked before anything in the message is believed or parsed further.
            if not hmac.compare_digest(proof, expected):
                raise HandoverError("wrong proof: the peer does not know the proxy secret")
            client = decode_proxy(proxy)
            if self._lines.buffer:
                raise HandoverError("data after the hand-over")
            self._state = "done"
            self.accepted = Accepted(mailbox, client, proxy)
            return b""
        raise HandoverError("unexpected data")

    def ok(self) -> bytes:
        assert self.accepted is not None
        return _line(b"OK")

    def refuse(self, text: str) -> bytes:
        clean = " ".join(text.split()) or "refused"
        return _line(b"NO", clean.encode("utf-8", "replace")[:400])


class FrontendHandshake:
    """The front end's side. Feed it the back end's lines; it returns what to send, and
    raises ImpostorError when the back end cannot prove itself (having sent nothing but a
    nonce), HandoverRefused when the back end refuses the mailbox. `done` after OK."""

    def __init__(
        self,
        secret: bytes,
        protocol: str,
        server: str,
        mailbox: str | None,
        proxy_header: bytes,
        nonce: bytes | None = None,
    ) -> None:
        """`mailbox` None: stop once the back end has proved itself (`ready`), sending
        nothing more, until login() names the session (a connection proved ahead of time;
        the LOGIN line is the same as it would have been, under the same nonces)."""
        self.secret, self.protocol, self.server = secret, protocol, server
        self.mailbox, self.proxy_header = mailbox, proxy_header
        self.nonce = nonce or new_nonce()
        self.peer_nonce: bytes | None = None
        self.done = False
        self._state = "challenge"

    @property
    def ready(self) -> bool:
        """The back end has proved itself and waits for login()."""
        return self._state == "ready"

    def login(self, mailbox: str, proxy_header: bytes) -> bytes:
        """The LOGIN line of a handshake made without a mailbox, once `ready`."""
        if self._state != "ready":
            raise HandoverError("login() before the back end proved itself")
        self.mailbox, self.proxy_header = mailbox, proxy_header
        return self._login_line()

    def _login_line(self) -> bytes:
        assert self.peer_nonce is not None and self.mailbox is not None
        self._state = "result"
        mac_f = frontend_mac(
            self.secret,
            self.protocol,
            self.server,
            self.peer_nonce,
            self.nonce,
            self.mailbox,
            self.proxy_header,
        )
        return _line(
            b"LOGIN",
            _b64(self.mailbox.encode("utf-8")),
            _b64(self.proxy_header),
            mac_f.hex().encode(),
        )

    def on_line(self, line: bytes) -> bytes:
        if len(line) > MAX_LINE:
            raise HandoverError("hand-over line too long")
        if self._state == "challenge":
            try:
                protocol, server, nonce_b = _split(line, b"CHALLENGE", 3)
            except HandoverError:
                raise ImpostorError(f"not a mailctl back end: {line[:80]!r}") from None
            if protocol.decode("ascii", "replace") != self.protocol:
                raise ImpostorError(f"the back end serves {protocol[:20]!r}, not {self.protocol}")
            if server.decode("ascii", "replace").lower() != self.server.lower():
                raise ImpostorError(
                    f"the back end belongs to server {server[:64]!r}, not {self.server}"
                )
            self.peer_nonce = _nonce(nonce_b)
            self._state = "proof"
            return _line(b"HELLO", _b64(self.nonce))
        if self._state == "proof":
            try:
                (mac_b,) = _split(line, b"PROOF", 1)
                proof = _proof(mac_b)
            except HandoverError as exc:
                raise ImpostorError(f"the back end sent no valid proof ({exc})") from None
            assert self.peer_nonce is not None
            expected = backend_mac(
                self.secret, self.protocol, self.server, self.peer_nonce, self.nonce
            )
            if not hmac.compare_digest(proof, expected):
                raise ImpostorError("the back end does not know the proxy secret")
            if self.mailbox is None:
                self._state = "ready"
                return b""
            return self._login_line()
        if self._state == "result":
            if line == _line(b"OK"):
                self._state = "done"
                self.done = True
                return b""
            (text,) = _split(line, b"NO", None)
            raise HandoverRefused(text.decode("utf-8", "replace"))
        raise HandoverError("unexpected data after the hand-over")


__all__ = [
    "MAX_INPUT",
    "Accepted",
    "BackendHandshake",
    "FrontendHandshake",
    "HandoverError",
    "HandoverRefused",
    "ImpostorError",
    "backend_mac",
    "frontend_mac",
    "new_nonce",
]
