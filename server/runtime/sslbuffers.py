"""One TLS receive buffer per event-loop thread instead of one per connection.

asyncio's TLS transport (asyncio.sslproto.SSLProtocol, Python 3.11+) gives every connection
its own 256 KiB bytearray to receive ciphertext into. An idle IMAP session through a front
end holds two TLS connections (client -> front end, front end -> back end) and so pays about
600 KB across the two processes for buffers that are empty nearly all the time.

That buffer is only in use for the length of one synchronous call: the selector transport
asks the protocol for a buffer (get_buffer), fills it with recv_into and hands it back
(buffer_updated), which copies the bytes into the connection's ssl.MemoryBIO before doing
anything else. Nothing keeps the buffer across callbacks, so every connection served by one
event-loop thread can share one. `install()` replaces asyncio.sslproto.SSLProtocol with a
subclass that does exactly that; the event loops look the class up at call time
(selector_events._make_ssl_transport, BaseEventLoop.start_tls), so every later TLS
connection and STARTTLS upgrade gets it.

Never break TLS: `install()` first checks that this Python's sslproto has the attributes the
subclass relies on and runs a small probe (construct, get_buffer, buffer_updated); when
anything is off it logs why and leaves asyncio alone. Loops other than the selector loop
(the proactor on Windows, which keeps a buffer across an overlapped receive) get a private
buffer per connection, as before.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
import threading
from asyncio import base_events, selector_events, sslproto
from typing import Any

log = logging.getLogger(__name__)

_ORIGINAL: type[sslproto.SSLProtocol] = sslproto.SSLProtocol
_local = threading.local()
_lock = threading.Lock()


def _thread_buffer() -> tuple[bytearray, memoryview]:
    """This thread's receive buffer, made on first use (sized like asyncio's own)."""
    pair: tuple[bytearray, memoryview] | None = getattr(_local, "pair", None)
    if pair is None:
        buffer = bytearray(_ORIGINAL.max_size)
        pair = (buffer, memoryview(buffer))
        _local.pair = pair
    return pair


class SharedBufferSSLProtocol(_ORIGINAL):  # type: ignore[misc, valid-type]
    """SSLProtocol receiving into the event-loop thread's buffer instead of its own."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *args: Any, **kwargs: Any) -> None:
        self._shared_buffer = isinstance(loop, selector_events.BaseSelectorEventLoop)
        if not self._shared_buffer:
            super().__init__(loop, *args, **kwargs)
            return
        # The base __init__ allocates bytearray(self.max_size): shadow the class value for
        # that one allocation, then let the class value (the read size) show again.
        # (The stubs call max_size a ClassVar; shadowing it on the instance is the point.)
        self.max_size = 1  # pyright: ignore[reportAttributeAccessIssue]
        try:
            super().__init__(loop, *args, **kwargs)
        finally:
            del self.max_size  # pyright: ignore[reportAttributeAccessIssue]
        # Any base-class path that reads these before get_buffer sees a valid buffer.
        self._ssl_buffer, self._ssl_buffer_view = _thread_buffer()

    def get_buffer(self, n: int) -> memoryview:
        if not self._shared_buffer:
            return super().get_buffer(n)
        self._ssl_buffer, self._ssl_buffer_view = _thread_buffer()
        return self._ssl_buffer_view


def unsupported_reason(cls: type) -> str | None:
    """Why the subclass cannot be trusted with `cls` (this Python's SSLProtocol), or None."""
    if not isinstance(cls.__dict__.get("max_size"), int):
        return "SSLProtocol.max_size is not a class-level int"
    for name in ("__init__", "get_buffer", "buffer_updated"):
        if not callable(cls.__dict__.get(name)):
            return f"SSLProtocol.{name} is not defined where expected"
    init_names = cls.__dict__["__init__"].__code__.co_names
    if "max_size" not in init_names or "_ssl_buffer" not in init_names:
        return "SSLProtocol.__init__ does not allocate _ssl_buffer from max_size"
    if "_ssl_buffer_view" not in cls.__dict__["buffer_updated"].__code__.co_names:
        return "SSLProtocol.buffer_updated does not read _ssl_buffer_view"
    for where, function in (
        (
            "selector_events._make_ssl_transport",
            # private, so not in the stubs: this check is what makes relying on it safe
            selector_events.BaseSelectorEventLoop._make_ssl_transport,  # pyright: ignore[reportAttributeAccessIssue]
        ),
        ("base_events.start_tls", base_events.BaseEventLoop.start_tls),
    ):
        if "SSLProtocol" not in function.__code__.co_names:
            return f"{where} does not look SSLProtocol up at call time"
    return None


def _probe() -> str | None:
    """Construct one protocol on a throwaway selector loop and push a byte through
    get_buffer/buffer_updated: the contract the subclass relies on, end to end."""
    loop = asyncio.SelectorEventLoop()
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        protocol = SharedBufferSSLProtocol(
            loop, asyncio.Protocol(), context, None, server_side=True
        )
        if protocol.max_size != _ORIGINAL.max_size:
            return "max_size did not return to the class value"
        view = protocol.get_buffer(-1)
        if view is not _thread_buffer()[1] or len(view) != _ORIGINAL.max_size:
            return "get_buffer did not return the shared buffer"
        view[:1] = b"\x16"
        protocol.buffer_updated(1)  # UNWRAPPED: only copies into the incoming BIO
        if protocol._incoming.pending != 1:  # pyright: ignore[reportAttributeAccessIssue] - private
            return "buffer_updated did not read the shared buffer"
        return None
    finally:
        loop.close()


def active() -> bool:
    return sslproto.SSLProtocol is SharedBufferSSLProtocol


def install() -> bool:
    """Share TLS receive buffers per event-loop thread from now on; idempotent.

    Returns whether the shared buffers are in use. Any doubt about this Python's asyncio
    leaves it untouched (logged at warning level)."""
    with _lock:
        if active():
            return True
        if sslproto.SSLProtocol is not _ORIGINAL:
            log.warning(
                "tls-buffers not shared: asyncio.sslproto.SSLProtocol was replaced by %r",
                sslproto.SSLProtocol,
            )
            return False
        if sys.platform == "win32":
            log.info("tls-buffers not shared: the proactor loop keeps buffers across receives")
            return False
        try:
            reason = unsupported_reason(_ORIGINAL) or _probe()
        except Exception as exc:  # a probe failure must never keep a service from starting
            reason = f"probe failed: {exc!r}"
        if reason:
            log.warning("tls-buffers not shared (Python %s): %s", sys.version.split()[0], reason)
            return False
        sslproto.SSLProtocol = SharedBufferSSLProtocol  # type: ignore[misc]
        log.debug("tls-buffers shared per event-loop thread (%d bytes each)", _ORIGINAL.max_size)
        return True


def uninstall() -> None:
    """Back to asyncio's own SSLProtocol for connections made from now on (tests)."""
    with _lock:
        if active():
            sslproto.SSLProtocol = _ORIGINAL  # type: ignore[misc]


__all__ = ["SharedBufferSSLProtocol", "active", "install", "uninstall", "unsupported_reason"]
