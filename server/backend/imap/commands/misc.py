"""CAPABILITY, NOOP, ID, ENABLE, NAMESPACE, LOGOUT, CHECK, CLOSE, UNSELECT, STARTTLS."""

from __future__ import annotations

from server.backend.imap.commands import ANY, AUTH, SELECTED, command, compress
from server.backend.imap.session import (
    AUTHENTICATED,
    CAPABILITIES_AUTH,
    CAPABILITIES_PREAUTH,
    LOGOUT,
    ImapSession,
    No,
    tagged,
)
from server.protocols.imap import requests as rq
from server.protocols.imap.wire import encode


@command(rq.Capability, states=ANY, blocking=False)
def capability(s: ImapSession, cmd: rq.Command) -> bytes | None:
    caps = CAPABILITIES_AUTH if s.authenticated else CAPABILITIES_PREAUTH
    if s.direct:  # COMPRESS is the back end's only with no front end in the path
        caps += " " + compress.CAPABILITY
    s.untagged(b"CAPABILITY " + caps.encode())
    return None


def writes_nothing(s: ImapSession, cmd: rq.Command) -> bool:
    """A NOOP or CHECK that may run in place (Job.inline): with no folder selected it
    reads nothing at all; in a read-only folder with no wake-up pending it reads the few
    changes since the folder's MODSEQ. In a read-write folder sync may claim \\Recent (a
    write, which can wait for the store's lock): a worker thread's job."""
    sel = s.selected
    return sel is None or (sel.readonly and not s.dirty)


@command(rq.Noop, rq.Check, states=ANY, inline=writes_nothing)
def noop(s: ImapSession, cmd: rq.Command) -> bytes | None:
    if isinstance(cmd.args, rq.Check) and s.selected is None:
        return tagged(cmd.tag, b"BAD", "No mailbox selected")
    s.sync(allow_expunge=True)
    return None


@command(rq.Id, states=ANY, blocking=False)
def id_(s: ImapSession, cmd: rq.Command) -> bytes | None:
    s.untagged(b"ID " + encode(["name", "mailctl", "version", s.config.server_version]))
    return None


@command(rq.Enable, states=AUTH, blocking=False)
def enable(s: ImapSession, cmd: rq.Command) -> bytes | None:
    args: rq.Enable = cmd.args  # type: ignore[assignment]
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


@command(rq.Namespace, states=AUTH, blocking=False)
def namespace(s: ImapSession, cmd: rq.Command) -> bytes | None:
    s.untagged(b'NAMESPACE (("" "/")) NIL NIL')
    return None


@command(rq.Logout, states=ANY, blocking=False)
def logout(s: ImapSession, cmd: rq.Command) -> bytes | None:
    s.out.append(s.bye("Logging out"))
    s.state = LOGOUT
    return None


@command(rq.Close, states=SELECTED)
def close(s: ImapSession, cmd: rq.Command) -> bytes | None:
    sel = s.sel
    if not sel.readonly:
        # CLOSE expunges silently (RFC 3501 6.4.2).
        s.store.expunge(sel.name)
    s.selected = None
    s.state = AUTHENTICATED
    return None


@command(rq.Unselect, states=SELECTED, blocking=False)
def unselect(s: ImapSession, cmd: rq.Command) -> bytes | None:
    s.selected = None
    s.state = AUTHENTICATED
    return None


@command(rq.Starttls, states=ANY, blocking=False)
def starttls(s: ImapSession, cmd: rq.Command) -> bytes | None:
    raise No("TLS is chosen by the listener on the back end")
