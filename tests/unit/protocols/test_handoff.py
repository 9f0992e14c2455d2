"""The hand-off channel's records (server/protocols/handoff.py), both sides sans-IO."""

from __future__ import annotations

import pytest

from server.protocols import handover, proxyv2
from server.protocols.handoff import BackendChannel, FrontendChannel

SECRET = b"s" * 32
HEADER = proxyv2.encode(proxyv2.ProxyInfo("192.0.2.7", 50000, "127.0.0.1", 143))


def channel_pair(
    fe_secret: bytes = SECRET, be_secret: bytes = SECRET, worker: int = 0, workers: int = 1
) -> tuple[FrontendChannel, BackendChannel]:
    fe = FrontendChannel(fe_secret, "IMAP4", "MBX01")
    be = BackendChannel(be_secret, "IMAP4", "MBX01", worker, workers)
    hello = fe.on_setup(be.challenge())
    ready = fe.on_setup(be.setup(hello))
    assert ready.startswith(b"MCHO1 READY ") and not fe.ready
    announce = be.setup(ready)
    assert be.proved
    assert fe.on_setup(announce) == b""
    assert fe.ready
    return fe, be


def test_the_back_end_says_which_of_its_processes_it_is() -> None:
    fe, _ = channel_pair(worker=2, workers=3)
    assert fe.workers == (2, 3)


@pytest.mark.parametrize(
    "record",
    [
        b"MCHO1 WORKERS 1 1\r\n",
        b"MCHO1 WORKERS 0 0\r\n",
        b"MCHO1 WORKERS 0 257\r\n",
        b"MCHO1 WORKERS x 2\r\n",
        b"MCHO1 OK 1\r\n",
    ],
)
def test_a_malformed_workers_record_ends_the_set_up(record: bytes) -> None:
    fe = FrontendChannel(SECRET, "IMAP4", "MBX01")
    be = BackendChannel(SECRET, "IMAP4", "MBX01")
    fe.on_setup(be.setup(fe.on_setup(be.challenge())))
    with pytest.raises(handover.HandoverError):
        fe.on_setup(record)
    assert not fe.ready


def test_logins_take_and_drop_round_trip() -> None:
    fe, be = channel_pair()
    seq, record = fe.login("bob", HEADER)
    kind, got_seq, accepted = be.session(record)
    assert (kind, got_seq) == ("login", seq)
    assert isinstance(accepted, handover.Accepted)
    assert accepted.mailbox == "bob" and accepted.client is not None
    assert accepted.client.client_address == "192.0.2.7"
    assert fe.answer(be.ok(seq, b"* PREAUTH x\r\n")) == ("ok", seq, b"* PREAUTH x\r\n")
    assert be.session(fe.take(seq, b"a NOOP\r\n")) == ("take", seq, b"a NOOP\r\n")
    seq2, record2 = fe.login("alice", HEADER)
    assert be.session(record2)[:2] == ("login", seq2)
    assert be.session(fe.drop(seq2)) == ("drop", seq2, b"")
    assert fe.answer(be.refuse(seq2, "no such\r\nmailbox")) == ("no", seq2, b"no such mailbox")
    assert fe.answer(be.end(seq)) == ("end", seq, b"")


def test_a_login_record_cannot_be_replayed_on_the_same_channel_or_another() -> None:
    fe, be = channel_pair()
    _, record = fe.login("bob", HEADER)
    be.session(record)
    with pytest.raises(handover.HandoverError, match="sequence"):
        be.session(record)
    _, other = channel_pair()
    with pytest.raises(handover.HandoverError, match="wrong proof"):
        other.session(record)


def test_a_changed_mailbox_or_client_fails_the_proof() -> None:
    fe, be = channel_pair()
    _, record = fe.login("bob", HEADER)
    forged = record.replace(b" Ym9i ", b" YWxpY2U ")  # base64url of bob -> alice
    assert forged != record
    with pytest.raises(handover.HandoverError, match="wrong proof"):
        be.session(forged)


def test_a_back_end_without_the_secret_gets_only_a_nonce() -> None:
    fe = FrontendChannel(SECRET, "IMAP4", "MBX01")
    impostor = BackendChannel(b"x" * 32, "IMAP4", "MBX01")
    hello = fe.on_setup(impostor.challenge())
    assert hello.startswith(b"MCHO1 HELLO ")
    with pytest.raises(handover.ImpostorError):
        fe.on_setup(impostor.setup(hello))
    assert not fe.ready


def test_a_front_end_without_the_secret_is_refused_at_ready() -> None:
    fe = FrontendChannel(b"x" * 32, "IMAP4", "MBX01")
    be = BackendChannel(SECRET, "IMAP4", "MBX01")
    hello = fe.on_setup(be.challenge())
    proof = be.setup(hello)
    with pytest.raises(handover.ImpostorError):
        fe.on_setup(proof)  # the front end refuses first: the back end's proof is wrong
    # and a READY forged without the secret is refused by the back end
    with pytest.raises(handover.HandoverError):
        be.setup(b"MCHO1 READY " + b"00" * 32 + b"\r\n")
    assert not be.proved


def test_records_before_the_proof_are_not_sessions() -> None:
    fe = FrontendChannel(SECRET, "IMAP4", "MBX01")
    be = BackendChannel(SECRET, "IMAP4", "MBX01")
    fe.on_setup(be.challenge())
    with pytest.raises(handover.HandoverError):
        be.setup(b"MCHO1 LOGIN 1 Ym9i eA 00\r\n")
