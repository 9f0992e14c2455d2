"""Dovecot side by side: a private instance on loopback ports, never the system service.

Debian's dovecot-imapd and dovecot-pop3d are installed with apt-get if missing, and run as
`dovecot -F -c <private config>` with a private base_dir, Maildir under the bench work folder,
passwd-file users with the same argon2id hashes we store (same parameters: the cost of one
verification is identical), and the auth cache on (we cache successful verifications too).

Two modes:
- "tuned": Dovecot's documented high-performance mode (login processes with service_count=0 and
  process_min_avail = cores; imap/pop3 processes reused; client/process/vsz limits raised so
  10,000 connections fit);
- "default": the same instance with Dovecot's default service settings, for reference.

Two password schemes:
- "argon2id": the PHC strings we store ourselves (the "same argon2id hashes" comparison);
- "plain": `{PLAIN}` passwords in the passwd-file, with the same auth cache. Dovecot's cache
  re-verifies the password against the cached entry at every login, which for PLAIN is a
  string compare: the password cost is taken out, as our cache of verified passwords takes it
  out on our side. This is the "engine" comparison: protocol code against protocol code.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import resource
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.corpus import mailbox_messages

FD_LIMIT = 65536
CONNECTIONS = 12000  # room for 10,000 IDLE connections plus the deliveries and spares


def raise_fd_limit() -> int:
    """Soft limit up to FD_LIMIT, as far as the hard limit allows (raising the hard limit
    needs CAP_SYS_RESOURCE, which containers often lack); returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FD_LIMIT if hard == resource.RLIM_INFINITY else min(FD_LIMIT, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, max(FD_LIMIT, hard)))
        return FD_LIMIT
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
        return max(soft, wanted)


INOTIFY = Path("/proc/sys/fs/inotify/max_user_instances")


def raise_inotify_instances(wanted: int = 16384) -> int | None:
    """Each IDLE-ing Dovecot process needs an inotify instance; beyond the kernel's per-user
    limit (128 by default) Dovecot falls back to polling every mailbox_idle_check_interval
    (its log says to raise this). Returns the old value to restore, None if unchanged."""
    try:
        old = int(INOTIFY.read_text())
        if old >= wanted:
            return None
        INOTIFY.write_text(str(wanted))
        return old
    except OSError:
        return None


def restore_inotify_instances(old: int | None) -> None:
    if old is not None:
        with contextlib.suppress(OSError):
            INOTIFY.write_text(str(old))


