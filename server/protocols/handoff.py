"""The hand-off channel between a front end and a back end on the same host, sans-IO.

Why: a relayed session costs the front end a back-end connection (TCP, by default a TLS
handshake, the hand-over's round trips) per login and then every byte twice (read, write,
and on the TLS hop encrypt and decrypt on each side). When the back end runs on the same
host, the front end instead keeps one long-lived Unix-socket channel to it, proved once
with the hand-over's mutual challenge-response (server/protocols/handover.py), and gives
each logged-in client connection to the back end as a file descriptor (SCM_RIGHTS): the
front end then leaves the data path altogether.

Records (one SOCK_SEQPACKET message each: a CRLF-terminated ASCII line, then for OK and
TAKE a payload of raw bytes up to the end of the record)::

    BE: MCHO1 CHALLENGE <protocol> <server> <nonce_b>          (as in the hand-over)
    FE: MCHO1 HELLO <nonce_f>
    BE: MCHO1 PROOF <mac_b>       (the front end checks it before it sends another byte)
    FE: MCHO1 READY <mac_r>       mac_r = HMAC(secret, "frontend-channel", protocol, server,
                                               nonce_b, nonce_f)
    BE: MCHO1 WORKERS <index> <count>   which of the back end's processes this is, of how
                                  many (server/runtime/workers.py): the front end routes
                                  each mailbox to one of them
    ... then, any number of times, several at once:
    FE: MCHO1 LOGIN <seq> <mailbox> <proxy> <mac_l>
                                  mac_l = HMAC(secret, "frontend-handoff", protocol, server,
                                               nonce_b, nonce_f, seq, mailbox, proxy)
    BE: MCHO1 OK <seq>\r\n<the protocol's first lines>     (the session is open, not started)
     or MCHO1 NO <seq> <text>
    FE: MCHO1 TAKE <seq>\r\n<client bytes read ahead>      with the client socket attached
     or MCHO1 DROP <seq>                                    (the client went away meanwhile)
    BE: MCHO1 END <seq>           that session is over (the front end's connection counts)

`seq` is decimal and strictly increasing on a channel, so a LOGIN record can be neither
replayed nor reordered; mailbox and proxy are base64url as in the hand-over. Each MAC has
its own label, so no proof of the channel is ever a proof of the relayed hand-over or the
other way round.
"""

from __future__ import annotations

import hmac

from server.protocols import handover
from server.protocols.handover import (
    HandoverError,
    _b64,
    _line,
    _proof,
    _unb64,
    mac,
)

#: Largest record either side sends or accepts: a LOGIN line, or an OK/TAKE whose payload
#: is a greeting or the client bytes read ahead of the login.
MAX_RECORD = 128 * 1024
#: Client bytes read ahead of a login that still go with the socket (more: relayed instead).
MAX_AHEAD = 64 * 1024
#: Most back-end processes a WORKERS record may announce (BackEndWorkerProcesses' bound).
MAX_WORKERS = 256


def ready_mac(secret: bytes, protocol: str, server: str, nonce_b: bytes, nonce_f: bytes) -> bytes:
    return mac(
        secret, b"frontend-channel", protocol.encode(), server.lower().encode(), nonce_b, nonce_f
    )


def login_mac(
    secret: bytes,
    protocol: str,
    server: str,
    nonce_b: bytes,
    nonce_f: bytes,
    seq: int,
    mailbox: str,
    proxy: bytes,
) -> bytes:
    return mac(
        secret,
        b"frontend-handoff",
        protocol.encode(),
        server.lower().encode(),
        nonce_b,
        nonce_f,
        str(seq).encode(),
        mailbox.encode("utf-8"),
        proxy,
    )


def split_record(record: bytes) -> tuple[list[bytes], bytes]:
    """(the line's fields after MCHO1, the payload after the line)."""
    end = record.find(b"\r\n")
    if end < 0 or end > handover.MAX_LINE:
        raise HandoverError("record without a line")
    fields = record[:end].split(b" ")
    if len(fields) < 2 or fields[0] != handover.TAG:
        raise HandoverError("not a hand-off record")
    return fields[1:], record[end + 2 :]


def _seq(field: bytes) -> int:
    if not field.isdigit() or len(field) > 18:
        raise HandoverError("malformed sequence number")
    return int(field)


