"""SELECT/EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE/UNSUBSCRIBE, LIST, LSUB, STATUS."""

from __future__ import annotations

import re

from server.backend.imap.commands import AUTH, command
from server.backend.imap.session import (
    AUTHENTICATED,
    SELECTED,
    ImapSession,
    No,
    Selected,
    flags_response,
    permanentflags_response,
    tagged,
)
from server.protocols.imap import requests as rq
from server.protocols.imap import utf7
from server.protocols.imap.seqset import format_seqset
from server.protocols.imap.wire import encode_string
from server.store import api


def wire_name(name: str, utf8: bool = False) -> bytes:
    """A mailbox name as sent to clients: modified UTF-7, quoted; with utf8 (IMAP4rev2
    enabled) the UTF-8 name itself, quoted (RFC 9051 4.3 allows UTF-8 in quoted strings)."""
    if name.upper() == "INBOX":
        return b'"INBOX"'
    if utf8 and not any(c in name for c in "\r\n\x00"):
        return (
            b'"'
            + name.encode("utf-8", "surrogateescape").replace(b"\\", b"\\\\").replace(b'"', b'\\"')
            + b'"'
        )
    return encode_string(utf7.encode(name))


def _no_inbox_change(name: str, what: str) -> None:
    if name.upper() == "INBOX":
        raise No(f"INBOX cannot be {what}")


# --- SELECT / EXAMINE -----------------------------------------------------------------


#: Folders up to this size may be selected on the event loop when their message list is
#: kept by the store (see select_in_place).
INLINE_MAX_MESSAGES = 5000


def select_in_place(s: ImapSession, cmd: rq.Command) -> bool:
    """SELECT/EXAMINE of a folder whose message list the store keeps: a read, bounded by
    the folder's size (a thread hand-off costs more than such a SELECT). Claiming \\Recent
    is a write: when there is any to claim, that part goes to a worker (_select_claiming)."""
    args: rq.Select = cmd.args  # type: ignore[assignment]
    size = s.store.cached_size(args.mailbox)
    return size is not None and size <= INLINE_MAX_MESSAGES


@command(rq.Select, states=AUTH, inline=select_in_place)
def select(s: ImapSession, cmd: rq.Command) -> bytes | None:
    args: rq.Select = cmd.args  # type: ignore[assignment]
    if args.qresync is not None and not s.qresync:
        return tagged(cmd.tag, b"BAD", "QRESYNC is not enabled")
    if s.selected is not None:  # closed even when this SELECT fails (RFC 3501 6.3.1)
        s.selected = None
        s.state = AUTHENTICATED
        if s.qresync or s.rev2:
            s.untagged(b"OK [CLOSED] Previous mailbox closed")
    if args.condstore:
        s.enable_condstore()
    snap = s.store.snapshot(args.mailbox)
    if not args.readonly and snap.status.recent:
        # Counted in the snapshot's own read: with none to claim, no write transaction.
        s.resume_with(lambda s, cmd: _selected(s, cmd, snap, True), cmd)
        return b""
    return _selected(s, cmd, snap, False)


