"""Our side: a private home folder, filled and started with mailctl, measured at the front ends.

Clients reach the IMAP4/POP3 front ends, which log in, hand over to the back ends and relay:
two hops where Dovecot has one. The settings differ from the defaults only where the
benchmark's shape needs it, the same relaxations Dovecot gets:
- LoginType PlainTextLogin (the traffic is loopback plaintext on both sides, no TLS);
- MaxConnectionsPerUser raised (many sessions of one user from one address is the point here).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.corpus import mailbox_messages

SERVER = "MBX01"
REPO = Path(__file__).resolve().parents[1]
PLAIN_RELAXATIONS = ["--login-type", "PlainTextLogin", "--max-connections-per-user", "1000000"]


@dataclass
class OurInstance:
    root: Path
    base_port: int

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def imap_port(self) -> int:
        return self.base_port + 143

    @property
    def pop3_port(self) -> int:
        return self.base_port + 110

    def mailctl(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "mailctl", "--home", str(self.home), *args],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        if done.returncode != 0:
            raise RuntimeError(f"mailctl {' '.join(args)}: {done.stderr.strip() or done.stdout}")
        return done.stdout

    def create(self, users: dict[str, str], backend_workers: int = 1) -> None:
        """`users`: name -> password. Mailboxes are made with the CLI, as an admin would.
        `backend_workers`: BackEndWorkerProcesses of both back ends."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.mailctl("init", "--base-port", str(self.base_port), "--no-demo")
        workers = ["--back-end-worker-processes", str(backend_workers)]
        self.mailctl("set-imapsettings", *PLAIN_RELAXATIONS, *workers)
        self.mailctl("set-popsettings", *PLAIN_RELAXATIONS, *workers)
        # In this process through mailctl's own entry point: forty interpreter starts would
        # be most of the set-up time. The password goes in on (a stand-in for) stdin.
        import contextlib
        import io

        from mailctl.cli import run

        for name, password in users.items():
            with contextlib.redirect_stdout(io.StringIO()):
                sys.stdin, saved = io.StringIO(password + "\n"), sys.stdin
                try:
                    code = run(["--home", str(self.home), "new-mailbox", name, "--password-stdin"])
                finally:
                    sys.stdin = saved
            if code != 0:
                raise RuntimeError(f"mailctl new-mailbox {name}: exit code {code}")

    def fill(self, user: str, kind: str, count: int) -> None:
        """Straight into the store (one transaction per mailbox), as an import would."""
        from server.settings.paths import Home
        from server.store import NewMessage, open_store

        store = open_store(Home.resolve(self.home), SERVER)
        try:
            box = store.mailbox(user)
            box.append_many(
                "INBOX", [NewMessage(raw) for raw in mailbox_messages(kind, user, count)]
            )
        finally:
            store.close()

    def start(self) -> list[int]:
        self.mailctl("enable-imap4")
        self.mailctl("enable-pop3")
        return self.pids()

    def pids(
        self,
        names: Sequence[str] = (
            "MSExchangeIMAP4",
            "MSExchangeIMAP4BE",
            "MSExchangePOP3",
            "MSExchangePOP3BE",
        ),
    ) -> list[int]:
        from server.control.services import find_process
        from server.settings.paths import Home

        home = Home.resolve(self.home)
        found = []
        for name in names:
            process = find_process(home, name, SERVER)
            if process is None:
                raise RuntimeError(f"{name} is not running (see {self.home}/logs)")
            found.append(process.pid)
        return found

    def restart(self) -> list[int]:
        """Fresh processes (memory measured from a clean start), back end first."""
        for name in ("MSExchangeIMAP4BE", "MSExchangeIMAP4", "MSExchangePOP3BE", "MSExchangePOP3"):
            self.mailctl("restart-service", name)
        return self.pids()

    def imap_pids(self) -> list[int]:
        return self.pids(("MSExchangeIMAP4", "MSExchangeIMAP4BE"))

    def stop(self) -> None:
        for command in (["disable-imap4"], ["disable-pop3"]):
            try:
                self.mailctl(*command)
            except RuntimeError:
                continue
