"""The source's fence: deliveries in flight finish before it stands, none starts past it."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from server.moves import fence
from server.settings.paths import Home


def test_raising_waits_for_a_delivery_in_flight(tmp_path) -> None:
    home = Home.resolve(tmp_path)
    inside, release, raised = threading.Event(), threading.Event(), threading.Event()

    def delivery() -> None:
        with fence.delivering(home, "MBX01", "alice") as refusal:
            assert refusal is None
            inside.set()
            release.wait(10)

    worker = threading.Thread(target=delivery)
    worker.start()
    inside.wait(10)
    raiser = threading.Thread(
        target=lambda: (fence.raise_fence(home, "MBX01", "alice", "MBX02"), raised.set())
    )
    raiser.start()
    assert not raised.wait(0.2)  # held back by the append in flight
    release.set()
    worker.join(10)
    raiser.join(10)
    assert raised.is_set()
    with fence.delivering(home, "MBX01", "Alice") as refusal:
        assert refusal is not None and "MBX02" in refusal


def test_states() -> None:
    now = time.time()
    locked = fence.Fence(fence.LOCKED, "MBX02", now - 10 * fence.MOVED_GRACE)
    assert locked.refuses() and locked.in_transit()
    moved = fence.Fence(fence.MOVED, "MBX02", now)
    assert moved.refuses() and moved.in_transit()
    assert not moved.refuses(now + fence.MOVED_GRACE + 1)
    incoming = fence.Fence(fence.INCOMING, "MBX02", now)
    assert not incoming.refuses() and incoming.in_transit()
    assert not incoming.in_transit(now + fence.MOVED_GRACE + 1)


def test_lowered_and_unreadable(tmp_path) -> None:
    home = Home.resolve(tmp_path)
    assert fence.refusal(home, "MBX01", "bob") is None
    fence.raise_fence(home, "MBX01", "bob", "MBX02", fence.MOVED)
    assert fence.in_transit(home, "MBX01", "bob") is not None
    fence.lower_fence(home, "MBX01", "bob")
    assert fence.read(home, "MBX01", "bob") is None
    fence.raise_fence(home, "MBX01", "bob", "MBX02")
    (fence.folder(home, "MBX01") / "bob.fence").write_text("{")
    assert fence.refusal(home, "MBX01", "bob") is not None  # refuse rather than guess


def _age(path: Path, seconds: float) -> int:
    """Set the folder's mtime `seconds` into the past; returns it (ns)."""
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path.stat().st_mtime_ns


def test_the_listing_of_fences_is_kept_only_while_the_folder_is_unchanged(tmp_path) -> None:
    home = Home.resolve(tmp_path)
    fence.raise_fence(home, "MBX01", "bob", "MBX02")
    folder = fence.folder(home, "MBX01")
    _age(folder, 60)
    assert fence.refusal(home, "MBX01", "alice") is None  # listed, and the listing kept
    fence.raise_fence(home, "MBX01", "alice", "MBX02")  # a rename into the folder: new mtime
    assert fence.refusal(home, "MBX01", "alice") is not None
    _age(folder, 60)
    assert fence.refusal(home, "MBX01", "alice") is not None
    fence.lower_fence(home, "MBX01", "alice")
    assert fence.refusal(home, "MBX01", "alice") is None


def test_a_folder_changed_within_the_clock_tick_is_listed_again(tmp_path) -> None:
    """A change in the same tick of the file system's clock leaves the folder's mtime as it
    was; a listing is therefore kept only once the folder has been still for a while."""
    home = Home.resolve(tmp_path)
    fence.raise_fence(home, "MBX01", "bob", "MBX02")
    folder = fence.folder(home, "MBX01")
    tick = _age(folder, 0.5)
    assert fence.refusal(home, "MBX01", "alice") is None
    fence.raise_fence(home, "MBX01", "alice", "MBX02")
    os.utime(folder, ns=(tick, tick))  # as if both changes fell in one tick
    assert fence.refusal(home, "MBX01", "alice") is not None
