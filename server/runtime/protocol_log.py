"""Protocol logs in Exchange's CSV format (reference section 9).

One line per command, front end and back end in the same folder (`IMAP4<date>-<n>.LOG` and
`IMAP4BE<date>-<n>.LOG`). The hot path only formats a line into an in-memory buffer; the buffer
is written out at most a second later by a one-shot timer armed only when there is something to
write, so an idle service has no timer at all.

The settings are read from `ctx.settings` on every call (an identity check), so switching
ProtocolLogEnabled, LogFileLocation or the roll-over settings takes effect with the next command
after a reload; Exchange needs a service restart for that, we do not.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING

from server.settings.models import IMAP4, IMAP4BE, POP3, POP3BE, ProtocolSettings, Settings
from server.settings.paths import Home
from server.settings.types import LogFileRollOver

if TYPE_CHECKING:
    from server.runtime.service import ServiceContext

FIELDS = (
    "dateTime,sessionId,seqNumber,sIp,cIp,user,duration,rqsize,rpsize,command,parameters,context"
)
FLUSH_DELAY = 1.0  # seconds a line may sit in memory before it reaches the file
BUFFER_LIMIT = 64 * 1024  # write out at once beyond this much buffered text
MAX_TRACKED_SESSIONS = 100_000  # sequence counters kept for sessions that never called end()

# prefix, protocol folder, Log-type
_KINDS: dict[str, tuple[str, str, str]] = {
    IMAP4: ("IMAP4", "Imap4", "IMAP4 Protocol Log"),
    IMAP4BE: ("IMAP4BE", "Imap4", "IMAP4 Protocol Log"),
    POP3: ("POP3", "Pop3", "POP3 Protocol Log"),
    POP3BE: ("POP3BE", "Pop3", "POP3 Protocol Log"),
}

# Commands whose parameters carry a secret after the first word (or from the start).
_SECRET_AFTER_FIRST = {"login", "authenticate", "auth"}
_SECRET_ALL = {"pass"}


def _csv_field(value: object) -> str:
    text = "" if value is None else str(value)
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def redact(command: str, parameters: str) -> str:
    """Never write a password into a log: keep the user name / mechanism, mask the rest."""
    lowered = command.lower()
    if lowered in _SECRET_ALL and parameters:
        return "*****"
    if lowered in _SECRET_AFTER_FIRST:
        first, _, rest = parameters.partition(" ")
        return f"{first} *****" if rest else first
    return parameters


def imap_result(answer: bytes, tag: str | None) -> str | None:
    """The context of an IMAP command ("R=OK", "R=NO", "R=BAD") when `answer` ends with the
    command's tagged status line; None while the command goes on (a "+" continuation, IDLE,
    a FETCH sent in chunks). An untagged error (tag None) ends with "* BAD"."""
    end = len(answer) - 2
    start = answer.rfind(b"\n", 0, end) + 1
    prefix = (tag or "*").encode("ascii", "replace") + b" "
    if end <= start or not answer.startswith(prefix, start):
        return None
    status = answer[start + len(prefix) : end].split(b" ", 1)[0]
    return "R=" + status.decode("ascii", "replace")


def pop3_result(answer: bytes) -> str | None:
    """The context of a POP3 command ("R=OK" / "R=ERR"); None for a SASL "+" continuation."""
    if answer.startswith(b"+OK"):
        return "R=OK"
    if answer.startswith(b"-ERR"):
        return "R=ERR"
    return None


def period_start(moment: datetime, rollover: LogFileRollOver) -> datetime:
    if rollover is LogFileRollOver.Hourly:
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if rollover is LogFileRollOver.Weekly:
        return day - timedelta(days=day.weekday())
    if rollover is LogFileRollOver.Monthly:
        return day.replace(day=1)
    return day


def period_end(start: datetime, rollover: LogFileRollOver) -> datetime:
    if rollover is LogFileRollOver.Hourly:
        return start + timedelta(hours=1)
    if rollover is LogFileRollOver.Weekly:
        return start + timedelta(days=7)
    if rollover is LogFileRollOver.Monthly:
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return start + timedelta(days=1)


def period_label(start: datetime, rollover: LogFileRollOver) -> str:
    if rollover is LogFileRollOver.Hourly:
        return start.strftime("%Y%m%d%H")
    if rollover is LogFileRollOver.Monthly:
        return start.strftime("%Y%m")
    return start.strftime("%Y%m%d")


@dataclass(frozen=True)
class LogConfig:
    enabled: bool
    folder: Path
    rollover: LogFileRollOver
    quota: int | None  # bytes per file; 0 = roll by time; None = Unlimited (never roll)

    @classmethod
    def from_settings(
        cls, protocol: ProtocolSettings, default_folder: Path, home: Home
    ) -> LogConfig:
        location = (protocol.LogFileLocation or "").strip()
        folder = Path(location) if location else default_folder
        if not folder.is_absolute():
            folder = home.root / folder
        return cls(
            enabled=bool(protocol.ProtocolLogEnabled),
            folder=folder,
            rollover=protocol.LogFileRollOverSettings,
            quota=protocol.LogPerFileSizeQuota.bytes,
        )


class ProtocolLog:
    """The protocol log of one service. `command()` is the only call on the hot path."""

    def __init__(
        self,
        service: str,
        home: Home,
        protocol_settings: Callable[[Settings], ProtocolSettings],
        settings: Callable[[], Settings],
        clock: Callable[[], float] = time.time,
    ) -> None:
        prefix, folder, log_type = _KINDS[service]
        self.prefix = prefix
        self.log_type = log_type
        self.home = home
        self._default_folder = home.logs / "ProtocolLog" / folder
        self._protocol_settings = protocol_settings
        self._settings = settings
        self._clock = clock
        self._seen: Settings | None = None
        self.config: LogConfig | None = None
        self._file: IO[str] | None = None
        self.path: Path | None = None
        self._size = 0
        self._roll_at = 0.0  # epoch seconds at which the current time-rolled file ends
        self._buffer: list[tuple[float, str]] = []  # (time of the command, line)
        self._buffered = 0
        self._flush_handle: asyncio.TimerHandle | None = None
        self._seq: dict[str, int] = {}

    @classmethod
    def for_service(cls, ctx: ServiceContext) -> ProtocolLog:
        """The log of a running service: `ProtocolLog.for_service(self.ctx)`."""
        name, server = ctx.name, ctx.server

        def protocol(settings: Settings) -> ProtocolSettings:
            srv = settings.server(server)
            return srv.ImapSettings if name in (IMAP4, IMAP4BE) else srv.PopSettings

        return cls(name, ctx.home, protocol, lambda: ctx.settings)

    # ------------------------------------------------------------------ hot path
    @property
    def enabled(self) -> bool:
        self._check_settings()
        return bool(self.config and self.config.enabled)

    def command(
        self,
        session_id: str | int,
        sip: str,
        cip: str,
        user: str | None,
        duration_ms: float | int,
        rqsize: int,
        rpsize: int,
        command: str,
        parameters: str = "",
        context: str = "",
    ) -> None:
        """One line: a command and its result (context, e.g. "R=OK")."""
        self._check_settings()
        if not (self.config and self.config.enabled):
            return
        sid = str(session_id)
        seq = self._seq.get(sid, 0)
        if seq == 0 and len(self._seq) >= MAX_TRACKED_SESSIONS:
            self._seq.pop(next(iter(self._seq)))
        self._seq[sid] = seq + 1
        now = self._clock()
        stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        line = (
            ",".join(
                (
                    stamp,
                    _csv_field(sid),
                    str(seq),
                    _csv_field(sip),
                    _csv_field(cip),
                    _csv_field(user or ""),
                    str(int(duration_ms)),
                    str(rqsize),
                    str(rpsize),
                    _csv_field(command),
                    _csv_field(redact(command, parameters or "")),
                    _csv_field(context),
                )
            )
            + "\r\n"
        )
        self._buffer.append((now, line))
        self._buffered += len(line)
        if self._buffered >= BUFFER_LIMIT:
            self.flush()
        else:
            self._arm_flush()

    def end(self, session_id: str | int) -> None:
        """The session closed: forget its sequence counter."""
        self._seq.pop(str(session_id), None)

    # ------------------------------------------------------------------ settings
    def reconfigure(self, settings: Settings) -> None:
        """Apply new settings now (services may call it from reload(); command() also notices
        a new ctx.settings by itself)."""
        self._seen = settings
        config = LogConfig.from_settings(
            self._protocol_settings(settings), self._default_folder, self.home
        )
        if config == self.config:
            return
        self.flush()
        self._close_file()
        self.config = config

    def _check_settings(self) -> None:
        current = self._settings()
        if current is not self._seen:
            self.reconfigure(current)

    # ------------------------------------------------------------------ files
    def _arm_flush(self) -> None:
        if self._flush_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()  # no event loop (tools, tests): write through
            return
        self._flush_handle = loop.call_later(FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._buffer:
            return
        lines, self._buffer, self._buffered = self._buffer, [], 0
        try:
            for when, line in lines:
                handle = self._file_for(when, len(line.encode("utf-8")))
                handle.write(line)
            if self._file is not None:
                self._file.flush()
        except OSError:
            # A full disk or a bad LogFileLocation must not take the service down.
            self._close_file()

    def _file_for(self, now: float, incoming: int) -> IO[str]:
        """The file a line of the command at `now` goes to (the command's time, not the
        flush's, decides the hour/day file)."""
        assert self.config is not None
        quota = self.config.quota
        if self._file is not None:
            by_time = quota == 0 and now >= self._roll_at
            by_size = bool(quota) and self._size > 0 and self._size + incoming > quota
            if not (by_time or by_size):
                self._size += incoming
                return self._file
            self._close_file()
        self._open(now, incoming)
        assert self._file is not None
        self._size += incoming
        return self._file

    def _open(self, now: float, incoming: int) -> None:
        assert self.config is not None
        config = self.config
        config.folder.mkdir(parents=True, exist_ok=True)
        moment = datetime.fromtimestamp(now, UTC)
        if config.quota == 0:
            start = period_start(moment, config.rollover)
            self._roll_at = period_end(start, config.rollover).timestamp()
            label = period_label(start, config.rollover)
            path = self._latest(label) or self._next_name(label)
        elif config.quota is None:
            path = self._latest(None) or self._next_name(moment.strftime("%Y%m%d"))
        else:
            label = moment.strftime("%Y%m%d")
            path = self._latest(label)
            if path is None or path.stat().st_size + incoming > config.quota:
                path = self._next_name(label)
        handle = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115
        size = handle.tell()
        if size == 0:
            header = (
                "#Software: Microsoft Exchange Server\r\n"
                "#Version: 15.0.0.0\r\n"
                f"#Log-type: {self.log_type}\r\n"
                f"#Date: {moment.strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3]}Z\r\n"
                f"#Fields: {FIELDS}\r\n"
            )
            handle.write(header)
            size = len(header)
        self._file, self.path, self._size = handle, path, size

    def _pattern(self) -> re.Pattern[str]:
        return re.compile(re.escape(self.prefix) + r"(\d{6,10})-(\d+)\.LOG")

    def _existing(self, label: str | None) -> list[tuple[str, int, Path]]:
        assert self.config is not None
        found = []
        pattern = self._pattern()
        try:
            names = os.listdir(self.config.folder)
        except FileNotFoundError:
            return []
        for name in names:
            match = pattern.fullmatch(name)
            if match and (label is None or match.group(1) == label):
                found.append((match.group(1), int(match.group(2)), self.config.folder / name))
        return sorted(found)

    def _latest(self, label: str | None) -> Path | None:
        existing = self._existing(label)
        return existing[-1][2] if existing else None

    def _next_name(self, label: str) -> Path:
        assert self.config is not None
        existing = self._existing(label)
        number = existing[-1][1] + 1 if existing else 1
        return self.config.folder / f"{self.prefix}{label}-{number}.LOG"

    def _close_file(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
        self._file, self.path, self._size = None, None, 0

    def close(self) -> None:
        self.flush()
        self._close_file()
