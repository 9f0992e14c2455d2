"""Two hosts of one organization, as Linux network namespaces (issue 16).

    with two_hosts(tmp_path) as org:
        org.a.mailctl("new-mailbox", "alice", "--password-stdin", stdin=PASSWORD)
        org.b.address        # 10.77.N.2, where clients and host A reach host B
        org.slapd.stop()     # the directory both hosts use

Each host is a network namespace joined to a bridge in the test's own namespace by a veth
pair: host A is 10.77.N.1, host B 10.77.N.2, and the bridge 10.77.N.254 carries the
directory (slapd, started by the test) and lets the test's clients reach both hosts like
any machine on the network. The hosts have separate home folders and share nothing but the
directory: host A is made with `mailctl init`, points at the directory and prepares the
organization (`setup /PrepareAD`); host B joins it (`setup /Mode:Install /Role:Mailbox`).
Services run inside the namespaces (`ip netns exec`), on Exchange's own ports (each
namespace has its own), and are stopped, and the namespaces removed, at the end.

Needs root and `ip netns`; skips with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from tests.e2e.conftest import REPO
from tests.e2e.ldap_support import (
    CONFIGURATION,
    PEOPLE,
    ROOT_DN,
    ROOT_PW,
    SERVICE_DN,
    SERVICE_PW,
    Slapd,
    need_slapd,
)

PASSWORD = "Corr3ct-horse"
DIRECTORY_TIMEOUT = 2  # the directory's ConnectTimeout and OperationTimeout (seconds)
T = TypeVar("T")


def need_netns() -> str:
    """The `ip` binary, or a skip that says why two hosts cannot be made here."""
    ip = shutil.which("ip") or ("/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else None)
    if os.geteuid() != 0:
        pytest.skip("two-host tests need root (they make network namespaces)")
    if ip is None:
        pytest.skip("two-host tests need iproute2's `ip` (Debian: apt-get install iproute2)")
    probe = subprocess.run([ip, "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"`ip netns` is unavailable here: {probe.stderr.strip()}")
    return ip


@dataclass
class Host:
    """One host: its namespace, address and home; `mailctl(*args)` runs mailctl there."""

    name: str  # its server, e.g. MBX02
    netns: str
    address: str
    home: Path
    ip: str = field(repr=False, default="ip")

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["MAILCTL_HOME"] = str(self.home)
        env.pop("MAILCTL_SERVER", None)  # which server this host is comes from its host.toml
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        return env

    def run(
        self, *argv: str, stdin: str = "", check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """A command inside this host's namespace."""
        result = subprocess.run(
            [self.ip, "netns", "exec", self.netns, *argv],
            env=self.env,
            cwd=REPO,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check:
            assert result.returncode == 0, (
                f"[{self.name}] {' '.join(argv[2:] if argv[:1] == (sys.executable,) else argv)}"
                f" -> {result.returncode}: {result.stderr}{result.stdout}"
            )
        return result

    def mailctl(
        self, *args: str, stdin: str = "", check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return self.run(
            sys.executable, "-m", "mailctl", *args, stdin=stdin, check=check, timeout=timeout
        )

    def client_context(self) -> ssl.SSLContext:
        """Trusts the organization's CA (clients connect by address, so no name check)."""
        ctx = ssl.create_default_context(cafile=str(self.home / "certs" / "mailctl-ca.pem"))
        ctx.check_hostname = False
        return ctx


@dataclass
class Organization:
    a: Host
    b: Host
    slapd: Slapd
    configuration_dn: str = CONFIGURATION

    @property
    def hosts(self) -> tuple[Host, Host]:
        return self.a, self.b


def wait_for(what: str, probe: Callable[[], T | None], deadline: float = 30.0) -> T:
    """Poll `probe` until it returns something other than None/False; fail after `deadline`
    seconds (a bound on a hang, not a timing assertion)."""
    end = time.monotonic() + deadline
    last: BaseException | None = None
    while True:
        try:
            value = probe()
            if value is not None and value is not False:
                return value
        except (OSError, AssertionError) as exc:
            last = exc
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {deadline} s (last error: {last!r})")
        time.sleep(0.02)


def _free_subnet(ip: str) -> int:
    used = subprocess.run([ip, "-o", "addr"], capture_output=True, text=True).stdout
    for n in [*range(os.getpid() % 200 + 20, 250), *range(20, 250)]:
        if f"10.77.{n}." not in used and not os.path.exists(f"/run/netns/mh{n}a"):
            return n
    pytest.skip("no free 10.77.N.0/24 subnet for the two-host network")


@contextlib.contextmanager
def _network(ip: str) -> Iterator[tuple[int, str, str]]:
    n = _free_subnet(ip)
    bridge, ns_a, ns_b = f"mh{n}br", f"mh{n}a", f"mh{n}b"

    def sh(*argv: str) -> None:
        result = subprocess.run([ip, *argv], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"ip {' '.join(argv)}: {result.stderr.strip()}")

    made: list[Callable[[], None]] = []
    try:
        sh("link", "add", bridge, "type", "bridge")
        made.append(lambda: sh("link", "del", bridge))
        sh("addr", "add", f"10.77.{n}.254/24", "dev", bridge)
        sh("link", "set", bridge, "up")
        for side, ns in (("1", ns_a), ("2", ns_b)):
            sh("netns", "add", ns)
            made.append(lambda ns=ns: sh("netns", "del", ns))
            outer, inner = f"mh{n}{ns[-1]}o", f"mh{n}{ns[-1]}i"
            sh("link", "add", outer, "type", "veth", "peer", "name", inner)
            sh("link", "set", inner, "netns", ns)
            sh("link", "set", outer, "master", bridge)
            sh("link", "set", outer, "up")
            sh("-n", ns, "addr", "add", f"10.77.{n}.{side}/24", "dev", inner)
            sh("-n", ns, "link", "set", inner, "up")
            sh("-n", ns, "link", "set", "lo", "up")
        yield n, ns_a, ns_b
    finally:
        for undo in reversed(made):
            with contextlib.suppress(RuntimeError):
                undo()


def _kill_namespace(ip: str, ns: str) -> None:
    """What mailctl stop left running in the namespace (a service that hung)."""
    pids = subprocess.run([ip, "netns", "pids", ns], capture_output=True, text=True).stdout
    for pid in pids.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), 9)


