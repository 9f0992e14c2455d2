"""AUTHENTICATE PLAIN (SASL-IR or continuation) and LOGIN, which the back end refuses."""

from __future__ import annotations

from server.backend.imap.commands import NOT_AUTH, command
from server.backend.imap.session import (
    AUTHENTICATED,
    CAPABILITIES_AUTH,
    ImapSession,
    Login,
    No,
    tagged,
)
from server.protocols import sasl
from server.protocols.imap import requests as rq


@command(rq.Authenticate, states=NOT_AUTH)
def authenticate(s: ImapSession, cmd: rq.Command) -> bytes | None:
    args: rq.Authenticate = cmd.args  # type: ignore[assignment]
    if args.mechanism != "PLAIN":
        raise No("Unsupported authentication mechanism")
    if args.initial_response is None:
        s.auth_tag = cmd.tag
        s.reader.line_mode = True
        s.out.append(b"+ \r\n")
        return b""
    return plain_login(s, cmd.tag, args.initial_response)


def auth_continue(s: ImapSession, line: bytes) -> bytes:
    tag, s.auth_tag = s.auth_tag or "*", None
    s.reader.line_mode = False
    if line.strip() == b"*":
        return tagged(tag, b"BAD", "Authentication cancelled")
    try:
        data = sasl.decode_response(line)
    except sasl.SaslError:
        return tagged(tag, b"BAD", "Invalid base64 data")
    s.out = []
    try:
        tail = plain_login(s, tag, data)
    except No as exc:
        tail = tagged(tag, b"NO", exc.text, exc.code)
    out, s.out = s.out, []
    return b"".join(out) + tail


def plain_login(s: ImapSession, tag: str, data: bytes) -> bytes:
    try:
        plain = sasl.decode_plain(data)
    except sasl.SaslError:
        raise No("Malformed PLAIN response", "AUTHENTICATIONFAILED") from None
    result = s.config.authenticate(plain.authzid, plain.authcid, plain.password)
    if isinstance(result, str):
        raise No(result, "AUTHENTICATIONFAILED")
    assert isinstance(result, Login)
    s.login = result
    s.state = AUTHENTICATED
    return tagged(tag, b"OK", "Logged in", "CAPABILITY " + CAPABILITIES_AUTH)


@command(rq.Login, states=NOT_AUTH, blocking=False)
def login(s: ImapSession, cmd: rq.Command) -> bytes | None:
    raise No("LOGIN is not accepted here; use AUTHENTICATE PLAIN", "PRIVACYREQUIRED")
