"""NOTIFY (RFC 5465): the client names the mailboxes and events it wants to hear about, and
the server tells it between commands, without IDLE.

What is sent:
- the selected mailbox (filter SELECTED or SELECTED-DELAYED): EXISTS, RECENT, flag FETCHes
  and, for SELECTED only, EXPUNGE/VANISHED, as IDLE would (session.sync); SELECTED-DELAYED
  keeps expunges for the next command that may report them (RFC 5465 5.1);
- other mailboxes (MessageNew, MessageExpunge, FlagChange): a STATUS response when their
  counts change, with HIGHESTMODSEQ when FlagChange was asked for (RFC 5465 5.2-5.4);
- MailboxName: a LIST response for each mailbox created, and one with \\NonExistent for
  each deleted (a rename shows as both, RFC 5465 5.4 allows that when OLDNAME is not kept);
- SubscriptionChange: a LIST response with or without \\Subscribed (RFC 5465 5.5).

`NOTIFY SET STATUS` also sends the current STATUS of every mailbox watched that is not
selected (RFC 5465 3.1). MessageNew's fetch attributes are accepted and not used: new
messages are announced by EXISTS, and the client fetches what it wants. Annotation and
metadata events are refused with BADEVENT, as RFC 5465 3.1 asks for unsupported events.

The I/O layer asks pending() after a store change notification, while no command runs,
and sends what run() returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from server.backend.imap.commands import AUTH, command
from server.backend.imap.commands.mailbox import wire_name
from server.backend.imap.session import Bad, ImapSession, Job, No, SelectedGone
from server.protocols.imap import requests as rq
from server.store import api

SUPPORTED = ("MessageNew", "MessageExpunge", "FlagChange", "MailboxName", "SubscriptionChange")
_MESSAGE_EVENTS = frozenset({"MessageNew", "MessageExpunge", "FlagChange", "AnnotationChange"})


def _check(groups: tuple[rq.Group, ...]) -> None:
    """RFC 5465 3.1 and 5: malformed combinations are BAD, unsupported events NO BADEVENT."""
    selected = [g for g in groups if g.filter.startswith("SELECTED")]
    if len(selected) > 1:
        raise Bad("SELECTED and SELECTED-DELAYED may appear only once")
    for g in groups:
        if ("MessageNew" in g.events) != ("MessageExpunge" in g.events):
            raise Bad("MessageNew and MessageExpunge go together")
        if g.events & {"FlagChange", "AnnotationChange"} and "MessageNew" not in g.events:
            raise Bad("FlagChange needs MessageNew and MessageExpunge")
        if g.filter.startswith("SELECTED") and g.events - _MESSAGE_EVENTS:
            raise Bad("Only message events apply to the selected mailbox")
    refused = sorted({e for g in groups for e in g.events} - set(SUPPORTED))
    if refused:
        raise No(f"Unsupported event {refused[0]}", "BADEVENT (" + " ".join(SUPPORTED) + ")")


# --- what the session remembers --------------------------------------------------------------


@dataclass
class NotifyState:
    groups: tuple[rq.Group, ...]
    generation: int = -1  # the store's change generation last looked at
    statuses: dict[str, tuple[int, ...]] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)
    subscribed: set[str] = field(default_factory=set)

    @property
    def selected(self) -> rq.Group | None:
        return next((g for g in self.groups if g.filter.startswith("SELECTED")), None)

    def watched(self, s: ImapSession, folders: list[api.FolderInfo]) -> dict[str, rq.Group]:
        """Each mailbox of the other filters with the group that names it (the first)."""
        out: dict[str, rq.Group] = {}
        for g in self.groups:
            if g.filter.startswith("SELECTED"):
                continue
            for f in folders:
                if f.name not in out and _matches(g, f):
                    out[f.name] = g
        return out

    def wants(self, event: str) -> bool:
        return any(event in g.events for g in self.groups if not g.filter.startswith("SELECTED"))


def _matches(g: rq.Group, f: api.FolderInfo) -> bool:
    if g.filter == "PERSONAL":
        return True
    if g.filter == "INBOXES":  # delivery goes to INBOX only
        return f.name == "INBOX"
    if g.filter == "SUBSCRIBED":
        return f.subscribed
    names = [_norm(n) for n in g.mailboxes]
    if g.filter == "MAILBOXES":
        return f.name in names
    return any(f.name == n or f.name.startswith(n + api.DELIMITER) for n in names)


def _norm(name: str) -> str:
    head, sep, rest = name.partition(api.DELIMITER)
    return ("INBOX" + sep + rest) if head.upper() == "INBOX" else name


def _status_values(st: api.FolderStatus, g: rq.Group) -> tuple[int, ...]:
    values = (st.messages, st.uidnext, st.uidvalidity)
    return values + (st.highestmodseq,) if "FlagChange" in g.events else values


def _status_line(name: str, values: tuple[int, ...]) -> bytes:
    keys = (b"MESSAGES", b"UIDNEXT", b"UIDVALIDITY", b"HIGHESTMODSEQ")
    body = b" ".join(b"%s %d" % kv for kv in zip(keys, values, strict=False))
    return b"STATUS " + wire_name(name) + b" (" + body + b")"


def _selected_name(s: ImapSession) -> str | None:
    return s.selected.name if s.selected is not None else None


def _baseline(s: ImapSession, state: NotifyState, send_status: bool) -> None:
    folders = s.store.folders()
    state.names = {f.name for f in folders}
    state.subscribed = {f.name for f in folders if f.subscribed}
    current = _selected_name(s)
    for name, g in state.watched(s, folders).items():
        if not g.events & _MESSAGE_EVENTS:
            continue
        try:
            st = s.store.status(name)
        except api.StoreError:
            continue
        values = state.statuses[name] = _status_values(st, g)
        if send_status and name != current:
            s.untagged(_status_line(name, values))
    state.generation = s.woken_at


@command(rq.Notify, states=AUTH)
def notify(s: ImapSession, cmd: rq.Command) -> bytes | None:
    args: rq.Notify = cmd.args  # type: ignore[assignment]
    if not args.groups:
        s.notify = None
        return None
    _check(args.groups)
    state = NotifyState(args.groups)
    _baseline(s, state, args.status)
    s.notify = state
    return None


# --- what the I/O layer calls ---------------------------------------------------------------


def pending(s: ImapSession) -> Job | None:
    """The notifications to send now, or None: NOTIFY is off, a command is in progress
    (IDLE pushes the selected mailbox itself), or nothing was announced since last time."""
    state: NotifyState | None = s.notify  # type: ignore[assignment]
    if state is None or s.closed or s.login is None:
        return None
    if s.woken_at == state.generation and not (s.dirty and _pushes_selected(s, state)):
        return None
    return Job(True, lambda: run(s))


def _pushes_selected(s: ImapSession, state: NotifyState) -> bool:
    g = state.selected
    return s.selected is not None and g is not None and bool(g.events) and not s.idling


def run(s: ImapSession) -> bytes:
    state: NotifyState | None = s.notify  # type: ignore[assignment]
    s.out = []
    if state is None:
        return b""
    state.generation = s.woken_at
    try:
        if s.dirty and _pushes_selected(s, state):
            g = state.selected
            assert g is not None
            try:
                s.sync(allow_expunge=g.filter == "SELECTED")
            except (SelectedGone, api.NoSuchFolder):
                s.out.append(s.selected_gone())
                out, s.out = s.out, []
                return b"".join(out)
        _others(s, state)
    except api.StoreError:
        pass
    out, s.out = s.out, []
    return b"".join(out)


def _others(s: ImapSession, state: NotifyState) -> None:
    folders = s.store.folders()
    names = {f.name for f in folders}
    if state.wants("MailboxName"):
        for name in sorted(names - state.names):
            s.untagged(b'LIST () "/" ' + wire_name(name))
        for name in sorted(state.names - names):
            s.untagged(b'LIST (\\NonExistent) "/" ' + wire_name(name))
    state.names = names
    subscribed = {f.name for f in folders if f.subscribed}
    if state.wants("SubscriptionChange"):
        for name in sorted(subscribed - state.subscribed):
            s.untagged(b'LIST (\\Subscribed) "/" ' + wire_name(name))
        for name in sorted((state.subscribed - subscribed) & names):
            s.untagged(b'LIST () "/" ' + wire_name(name))
    state.subscribed = subscribed
    current = _selected_name(s)
    statuses = {}
    for name, g in state.watched(s, folders).items():
        if not g.events & _MESSAGE_EVENTS:
            continue
        try:
            values = _status_values(s.store.status(name), g)
        except api.StoreError:
            continue
        statuses[name] = values
        if name != current and state.statuses.get(name) != values:
            s.untagged(_status_line(name, values))
    state.statuses = statuses
