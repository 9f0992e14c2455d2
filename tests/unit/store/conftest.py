"""The fixtures of the store's tests: a SQLite store in a fresh folder, and its mailbox
"alice" (modules that want it filled override `box`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server.store.sqlite import SqliteMailbox, SqliteMailStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteMailStore]:
    with SqliteMailStore(tmp_path / "db") as s:
        yield s


@pytest.fixture
def box(store: SqliteMailStore) -> SqliteMailbox:
    return store.mailbox("alice")
