"""Retrieval rendering: what POP3 and IMAP4 clients receive for a stored message.

Between the store and the protocol cores: MessageRetrievalMimeFormat (render.py),
CalendarItemRetrievalOption (calendar.py), read receipts (receipts.py), all per mailbox as
Set-CASMailbox overrides say (options.py), computed once per message and options (cache.py).
The stored message never changes. Back ends call server.backend.service, which calls this.
"""

from __future__ import annotations

from server.retrieval.cache import CACHE, RenderCache, Rendered
from server.retrieval.options import AS_STORED, IMAP, POP, Options, effective_options, options_for
from server.retrieval.pipeline import ItemRef, render
from server.retrieval.view import RetrievalView

__all__ = [
    "AS_STORED",
    "CACHE",
    "IMAP",
    "POP",
    "ItemRef",
    "Options",
    "RenderCache",
    "Rendered",
    "RetrievalView",
    "effective_options",
    "options_for",
    "render",
]
