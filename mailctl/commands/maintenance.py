"""Prune-MailboxDatabase: housekeeping of a server's mailbox database.

Every expunged message leaves a tombstone (its UID and MODSEQ) so IMAP clients using QRESYNC
(RFC 7162) learn what vanished while they were away. Nothing else ever removes them, so a busy
mailbox's database grows without bound; this command forgets the old ones. It is safe while
the services run: the store takes its own write lock, and a client resynchronizing from before
the pruned expunges still gets a complete (if longer) VANISHED answer.
"""

from __future__ import annotations

from typing import Annotated

import typer

from mailctl.cli import (
    OutputOpt,
    ServerOpt,
    WhatIfOpt,
    command,
    emit,
    fail,
    home,
    load_settings,
    local_server,
)

DEFAULT_DAYS = 30


@command("Prune-MailboxDatabase")
def prune_mailbox_database(
    older_than_days: Annotated[
        int,
        typer.Option(
            "--older-than-days",
            min=0,
            help="Forget expunges older than this many days (0: every one so far). Clients "
            "offline longer than this resynchronize with a longer VANISHED answer.",
        ),
    ] = DEFAULT_DAYS,
    server: ServerOpt = None,
    output: OutputOpt = "table",
    what_if: WhatIfOpt = False,
) -> None:
    """Forget the tombstones of messages expunged more than --older-than-days ago in the
    server's mailbox database (QRESYNC bookkeeping that otherwise grows forever). Meant to
    run daily while the services run: from cron (`17 3 * * * root mailctl
    prune-mailboxdatabase`) or a systemd timer (OnCalendar=daily) starting a Type=oneshot
    unit with that command line; give --home (or MAILCTL_HOME) when the home folder is not
    the default one."""
    from server.store import open_store
    from server.store.api import StoreError

    name, _ = local_server(load_settings(), server)
    folder = home().database(name)
    if what_if:
        print(
            f"What if: would forget the tombstones of messages expunged more than "
            f"{older_than_days} days ago in {folder}."
        )
        return
    removed = 0
    if folder.exists():  # no database yet: nothing to prune, and nothing to create
        try:
            with open_store(home(), name) as store:
                removed = store.prune_tombstones(older_than_days)
        except (StoreError, OSError) as exc:
            fail(f"Prune-MailboxDatabase {name}: {exc}", code=1)
    emit(
        {"Server": name, "OlderThanDays": older_than_days, "TombstonesRemoved": removed},
        output,
        columns=["Server", "OlderThanDays", "TombstonesRemoved"],
    )
