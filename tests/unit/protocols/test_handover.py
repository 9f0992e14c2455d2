"""The hand-over's state machines (server/protocols/handover.py), with no sockets."""

from __future__ import annotations

import pytest

from server.protocols import handover, proxyv2
from server.protocols.handover import (
    BackendHandshake,
    FrontendHandshake,
    HandoverError,
    HandoverRefused,
    ImpostorError,
)

SECRET = b"the-proxy-secret"
HEADER = proxyv2.encode(proxyv2.ProxyInfo("192.0.2.10", 50123, "127.0.0.1", 993))


def frontend(
    secret: bytes = SECRET, mailbox: str = "alice", protocol: str = "IMAP4", server: str = "MBX01"
) -> FrontendHandshake:
    return FrontendHandshake(secret, protocol, server, mailbox, HEADER)


def backend(
    secret: bytes = SECRET, protocol: str = "IMAP4", server: str = "MBX01"
) -> BackendHandshake:
    return BackendHandshake(secret, protocol, server)


def lines(data: bytes) -> list[bytes]:
    return [line + b"\n" for line in data.split(b"\n") if line]


def run(fe: FrontendHandshake, be: BackendHandshake) -> list[bytes]:
    """Both sides to the end; returns what the front end sent, line by line."""
    sent: list[bytes] = []
    to_fe = be.challenge()
    while not fe.done:
        for line in lines(to_fe):
            out = fe.on_line(line)
            if out:
                sent.append(out)
                to_fe = be.receive(out)
        if be.accepted is not None and not fe.done:
            fe.on_line(be.ok())
    return sent


def test_both_sides_agree_and_the_back_end_learns_mailbox_and_client() -> None:
    fe, be = frontend(mailbox="Ünïcode.user"), backend()
    sent = run(fe, be)
    assert fe.done
    assert be.accepted is not None
    assert be.accepted.mailbox == "Ünïcode.user"
    assert be.accepted.client == proxyv2.ProxyInfo("192.0.2.10", 50123, "127.0.0.1", 993)
    assert len(sent) == 2  # HELLO, LOGIN
    assert all(SECRET not in line for line in sent)  # the secret never crosses the wire


def test_server_name_is_compared_without_case() -> None:
    fe, be = frontend(server="mbx01"), backend(server="MBX01")
    run(fe, be)
    assert fe.done


def test_wrong_front_end_proof_is_refused() -> None:
    fe, be = frontend(secret=b"guessed"), backend()
    hello = fe.on_line(be.challenge())
    be_proof = be.receive(hello)
    # The front end with the wrong secret already refuses the (genuine) back end's proof...
    with pytest.raises(ImpostorError):
        fe.on_line(be_proof)
    # ...and a LOGIN forged with the wrong secret is refused by the back end.
    assert be.peer_nonce is not None
    forged = handover.frontend_mac(
        b"guessed", "IMAP4", "MBX01", be.nonce, be.peer_nonce, "alice", HEADER
    )
    line = b"MCHO1 LOGIN %s %s %s\r\n" % (
        handover._b64(b"alice"),
        handover._b64(HEADER),
        forged.hex().encode(),
    )
    with pytest.raises(HandoverError, match="wrong proof"):
        be.receive(line)
    assert be.accepted is None


def test_a_recorded_login_replayed_to_a_new_back_end_connection_is_refused() -> None:
    fe, be = frontend(), backend()
    sent = run(fe, be)
    hello, login = sent
    again = backend()
    again.challenge()
    again.receive(hello)  # the same front-end nonce: the back end's own nonce is new
    with pytest.raises(HandoverError, match="wrong proof"):
        again.receive(login)
    assert again.accepted is None


def test_a_login_for_another_mailbox_or_client_does_not_verify() -> None:
    fe, be = frontend(), backend()
    hello = fe.on_line(be.challenge())
    login = fe.on_line(be.receive(hello))
    parts = login.split(b" ")
    parts[2] = handover._b64(b"bob")  # the attacker changes the mailbox, keeps the proof
    with pytest.raises(HandoverError, match="wrong proof"):
        be.receive(b" ".join(parts))


