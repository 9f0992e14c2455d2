"""The move request state machine and its book (home/moves/)."""

from __future__ import annotations

import pytest

from server.moves.request import (
    MoveRequest,
    MoveStateError,
    MoveStatus,
    RequestBook,
    percent,
    removable,
    transition,
)
from server.settings.paths import Home


def queued() -> MoveRequest:
    return MoveRequest(Identity="alice", SourceDatabase="MBX01", TargetDatabase="MBX02")


def test_the_whole_way_to_completed() -> None:
    r = transition(queued(), "start")
    assert r.Status == MoveStatus.InProgress and r.StartTimestamp
    r = transition(r, "lock")
    assert r.Status == MoveStatus.CompletionInProgress
    r = transition(r, "complete")
    assert r.Status == MoveStatus.Completed and r.PercentComplete == 100 and r.CompletionTimestamp


@pytest.mark.parametrize(
    ("status", "event"),
    [
        (MoveStatus.Queued, "lock"),
        (MoveStatus.Queued, "complete"),
        (MoveStatus.InProgress, "complete"),
        (MoveStatus.Completed, "start"),
        (MoveStatus.Failed, "start"),
        (MoveStatus.Completed, "resume"),
        (MoveStatus.InProgress, "resume"),
        (MoveStatus.AutoSuspended, "lock"),
    ],
)
def test_events_the_status_does_not_allow_are_refused(status: MoveStatus, event: str) -> None:
    request = MoveRequest("alice", "MBX01", "MBX02", Status=status)
    with pytest.raises(MoveStateError, match="alice"):
        transition(request, event)


def test_failed_and_suspended_moves_resume_as_a_new_attempt() -> None:
    failed = transition(transition(queued(), "start"), "fail", Message="gone", FailureType="X")
    assert failed.Status == MoveStatus.Failed
    again = transition(failed, "resume")
    assert (again.Status, again.Message, again.FailureType, again.Attempt) == (
        MoveStatus.Queued,
        "",
        None,
        2,
    )
    ready = transition(
        transition(MoveRequest("a", "S", "T", SuspendWhenReadyToComplete=True), "start"), "ready"
    )
    assert ready.Status == MoveStatus.AutoSuspended
    assert transition(ready, "resume").SuspendWhenReadyToComplete is False


def test_a_switched_move_cannot_fail_and_the_switch_cannot_be_removed() -> None:
    locked = transition(transition(queued(), "start"), "lock", Switched=True)
    with pytest.raises(MoveStateError, match="switched"):
        transition(locked, "fail")
    assert removable(locked) is not None
    assert transition(locked, "warn").Status == MoveStatus.CompletedWithWarning
    assert removable(transition(locked, "warn")) is None


def test_percent_counts_the_copy_to_95() -> None:
    assert percent(0, 10, 0) == 0
    assert percent(5, 10, 1) == 47
    assert percent(10, 10, 1) == 95
    assert percent(0, 0, 1) == 95


def test_the_book_keeps_one_request_per_mailbox(tmp_path) -> None:
    book = RequestBook(Home.resolve(tmp_path))
    book.create(queued())
    with pytest.raises(MoveStateError, match="already"):
        book.create(MoveRequest(Identity="ALICE", SourceDatabase="MBX01", TargetDatabase="MBX03"))
    assert book.update("alice", "start").Status == MoveStatus.InProgress
    assert book.get("Alice") == book.all()[0]
    assert book.update("alice", ItemsTransferred=3).ItemsTransferred == 3
    book.update("alice", "lock")
    with pytest.raises(MoveStateError, match="switching"):
        book.remove("alice")
    book.update("alice", "complete")
    assert book.remove("alice").Status == MoveStatus.Completed
    assert book.all() == []
    with pytest.raises(MoveStateError, match="removed"):
        book.update("alice", "start")


def test_a_final_phase_cut_short_before_the_switch_starts_again() -> None:
    locked = transition(transition(queued(), "start"), "lock")
    assert transition(locked, "start").Status == MoveStatus.InProgress