@contextlib.contextmanager
def two_hosts(tmp_path: Path) -> Iterator[Organization]:
    """An organization of two mailbox servers, MBX01 on host A and MBX02 on host B, with
    its mailboxes and settings in slapd; every service of both running."""
    ip = need_netns()
    need_slapd()
    with _network(ip) as (n, ns_a, ns_b):
        slapd = Slapd(tmp_path / "slapd", address=f"10.77.{n}.254")
        slapd.start()
        a = Host("MBX01", ns_a, f"10.77.{n}.1", tmp_path / "hostA", ip)
        b = Host("MBX02", ns_b, f"10.77.{n}.2", tmp_path / "hostB", ip)
        try:
            slapd.populate()
            a.mailctl("init", "--server", "MBX01", "--no-demo")
            a.mailctl(
                "set-adserversettings", "--uri", slapd.uri, "--base-dn", PEOPLE,
                "--bind-dn", SERVICE_DN, "--bind-password-stdin",
                "--connect-timeout", str(DIRECTORY_TIMEOUT),
                "--operation-timeout", str(DIRECTORY_TIMEOUT),
                stdin=SERVICE_PW + "\n",
            )  # fmt: skip
            a.mailctl(
                "setup", "/PrepareAD", f"/AdminDN:{ROOT_DN}", f"/BackEndAddress:{a.address}",
                "/PasswordStdin", stdin=ROOT_PW + "\n",
            )  # fmt: skip
            a.mailctl("enable-imap4")
            a.mailctl("enable-pop3")
            a.mailctl("start")
            b.mailctl(
                "setup", "/Mode:Install", "/Role:Mailbox", f"/DomainController:{slapd.uri}",
                f"/AdminDN:{ROOT_DN}", f"/ConfigurationDN:{CONFIGURATION}", "/Server:MBX02",
                f"/BackEndAddress:{b.address}", "/PasswordStdin",
                "/IAcceptExchangeServerLicenseTerms_DiagnosticDataOFF", stdin=ROOT_PW + "\n",
            )  # fmt: skip
            yield Organization(a, b, slapd)
        finally:
            if slapd.pid is None:
                slapd.start()  # the services stop faster with their directory there
            for host in (b, a):
                if host.home.exists():
                    host.mailctl("stop", check=False, timeout=120)
                _kill_namespace(ip, host.netns)
            slapd.stop()
