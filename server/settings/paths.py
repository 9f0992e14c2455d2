"""The home folder: where settings, mail, pid files, logs and certificates live."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def default_home() -> Path:
    env = os.environ.get("MAILCTL_HOME")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/mailctl")
    return Path.home() / ".local/share/mailctl"


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def resolve(cls, path: str | os.PathLike[str] | None = None) -> Home:
        return cls(Path(path).absolute() if path else default_home().absolute())

    @property
    def settings_file(self) -> Path:
        return self.root / "settings.toml"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def database(self, server: str) -> Path:
        """The mailbox database folder of one server."""
        return self.data / server

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def certs(self) -> Path:
        return self.root / "certs"

    @property
    def secrets(self) -> Path:
        """Password hashes and the front-end/back-end proxy secret: owner-only."""
        return self.root / "secrets"

    @property
    def queue(self) -> Path:
        """Outbound mail waiting for a smart host."""
        return self.root / "queue"

    def pid_file(self, service: str, server: str) -> Path:
        return self.run / f"{server}.{service}.pid"

    def state_file(self, service: str, server: str) -> Path:
        """JSON the running service keeps current: endpoints, connections, last reload."""
        return self.run / f"{server}.{service}.state.json"

    def log_file(self, service: str, server: str) -> Path:
        return self.logs / f"{server}.{service}.log"

    def create_folders(self) -> None:
        for folder in (self.root, self.data, self.run, self.logs, self.certs, self.queue):
            folder.mkdir(parents=True, exist_ok=True)
        for folder in (self.data, self.certs, self.queue):  # mail and keys: owner only
            os.chmod(folder, 0o700)
        self.secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.secrets, 0o700)
