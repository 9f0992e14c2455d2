"""The copy engine of mailbox moves over two real stores (the source read through the same
StoreSource the source server's replication service answers with)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from server.moves.copier import Copier, CopyState, StoreSource, load_state, save_state
from server.settings.paths import Home
from server.store import open_store
from server.store.api import MailboxStore


def message(n: int) -> bytes:
    return f"From: a@contoso.test\r\nSubject: m{n}\r\n\r\nbody {n}\r\n".encode()


@pytest.fixture
def boxes(tmp_path):
    home = Home.resolve(tmp_path)
    source_store, target_store = open_store(home, "MBX01"), open_store(home, "MBX02")
    yield source_store.mailbox("alice"), target_store.mailbox("alice")
    source_store.close()
    target_store.close()


def contents(box: MailboxStore) -> dict[str, list[tuple[bytes, frozenset[str], datetime]]]:
    """Every folder's messages as (bytes, flags, INTERNALDATE), in UID order."""
    out = {}
    for info in box.folders():
        rows = box.snapshot(info.name).rows
        out[info.name] = [(box.read(info.name, r.uid), r.flags, r.internaldate) for r in rows]
    return out


def test_first_pass_copies_folders_messages_flags_and_dates(boxes) -> None:
    source, target = boxes
    when = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    source.create_folder("Projects/2024")
    source.set_subscribed("Projects/2024", True)
    source.append("INBOX", message(1), ["\\Seen", "$Important"], when)
    source.append("Projects/2024", message(2), ["\\Flagged"])
    source.append("Sent Items", message(3))
    copier = Copier(StoreSource(source), target)
    assert copier.run_pass() >= 3
    assert contents(target) == contents(source)
    infos = {f.name: f for f in target.folders()}
    assert infos["Projects/2024"].subscribed
    assert infos["Sent Items"].special_use == "\\Sent"
    assert target.snapshot("INBOX").rows[0].internaldate == when
    # Nothing changed: the next pass does nothing.
    assert copier.run_pass() == 0


def test_later_passes_copy_only_changes_and_expunges(boxes) -> None:
    source, target = boxes
    uids = [source.append("INBOX", message(n)).uid for n in range(5)]
    copier = Copier(StoreSource(source), target)
    copier.run_pass()
    source.append("INBOX", message(5))
    source.set_flags("INBOX", [uids[0]], "+", ["\\Answered", "Work"])
    source.delete_messages("INBOX", [uids[1]])
    source.create_folder("New")
    source.append("New", message(6))
    assert copier.run_pass() == 5  # one copied, one flag change, one expunge, a folder, its message
    assert contents(target) == contents(source)


def test_a_folder_deleted_or_made_again_on_the_source(boxes) -> None:
    source, target = boxes
    source.create_folder("Old")
    source.append("Old", message(1))
    source.create_folder("Again")
    source.append("Again", message(2))
    copier = Copier(StoreSource(source), target)
    copier.run_pass()
    source.delete_folder("Old")
    source.delete_folder("Again")
    source.create_folder("Again")
    source.append("Again", message(3))
    copier.run_pass()
    assert "Old" not in {f.name for f in target.folders()}
    assert contents(target) == contents(source)


def test_state_round_trips_so_a_resumed_move_goes_on(boxes, tmp_path) -> None:
    source, target = boxes
    source.append("INBOX", message(1))
    copier = Copier(StoreSource(source), target)
    copier.run_pass()
    save_state(tmp_path / "s.json", copier.state)
    source.append("INBOX", message(2))
    resumed = Copier(StoreSource(source), target, load_state(tmp_path / "s.json"))
    assert resumed.run_pass() == 1
    assert contents(target) == contents(source)
    assert load_state(tmp_path / "missing.json") is None
    assert isinstance(resumed.state, CopyState) and resumed.state.items == 2
