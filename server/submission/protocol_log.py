"""The SMTP receive protocol log of the client-submission connectors, in Exchange's
format: a connector with ProtocolLoggingLevel Verbose writes one CSV line per event of
each of its sessions to <home>/logs/FrontEnd/ProtocolLog/SmtpReceive/RECV<yyyymmdd>-1.LOG,
after the header Exchange writes:

    #Software, #Version, #Log-type: SMTP Receive Protocol Log, #Date, #Fields:
    date-time,connector-id,session-id,sequence-number,local-endpoint,remote-endpoint,event,data,context

Events: `+` connected, `-` disconnected, `>` sent, `<` received, `*` information. What the
client sends during AUTH is written as `*****` and message content is never written (only
its size). The level is read when a connection opens, so a change applies from the next one.
"""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from server.settings.types import ProtocolLoggingLevel

if TYPE_CHECKING:
    from server.submission.service import SubmissionSMTP

FIELDS = (
    "date-time,connector-id,session-id,sequence-number,local-endpoint,remote-endpoint,"
    "event,data,context"
)


def _csv(value: object) -> str:
    text = str(value)
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _endpoint(address: Any) -> str:
    if not address:
        return ""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


class SmtpReceiveLog:
    def __init__(self, folder: Path, server: str) -> None:
        self.folder, self.server = folder, server
        self._file: IO[str] | None = None
        self._day = ""
        self._ids = itertools.count(time.time_ns() // 1000)
        self._sequence: dict[str, itertools.count[int]] = {}
        self._endpoints: dict[str, tuple[str, str, str]] = {}  # session -> connector, local, remote

    # --- session events -------------------------------------------------------------
    def open(self, smtp: SubmissionSMTP, transport: Any) -> str | None:
        """Start a session's log when its connector logs (None otherwise)."""
        if smtp.connector.ProtocolLoggingLevel is not ProtocolLoggingLevel.Verbose:
            return None
        session = f"{next(self._ids):016X}"
        self._sequence[session] = itertools.count()
        self._endpoints[session] = (
            f"{smtp.connector.Server}\\{smtp.connector_name}",
            _endpoint(transport.get_extra_info("sockname")),
            _endpoint(transport.get_extra_info("peername")),
        )
        self._write(session, "+", "", "")
        return session

    def closed(self, smtp: SubmissionSMTP) -> None:
        session = smtp.log_session
        if session is None:
            return
        self._write(session, "-", "", "Local")
        self._sequence.pop(session, None)
        self._endpoints.pop(session, None)

    def sent(self, smtp: SubmissionSMTP, status: Any) -> None:
        if smtp.log_session is None:
            return
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else str(status)
        for line in text.rstrip("\r\n").split("\r\n"):
            self._write(smtp.log_session, ">", line, "")

    def received(self, smtp: SubmissionSMTP, line: bytes, secret: bool = False) -> None:
        if smtp.log_session is None:
            return
        text = line.rstrip(b"\r\n").decode("utf-8", "replace")
        if secret:
            text = "*****"
        elif text[:5].upper() == "AUTH ":
            text = " ".join(text.split(" ")[:2]) + (" *****" if text.count(" ") > 1 else "")
        self._write(smtp.log_session, "<", text, "")

    def info(self, smtp: SubmissionSMTP, context: str) -> None:
        if smtp.log_session is not None:
            self._write(smtp.log_session, "*", "", context)

    # --- file -----------------------------------------------------------------------
    def _write(self, session: str, event: str, data: str, context: str) -> None:
        counter = self._sequence.get(session)
        connector, local, remote = self._endpoints.get(session, ("", "", ""))
        if counter is None:
            return
        now = datetime.now(UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
        line = ",".join(
            _csv(v)
            for v in (stamp, connector, session, next(counter), local, remote, event, data, context)
        )
        try:
            self._file_for(now).write(line + "\n")
            self._file_for(now).flush()
        except OSError:
            pass  # a full disk must not stop mail; the service log has the events too

    def _file_for(self, now: datetime) -> IO[str]:
        day = now.strftime("%Y%m%d")
        if self._file is None or day != self._day:
            self.close()
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"RECV{day}-1.LOG"
            new = not path.exists()
            self._file = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115
            self._day = day
            if new:
                self._file.write(
                    "#Software: Microsoft Exchange Server\n#Version: 15.0.0.0\n"
                    "#Log-type: SMTP Receive Protocol Log\n"
                    f"#Date: {now.strftime('%Y-%m-%dT%H:%M:%S.000Z')}\n#Fields: {FIELDS}\n"
                )
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
