"""The LMTP core of MSExchangeDelivery (server/delivery/lmtp.py), sans-IO: RFC 2033 replies,
per-recipient DATA replies, ENVID."""

from __future__ import annotations

from server.delivery.lmtp import LmtpSession, Transaction, xtext_decode, xtext_encode


def check(address: str) -> str:
    if address.endswith("@contoso.test"):
        return f"250 2.1.5 <{address}> OK"
    return f"550 5.1.1 <{address}>: no such mailbox"


def session() -> LmtpSession:
    s = LmtpSession("mbx01.contoso.test", check)
    assert s.greeting().startswith(b"220 mbx01.contoso.test ")
    return s


def lines(out: bytes) -> list[str]:
    return out.decode().split("\r\n")[:-1]


def test_lhlo_is_required_and_helo_ehlo_are_refused() -> None:
    s = session()
    out, _ = s.receive(b"MAIL FROM:<a@b>\r\nEHLO x\r\nHELO x\r\n")
    assert [line[:9] for line in lines(out)] == ["503 5.5.1", "500 5.5.1", "500 5.5.1"]
    out, _ = s.receive(b"LHLO client\r\n")
    assert lines(out) == [
        "250-mbx01.contoso.test",
        "250-PIPELINING",
        "250-ENHANCEDSTATUSCODES",
        "250-8BITMIME",
        "250 DSN",
    ]


def test_one_reply_per_accepted_recipient_after_data_in_rcpt_order() -> None:
    s = session()
    out, txn = s.receive(
        b"LHLO c\r\nMAIL FROM:<bob@contoso.test> ENVID=0001-ab+2Bc\r\n"
        b"RCPT TO:<alice@contoso.test>\r\nRCPT TO:<nobody@fabrikam.test>\r\n"
        b"RCPT TO:<carol@contoso.test> NOTIFY=NEVER\r\nDATA\r\n"
        b"Subject: hi\r\n\r\n..dot-stuffed\r\nbody\r\n.\r\nNOOP\r\n"
    )
    assert isinstance(txn, Transaction)
    assert lines(out)[-4:] == [
        "250 2.1.5 <alice@contoso.test> OK",
        "550 5.1.1 <nobody@fabrikam.test>: no such mailbox",
        "250 2.1.5 <carol@contoso.test> OK",
        "354 Start mail input; end with <CRLF>.<CRLF>",
    ]
    assert txn.envid == "0001-ab+c" and txn.mail_from == "bob@contoso.test"
    assert txn.recipients == ["alice@contoso.test", "carol@contoso.test"]
    assert txn.data == b"Subject: hi\r\n\r\n.dot-stuffed\r\nbody\r\n"
    # Nothing after the final dot is processed before the outcome is known.
    assert s.receive(b"") == (b"", None)
    out = s.delivered(["250 2.1.5 <alice@contoso.test> delivered", "552 5.2.2 mailbox full"])
    assert lines(out) == ["250 2.1.5 <alice@contoso.test> delivered", "552 5.2.2 mailbox full"]
    out, txn = s.receive(b"")
    assert lines(out) == ["250 2.0.0 OK"] and txn is None
    # The transaction is over: a new MAIL is accepted.
    out, _ = s.receive(b"MAIL FROM:<>\r\n")
    assert lines(out) == ["250 2.1.0 Sender OK"]


def test_data_without_an_accepted_recipient_is_503() -> None:
    s = session()
    out, txn = s.receive(b"LHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<x@fabrikam.test>\r\nDATA\r\n")
    assert lines(out)[-1] == "503 5.5.1 No valid recipients" and txn is None


def test_bad_parameters_and_syntax() -> None:
    s = session()
    out, _ = s.receive(
        b"LHLO c\r\nMAIL FROM:<a@b> AUTH=x\r\nMAIL FROM:a@b\r\n"
        b"MAIL FROM:<a@b> SIZE=999999999999\r\nRCPT TO:<x@contoso.test>\r\n"
        b"MAIL FROM:<a@b>\r\nRCPT TO:<no-at-sign>\r\nRCPT TO:<x@contoso.test> X=1\r\n"
        b"\xff\r\n"
    )
    codes = [line[:3] for line in lines(out)][5:]
    assert codes == ["555", "501", "552", "503", "250", "501", "555", "500"]


def test_message_too_big_gets_one_reply_per_recipient() -> None:
    s = LmtpSession("h", check, max_size=10)
    out, txn = s.receive(
        b"LHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@contoso.test>\r\n"
        b"RCPT TO:<b@contoso.test>\r\nDATA\r\n" + b"x" * 50 + b"\r\n.\r\n"
    )
    assert txn is None
    assert lines(out)[-2:] == ["552 5.3.4 Message too big for system"] * 2


def test_quit_and_an_endless_line_close() -> None:
    s = session()
    out, _ = s.receive(b"QUIT\r\nNOOP\r\n")
    assert lines(out) == ["221 2.0.0 mbx01.contoso.test closing connection"] and s.closed
    s = session()
    out, _ = s.receive(b"x" * 5000)
    assert out.startswith(b"500 5.5.2") and s.closed


def test_xtext_round_trip() -> None:
    for value in ["0001765-abc", "a+b=c d", "ü"]:
        assert xtext_decode(xtext_encode(value)) == value
    assert xtext_encode("a+b") == "a+2Bb"


def test_delivery_port_of_a_home_without_one_follows_its_base_port() -> None:
    from server.settings.models import PortPlan, Server, default_server

    for plan, expected in ((PortPlan(), 475), (PortPlan.shifted(10000), 10475)):
        data = default_server("MBX01", "mbx01.contoso.test", plan).model_dump(mode="json")
        assert data.pop("DeliveryPort") == expected
        assert Server.model_validate(data).DeliveryPort == expected


def test_data_in_small_and_big_pieces_and_lines_longer_than_a_command() -> None:
    s = session()
    s.receive(b"LHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@contoso.test>\r\nDATA\r\n")
    long_line = b"x" * 5000 + b".not a stuffed dot" + b"y" * 3000 + b"\r\n"
    body = b"Subject: s\r\n\r\n" + long_line + b"..one\r\n" + b"z" * 80 + b"\r\n"
    wire = body + b".\r\n"
    txn = None
    for i in range(0, len(wire), 7):  # a byte count that splits lines and CRLFs
        out, got = s.receive(wire[i : i + 7])
        assert out == b""
        txn = got or txn
    assert txn is not None
    assert txn.data == body.replace(b"\r\n..one", b"\r\n.one")


def test_a_big_message_in_socket_sized_reads() -> None:
    s = session()
    s.receive(b"LHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@contoso.test>\r\nDATA\r\n")
    wire = b"Subject: big\r\n\r\n" + b"line of text\r\n" * 400_000 + b".\r\n"  # 5.6 MB
    txn = None
    for i in range(0, len(wire), 65536):
        _, got = s.receive(wire[i : i + 65536])
        txn = got or txn
    assert txn is not None and len(txn.data) == len(wire) - 3
