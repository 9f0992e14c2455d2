"""Protocol logs: Exchange CSV format, file names, roll-over, live switching."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from server.runtime import protocol_log
from server.runtime.protocol_log import FIELDS, ProtocolLog, redact
from server.runtime.service import ServiceContext
from server.settings.models import IMAP4, IMAP4BE, POP3, POP3BE, Settings
from server.settings.paths import Home
from server.settings.types import ByteSize, LogFileRollOver


class Clock:
    def __init__(self, when: datetime) -> None:
        self.now = when.timestamp()

    def __call__(self) -> float:
        return self.now


def _with(settings: Settings, protocol: str = "ImapSettings", **values: object) -> Settings:
    """A copy of the settings with MBX01's Imap/PopSettings changed."""
    data = settings.model_dump()
    data["Servers"]["MBX01"][protocol].update(values)
    return Settings.model_validate(data)


def _log(home: Home, settings: Settings, service: str = IMAP4, clock: Clock | None = None):
    ctx = ServiceContext(service, "MBX01", home, settings)
    log = ProtocolLog.for_service(ctx)
    if clock is not None:
        log._clock = clock
    return ctx, log


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_disabled_by_default_writes_nothing(home: Home, settings: Settings) -> None:
    _, log = _log(home, settings)
    log.command("1", "127.0.0.1:143", "127.0.0.1:5000", None, 0, 10, 20, "capability")
    log.close()
    assert not (home.logs / "ProtocolLog").exists()


def test_line_format_and_header(home: Home, settings: Settings) -> None:
    clock = Clock(datetime(2024, 3, 5, 10, 30, 1, 250000, tzinfo=UTC))
    _, log = _log(home, _with(settings, ProtocolLogEnabled=True), clock=clock)
    log.command("08DC1", "127.0.0.1:143", "10.0.0.9:5000", None, 0, 0, 80, "OpenSession")
    log.command(
        "08DC1",
        "127.0.0.1:143",
        "10.0.0.9:5000",
        "alice",
        12,
        30,
        40,
        "login",
        "alice s3cret",
        "R=OK",
    )
    log.command(
        "08DC1",
        "127.0.0.1:143",
        "10.0.0.9:5000",
        "alice",
        3,
        20,
        60,
        "select",
        'INBOX "a,b"',
        "R=OK",
    )
    log.close()
    path = home.logs / "ProtocolLog" / "Imap4" / "IMAP420240305-1.LOG"
    lines = _lines(path)
    assert lines[0] == "#Software: Microsoft Exchange Server"
    assert "#Log-type: IMAP4 Protocol Log" in lines
    assert f"#Fields: {FIELDS}" in lines
    body = [line for line in lines if not line.startswith("#")]
    assert (
        body[0]
        == "2024-03-05T10:30:01.250Z,08DC1,0,127.0.0.1:143,10.0.0.9:5000,,0,0,80,OpenSession,,"
    )
    assert body[1].split(",")[2] == "1"
    assert "s3cret" not in body[1] and body[1].endswith("login,alice *****,R=OK")
    assert body[2].endswith('select,"INBOX ""a,b""",R=OK')


def test_front_and_back_end_share_a_folder(home: Home, settings: Settings) -> None:
    on = _with(_with(settings, ProtocolLogEnabled=True), "PopSettings", ProtocolLogEnabled=True)
    names = []
    for service in (IMAP4, IMAP4BE, POP3, POP3BE):
        _, log = _log(home, on, service)
        log.command(1, "a", "b", None, 0, 0, 0, "OpenSession")
        log.close()
        names.append(log._latest(None).name)
    assert [n.split("2")[0] for n in names] == ["IMAP4", "IMAP4BE", "POP3", "POP3BE"]
    assert len(list((home.logs / "ProtocolLog" / "Imap4").iterdir())) == 2
    assert len(list((home.logs / "ProtocolLog" / "Pop3").iterdir())) == 2


