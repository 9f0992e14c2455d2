"""Tests that talk to a back end directly play the front end's part of the hand-over
(server/protocols/handover.py) over a blocking socket, then speak IMAP or POP3 as usual."""

from __future__ import annotations

import imaplib
import poplib
import socket
import ssl

from server.protocols import proxyv2
from server.protocols.handover import FrontendHandshake

CLIENT = ("192.0.2.10", 50123)


def read_line(sock: socket.socket, limit: int = 4096) -> bytes:
    """One line, read a byte at a time so nothing after it is taken from the socket."""
    line = b""
    while not line.endswith(b"\n"):
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError(f"closed after {line!r}")
        line += byte
        if len(line) > limit:
            raise ValueError("line too long")
    return line


def hand_over(
    sock: socket.socket,
    secret: str | bytes,
    mailbox: str,
    protocol: str,
    server: str = "MBX01",
    client: tuple[str, int] = CLIENT,
) -> list[bytes]:
    """Run the front end's side to the end; returns the lines it sent. Raises
    handover.HandoverRefused / ImpostorError / HandoverError as a front end would."""
    key = secret.encode() if isinstance(secret, str) else secret
    header = proxyv2.encode(
        proxyv2.ProxyInfo(client[0], client[1], "127.0.0.1", sock.getpeername()[1])
    )
    shake = FrontendHandshake(key, protocol, server, mailbox, header)
    sent: list[bytes] = []
    while not shake.done:
        out = shake.on_line(read_line(sock))
        if out:
            sock.sendall(out)
            sent.append(out)
    return sent


class ProxiedIMAP4(imaplib.IMAP4):
    """imaplib as a front end: the hand-over for `mailbox`, then a PREAUTH session."""

    def __init__(
        self, host: str, port: int, *, secret: str, mailbox: str = "alice", timeout: float = 10
    ) -> None:
        self.secret, self.mailbox = secret, mailbox
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = super()._create_socket(timeout)
        hand_over(sock, self.secret, self.mailbox, "IMAP4")
        return sock


class ProxiedIMAP4SSL(imaplib.IMAP4_SSL):
    def __init__(
        self,
        host: str,
        port: int,
        *,
        secret: str,
        ssl_context: ssl.SSLContext,
        mailbox: str = "alice",
        timeout: float = 10,
    ) -> None:
        self.secret, self.mailbox = secret, mailbox
        super().__init__(host, port, ssl_context=ssl_context, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = imaplib.IMAP4._create_socket(self, timeout)
        sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
        hand_over(sock, self.secret, self.mailbox, "IMAP4")
        return sock


class ProxiedPOP3(poplib.POP3):
    """poplib as a front end: the hand-over for `mailbox`; the greeting is the maildrop's
    +OK (the session starts in the TRANSACTION state)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        secret: str,
        mailbox: str = "alice",
        timeout: float = 10,
        context: ssl.SSLContext | None = None,
    ) -> None:
        self.secret, self.mailbox, self.context = secret, mailbox, context
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout: float) -> socket.socket:
        sock = super()._create_socket(timeout)
        if self.context is not None:
            sock = self.context.wrap_socket(sock, server_hostname=self.host)
        hand_over(sock, self.secret, self.mailbox, "POP3")
        return sock
