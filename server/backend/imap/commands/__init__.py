"""IMAP command handlers, one module per command family, registered by argument type.

A handler is `func(session, command) -> bytes | None` (see session.Handler). `TABLE` is
the session.CommandTable the back end hands to each ImapSession: the session knows the
commands only through it, so these modules import the session and it imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable

from server.backend.imap.session import CommandTable, Handler, HandlerFunc, InlineTest

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
    compress,
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

#: What server.py hands to every ImapSession.
TABLE = CommandTable(HANDLERS, idle.end_idle, auth.auth_continue, context.emit_updates)
