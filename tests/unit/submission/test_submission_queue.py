"""Submission spool, routing and helpers (no sockets)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from server.settings.models import ReceiveConnector, SendConnector, default_settings
from server.submission.delivery import route
from server.submission.queue import ORPHAN_GRACE, Recipient, Spool, SpoolWatcher, entry_id_of
from server.submission.service import (
    certificate_name,
    local_domains,
    normalize_crlf,
    with_enhanced_code,
)


def test_spool_round_trip_progress_and_removal(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "q")
    entry = spool.add(
        "bob@x.test",
        [Recipient("a@x.test", "a", "MBX01"), Recipient("c@y.test")],
        b"Subject: s\r\n\r\nbody\r\n",
        "bob",
    )
    [loaded] = spool.load()
    assert loaded == entry and spool.message(loaded) == b"Subject: s\r\n\r\nbody\r\n"
    loaded.recipients = loaded.recipients[1:]
    loaded.recipients[0].attempts = 2
    spool.update(loaded)
    [again] = spool.load()
    assert [r.address for r in again.recipients] == ["c@y.test"]
    assert again.recipients[0].attempts == 2
    again.recipients = []
    spool.update(again)
    assert spool.load() == [] and list((tmp_path / "q").iterdir()) == []


def test_spool_drops_unacknowledged_orphans(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.add("b@x.test", [Recipient("a@x.test")], b"m")
    (tmp_path / "123-orphan.eml").write_bytes(b"half written")
    old = time.time() - ORPHAN_GRACE - 1
    os.utime(tmp_path / "123-orphan.eml", (old, old))
    (tmp_path / "456-being-added.eml").write_bytes(b"another process's add() in progress")
    (tmp_path / "bad.json").write_text("{not json")
    assert len(spool.load()) == 1
    assert not (tmp_path / "123-orphan.eml").exists()
    assert (tmp_path / "456-being-added.eml").exists()
    assert (tmp_path / "bad.json").exists()  # kept for the admin


def test_spool_entry_reads_one_committed_entry(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    entry = spool.add("", [Recipient("a@x.test")], b"m")
    assert spool.entry(entry.id) == entry
    assert spool.entry("missing") is None
    (tmp_path / "bad.json").write_text("{not json")
    assert spool.entry("bad") is None


def test_entry_id_of_ignores_messages_and_temporary_files() -> None:
    assert entry_id_of(Path("/q/0001-ab.json")) == "0001-ab"
    assert entry_id_of(Path("/q/0001-ab.eml")) is None
    assert entry_id_of(Path("/q/.0001-ab.json.42.tmp")) is None


def test_spool_watcher_reports_entries_another_writer_commits(tmp_path: Path) -> None:
    async def scenario() -> set[str]:
        reported: asyncio.Queue[set[str]] = asyncio.Queue()
        watcher = SpoolWatcher(tmp_path / "q", reported.put_nowait)
        await watcher.start()
        try:
            entry = await asyncio.to_thread(
                Spool(tmp_path / "q").add, "", [Recipient("a@x.test")], b"m"
            )
            seen: set[str] = set()
            while entry.id not in seen:
                seen |= await asyncio.wait_for(reported.get(), 5)
            return seen
        finally:
            watcher.close()

    assert len(asyncio.run(scenario())) == 1  # the .eml and temp files are not entries


def test_route_by_address_space() -> None:
    settings = default_settings()
    assert route(settings, "x@example.org") is None
    settings.SendConnectors["Partner"] = SendConnector(
        AddressSpaces=["SMTP:*.partner.test;1"], SmartHosts=["relay.partner.test"]
    )
    settings.SendConnectors["Internet"] = SendConnector(SmartHosts=["smarthost:2525"])
    assert route(settings, "x@mail.partner.test") is settings.SendConnectors["Partner"]
    assert route(settings, "x@example.org") is settings.SendConnectors["Internet"]
    settings.SendConnectors["Internet"].Enabled = False
    assert route(settings, "x@example.org") is None


def test_helpers() -> None:
    assert normalize_crlf(b"a\nb\r\nc\n") == b"a\r\nb\r\nc\r\n"
    conn = ReceiveConnector(Server="MBX01", Fqdn="mbx01.contoso.test")
    assert certificate_name(conn) == "mbx01.contoso.test"
    conn.TlsCertificateName = "<I>CN=Some CA<S>CN=smtp.contoso.test, O=Contoso"
    assert certificate_name(conn) == "smtp.contoso.test"
    assert local_domains(default_settings()) == {"contoso.test"}


def test_enhanced_codes_for_replies_without_one() -> None:
    assert with_enhanced_code("250 OK") == "250 2.0.0 OK"
    assert with_enhanced_code("250") == "250 2.0.0"
    assert with_enhanced_code("250-first line") == "250-2.0.0 first line"
    assert (
        with_enhanced_code("503 Error: need MAIL command") == "503 5.5.1 Error: need MAIL command"
    )
    assert (
        with_enhanced_code("552 Error: Too much mail data") == "552 5.3.4 Error: Too much mail data"
    )
    assert with_enhanced_code("454 TLS not available") == "454 4.7.0 TLS not available"
    assert with_enhanced_code("451 Try later") == "451 4.0.0 Try later"
    for kept in (
        "250 2.1.5 Recipient OK",
        "421 4.7.0 Too many",
        "354 End data with <CR><LF>",
        "334 VXNlcm5hbWU6",
        "334 ",
    ):
        assert with_enhanced_code(kept) == kept
