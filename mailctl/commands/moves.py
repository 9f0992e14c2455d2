"""New-/Get-/Remove-/Resume-MoveRequest and Get-MoveRequestStatistics: mailbox moves between
servers, as Exchange does them. The move itself is run by MSExchangeMailboxReplication of the
target server (server/moves/service.py): it copies the mailbox while the user keeps working,
fences it for a short final pass, switches its Server in the directory, ends the sessions on
the source and has the source delete its copy. These commands only write and read the
requests (home/moves/) and wake the target's service."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mailctl.cli import (
    OutputOpt,
    command,
    emit,
    fail,
    find_mailbox,
    home,
    load_settings,
    local_server,
    warn,
)

IdentityArg = Annotated[
    str, typer.Argument(help="Mailbox name, e-mail address or domain\\name.", show_default=False)
]
OptionalIdentityArg = Annotated[
    str | None,
    typer.Argument(help="Mailbox name or address (all when left out).", show_default=False),
]
MOVE_COLUMNS = ["DisplayName", "Status", "TargetDatabase"]
STATISTICS_COLUMNS = [
    "DisplayName",
    "StatusDetail",
    "TotalMailboxSize",
    "TotalMailboxItemCount",
    "PercentComplete",
]


def _find(identity: str) -> tuple[str, Any, Any]:
    """(mailbox name, directory entry, settings) for `identity`."""
    settings = load_settings()
    entry = find_mailbox(settings, identity)
    return entry.name, entry, settings


def _this_host_server() -> str | None:
    """This host's server when the organization spans hosts (host.toml); None on one host."""
    from server.settings import host

    try:
        config = host.load(home().root)
    except host.HostFileError as exc:
        fail(str(exc), code=1)
    return config.server if config is not None else None


def _wake(server: str) -> bool:
    """Tell the target's MSExchangeMailboxReplication to look at the requests now."""
    from server.runtime.status import control_request
    from server.settings.models import REPLICATION

    return control_request(home(), REPLICATION, server, {"op": "wake"}) is not None


def _row(request: Any, settings: Any) -> dict[str, Any]:
    from mailctl import views

    box = settings.Mailboxes.get(request.Identity)
    boxes = {request.Identity: box.model_dump(mode="json")} if box is not None else {}
    return views.move_row(request.to_json(), boxes)


@command("New-MoveRequest")
def new_moverequest(
    identity: IdentityArg,
    target_database: Annotated[
        str,
        typer.Option(
            "--target-database",
            help="The server to move the mailbox to (Exchange names its database; here each "
            "server has one).",
            show_default=False,
        ),
    ],
    suspend_when_ready_to_complete: Annotated[
        bool,
        typer.Option(
            "--suspend-when-ready-to-complete",
            help="Copy, then wait in AutoSuspended for Resume-MoveRequest before the switch.",
        ),
    ] = False,
    output: OutputOpt = "table",
) -> None:
    """Move a mailbox to another server while its user keeps working: the copy runs online,
    then a short final pass, the switch and the source's clean-up."""
    from server.moves.request import MoveRequest, MoveStateError, RequestBook

    name, entry, settings = _find(identity)
    target, _ = local_server(settings, target_database)
    if entry.server_name.lower() == target.lower():
        fail(f"mailbox {name} is already on {target}", code=1)
    mine = _this_host_server()
    if mine is not None and mine.lower() != target.lower():
        # Requests are kept in the home of the target's host, where its service reads them.
        fail(
            f"this host runs {mine}; make the move request on the host of {target}, whose "
            "MSExchangeMailboxReplication runs the move",
            code=1,
        )
    request = MoveRequest(
        Identity=name,
        SourceDatabase=entry.server_name,
        TargetDatabase=target,
        SuspendWhenReadyToComplete=suspend_when_ready_to_complete,
    )
    try:
        RequestBook(home()).create(request)
    except MoveStateError as exc:
        fail(str(exc), code=1)
    if not _wake(target):
        warn(
            f"MSExchangeMailboxReplication is not running on {target}; the move starts when it does"
        )
    emit([_row(request, settings)], output, columns=MOVE_COLUMNS)


@command("Get-MoveRequest", read=True)
def get_moverequest(identity: OptionalIdentityArg = None, output: OutputOpt = "table") -> None:
    """The move requests (all, or the mailbox's)."""
    requests, settings = _requests(identity)
    emit([_row(r, settings) for r in requests], output, columns=MOVE_COLUMNS)


def _requests(identity: str | None) -> tuple[list[Any], Any]:
    """The move requests (all, or the mailbox's) and the settings."""
    from server.moves.request import RequestBook

    book = RequestBook(home())
    if identity is None:
        return book.all(), load_settings()
    name, _, settings = _find(identity)
    found = book.get(name)
    if found is None:
        fail(f"there is no move request for {name}", code=1)
    return [found], settings


@command("Get-MoveRequestStatistics", read=True)
def get_moverequeststatistics(
    identity: OptionalIdentityArg = None, output: OutputOpt = "table"
) -> None:
    """Where a move stands: StatusDetail, PercentComplete, items and bytes copied, passes."""
    requests, settings = _requests(identity)
    emit([_row(r, settings) for r in requests], output, columns=STATISTICS_COLUMNS)


@command("Remove-MoveRequest")
def remove_moverequest(identity: IdentityArg) -> None:
    """Take a move request away: a completed one is only forgotten; one still copying is
    cancelled and the target's partial copy deleted. Refused while the switch runs."""
    from server.moves.request import DONE, MoveStateError, RequestBook

    name, _, _ = _find(identity)
    try:
        removed = RequestBook(home()).remove(name)
    except MoveStateError as exc:
        fail(str(exc), code=1)
    if removed.Status not in DONE:
        _wake(removed.TargetDatabase)  # it deletes what it copied so far
    print(f"Removed the move request for {name} ({removed.Status}).")


@command("Resume-MoveRequest")
def resume_moverequest(identity: IdentityArg) -> None:
    """Go on with a Failed move, or complete an AutoSuspended one
    (New-MoveRequest -SuspendWhenReadyToComplete)."""
    from server.moves.request import MoveStateError, RequestBook

    name, _, _ = _find(identity)
    try:
        request = RequestBook(home()).update(name, "resume", StatusDetail="Queued")
    except MoveStateError as exc:
        fail(str(exc), code=1)
    if not _wake(request.TargetDatabase):
        warn(
            f"MSExchangeMailboxReplication is not running on {request.TargetDatabase}; "
            "the move goes on when it does"
        )
    print(f"Resumed the move request for {name}.")
