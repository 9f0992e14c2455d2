"""Rendered messages, computed once per (message, options) and kept in memory with a bound.

Stored messages never change, so (mailbox, folder, UIDVALIDITY, UID) names one message for
ever, and with the options key it names one rendering. Three things are kept:

- the rendered bytes (bounded by total octets, least recently used out first), and for a
  message the options leave untouched only a marker, so no copy of it is held;
- the MIME analysis of rendered bytes (ENVELOPE/BODYSTRUCTURE for IMAP), beside the bytes;
- the rendered size, in a much larger table of small entries, so sizes (RFC822.SIZE, LIST,
  STAT) stay known after the bytes have been evicted.

A changed setting gives a different key, so the next retrieval renders afresh ("live");
entries of the old key simply age out.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from server.protocols.imap import bodystructure
from server.retrieval.options import Options
from server.retrieval.pipeline import ItemRef, render

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_SIZES = 500_000


@dataclass
class Rendered:
    data: bytes | None  # None: the rendering is the stored message itself
    size: int
    info: bodystructure.MessageInfo | None = None


class RenderCache:
    def __init__(
        self, max_bytes: int = DEFAULT_MAX_BYTES, max_sizes: int = DEFAULT_MAX_SIZES
    ) -> None:
        self.max_bytes = max_bytes
        self.max_sizes = max_sizes
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, Rendered] = OrderedDict()
        self._bytes = 0
        self._sizes: OrderedDict[Hashable, int] = OrderedDict()
        self.renders = 0  # how many renderings were computed (tests, status)

    @staticmethod
    def key(options: Options, item: ItemRef | None, raw: bytes | None = None) -> Hashable:
        if item is not None:
            return (item, options.key)
        assert raw is not None
        return (hashlib.blake2b(raw, digest_size=20).digest(), options.key)

    def get(self, key: Hashable) -> Rendered | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: Hashable, entry: Rendered) -> None:
        cost = len(entry.data) if entry.data is not None else 0
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None and old.data is not None:
                self._bytes -= len(old.data)
            if cost <= self.max_bytes:
                self._entries[key] = entry
                self._bytes += cost
            while self._bytes > self.max_bytes and self._entries:
                _, gone = self._entries.popitem(last=False)
                if gone.data is not None:
                    self._bytes -= len(gone.data)
            if len(self._entries) > self.max_sizes:
                self._entries.popitem(last=False)  # markers cost little, but not nothing
            self._sizes[key] = entry.size
            self._sizes.move_to_end(key)
            if len(self._sizes) > self.max_sizes:
                self._sizes.popitem(last=False)

    def rendered(
        self, raw: bytes | Callable[[], bytes], options: Options, item: ItemRef | None
    ) -> Rendered:
        """The rendering of a message; `raw` may be a loader, called only on a cache miss
        (then `item` is required)."""
        key = self.key(options, item, raw if isinstance(raw, bytes) else None)
        found = self.get(key)
        if found is None:
            if not isinstance(raw, bytes):
                raw = raw()
            data = render(raw, options, item)
            self.renders += 1
            found = Rendered(None if data == raw else data, len(data))
            self.put(key, found)
        return found

    def data(self, raw: bytes, options: Options, item: ItemRef | None) -> bytes:
        found = self.rendered(raw, options, item)
        return raw if found.data is None else found.data

    def size(self, load: Callable[[], bytes], options: Options, item: ItemRef) -> int:
        """The rendered size; the message is read and rendered only when it is unknown."""
        key = self.key(options, item)
        with self._lock:
            size = self._sizes.get(key)
        if size is not None:
            return size
        return self.rendered(load(), options, item).size

    def info(self, rendered: Rendered) -> bodystructure.MessageInfo:
        """The MIME analysis of rendered bytes (computed once, kept with them)."""
        assert rendered.data is not None
        if rendered.info is None:
            rendered.info = bodystructure.analyze(rendered.data)
        return rendered.info

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._sizes.clear()
            self._bytes = 0


#: The cache of a back-end process (both protocols share it: keys include the options).
CACHE = RenderCache()
