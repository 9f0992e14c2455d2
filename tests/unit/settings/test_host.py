"""host.toml: what is one host's alone in an organization on several hosts."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.settings import host


def test_a_home_without_host_toml_is_a_one_host_install(tmp_path: Path) -> None:
    assert host.load(tmp_path) is None


def test_round_trip_and_the_default_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = host.HostConfig("MBX02", "cn=settings,ou=mailctl,dc=contoso,dc=test")
    host.host_file(tmp_path).write_text(host.dump(config))
    assert host.load(tmp_path) == config
    monkeypatch.delenv(host.SERVER_ENV, raising=False)
    host.adopt_server(tmp_path)
    assert host.os.environ[host.SERVER_ENV] == "MBX02"
    # An explicit MAILCTL_SERVER wins over host.toml.
    monkeypatch.setenv(host.SERVER_ENV, "MBX01")
    host.adopt_server(tmp_path)
    assert host.os.environ[host.SERVER_ENV] == "MBX01"


@pytest.mark.parametrize("text", ['Server = "MBX02"\n', "Server = [\n", 'SettingsDN = ""\n'])
def test_an_incomplete_or_broken_host_toml_is_an_error(tmp_path: Path, text: str) -> None:
    host.host_file(tmp_path).write_text(text)
    with pytest.raises(host.HostFileError):
        host.load(tmp_path)
