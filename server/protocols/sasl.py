"""SASL PLAIN (RFC 4616) and the base64 SASL response lines that carry it, for every place
that takes a password: IMAP AUTHENTICATE (back end and front end), POP3 AUTH (RFC 5034,
back end and front end) and SMTP AUTH (RFC 4954, submission).

Sans-IO and policy-free: `decode_plain()` says what the client sent; whether an
authorization identity other than the user is allowed (a front end refuses it, a back end
may accept it from the proxy) is the caller's decision (`Plain.acts_as_other`).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

__all__ = ["Plain", "SaslError", "decode_plain", "decode_response", "encode_plain"]


class SaslError(ValueError):
    """A malformed SASL response; its text may be shown to the client."""


@dataclass(frozen=True, slots=True)
class Plain:
    """The three fields of a PLAIN message: message = [authzid] NUL authcid NUL passwd."""

    authzid: str  # "" when the client acts as itself
    authcid: str
    password: str

    @property
    def acts_as_other(self) -> bool:
        """The client asks to act as someone other than the user it authenticates as."""
        return bool(self.authzid) and self.authzid.lower() != self.authcid.lower()


def decode_response(line: bytes) -> bytes:
    """A client's base64 response (a continuation line or an initial response): the data
    it carries. "=" is the empty response (RFC 4959, RFC 5034, RFC 4954); anything that is
    not canonical base64 - white space inside, missing padding, bytes after it - is refused
    rather than guessed at."""
    data = line.strip()
    if data == b"=":
        return b""
    try:
        return binascii.a2b_base64(data, strict_mode=True)
    except binascii.Error:
        raise SaslError("Invalid base64 response") from None


def decode_plain(message: bytes) -> Plain:
    """A decoded PLAIN message. Its fields are UTF-8 (RFC 4616 section 2) and the
    authentication identity may not be empty; an empty password is left for the directory
    to refuse, like any other wrong one."""
    parts = message.split(b"\0")
    if len(parts) != 3:
        raise SaslError("Malformed PLAIN response")
    try:
        authzid, authcid, password = (part.decode("utf-8") for part in parts)
    except UnicodeDecodeError:
        raise SaslError("Malformed PLAIN response: not UTF-8") from None
    if not authcid:
        raise SaslError("Malformed PLAIN response: no user name")
    return Plain(authzid, authcid, password)


def encode_plain(authcid: str, password: str, authzid: str = "") -> bytes:
    """The base64 response a client sends for PLAIN (what a proxy or a test logs in with)."""
    return base64.b64encode(f"{authzid}\0{authcid}\0{password}".encode())
