"""The source's fence: deliveries in flight finish before it stands, none starts past it."""

from __future__ import annotations

import threading
import time

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
