"""What server/runtime/workers.py decides without processes: how many a service runs, which
back-end process a mailbox goes to, and one answer from several processes' answers."""

from __future__ import annotations

import os

import pytest

from server.runtime.workers import merge_answers, route, worker_processes
from server.settings.models import IMAP4, IMAP4BE, POP3BE, SUBMISSION, default_settings


def test_counts_come_from_each_service_s_own_parameter() -> None:
    settings = default_settings(server="MBX01")
    server = settings.server("MBX01")
    server.ImapSettings.WorkerProcesses = 3
    server.ImapSettings.BackEndWorkerProcesses = 2
    server.PopSettings.BackEndWorkerProcesses = 0
    assert worker_processes(settings, "MBX01", IMAP4) == 3
    assert worker_processes(settings, "MBX01", IMAP4BE) == 2
    assert worker_processes(settings, "MBX01", POP3BE) == (os.cpu_count() or 1)
    assert worker_processes(settings, "MBX01", SUBMISSION) == 1


def test_a_mailbox_goes_to_one_process_whatever_its_spelling() -> None:
    names = [f"user{n}" for n in range(200)]
    picked = [route(name, 3) for name in names]
    assert set(picked) == {0, 1, 2}  # all processes get mailboxes
    assert all(route(name.upper(), 3) == p for name, p in zip(names, picked, strict=True))
    assert route("anyone", 1) == 0
    # Stable across processes and runs (not Python's salted hash()): a fixed value.
    assert route("alice", 2) == 1 and route("bob", 2) == 0


@pytest.mark.parametrize(
    ("mine", "theirs", "merged"),
    [
        ({"ended": 1}, [{"ended": 2}, None], {"ended": 3}),
        ({"ended": 0}, [{"error": "boom"}], {"ended": 0, "error": "boom"}),
        ({"error": "first"}, [{"error": "second"}], {"error": "first"}),
        ({"ok": True}, [{"ok": True}], {"ok": True}),
    ],
)
def test_answers_of_several_processes_are_added_up(
    mine: dict[str, object], theirs: list[dict[str, object] | None], merged: dict[str, object]
) -> None:
    assert merge_answers(mine, theirs) == merged
