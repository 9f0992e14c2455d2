"""server.runtime.reload.FolderWatch, the folder watch shared by the settings watcher and the
submission spool: inotify, and the watchfiles fallback used where inotify is missing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from server.runtime import reload
from server.runtime.reload import FolderWatch, SettingsWatcher
from server.settings.paths import Home
from server.settings.store import atomic_write
from server.submission.queue import Recipient, Spool, SpoolWatcher


@pytest.fixture
def no_inotify(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable() -> None:
        raise OSError("inotify_init1 failed")

    monkeypatch.setattr(reload, "_Inotify", unavailable)


async def seen_until(queue: asyncio.Queue[list[Path]], wanted: Path) -> None:
    seen: list[Path] = []
    while wanted not in seen:
        seen += await asyncio.wait_for(queue.get(), 5)


async def poke_until(poke: Callable[[], object], seen: asyncio.Event) -> None:
    """Change something until the watch reports it: awatch starts watching in its own
    thread and says nothing when it is ready, so a first change may come too early."""
    for _ in range(50):
        poke()
        try:
            await asyncio.wait_for(seen.wait(), 0.2)
            return
        except TimeoutError:
            continue
    raise AssertionError("the watch reported nothing")


def test_inotify_watch_reports_paths_and_folders_made_later(tmp_path: Path) -> None:
    later = tmp_path / "later"

    async def scenario() -> None:
        changes: asyncio.Queue[list[Path]] = asyncio.Queue()
        watch = FolderWatch(changes.put_nowait)
        await watch.start(tmp_path, later)  # a missing optional folder is no error
        try:
            assert watch.watches(tmp_path) and not watch.watches(later)
            (tmp_path / "a.txt").write_text("a")
            await seen_until(changes, tmp_path / "a.txt")
            later.mkdir()
            await seen_until(changes, later)
            assert watch.watch(later) and watch.watches(later)
            (later / "b.txt").write_text("b")
            await seen_until(changes, later / "b.txt")
        finally:
            watch.close()

    asyncio.run(scenario())


def test_a_missing_main_folder_is_an_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        with pytest.raises(OSError):
            await FolderWatch(lambda _paths: None).start(tmp_path / "missing")

    asyncio.run(scenario())


def test_without_inotify_watchfiles_reports(tmp_path: Path, no_inotify: None) -> None:
    async def scenario() -> None:
        seen = asyncio.Event()
        watch = FolderWatch(
            lambda _paths: None, on_polled=lambda paths: tmp_path / "a.txt" in paths and seen.set()
        )
        await watch.start(tmp_path)
        try:
            assert not watch.watch(tmp_path / "sub")  # polling sees the whole tree anyway
            await poke_until(lambda: (tmp_path / "a.txt").write_text("a"), seen)
        finally:
            watch.close()

    asyncio.run(scenario())


def test_settings_watcher_without_inotify(home: Home, no_inotify: None) -> None:
    async def scenario() -> None:
        changed = asyncio.Event()
        certificates = asyncio.Event()
        watcher = SettingsWatcher(home, changed.set, certificates.set)
        await watcher.start()
        try:
            settings = home.settings_file.read_bytes()
            await poke_until(lambda: atomic_write(home.settings_file, settings), changed)
            home.certs.mkdir(parents=True, exist_ok=True)
            await poke_until(
                lambda: atomic_write(home.certs / "certificates.json", b"{}"), certificates
            )
        finally:
            watcher.close()

    asyncio.run(scenario())


def test_spool_watcher_without_inotify(tmp_path: Path, no_inotify: None) -> None:
    async def scenario() -> None:
        added: list[str] = []
        seen = asyncio.Event()

        def reported(ids: set[str]) -> None:
            assert all(i.endswith(tuple("0123456789abcdef")) for i in ids)  # no .eml, no temp
            if ids & set(added):
                seen.set()

        def add() -> None:
            added.append(Spool(tmp_path / "q").add("", [Recipient("a@x.test")], b"m").id)

        watcher = SpoolWatcher(tmp_path / "q", reported)
        await watcher.start()
        try:
            await poke_until(add, seen)
        finally:
            watcher.close()

    asyncio.run(scenario())