def test_rolls_by_time_when_quota_is_zero(home: Home, settings: Settings) -> None:
    clock = Clock(datetime(2024, 3, 5, 10, 59, 59, tzinfo=UTC))
    on = _with(settings, ProtocolLogEnabled=True, LogFileRollOverSettings=LogFileRollOver.Hourly)
    _, log = _log(home, on, clock=clock)
    log.command(1, "a", "b", None, 0, 0, 0, "noop")
    log.flush()
    clock.now += 2
    log.command(1, "a", "b", None, 0, 0, 0, "noop")
    log.close()
    names = sorted(p.name for p in (home.logs / "ProtocolLog" / "Imap4").iterdir())
    assert names == ["IMAP42024030510-1.LOG", "IMAP42024030511-1.LOG"]


def test_rolls_by_size_and_never_when_unlimited(
    home: Home, settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "sized"
    sized = _with(
        settings,
        ProtocolLogEnabled=True,
        LogPerFileSizeQuota=ByteSize(1024),
        LogFileLocation=str(folder),
    )
    _, log = _log(home, sized)
    for i in range(40):
        log.command(i, "127.0.0.1:143", "127.0.0.1:40000", "user", 1, 10, 10, "noop", "", "R=OK")
    log.close()
    files = sorted(folder.iterdir())
    assert len(files) > 2
    assert all(f.stat().st_size <= 1024 for f in files)
    numbers = sorted(int(f.name.rsplit("-", 1)[1].removesuffix(".LOG")) for f in files)
    assert numbers == list(range(1, len(files) + 1))

    forever = tmp_path / "forever"
    unlimited = _with(
        settings,
        ProtocolLogEnabled=True,
        LogPerFileSizeQuota=ByteSize(None),
        LogFileLocation=str(forever),
        LogFileRollOverSettings=LogFileRollOver.Hourly,
    )
    clock = Clock(datetime(2024, 3, 5, 10, 0, tzinfo=UTC))
    _, log = _log(home, unlimited, clock=clock)
    for _ in range(5):
        log.command(1, "a", "b", None, 0, 0, 0, "x" * 500)
        log.flush()
        clock.now += 86400 * 40
    log.close()
    assert len(list(forever.iterdir())) == 1


def test_switching_on_and_off_is_live(home: Home, settings: Settings) -> None:
    ctx, log = _log(home, settings)
    log.command(1, "a", "b", None, 0, 0, 0, "before")
    ctx.settings = _with(settings, ProtocolLogEnabled=True)
    log.command(1, "a", "b", None, 0, 0, 0, "during")
    ctx.settings = settings
    log.command(1, "a", "b", None, 0, 0, 0, "after")
    log.close()
    files = list((home.logs / "ProtocolLog" / "Imap4").iterdir())
    assert len(files) == 1
    content = files[0].read_text()
    assert "during" in content and "before" not in content and "after" not in content


def test_buffered_writes_reach_the_file_after_the_flush_delay(
    home: Home, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(protocol_log, "FLUSH_DELAY", 0.1)
    ctx, log = _log(home, _with(settings, ProtocolLogEnabled=True))

    async def scenario() -> tuple[bool, bool]:
        log.command(1, "a", "b", None, 0, 0, 0, "buffered")
        folder = home.logs / "ProtocolLog" / "Imap4"
        before = folder.exists() and any("buffered" in p.read_text() for p in folder.iterdir())
        await asyncio.sleep(0.3)  # the flush timer is the behaviour under test
        after = any("buffered" in p.read_text() for p in folder.iterdir())
        return before, after

    before, after = asyncio.run(scenario())
    assert (before, after) == (False, True)
    log.close()


def test_redact() -> None:
    assert redact("LOGIN", "bob pw") == "bob *****"
    assert redact("PASS", "pw") == "*****"
    assert redact("AUTH", "PLAIN AGJvYgBwdw==") == "PLAIN *****"
    assert redact("USER", "bob") == "bob"
    assert redact("select", "INBOX") == "INBOX"