def _selected(s: ImapSession, cmd: rq.Command, snap: api.FolderSnapshot, claim: bool) -> bytes:
    args: rq.Select = cmd.args  # type: ignore[assignment]
    sel = Selected(snap.status.name, args.readonly, snap)
    if claim:
        sel.recent = s.store.claim_recent(sel.name) & set(sel.uids)
    elif snap.status.recent:
        # EXAMINE shows \Recent without taking it (RFC 3501 6.3.2). Every delivery gets a new
        # top UID and a claim clears the whole folder, so the recent messages are the last ones.
        sel.recent = set(sel.uids[-snap.status.recent :])
    if s.rev2:
        sel.recent = set()  # IMAP4rev2 has no \Recent (RFC 9051 appendix E)
    s.untagged(flags_response(sel.keywords))
    if args.readonly:
        s.untagged(b"OK [PERMANENTFLAGS ()] Read-only mailbox")
    else:
        s.untagged(permanentflags_response(sel.keywords))
    s.untagged(b"%d EXISTS" % sel.exists)
    if not s.rev2:  # RFC 9051 dropped RECENT and the UNSEEN response code
        s.untagged(b"%d RECENT" % len(sel.recent))
    first_unseen = next((i + 1 for i, r in enumerate(sel.rows) if "\\Seen" not in r.flags), 0)
    if first_unseen and not s.rev2:
        s.untagged(b"OK [UNSEEN %d] First unseen" % first_unseen)
    if s.rev2:  # RFC 9051 6.3.2: the mailbox's name as the server spells it
        s.untagged(b'LIST () "/" ' + wire_name(sel.name, True))
    s.untagged(b"OK [UIDVALIDITY %d] UIDs valid" % sel.uidvalidity)
    s.untagged(b"OK [UIDNEXT %d] Predicted next UID" % sel.uidnext)
    s.untagged(b"OK [HIGHESTMODSEQ %d] Highest" % sel.modseq)
    s.selected = sel
    s.state = SELECTED
    if args.qresync is not None and args.qresync.uidvalidity == sel.uidvalidity:
        _qresync(s, sel, args.qresync)
    code = "READ-ONLY" if args.readonly else "READ-WRITE"
    return tagged(cmd.tag, b"OK", f"{cmd.name} completed", code)


def _qresync(s: ImapSession, sel: Selected, q: rq.QresyncParams) -> None:
    changes = s.store.changes_since(sel.name, q.modseq)
    vanished = changes.vanished
    if q.known_uids is not None:
        known = q.known_uids.resolve(sel.uidnext)
        vanished = [u for u in vanished if u in known]
    if vanished:
        s.untagged(b"VANISHED (EARLIER) " + format_seqset(vanished).encode())
    for row in changes.changed:
        i = sel.index_of(row.uid)
        if i >= 0:
            s.untagged(s.flags_fetch(i, sel.rows[i], with_uid=True))


# --- CREATE / DELETE / RENAME / SUBSCRIBE -------------------------------------------------


@command(rq.Create, states=AUTH)
def create(s: ImapSession, cmd: rq.Command) -> bytes | None:
    args: rq.Create = cmd.args  # type: ignore[assignment]
    name = args.mailbox.rstrip(api.DELIMITER)
    _no_inbox_change(name, "created")
    if not name:
        raise No("Invalid mailbox name")
    if len(args.special_use) > 1:
        raise No("One special use per mailbox", "USEATTR")
    use = args.special_use[0] if args.special_use else None
    if (
        use is not None
        and use not in api.DEFAULT_FOLDERS.values()
        and use not in ("\\All", "\\Flagged")
    ):
        raise No(f"Unsupported special use {use}", "USEATTR")
    existing = {f.name for f in s.store.folders()}
    if name in existing:
        raise No("Mailbox already exists", "ALREADYEXISTS")
    # Superior names are created first (RFC 3501 6.3.3 "SHOULD create").
    parts = name.split(api.DELIMITER)
    for depth in range(1, len(parts)):
        parent = api.DELIMITER.join(parts[:depth])
        if parent not in existing and parent.upper() != "INBOX":
            try:
                s.store.create_folder(parent)
            except api.FolderExists:
                pass
    try:
        s.store.create_folder(name, use)
    except api.InvalidFolderName as exc:
        raise No(str(exc) or "Invalid mailbox name", "CANNOT") from None
    return None


@command(rq.Delete, states=AUTH)
def delete(s: ImapSession, cmd: rq.Command) -> bytes | None:
    args: rq.Delete = cmd.args  # type: ignore[assignment]
    _no_inbox_change(args.mailbox, "deleted")
    if s.selected is not None and s.selected.name == args.mailbox:
        s.selected = None
        s.state = AUTHENTICATED
    try:
        s.store.delete_folder(args.mailbox)
    except api.FolderNotEmpty as exc:
        # HASCHILDREN (RFC 9051 7.1) says why; INUSE would say another session holds it.
        raise No(str(exc) or "Mailbox has children", "HASCHILDREN") from None
    return None