def test_impostor_back_end_is_detected_before_anything_about_the_user_is_sent() -> None:
    fe = frontend(mailbox="alice")
    impostor_nonce = handover.new_nonce()
    challenge = b"MCHO1 CHALLENGE IMAP4 MBX01 " + handover._b64(impostor_nonce) + b"\r\n"
    hello = fe.on_line(challenge)
    assert hello.startswith(b"MCHO1 HELLO ") and b"alice" not in hello
    assert HEADER not in hello and handover._b64(HEADER) not in hello
    for fake in (
        b"MCHO1 PROOF " + b"00" * 32 + b"\r\n",
        b"MCHO1 OK\r\n",
        b"* OK IMAP\r\n",
        b"MCHO1 PROOF zz\r\n",
    ):
        fresh = frontend()
        fresh.on_line(challenge)
        with pytest.raises(ImpostorError):
            fresh.on_line(fake)
        assert not fresh.done


def test_a_back_end_proof_replayed_from_another_connection_is_refused() -> None:
    first_fe, first_be = frontend(), backend()
    hello = first_fe.on_line(first_be.challenge())
    recorded_proof = first_be.receive(hello)
    # An impostor replays the real back end's challenge and proof to a new front-end session.
    fe = frontend()
    fe.on_line(b"MCHO1 CHALLENGE IMAP4 MBX01 " + handover._b64(first_be.nonce) + b"\r\n")
    with pytest.raises(ImpostorError):
        fe.on_line(recorded_proof)


@pytest.mark.parametrize(("protocol", "server"), [("POP3", "MBX01"), ("IMAP4", "MBX02")])
def test_a_back_end_of_another_protocol_or_server_is_refused(protocol: str, server: str) -> None:
    fe, be = frontend(), backend(protocol=protocol, server=server)
    with pytest.raises(ImpostorError):
        fe.on_line(be.challenge())


def test_a_proof_for_another_protocol_does_not_verify() -> None:
    """Even if an impostor announces the right names, a POP3 back end's proof (same secret)
    is not an IMAP4 one: the label and the names are inside the MAC."""
    fe = frontend(protocol="IMAP4")
    pop = backend(protocol="POP3")
    pop.challenge()
    hello = fe.on_line(b"MCHO1 CHALLENGE IMAP4 MBX01 " + handover._b64(pop.nonce) + b"\r\n")
    with pytest.raises(ImpostorError):
        fe.on_line(pop.receive(hello))


def test_back_end_refusal_reaches_the_front_end() -> None:
    fe, be = frontend(), backend()
    hello = fe.on_line(be.challenge())
    fe.on_line(be.receive(hello))
    with pytest.raises(HandoverRefused) as refused:
        fe.on_line(be.refuse("-ERR [IN-USE] Maildrop is in use"))
    assert refused.value.text == "-ERR [IN-USE] Maildrop is in use"


@pytest.mark.parametrize(
    "garbage",
    [
        b"a1 LOGIN alice secret\r\n",
        b"MCHO1 HELLO short\r\n",
        b"MCHO1 LOGIN x y z\r\n",
        b"\r\n\r\n\x00\r\nQUIT\n",
    ],
)
def test_back_end_refuses_anything_but_the_hand_over(garbage: bytes) -> None:
    be = backend()
    be.challenge()
    with pytest.raises(HandoverError):
        be.receive(garbage)


def test_back_end_bounds_what_it_takes_in() -> None:
    be = backend()
    be.challenge()
    assert be.room() == handover.MAX_INPUT
    with pytest.raises(HandoverError, match="too long"):
        be.receive(b"x" * (handover.MAX_LINE + 1))
    be = backend()
    be.challenge()
    with pytest.raises(HandoverError, match="too long"):
        be.receive(b"y" * (handover.MAX_INPUT + 1))


