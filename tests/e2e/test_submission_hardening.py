"""Submission hardening (issue 13 items 2, 5, 8, 9; issue 14 receive connectors): SendAs on
headers both parsers agree on, duplicate recipients, EHLO names, error replies, connection
limits, RemoteIPRanges, timeouts, DATA streamed to disk, the SmtpReceive protocol log."""

from __future__ import annotations

import smtplib
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from server.settings.paths import Home
from tests.conftest import wait_for
from tests.e2e.frontend_support import PASSWORD, client_context
from tests.e2e.submission_support import connector_port, inbox, login, set_connector


def raw_message(header: bytes) -> bytes:
    return header + b"To: alice@contoso.test\r\nSubject: hi\r\n\r\nbody\r\n"


@pytest.mark.parametrize(
    "header",
    [
        b"From : alice@contoso.test\r\n",  # white space before the colon
        b"X-Junk\r\nFrom: alice@contoso.test\r\n",  # a line that is no header field first
        b"Garbage line here\r\nFrom: bob@contoso.test\r\nFrom: alice@contoso.test\r\n",
    ],
)
def test_send_as_cannot_hide_behind_malformed_headers(
    env: Home, smtp_service: Any, header: bytes
) -> None:
    client = login(env)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail("bob@contoso.test", ["alice@contoso.test"], raw_message(header))
    assert refused.value.smtp_code == 550
    assert b"5.6.0" in refused.value.smtp_error and b"header" in refused.value.smtp_error
    client.quit()
    smtp_service.service.delivery._wake.set()
    assert inbox(env, "alice") == []


def test_send_as_reads_from_the_way_the_envelope_does(env: Home, smtp_service: Any) -> None:
    client = login(env)
    # A comment that looks like an address must not count, nor hide the real one.
    with pytest.raises(smtplib.SMTPDataError, match="5.7.60"):
        client.sendmail(
            "bob@contoso.test",
            ["alice@contoso.test"],
            raw_message(b'From: "bob@contoso.test" <alice@contoso.test>\r\n'),
        )
    client.sendmail(
        "bob@contoso.test",
        ["alice@contoso.test"],
        raw_message(b"From: Bob (the builder) <bob@contoso.test>\r\n"),
    )
    client.quit()
    wait_for(lambda: len(inbox(env, "alice")) == 1)


def test_duplicate_recipients_get_one_copy(env: Home, smtp_service: Any) -> None:
    client = login(env)
    client.ehlo("client.example")
    client.mail("bob@contoso.test")
    for _ in range(50):
        assert client.rcpt("alice@contoso.test")[0] == 250
    assert client.rcpt("ALICE@contoso.test")[0] == 250
    assert client.rcpt("alice")[0] in (250, 550)  # a bare name is no address; never twice
    code, _ = client.data(raw_message(b"From: bob@contoso.test\r\n"))
    assert code == 250
    client.quit()
    wait_for(lambda: len(inbox(env, "alice")) == 1)
    smtp_service.service.delivery._wake.set()
    wait_for(lambda: not list((env.queue / "MBX01").glob("*.json")))
    assert len(inbox(env, "alice")) == 1


def test_ehlo_with_a_bare_cr_is_refused(env: Home, smtp_service: Any) -> None:
    with smtplib.SMTP("127.0.0.1", connector_port(env), timeout=10) as client:
        client.send(b"EHLO evil\rX-Injected: yes\r\n")  # smtplib itself refuses to send it
        code, text = client.getreply()
        assert code == 501 and b"5.5.4" in text
        assert client.ehlo("client.example")[0] == 250


def test_errors_do_not_show_exception_text(env: Home, smtp_service: Any, monkeypatch: Any) -> None:
    def boom(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("/secret/path/to/something")

    monkeypatch.setattr("server.submission.service.sender_addresses", boom)
    client = login(env)
    with pytest.raises(smtplib.SMTPDataError) as failed:
        client.sendmail(
            "bob@contoso.test", ["alice@contoso.test"], raw_message(b"From: bob@contoso.test\r\n")
        )
    assert failed.value.smtp_code == 451 and b"4.3.0" in failed.value.smtp_error
    assert (
        b"secret" not in failed.value.smtp_error and b"RuntimeError" not in failed.value.smtp_error
    )


def greeting(port: int) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1024)
        if not chunk:
            break
        data += chunk
    return sock, data


def test_connections_per_source_are_limited(env: Home, smtp_service: Any) -> None:
    set_connector(env, MaxInboundConnectionPerSource=3, MaxInboundConnectionPercentagePerSource=100)
    smtp_service.reload()
    port = connector_port(env)
    held = [greeting(port) for _ in range(3)]
    assert all(text.startswith(b"220 ") for _, text in held)
    sock, text = greeting(port)
    assert text.startswith(b"421 4.3.2"), text
    assert sock.recv(1024) == b""  # and closed
    sock.close()
    held.pop()[0].close()
    wait_for(lambda: len(smtp_service.service._connections) == 2)
    sock, text = greeting(port)
    assert text.startswith(b"220 ")
    for s, _ in [*held, (sock, b"")]:
        s.close()


