"""IMAP command handlers, one module per command family, registered by argument type.

A handler is `func(session, command) -> bytes | None`: untagged responses go through
`session.untagged()`; it returns the tagged completion (None means "OK <NAME> completed",
b"" means the command is not finished yet, e.g. IDLE), or raises session.No / session.Bad.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.backend.imap.session import ImapSession
    from server.protocols.imap.requests import Command

HandlerFunc = Callable[["ImapSession", "Command"], "bytes | None"]
InlineTest = Callable[["ImapSession", "Command"], bool]


@dataclass(frozen=True, slots=True)
class Handler:
    func: HandlerFunc
    states: frozenset[str]
    blocking: bool  # touches the store: run in a worker thread
    # When it says so for a command, that command only reads the store and does bounded
    # work: the I/O layer may run it in place (session.Job.inline).
    inline: InlineTest | None = None


HANDLERS: dict[type, Handler] = {}

ANY = frozenset({"not-authenticated", "authenticated", "selected"})
AUTH = frozenset({"authenticated", "selected"})
SELECTED = frozenset({"selected"})
NOT_AUTH = frozenset({"not-authenticated"})


def command(
    *types: type, states: frozenset[str], blocking: bool = True, inline: InlineTest | None = None
) -> Callable[[HandlerFunc], HandlerFunc]:
    def register(func: HandlerFunc) -> HandlerFunc:
        for t in types:
            HANDLERS[t] = Handler(func, states, blocking, inline)
        return func

    return register


from server.backend.imap.commands import (  # noqa: E402,F401
    append,
    auth,
    context,
    copymove,
    expunge,
    fetch,
    idle,
    mailbox,
    misc,
    notify,
    searching,
    sortthread,
    store,
)