class BackendChannel:
    """The back end's side of one channel. Until `proved`, feed() takes the set-up records;
    after, it returns the parsed session records:
    ("login", seq, Accepted), ("take", seq, read_ahead), ("drop", seq, b"")."""

    def __init__(
        self, secret: bytes, protocol: str, server: str, worker: int = 0, workers: int = 1
    ) -> None:
        self.shake = handover.BackendHandshake(secret, protocol, server)
        self.proved = False
        self.last_seq = 0
        self.worker, self.workers = worker, workers

    def challenge(self) -> bytes:
        return self.shake.challenge()

    def setup(self, record: bytes) -> bytes:
        """A set-up record; returns what to send. Raises HandoverError."""
        shake = self.shake
        if shake.peer_nonce is None:
            return shake.receive(record)  # HELLO -> PROOF
        fields, _ = split_record(record)
        if len(fields) != 2 or fields[0] != b"READY":
            raise HandoverError("expected READY")
        expected = ready_mac(
            shake.secret, shake.protocol, shake.server, shake.nonce, shake.peer_nonce
        )
        if not hmac.compare_digest(_proof(fields[1]), expected):
            raise HandoverError("wrong proof: the peer does not know the proxy secret")
        self.proved = True
        return _line(b"WORKERS", str(self.worker).encode(), str(self.workers).encode())

    def session(self, record: bytes) -> tuple[str, int, handover.Accepted | bytes]:
        assert self.proved
        fields, payload = split_record(record)
        verb = fields[0]
        if verb == b"LOGIN" and len(fields) == 5:
            seq = _seq(fields[1])
            if seq <= self.last_seq:
                raise HandoverError("sequence number not increasing")
            proof = _proof(fields[4])
            proxy = _unb64(fields[3], "PROXY header")
            try:
                mailbox = _unb64(fields[2], "mailbox").decode("utf-8")
            except UnicodeDecodeError:
                raise HandoverError("malformed mailbox") from None
            shake = self.shake
            assert shake.peer_nonce is not None
            expected = login_mac(
                shake.secret,
                shake.protocol,
                shake.server,
                shake.nonce,
                shake.peer_nonce,
                seq,
                mailbox,
                proxy,
            )
            if not hmac.compare_digest(proof, expected):
                raise HandoverError("wrong proof for a hand-off")
            client = handover.decode_proxy(proxy)
            self.last_seq = seq
            return "login", seq, handover.Accepted(mailbox, client, proxy)
        if verb in (b"TAKE", b"DROP") and len(fields) == 2:
            return verb.decode().lower(), _seq(fields[1]), payload
        raise HandoverError("unexpected record")

    @staticmethod
    def ok(seq: int, greeting: bytes) -> bytes:
        return _line(b"OK", str(seq).encode()) + greeting

    @staticmethod
    def refuse(seq: int, text: str) -> bytes:
        clean = " ".join(text.split()) or "refused"
        return _line(b"NO", str(seq).encode(), clean.encode("utf-8", "replace")[:400])

    @staticmethod
    def end(seq: int) -> bytes:
        return _line(b"END", str(seq).encode())


class FrontendChannel:
    """The front end's side of one channel: on_setup() for the set-up records (raises
    ImpostorError when the back end cannot prove itself, having sent only a nonce), then
    login()/take()/drop() to send and answer() for what comes back:
    ("ok", seq, greeting), ("no", seq, text) or ("end", seq, b"")."""

    def __init__(self, secret: bytes, protocol: str, server: str) -> None:
        self.shake = handover.FrontendHandshake(secret, protocol, server, None, b"")
        self.seq = 0
        #: (index, count) of the back end's processes, from its WORKERS record.
        self.workers: tuple[int, int] | None = None

    @property
    def ready(self) -> bool:
        return self.workers is not None

    def on_setup(self, record: bytes) -> bytes:
        shake = self.shake
        if shake.ready:
            fields, _ = split_record(record)
            if len(fields) != 3 or fields[0] != b"WORKERS":
                raise HandoverError("expected WORKERS")
            index, count = _seq(fields[1]), _seq(fields[2])
            if not index < count <= MAX_WORKERS:
                raise HandoverError("malformed WORKERS")
            self.workers = (index, count)
            return b""
        out = shake.on_line(record)
        if shake.ready:
            assert shake.peer_nonce is not None
            mac_r = ready_mac(
                shake.secret, shake.protocol, shake.server, shake.peer_nonce, shake.nonce
            )
            return _line(b"READY", mac_r.hex().encode())
        return out

    def login(self, mailbox: str, proxy: bytes) -> tuple[int, bytes]:
        shake = self.shake
        assert shake.ready and shake.peer_nonce is not None
        self.seq += 1
        mac_l = login_mac(
            shake.secret,
            shake.protocol,
            shake.server,
            shake.peer_nonce,
            shake.nonce,
            self.seq,
            mailbox,
            proxy,
        )
        return self.seq, _line(
            b"LOGIN",
            str(self.seq).encode(),
            _b64(mailbox.encode("utf-8")),
            _b64(proxy),
            mac_l.hex().encode(),
        )

    @staticmethod
    def take(seq: int, read_ahead: bytes) -> bytes:
        return _line(b"TAKE", str(seq).encode()) + read_ahead

    @staticmethod
    def drop(seq: int) -> bytes:
        return _line(b"DROP", str(seq).encode())

    @staticmethod
    def answer(record: bytes) -> tuple[str, int, bytes]:
        fields, payload = split_record(record)
        verb = fields[0]
        if verb == b"OK" and len(fields) == 2:
            return "ok", _seq(fields[1]), payload
        if verb == b"NO" and len(fields) >= 2:
            return "no", _seq(fields[1]), b" ".join(fields[2:])
        if verb == b"END" and len(fields) == 2:
            return "end", _seq(fields[1]), b""
        raise HandoverError("unexpected record from the back end")


__all__ = [
    "MAX_AHEAD",
    "MAX_RECORD",
    "BackendChannel",
    "FrontendChannel",
    "login_mac",
    "ready_mac",
    "split_record",
]
