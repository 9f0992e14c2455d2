"""Import-Mailbox / Export-Mailbox: move mail in from Maildir or mbox, out to Maildir.

Exchange moves mail with New-MailboxImportRequest / New-MailboxExportRequest (-Mailbox,
-FilePath, -TargetRootFolder); those spellings reach the same commands. The mailbox
database is the one of the server that holds the mailbox, in this installation's home;
running services see imported mail at once (the store notifies them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mailctl.cli import OutputOpt, WhatIfOpt, command, emit, fail, home, load_settings, warn

IdentityArg = Annotated[
    str | None,
    typer.Argument(help="Mailbox name, e-mail address or domain\\name.", show_default=False),
]
MailboxOpt = Annotated[
    str | None, typer.Option("--mailbox", help="The mailbox (Exchange spelling).", hidden=True)
]
FilePathOpt = Annotated[
    Path | None,
    typer.Option(
        "--file-path",
        help="Exchange spelling: a folder is read as Maildir, a file as mbox.",
        hidden=True,
    ),
]


def _open_mailbox(identity: str | None, mailbox: str | None):  # noqa: ANN202 - store types
    from server.store import open_store

    wanted = identity or mailbox
    if not wanted:
        fail("give the mailbox: NAME (or -Mailbox NAME)")
    settings = load_settings()
    found = settings.mailbox(wanted)
    if found is None:
        fail(f"there is no mailbox {wanted!r}", code=1)
    name, box = found
    store = open_store(home(), box.Server)
    return name, store, store.mailbox(name)


def _report(report, output: str) -> None:  # noqa: ANN001 - server.store.maildir.TransferReport
    for text in report.warnings:
        warn(text)
    rows = [{"Folder": folder, "Messages": count} for folder, count in report.folders.items()]
    emit(rows, output, columns=["Folder", "Messages"])


@command("Import-Mailbox", aliases=["New-MailboxImportRequest"])
def import_mailbox(
    identity: IdentityArg = None,
    maildir: Annotated[
        Path | None, typer.Option("--maildir", help="A Maildir folder (Maildir++ subfolders).")
    ] = None,
    mbox: Annotated[Path | None, typer.Option("--mbox", help="An mbox file.")] = None,
    folder: Annotated[
        str | None,
        typer.Option(
            "--folder",
            "--target-root-folder",
            help="Import into this folder (created if needed) instead of INBOX; Maildir "
            "subfolders go below it.",
        ),
    ] = None,
    mboxo: Annotated[
        bool, typer.Option("--mboxo", help="The mbox uses mboxo quoting (default: mboxrd).")
    ] = False,
    mailbox: MailboxOpt = None,
    file_path: FilePathOpt = None,
    output: OutputOpt = "table",
    what_if: WhatIfOpt = False,
) -> None:
    """Import mail from a Maildir (Dovecot, Courier, ...) or an mbox file; keeps flags,
    keywords, dates and the exact bytes (bare LF is stored as CRLF and given back on export)."""
    from server.store.api import StoreError
    from server.store.maildir import import_maildir, import_mbox

    if file_path is not None:
        if file_path.is_dir():
            maildir = maildir or file_path
        else:
            mbox = mbox or file_path
    if (maildir is None) == (mbox is None):
        fail("give one source: --maildir PATH or --mbox PATH")
    source = maildir or mbox
    assert source is not None
    if not source.exists():
        fail(f"{source} doesn't exist", code=1)
    if what_if:
        wanted = identity or mailbox
        found = load_settings().mailbox(wanted) if wanted else None
        if found is None:
            fail(
                f"there is no mailbox {wanted!r}"
                if wanted
                else "give the mailbox: NAME (or -Mailbox NAME)",
                code=1 if wanted else 2,
            )
        kind = "Maildir" if maildir is not None else "mbox"
        print(
            f"What if: would import the {kind} {source} into mailbox {found[0]}, "
            f"folder {folder or 'INBOX'}."
        )
        return
    name, store, box = _open_mailbox(identity, mailbox)
    try:
        if maildir is not None:
            report = import_maildir(box, maildir, folder)
        else:
            report = import_mbox(box, source, folder or "INBOX", mboxrd=not mboxo)
    except StoreError as exc:
        fail(f"Import-Mailbox {name}: {exc}", code=1)
    finally:
        store.close()
    _report(report, output)


@command("Export-Mailbox", aliases=["New-MailboxExportRequest"])
def export_mailbox(
    identity: IdentityArg = None,
    maildir: Annotated[
        Path | None, typer.Option("--maildir", help="A new (or empty) folder to write.")
    ] = None,
    mailbox: MailboxOpt = None,
    file_path: FilePathOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Export every folder of a mailbox to a Maildir++ tree (Dovecot reads it as is:
    flags, keywords, dates, UIDs and subscriptions are kept)."""
    from server.store.api import StoreError
    from server.store.maildir import export_maildir

    target = maildir or file_path
    if target is None:
        fail("give the target: --maildir PATH")
    name, store, box = _open_mailbox(identity, mailbox)
    try:
        report = export_maildir(box, target)
    except (StoreError, OSError) as exc:
        fail(f"Export-Mailbox {name}: {exc}", code=1)
    finally:
        store.close()
    _report(report, output)