def test_connections_per_connector_are_limited(env: Home, smtp_service: Any) -> None:
    set_connector(env, MaxInboundConnection=2, MaxInboundConnectionPercentagePerSource=100)
    smtp_service.reload()
    port = connector_port(env)
    held = [greeting(port) for _ in range(2)]
    sock, text = greeting(port)
    assert text.startswith(b"421 4.3.2") and b"concurrent connections" in text
    for s, _ in [*held, (sock, b"")]:
        s.close()


def test_remote_ip_ranges_are_enforced(env: Home, smtp_service: Any) -> None:
    set_connector(env, RemoteIPRanges="10.0.0.0/8, 192.168.1.10-192.168.1.20")
    smtp_service.reload()
    sock, text = greeting(connector_port(env))
    assert text.startswith(b"554 5.7.1"), text
    sock.close()
    set_connector(env, RemoteIPRanges="127.0.0.1")
    smtp_service.reload()
    sock, text = greeting(connector_port(env))
    assert text.startswith(b"220 ")
    sock.close()


def test_connection_timeout_ends_even_a_busy_connection(env: Home, smtp_service: Any) -> None:
    set_connector(env, ConnectionTimeout="00:00:01")
    smtp_service.reload()
    client = smtplib.SMTP("127.0.0.1", connector_port(env), timeout=10)
    started = time.monotonic()
    with pytest.raises(smtplib.SMTPServerDisconnected):
        while time.monotonic() - started < 5:
            code, text = client.noop()
            if code == 421:
                assert b"timed out" in text
                client.noop()
            time.sleep(0.1)  # a busy client: one command every 100 ms
    assert time.monotonic() - started < 4


def test_inactivity_timeout_says_why(env: Home, smtp_service: Any) -> None:
    set_connector(env, ConnectionInactivityTimeout="00:00:01")
    smtp_service.reload()
    sock, text = greeting(connector_port(env))
    sock.settimeout(5)
    said = sock.recv(1024)
    assert said.startswith(b"421 4.4.2") and b"timed out" in said
    sock.close()


def _spooled(home: Home) -> list[Path]:
    return list((home.queue / "MBX01").glob("*.eml"))


def test_data_goes_to_disk_as_it_arrives(env: Home, smtp_service: Any) -> None:
    client = login(env)
    client.ehlo("client.example")
    client.mail("bob@contoso.test")
    client.rcpt("alice@contoso.test")
    assert client.docmd("DATA")[0] == 354
    client.send(b"From: bob@contoso.test\r\nSubject: big\r\n\r\n")
    line = b"x" * 998 + b"\r\n"
    for _ in range(1024):  # 1 MB, not finished
        client.send(line)
    wait_for(lambda: sum(p.stat().st_size for p in _spooled(env)) >= 900 * 1024)
    client.send(b".\r\n")
    code, _ = client.getreply()
    assert code == 250
    client.quit()
    wait_for(lambda: len(inbox(env, "alice")) == 1)


def test_max_message_size_while_streaming(env: Home, smtp_service: Any) -> None:
    set_connector(env, MaxMessageSize="64KB")
    smtp_service.reload()
    client = login(env)
    client.ehlo("client.example")
    client.mail("bob@contoso.test")  # no SIZE=: the limit is met while the data arrives
    client.rcpt("alice@contoso.test")
    code, text = client.data(raw_message(b"From: bob@contoso.test\r\n") + b"y\r\n" * 100_000)
    assert code == 552 and b"5.3.4" in text
    client.rset()
    wait_for(lambda: _spooled(env) == [])  # the partial message is gone
    client.quit()


def test_smtp_receive_protocol_log(env: Home, smtp_service: Any) -> None:
    set_connector(env, ProtocolLoggingLevel="Verbose")
    smtp_service.reload()
    client = smtplib.SMTP("127.0.0.1", connector_port(env), timeout=10)
    client.ehlo("logged.example")
    client.starttls(context=client_context(env))
    client.login("bob", PASSWORD)
    client.quit()
    folder = env.logs / "FrontEnd" / "ProtocolLog" / "SmtpReceive"
    wait_for(lambda: any(",-,," in p.read_text() for p in folder.glob("RECV*.LOG")))
    [log] = folder.glob("RECV*.LOG")
    text = log.read_text()
    assert (
        "#Fields: date-time,connector-id,session-id,sequence-number,local-endpoint,"
        "remote-endpoint,event,data,context"
    ) in text
    rows = [line.split(",") for line in text.splitlines() if not line.startswith("#")]
    assert rows[0][1] == "MBX01\\Client Frontend MBX01" and rows[0][6] == "+"
    events = [(r[6], r[7]) for r in rows]
    assert ("<", "ehlo logged.example") in events
    assert any(e == ">" and d.startswith("220 ") for e, d in events)
    assert PASSWORD not in text and "UGE1NXdvcmQh" not in text  # nor its base64
    assert [int(r[3]) for r in rows] == list(range(len(rows)))
