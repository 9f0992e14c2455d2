"""The shared settings' edit delta and compare-and-set loop (server/settings/shared.py),
against an in-memory Remote that loses rounds on purpose."""

from __future__ import annotations

import pytest
import tomlkit

from server.settings import shared
from server.settings.models import default_settings
from server.settings.store import SettingsError, dump_value, parse


def document() -> str:
    doc = tomlkit.document()
    doc.add(tomlkit.comment("kept by the admins"))
    for key, value in dump_value(default_settings().model_dump(mode="json")).items():
        doc[key] = value
    return tomlkit.dumps(doc)


def edited(text: str, path: tuple[str, ...], value: object) -> str:
    doc = tomlkit.parse(text)
    node = doc
    for key in path[:-1]:
        node = node[key]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return tomlkit.dumps(doc)


IMAP_BANNER = ("Servers", "MBX01", "ImapSettings", "Banner")
POP_BANNER = ("Servers", "MBX01", "PopSettings", "Banner")


class Remote:
    """The organization's copy; `others` are writes that land just before each of ours."""

    def __init__(self, text: str) -> None:
        self.text, self.version = text, 1
        self.others: list[tuple[tuple[str, ...], object]] = []
        self.lost = 0

    def read(self) -> tuple[str, int]:
        return self.text, self.version

    def swap(self, text: str, version: int) -> int | None:
        if self.others:
            path, value = self.others.pop(0)
            self.text, self.version = edited(self.text, path, value), self.version + 1
        if version != self.version:
            self.lost += 1
            return None
        self.text, self.version = text, version + 1
        return self.version


def test_delta_names_the_leaves_set_and_removed() -> None:
    base = document()
    after = edited(edited(base, IMAP_BANNER, "new"), ("Servers", "MBX01", "Site"), None)
    changes = shared.delta(base, after)
    assert [(c.path, c.value) for c in changes if c.value is not shared._REMOVED] == [
        (IMAP_BANNER, "new")
    ]
    assert [c.path for c in changes if c.value is shared._REMOVED] == [("Servers", "MBX01", "Site")]


def test_apply_keeps_comments_and_adds_tables() -> None:
    base = document()
    text = shared.apply(
        base,
        [shared.Change(("Directory", "Uri"), "ldap://dc01"), shared.Change(IMAP_BANNER, "x")],
    )
    assert text.startswith("# kept by the admins")
    assert 'Uri = "ldap://dc01"' in text
    assert tomlkit.parse(text)["Servers"]["MBX01"]["ImapSettings"]["Banner"] == "x"


def test_a_lost_round_reapplies_the_edit_on_the_newer_document() -> None:
    base = document()
    remote = Remote(base)
    remote.others = [(POP_BANNER, "the other admin's")]
    text, version = shared.publish(remote, base, 1, edited(base, IMAP_BANNER, "mine"), parse)
    assert remote.lost == 1 and version == 3 and remote.text == text
    settings = parse(text).Servers["MBX01"]
    assert settings.ImapSettings.Banner == "mine"
    assert settings.PopSettings.Banner == "the other admin's"


def test_the_same_key_changed_by_both_the_later_writer_wins() -> None:
    base = document()
    remote = Remote(base)
    remote.others = [(IMAP_BANNER, "first")]
    text, _ = shared.publish(remote, base, 1, edited(base, IMAP_BANNER, "second"), parse)
    assert parse(text).Servers["MBX01"].ImapSettings.Banner == "second"


def test_a_merge_that_would_be_invalid_is_refused() -> None:
    base = document()
    remote = Remote(base)
    # The other admin removed the server this edit changes a setting of: the merged document
    # has a Servers.MBX01 with only a Banner, which validation refuses.
    remote.others = [(("Servers", "MBX01"), None)]
    with pytest.raises(SettingsError):
        shared.publish(remote, base, 1, edited(base, IMAP_BANNER, "mine"), parse)
    assert "mine" not in remote.text


def test_giving_up_after_too_many_lost_rounds() -> None:
    base = document()
    remote = Remote(base)
    remote.others = [(POP_BANNER, f"other {i}") for i in range(shared.ATTEMPTS + 1)]
    with pytest.raises(shared.SharedSettingsError, match="try again"):
        shared.publish(remote, base, 1, edited(base, IMAP_BANNER, "mine"), parse)
    assert "mine" not in remote.text
