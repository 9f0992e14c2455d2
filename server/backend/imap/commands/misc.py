"""CAPABILITY, NOOP, ID, ENABLE, NAMESPACE, LOGOUT, CHECK, CLOSE, UNSELECT, STARTTLS."""

from __future__ import annotations

from server.backend.imap.commands import ANY, AUTH, SELECTED, command
from server.backend.imap.session import (
    AUTHENTICATED,
    CAPABILITIES_AUTH,
    CAPABILITIES_PREAUTH,
    LOGOUT,
    ImapSession,
    No,
    tagged,
)
from server.protocols.imap import parser as p
from server.protocols.imap.wire import encode


@command(p.Capability, states=ANY, blocking=False)
def capability(s: ImapSession, cmd: p.Command) -> bytes | None:
    caps = CAPABILITIES_AUTH if s.authenticated else CAPABILITIES_PREAUTH
    s.untagged(b"CAPABILITY " + caps.encode())
    return None


@command(p.Noop, p.Check, states=ANY)
def noop(s: ImapSession, cmd: p.Command) -> bytes | None:
    if isinstance(cmd.args, p.Check) and s.selected is None:
        return tagged(cmd.tag, b"BAD", "No mailbox selected")
    s.sync(allow_expunge=True)
    return None


@command(p.Id, states=ANY, blocking=False)
def id_(s: ImapSession, cmd: p.Command) -> bytes | None:
    s.untagged(b"ID " + encode(["name", "mailctl", "version", s.config.server_version]))
    return None


@command(p.Enable, states=AUTH, blocking=False)
def enable(s: ImapSession, cmd: p.Command) -> bytes | None:
    args: p.Enable = cmd.args  # type: ignore[assignment]
    enabled = []
    had = {"CONDSTORE": s.condstore, "QRESYNC": s.qresync}
    for cap in args.capabilities:
        if cap == "IMAP4REV2":
            if not s.rev2 and "IMAP4rev2" not in enabled:
                enabled.append("IMAP4rev2")
                s.rev2 = True
                s.reader.utf8_names = True
                if s.selected is not None:
                    s.selected.recent.clear()
            continue
        if cap in had and not had[cap] and cap not in enabled:
            enabled.append(cap)
            s.enable_condstore()
            s.qresync = s.qresync or cap == "QRESYNC"
    s.untagged(b"ENABLED" + b"".join(b" " + c.encode() for c in enabled))
    return None


@command(p.Namespace, states=AUTH, blocking=False)
def namespace(s: ImapSession, cmd: p.Command) -> bytes | None:
    s.untagged(b'NAMESPACE (("" "/")) NIL NIL')
    return None


@command(p.Logout, states=ANY, blocking=False)
def logout(s: ImapSession, cmd: p.Command) -> bytes | None:
    s.out.append(s.bye("Logging out"))
    s.state = LOGOUT
    return None


@command(p.Close, states=SELECTED)
def close(s: ImapSession, cmd: p.Command) -> bytes | None:
    sel = s.sel
    if not sel.readonly:
        # CLOSE expunges silently (RFC 3501 6.4.2).
        s.store.expunge(sel.name)
    s.selected = None
    s.state = AUTHENTICATED
    return None


@command(p.Unselect, states=SELECTED, blocking=False)
def unselect(s: ImapSession, cmd: p.Command) -> bytes | None:
    s.selected = None
    s.state = AUTHENTICATED
    return None


@command(p.Starttls, states=ANY, blocking=False)
def starttls(s: ImapSession, cmd: p.Command) -> bytes | None:
    raise No("TLS is chosen by the listener on the back end")