def test_back_end_refuses_bytes_after_the_login() -> None:
    fe, be = frontend(), backend()
    hello = fe.on_line(be.challenge())
    login = fe.on_line(be.receive(hello))
    with pytest.raises(HandoverError, match="after the hand-over"):
        be.receive(login + b"a1 SELECT INBOX\r\n")


# --- proved ahead of time (the front end's pool of back-end connections) --------------------


def prove_ahead(be: BackendHandshake, nonce: bytes | None = None) -> FrontendHandshake:
    """A front end that stops once the back end has proved itself (mailbox not known yet)."""
    fe = FrontendHandshake(SECRET, "IMAP4", "MBX01", None, b"", nonce=nonce)
    hello = fe.on_line(be.challenge())
    assert fe.on_line(be.receive(hello)) == b""  # PROOF checked; nothing more sent
    assert fe.ready and not fe.done
    return fe


def test_proved_ahead_then_login_is_the_same_login_as_in_one_go() -> None:
    be = backend()
    fe = prove_ahead(be)
    login = fe.login("alice", HEADER)
    assert be.receive(login) == b"" and be.accepted is not None
    assert be.accepted.mailbox == "alice"
    assert be.accepted.client == proxyv2.ProxyInfo("192.0.2.10", 50123, "127.0.0.1", 993)
    assert fe.on_line(be.ok()) == b"" and fe.done
    # The same nonces in one go give the same LOGIN line: no new message, no new property.
    one_go = FrontendHandshake(SECRET, "IMAP4", "MBX01", "alice", HEADER, nonce=fe.nonce)
    one_go.on_line(b"MCHO1 CHALLENGE IMAP4 MBX01 " + handover._b64(fe.peer_nonce or b"") + b"\r\n")
    mac_b = handover.backend_mac(SECRET, "IMAP4", "MBX01", fe.peer_nonce or b"", fe.nonce)
    assert one_go.on_line(b"MCHO1 PROOF " + mac_b.hex().encode() + b"\r\n") == login


def test_a_proved_connection_names_one_session_only() -> None:
    be = backend()
    fe = prove_ahead(be)
    login = fe.login("alice", HEADER)
    with pytest.raises(HandoverError):
        fe.login("bob", HEADER)  # a second session on the same proof
    # ... and its LOGIN line is worth nothing on another connection.
    other = backend()
    prove_ahead(other)
    with pytest.raises(HandoverError):
        other.receive(login)
    assert other.accepted is None


def test_an_impostor_gets_only_a_nonce_from_a_front_end_proving_ahead() -> None:
    fe = FrontendHandshake(SECRET, "IMAP4", "MBX01", None, b"")
    fe.on_line(b"MCHO1 CHALLENGE IMAP4 MBX01 " + handover._b64(handover.new_nonce()) + b"\r\n")
    with pytest.raises(ImpostorError):
        fe.on_line(b"MCHO1 PROOF " + b"00" * 32 + b"\r\n")
    with pytest.raises(HandoverError):
        fe.login("alice", HEADER)  # no LOGIN ever follows a failed proof


def test_the_mac_is_hmac_sha256_over_the_label_role_and_length_prefixed_fields() -> None:
    # Written out the long way: the wire format both sides of every deployed version share.
    import hashlib
    import hmac
    import struct

    fields = [b"IMAP4", b"mbx01", b"", b"n" * 24, "b\u00f6b".encode()]
    h = hmac.new(b"secret", b"mailctl-handover-v1\0" + b"role", hashlib.sha256)
    for f in fields:
        h.update(struct.pack("!I", len(f)))
        h.update(f)
    assert handover.mac(b"secret", b"role", *fields) == h.digest()
    assert handover.mac(b"secret", b"role", b"ab", b"c") != handover.mac(
        b"secret", b"role", b"a", b"bc"
    )
