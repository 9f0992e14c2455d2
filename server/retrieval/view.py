"""The retrieval of one folder as one command or session sees it: options read once from
the live settings, messages rendered through the shared cache."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from server.protocols.imap import bodystructure
from server.retrieval.cache import CACHE, RenderCache, Rendered
from server.retrieval.options import Options
from server.retrieval.pipeline import ItemRef

if TYPE_CHECKING:
    from server.retrieval.receipts import ReceiptSender


@dataclass
class RetrievalView:
    options: Options
    mailbox: str
    folder: str
    uidvalidity: int
    cache: RenderCache = CACHE
    receipts: ReceiptSender | None = None

    @property
    def as_stored(self) -> bool:
        return self.options.as_stored

    @property
    def sends_receipts(self) -> bool:
        """Receipts on download: SuppressReadReceipt $false leaves them to the server."""
        return self.receipts is not None and not self.options.suppress_read_receipt

    def item(self, uid: int) -> ItemRef:
        return ItemRef(self.mailbox, self.folder, self.uidvalidity, uid)

    def rendered(self, uid: int, raw: bytes | Callable[[], bytes]) -> Rendered:
        """`raw` may be a loader: read only when the rendering is not cached."""
        return self.cache.rendered(raw, self.options, self.item(uid))

    def data(self, uid: int, raw: bytes) -> bytes:
        if self.as_stored:
            return raw
        return self.cache.data(raw, self.options, self.item(uid))

    def size(self, uid: int, stored_size: int, load: Callable[[], bytes]) -> int:
        """RFC822.SIZE, LIST and STAT. EnableExactRFC822Size $false (Exchange's default)
        asks for estimated sizes: the stored size, known without reading or rendering the
        message, so opening a folder of 20,000 messages costs no conversion at all (the
        bytes are rendered when a client fetches them). The estimate is the same number on
        both protocols and in every session, so a message's size never changes under a
        client. $true asks for the size of the bytes sent: each message is rendered once
        to measure it, then cached."""
        if self.as_stored or not self.options.exact_size:
            return stored_size
        return self.cache.size(load, self.options, self.item(uid))

    def info(self, rendered: Rendered) -> bodystructure.MessageInfo:
        return self.cache.info(rendered)