def ensure_installed() -> None:
    if shutil.which("dovecot") and Path("/usr/lib/dovecot/pop3").exists():
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(
        ["apt-get", "install", "-y", "dovecot-imapd", "dovecot-pop3d"],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    # Debian starts the system service where it can; the bench never uses it.
    for command in (["systemctl", "disable", "--now", "dovecot"], ["service", "dovecot", "stop"]):
        if shutil.which(command[0]):
            subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def mail_owner() -> tuple[int, int]:
    """Dovecot refuses uid 0 for mail: as root the mail belongs to nobody, else to us."""
    if os.geteuid() != 0:
        return os.getuid(), os.getgid()
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


TUNED_SERVICES = """
default_client_limit = {limit}
default_vsz_limit = 1G
service imap-login {{
  service_count = 0
  process_min_avail = {cores}
  process_limit = {cores}
  client_limit = {limit}
}}
service pop3-login {{
  service_count = 0
  process_min_avail = {cores}
  process_limit = {cores}
  client_limit = {limit}
}}
service imap {{
  service_count = 0
  process_limit = {limit}
}}
service pop3 {{
  service_count = 0
  process_limit = 1000
}}
service auth {{
  client_limit = {auth_limit}
}}
service anvil {{
  client_limit = {auth_limit}
}}
"""

CONFIG = """# Written by bench/dovecot.py for one benchmark run; not a production configuration.
base_dir = {run}
state_dir = {state}
instance_name = mailctl-bench-{mode}-{scheme}
listen = 127.0.0.1
protocols = imap pop3
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
log_path = {logs}/dovecot.log
mail_location = maildir:~/Maildir
mail_fsync = optimized
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
pop3_uidl_format = %08Xu%08Xv
# Many sessions of one user from one address is this benchmark's shape, not an attack.
mail_max_userip_connections = 100000
auth_cache_size = 64M
auth_cache_ttl = 1 hour
auth_cache_negative_ttl = 1 hour
{auth_tuning}
passdb {{
  driver = passwd-file
  args = scheme=ARGON2ID {passwd}
}}
userdb {{
  driver = passwd-file
  args = {passwd}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
{services}
"""


@dataclass
class DovecotInstance:
    root: Path
    mode: str  # "tuned" or "default"
    imap_port: int
    pop3_port: int
    scheme: str = "argon2id"  # or "plain": see the module docstring
    process: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.root / "dovecot.conf"

    @property
    def passwd(self) -> Path:
        return self.root / "passwd"

    def home_of(self, user: str) -> Path:
        return self.root / "home" / user

    def write_config(self, users: dict[str, str]) -> None:
        """`users`: name -> argon2id hash (PHC string, as server.directory stores it), or
        name -> password when the scheme is "plain"."""
        uid, gid = mail_owner()
        prefix = "{PLAIN}" if self.scheme == "plain" else "{ARGON2ID}"
        for sub in ("run", "state", "logs", "home"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.passwd.write_text(
            "".join(
                f"{name}:{prefix}{stored}:{uid}:{gid}::{self.home_of(name)}::\n"
                for name, stored in users.items()
            )
        )
        services = auth_tuning = ""
        if self.mode == "tuned" and self.scheme == "argon2id":
            # Dovecot's cache keeps the stored hash and re-runs the scheme at every login
            # (passdb-cache.c); with a slow scheme its documented remedy is to run that
            # in the auth worker processes, one per core, instead of the single auth process.
            auth_tuning = "auth_cache_verify_password_with_worker = yes"
        if self.mode == "tuned":
            cores = os.cpu_count() or 1
            services = TUNED_SERVICES.format(
                limit=CONNECTIONS, cores=cores, auth_limit=CONNECTIONS + 1000 + 4 * cores + 100
            )
        self.config.write_text(
            CONFIG.format(
                run=self.root / "run",
                state=self.root / "state",
                logs=self.root / "logs",
                mode=self.mode,
                scheme=self.scheme,
                uid=uid,
                gid=gid,
                passwd=self.passwd,
                imap_port=self.imap_port,
                pop3_port=self.pop3_port,
                services=services,
                auth_tuning=auth_tuning,
            )
        )

    def fill(self, user: str, kind: str, count: int) -> None:
        """Write the messages into the user's Maildir/cur the way an LDA leaves them
        (LF line ends; S= and W= in the name so Dovecot needs no stat or read for sizes)."""
        uid, gid = mail_owner()
        maildir = self.home_of(user) / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        base = 1_700_000_000
        for n, raw in enumerate(mailbox_messages(kind, user, count)):
            data = raw.replace(b"\r\n", b"\n")
            name = f"{base + n}.M{n}P1.bench,S={len(data)},W={len(raw)}:2,"
            (maildir / "cur" / name).write_bytes(data)
        for path in [self.home_of(user), *self.home_of(user).rglob("*")]:
            os.chown(path, uid, gid)

    def start(self, timeout: float = 30.0) -> int:
        def limits() -> None:
            raise_fd_limit()

        log = open(self.root / "logs" / "stderr.log", "ab")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(
            ["dovecot", "-F", "-c", str(self.config)],
            stdout=log,
            stderr=log,
            preexec_fn=limits,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited: see {self.root / 'logs'}")
            if greets(self.imap_port) and greets(self.pop3_port):
                return self.process.pid
            time.sleep(0.1)
        raise RuntimeError("dovecot did not answer on its ports")

    def doveadm(self, *args: str) -> str:
        return subprocess.run(
            ["doveadm", "-c", str(self.config), *args], check=True, capture_output=True, text=True
        ).stdout

    def index(self) -> None:
        """Build the indexes now rather than during the first measured session."""
        self.doveadm("index", "-A", "INBOX")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


def greets(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            return sock.recv(64).startswith((b"* OK", b"+OK"))
    except OSError:
        return False