@command(rq.Rename, states=AUTH)
def rename(s: ImapSession, cmd: rq.Command) -> bytes | None:
    args: rq.Rename = cmd.args  # type: ignore[assignment]
    _no_inbox_change(args.new_name, "the target of a rename")
    new = args.new_name.rstrip(api.DELIMITER)
    try:
        s.store.rename_folder(args.mailbox, new)
    except api.InvalidFolderName as exc:
        raise No(str(exc) or "Invalid mailbox name", "CANNOT") from None
    sel = s.selected
    if (
        sel is not None
        and args.mailbox != "INBOX"
        and (sel.name == args.mailbox or sel.name.startswith(args.mailbox + api.DELIMITER))
    ):
        sel.name = new + sel.name[len(args.mailbox) :]  # the selection follows the rename
    return None


@command(rq.Subscribe, rq.Unsubscribe, states=AUTH)
def subscribe(s: ImapSession, cmd: rq.Command) -> bytes | None:
    args = cmd.args
    s.store.set_subscribed(args.mailbox, isinstance(args, rq.Subscribe))  # type: ignore[attr-defined]
    return None


# --- LIST / LSUB ------------------------------------------------------------------------

_NOTHING = re.compile(r"(?!)")


def pattern_regex(reference: str, pattern: str) -> re.Pattern[str]:
    if isinstance(reference, rq.InvalidMailboxName) or isinstance(pattern, rq.InvalidMailboxName):
        return _NOTHING  # no mailbox has a name that is not valid modified UTF-7
    full = reference + pattern if reference and not pattern.startswith(api.DELIMITER) else pattern
    out = []
    for ch in full:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append("[^/]*")
        else:
            out.append(re.escape(ch))
    return re.compile("(?:" + "".join(out) + ")\\Z", re.DOTALL)


def _matches(regexes: list[re.Pattern[str]], name: str) -> bool:
    # "INBOX" is case-insensitive (RFC 3501 5.1), so "inbox" and "Inbox*" reach it too.
    return any(
        rx.match(name) or (name == "INBOX" and re.match(rx.pattern, name, re.IGNORECASE))
        for rx in regexes
    )


def _visible_folders(s: ImapSession) -> list[api.FolderInfo]:
    show_hidden = s.imap_settings().ShowHiddenFoldersEnabled
    return [f for f in s.store.folders() if show_hidden or not f.hidden]


@command(rq.List, states=AUTH)
def list_(s: ImapSession, cmd: rq.Command) -> bytes | None:
    args: rq.List = cmd.args  # type: ignore[assignment]
    if not args.extended and len(args.patterns) == 1 and args.patterns[0] == "":
        s.untagged(b'LIST (\\Noselect) "/" ""')
        return None
    regexes = [pattern_regex(args.reference, pt) for pt in args.patterns if pt]
    folders = {f.name: f for f in _visible_folders(s)}
    sel_opts, ret = args.selection_opts, args.return_opts
    want_subscribed = "SUBSCRIBED" in sel_opts or "SUBSCRIBED" in ret
    names = set(folders)
    # Superior names that do not exist still show (\Noselect) where a pattern reaches them.
    implied = {n.rsplit("/", 1)[0] for n in names if "/" in n}
    for name in list(implied):
        while "/" in name:
            name = name.rsplit("/", 1)[0]
            implied.add(name)
    implied -= names
    # Subscribed names that are no folders show with SUBSCRIBED (RFC 5258 3.1).
    lost = set(s.store.lost_subscriptions()) - names if "SUBSCRIBED" in sel_opts else set()
    rows: list[tuple[str, list[str], bytes]] = []
    for name in sorted(names | implied | lost, key=lambda n: (n != "INBOX", n)):
        if not _matches(regexes, name):
            continue
        info = folders.get(name)
        attrs: list[str] = []
        extra = b""
        if name in lost:
            attrs += ["\\NonExistent", "\\Subscribed"]
            if name in implied:
                attrs.append("\\HasChildren")
        elif info is None:
            if "SUBSCRIBED" in sel_opts:
                continue
            # A level of the hierarchy, not a mailbox (RFC 9051 7.3.1: \NonExistent
            # implies \Noselect).
            attrs.append("\\NonExistent" if s.rev2 else "\\Noselect")
            attrs.append("\\HasChildren")
        else:
            if "SPECIAL-USE" in sel_opts and not info.special_use:
                continue
            if "SUBSCRIBED" in sel_opts and not info.subscribed:
                # Only for a descendant the patterns do not return themselves (RFC 5258 4).
                if "RECURSIVEMATCH" in sel_opts and any(
                    f.subscribed and f.name.startswith(name + "/") and not _matches(regexes, f.name)
                    for f in folders.values()
                ):
                    extra = b' ("CHILDINFO" ("SUBSCRIBED"))'
                else:
                    continue
            attrs.append("\\HasChildren" if info.has_children else "\\HasNoChildren")
            if info.special_use:
                attrs.append(info.special_use)
            if want_subscribed and info.subscribed:
                attrs.append("\\Subscribed")
        rows.append((name, attrs, extra))
    for name, attrs, extra in rows:
        s.untagged(
            b"LIST (" + " ".join(attrs).encode() + b') "/" ' + wire_name(name, s.rev2) + extra
        )
        if args.status_items and name in folders:
            _status_line(s, name, args.status_items)
    return None


