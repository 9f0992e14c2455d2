"""A throwaway OpenLDAP server for the directory tests: slapd on a loopback port with a
slapd.conf in a temp folder (schemas core, cosine, inetorgperson, nis and the project's
server/directory/mailctl.schema; an mdb database; the argon2 password module, so binds
check the {ARGON2} hashes mailctl writes)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from server.directory.ldap import SCHEMA_FILE

SLAPD = shutil.which("slapd") or ("/usr/sbin/slapd" if os.path.exists("/usr/sbin/slapd") else None)
SCHEMAS = Path("/etc/ldap/schema")
MODULES = Path("/usr/lib/ldap")
SUFFIX = "dc=contoso,dc=test"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PW = "Adm1n-secret"
PEOPLE = f"ou=people,{SUFFIX}"
SERVICE_DN = f"cn=mailctl,{SUFFIX}"
SERVICE_PW = "Serv1ce-secret"
# The organization's entries when its settings are shared by hosts (mailctl setup /PrepareAD).
CONFIGURATION = f"ou=mailctl,{SUFFIX}"


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


def need_slapd() -> str:
    if SLAPD is None or not (SCHEMAS / "inetorgperson.schema").exists():
        pytest.skip("OpenLDAP's slapd is not installed (Debian: apt-get install slapd ldap-utils)")
    return SLAPD


class Slapd:
    def __init__(self, folder: Path, address: str = "127.0.0.1") -> None:
        self.binary = need_slapd()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "db").mkdir(exist_ok=True)
        self.port = free_port(address)
        self.uri = f"ldap://{address}:{self.port}"
        modules = "".join(
            f"moduleload {m}\n" for m in ("back_mdb", "argon2") if (MODULES / f"{m}.so").exists()
        )
        includes = "".join(
            f"include {SCHEMAS / s}.schema\n" for s in ("core", "cosine", "inetorgperson", "nis")
        )
        (folder / "slapd.conf").write_text(
            f"{includes}include {SCHEMA_FILE}\n"
            f"pidfile {folder / 'slapd.pid'}\nargsfile {folder / 'slapd.args'}\n"
            f"modulepath {MODULES}\n{modules}"
            "password-hash {ARGON2}\n"
            f'database mdb\nmaxsize 10485760\nsuffix "{SUFFIX}"\n'
            f'rootdn "{ROOT_DN}"\nrootpw {ROOT_PW}\ndirectory {folder / "db"}\n'
            "index objectClass eq\n"
            # The service account mailctl binds as writes the people below PEOPLE and reads
            # their hashes (LoginVerification Hash); users may only bind with theirs.
            f'access to dn.subtree="{PEOPLE}" attrs=userPassword\n'
            f'  by dn.exact="{SERVICE_DN}" write by self write by anonymous auth by * none\n'
            f'access to dn.subtree="{PEOPLE}" by dn.exact="{SERVICE_DN}" write by * read\n'
            # The secrets a joining host needs: the organization's admins only (rootdn
            # here, which no rule limits); the shared settings: written by the service
            # account, read by all (docs/security.md, "More than one host").
            f'access to dn.base="cn=secrets,{CONFIGURATION}" by * none\n'
            f'access to dn.base="cn=settings,{CONFIGURATION}" by dn.exact="{SERVICE_DN}" write'
            " by * read\n"
            "access to attrs=userPassword by self write by anonymous auth by * none\n"
            "access to * by * read\n"
        )
        self.pid: int | None = None

    def start(self) -> None:
        """slapd in the foreground, as our child. At debug level 8 (connections) its
        event loop logs "daemon: ... listen=" when it first waits on its listeners, which
        are listening by then: that line is the readiness signal ("slapd starting" comes
        from another thread and may precede listen()). A thread drains the rest."""
        self.process = subprocess.Popen(
            [self.binary, "-f", str(self.folder / "slapd.conf"), "-h", f"{self.uri}/", "-d", "8"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        assert self.process.stderr is not None
        seen = []
        for line in self.process.stderr:
            seen.append(line)
            if "daemon:" in line and "listen=" in line:
                break
        else:
            self.process.wait(timeout=30)
            raise RuntimeError("slapd did not start:\n" + "".join(seen))
        threading.Thread(target=self.process.stderr.read, daemon=True).start()
        self.pid = self.process.pid

    def stop(self) -> None:
        if self.pid is None:
            return
        self.pid = None
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)

    def freeze(self) -> None:
        """Stopped but listening: connections are accepted by the kernel, never answered."""
        assert self.pid is not None
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.pid is not None
        os.kill(self.pid, signal.SIGCONT)

    def populate(self) -> None:
        import ldap3

        conn = ldap3.Connection(ldap3.Server(self.uri), ROOT_DN, ROOT_PW, auto_bind=True)
        conn.add(SUFFIX, ["dcObject", "organization"], {"dc": "contoso", "o": "Contoso"})
        conn.add(PEOPLE, ["organizationalUnit"], {"ou": "people"})
        conn.add(
            SERVICE_DN,
            ["organizationalRole", "simpleSecurityObject"],
            {"cn": "mailctl", "userPassword": SERVICE_PW},
        )
        conn.unbind()
