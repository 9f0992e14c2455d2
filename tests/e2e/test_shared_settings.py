"""The organization's settings shared through the directory, on one machine (two home
folders standing for two hosts, a real slapd): compare-and-set under two writers at once,
the edit re-applied after a lost round, MSExchangeADTopology's copy, and what a join
refuses. tests/e2e/test_multihost.py runs the same across two network namespaces."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from server.settings import host, shared, store
from server.settings.names import TOPOLOGY
from server.settings.paths import Home
from tests.e2e.conftest import REPO, ServiceRunner, _base_env
from tests.e2e.frontend_support import make_home
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
from tests.e2e.multihost_support import wait_for

pytestmark = pytest.mark.e2e
SETTINGS_DN = f"cn=settings,{CONFIGURATION}"


def mailctl(
    home: Home, *args: str, stdin: str = "", code: int = 0
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "mailctl", *args],
        env=_base_env(home),
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == code, f"mailctl {' '.join(args)}: {result.stderr}{result.stdout}"
    return result


@dataclass
class Pair:
    slapd: Slapd
    one: Home  # prepared the organization (MBX01)
    two: Home  # joined it (MBX02), services not started


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    need_slapd()
    slapd = Slapd(tmp_path / "slapd")
    slapd.start()
    try:
        slapd.populate()
        one = make_home(tmp_path / "one")
        mailctl(
            one, "set-adserversettings", "--uri", slapd.uri, "--base-dn", PEOPLE,
            "--bind-dn", SERVICE_DN, "--bind-password-stdin", "--connect-timeout", "2",
            "--operation-timeout", "2", stdin=SERVICE_PW + "\n",
        )  # fmt: skip
        mailctl(one, "setup", "/PrepareAD", f"/AdminDN:{ROOT_DN}", "/PasswordStdin", stdin=ROOT_PW)
        two = Home.resolve(tmp_path / "two")
        mailctl(
            two, "join-organization", "--directory-uri", slapd.uri, "--admin-dn", ROOT_DN,
            "--configuration-dn", CONFIGURATION, "--server", "MBX02",
            "--backend-address", "127.0.0.1", "--base-port", "30000", "--no-start",
            "--password-stdin", stdin=ROOT_PW + "\n",
        )  # fmt: skip
        yield Pair(slapd, one, two)
    finally:
        for where in (tmp_path / "two", tmp_path / "one"):
            if (where / "run").is_dir():
                ServiceRunner(Home.resolve(where), _base_env(Home.resolve(where))).stop_all()
        slapd.stop()


def organization_text(pair: Pair) -> str:
    remote = shared.remote_for(pair.one.root, pair.one.settings_file.read_text())
    assert remote is not None
    return remote.read()[0]


def test_prepare_and_join_write_what_each_host_needs(pair: Pair) -> None:
    assert host.load(pair.one.root) == host.HostConfig("MBX01", SETTINGS_DN)
    assert host.load(pair.two.root) == host.HostConfig("MBX02", SETTINGS_DN)
    settings = store.load(pair.two).settings
    assert set(settings.Servers) == {"MBX01", "MBX02"}
    assert settings.Servers["MBX02"].startup_type(TOPOLOGY).value == "Automatic"
    assert store.parse(organization_text(pair)).Servers.keys() == {"MBX01", "MBX02"}
    # One organization: the same CA and proxy secret; each server its own certificate.
    for name in ("certs/mailctl-ca.pem", "certs/mailctl-ca.key", "secrets/proxy-secret"):
        assert (pair.one.root / name).read_bytes() == (pair.two.root / name).read_bytes()
    assert (pair.two.root / "secrets/ldap-bind-password").read_text() == SERVICE_PW
    shown = mailctl(pair.two, "get-exchangecertificate", "--output", "json").stdout
    assert "mbx02.contoso.test" in shown
    # mailctl on host two means MBX02 without -Server.
    assert '"MBX02"' in mailctl(pair.two, "get-imapsettings", "--output", "json").stdout


def test_an_edit_that_lost_the_race_is_applied_again(pair: Pair) -> None:
    with store.edit(pair.one) as first:
        first.set(("Servers", "MBX01", "ImapSettings", "Banner"), "from one")
        # The other host publishes while this edit is open: this one's compare-and-set
        # fails, and its change is applied to the newer document.
        with store.edit(pair.two) as second:
            second.set(("Servers", "MBX02", "PopSettings", "Banner"), "from two")
    text = organization_text(pair)
    merged = store.parse(text)
    assert merged.Servers["MBX01"].ImapSettings.Banner == "from one"
    assert merged.Servers["MBX02"].PopSettings.Banner == "from two"
    assert pair.one.settings_file.read_text() == text  # the later writer's copy is current


def test_two_writers_at_once_lose_nothing(pair: Pair) -> None:
    fields = ["MaxConnections", "MaxConnectionFromSingleIP", "MaxConnectionsPerUser"]
    rounds = [(kind, f) for kind in ("ImapSettings", "PopSettings") for f in fields]
    errors: list[BaseException] = []

    def writer(home: Home, server: str, base: int) -> None:
        try:
            for i, (kind, field) in enumerate(rounds):
                with store.edit(home) as session:
                    session.set(("Servers", server, kind, field), base + i)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=(pair.one, "MBX01", 1000)),
        threading.Thread(target=writer, args=(pair.two, "MBX02", 2000)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    final = store.parse(organization_text(pair))
    for server, base in (("MBX01", 1000), ("MBX02", 2000)):
        for i, (kind, field) in enumerate(rounds):
            assert getattr(getattr(final.Servers[server], kind), field) == base + i


def test_the_topology_service_brings_a_change_to_the_other_host(pair: Pair) -> None:
    runner = ServiceRunner(pair.two, _base_env(pair.two))
    try:
        runner.start(TOPOLOGY, "MBX02")
        mailctl(pair.one, "set-popsettings", "--server", "MBX02", "--banner", "copied")
        # The copy writes settings.toml, then the version beside it (so a version never
        # names content not there yet): wait for both, not for the file alone.
        wait_for(
            "the change and its version in host two's copy",
            lambda: (
                store.load(pair.two).settings.Servers["MBX02"].PopSettings.Banner == "copied"
                and shared.read_version(pair.two.root) == shared.read_version(pair.one.root)
            ),
            deadline=2.0,
        )
        # The directory goes away: the copy stays, the service says why, and catches up.
        pair.slapd.stop()

        def last_error() -> str | None:
            shown = mailctl(pair.two, "get-organizationconfig", "--output", "json").stdout
            return json.loads(shown)["LastError"]

        assert "cannot be reached" in wait_for("the directory reported down", last_error)
        assert store.load(pair.two).settings.Servers["MBX02"].PopSettings.Banner == "copied"
        pair.slapd.start()
        mailctl(pair.one, "set-popsettings", "--server", "MBX02", "--banner", "after")
        wait_for(
            "the next change after the directory came back",
            lambda: store.load(pair.two).settings.Servers["MBX02"].PopSettings.Banner == "after",
        )
    finally:
        runner.stop_all()


def test_a_join_without_the_admins_secrets_is_refused(pair: Pair, tmp_path: Path) -> None:
    three = Home.resolve(tmp_path / "three")
    args = (
        "join-organization", "--directory-uri", pair.slapd.uri, "--configuration-dn",
        CONFIGURATION, "--server", "MBX03", "--backend-address", "127.0.0.1",
        "--no-start", "--password-stdin",
    )  # fmt: skip
    # The services' account reads the settings but not the secrets.
    refused = mailctl(three, *args, "--admin-dn", SERVICE_DN, stdin=SERVICE_PW, code=1)
    assert "may not read" in refused.stderr
    refused = mailctl(three, *args, "--admin-dn", ROOT_DN, stdin="wrong", code=1)
    assert "refused" in refused.stderr
    assert not three.root.exists()
    assert "MBX03" not in organization_text(pair)
    # And a home that is a one-host install already is not turned into a copy.
    refused = mailctl(
        pair.one,
        "prepare-organization",
        "--admin-dn",
        ROOT_DN,
        "--password-stdin",
        stdin=ROOT_PW,
        code=2,
    )
    assert "part of an organization already" in refused.stderr