@command(rq.Lsub, states=AUTH)
def lsub(s: ImapSession, cmd: rq.Command) -> bytes | None:
    args: rq.Lsub = cmd.args  # type: ignore[assignment]
    if args.pattern == "":
        s.untagged(b'LSUB (\\Noselect) "/" ""')
        return None
    rx = pattern_regex(args.reference, args.pattern)
    folders = _visible_folders(s)
    subscribed = {f.name for f in folders if f.subscribed}
    rows: dict[str, list[str]] = {}
    # Still subscribed after DELETE (RFC 3501 6.3.6), and nothing to select.
    for name in s.store.lost_subscriptions():
        subscribed.add(name)
        if _matches([rx], name):
            rows[name] = ["\\Noselect"]
    for f in folders:
        if f.name in subscribed and _matches([rx], f.name):
            attrs = ["\\HasChildren" if f.has_children else "\\HasNoChildren"]
            if f.special_use:
                attrs.append(f.special_use)
            rows[f.name] = attrs
    # A "%" that stops above a subscribed name shows its unsubscribed superior as
    # \Noselect (RFC 3501 6.3.9).
    for name in subscribed - rows.keys() if "%" in args.pattern else ():
        parts = name.split(api.DELIMITER)
        for depth in range(len(parts) - 1, 0, -1):
            parent = api.DELIMITER.join(parts[:depth])
            if parent not in subscribed and parent not in rows and _matches([rx], parent):
                rows[parent] = ["\\Noselect"]
    for name in sorted(rows, key=lambda n: (n != "INBOX", n)):
        s.untagged(b"LSUB (" + " ".join(rows[name]).encode() + b') "/" ' + wire_name(name, s.rev2))
    return None


# --- STATUS --------------------------------------------------------------------------------


def _status_line(s: ImapSession, name: str, items: tuple[str, ...]) -> None:
    st = s.store.status(name)
    values = {
        "MESSAGES": st.messages,
        "RECENT": st.recent,
        "UIDNEXT": st.uidnext,
        "UIDVALIDITY": st.uidvalidity,
        "UNSEEN": st.unseen,
        "HIGHESTMODSEQ": st.highestmodseq,
        "SIZE": st.size,
        "DELETED": st.deleted,
    }
    body = b" ".join(b"%s %d" % (i.encode(), values[i]) for i in items if i in values)
    s.untagged(b"STATUS " + wire_name(st.name, s.rev2) + b" (" + body + b")")


@command(rq.Status, states=AUTH)
def status(s: ImapSession, cmd: rq.Command) -> bytes | None:
    args: rq.Status = cmd.args  # type: ignore[assignment]
    if "HIGHESTMODSEQ" in args.items:
        s.enable_condstore()
    _status_line(s, args.mailbox, args.items)
    return None
