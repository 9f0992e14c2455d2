"""A command that writes settings in a home that was never initialised says so, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailctl.cli import run


def test_new_mailbox_without_init_is_one_clear_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAILCTL_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("pw-for-bob\n"))
    code = run(["new-mailbox", "bob", "--password-stdin"])
    err = capsys.readouterr().err
    assert code == 1
    assert "run `mailctl init`" in err
    assert "Traceback" not in err
    assert not (tmp_path / "empty" / "settings.toml").exists()
