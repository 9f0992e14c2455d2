"""Moving mail in and out: Maildir (Maildir++ subfolders, as Dovecot keeps it) and mbox.

Import reads a Maildir tree (`cur/`, `new/`; `tmp/` is ignored) with subfolders named
`.Folder.Sub` (modified UTF-7), flags from the `:2,` info (S R F T D, and Dovecot's
keyword letters a-z through `dovecot-keywords`), INTERNALDATE from the file's mtime and
the message order from `dovecot-uidlist` when present. mbox import splits at `From ` lines
(at the start or after a blank line), undoes mboxrd (or mboxo) `>From ` quoting and takes
flags from Status/X-Status/X-Keywords.

Messages with bare LF line ends (as Dovecot and mbox keep them) are stored with CRLF, which
IMAP and POP3 need, and remembered as such, so an export writes the original bytes back:
import then export gives byte-identical files.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

from server.protocols.imap import utf7
from server.store.api import DELIMITER, FolderExists, NewMessage, StoreError, normalize_folder
from server.store.sqlite import SqliteMailbox
from server.store.sqlite.files import sync_batch

BATCH = 200  # messages per transaction while importing

MAILDIR_FLAGS = {
    "D": "\\Draft",
    "F": "\\Flagged",
    "R": "\\Answered",
    "S": "\\Seen",
    "T": "\\Deleted",
}
FLAG_LETTERS = {v: k for k, v in MAILDIR_FLAGS.items()}
_BARE_LF = re.compile(rb"(?<!\r)\n")


@dataclass
class TransferReport:
    """What an import or export did: messages per folder, and what it had to leave out."""

    folders: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def messages(self) -> int:
        return sum(self.folders.values())


def to_crlf(raw: bytes) -> tuple[bytes, bool]:
    """(bytes to store, whether they were converted from pure bare-LF line ends). Only
    pure LF text is converted, because only that conversion can be undone exactly."""
    if b"\n" not in raw or b"\r\n" in raw:
        return raw, False
    return _BARE_LF.sub(b"\r\n", raw), True


# --- folder names --------------------------------------------------------------------------


def _decode_mutf7(text: str) -> str:
    """Lenient modified UTF-7: also accepts base64 for printable ASCII (our export writes
    '.' that way, since '.' separates Maildir++ levels); undecodable text stays as is."""
    try:
        return utf7.decode(text)
    except ValueError:
        pass

    def run(m: re.Match[str]) -> str:
        if not m.group(1):
            return "&"
        data = m.group(1).replace(",", "/")
        try:
            return base64.b64decode(data + "=" * (-len(data) % 4)).decode("utf-16-be")
        except (binascii.Error, UnicodeDecodeError):
            return m.group(0)

    return re.sub(r"&([A-Za-z0-9+,]*)-", run, text)


def maildir_to_folder(dirname: str) -> str:
    """`.Work.2024` -> `Work/2024`."""
    return normalize_folder(DELIMITER.join(_decode_mutf7(p) for p in dirname[1:].split(".")))


def folder_to_maildir(folder: str) -> str:
    """`Work/2024` -> `.Work.2024`; a '.' inside a level becomes `&AC4-`."""
    return "." + ".".join(
        utf7.encode(part).replace(".", "&AC4-") for part in folder.split(DELIMITER)
    )


# --- Maildir import --------------------------------------------------------------------------


def _keywords(folder_dir: Path) -> dict[str, str]:
    """Dovecot's letter -> keyword table (`dovecot-keywords`: "<index> <name>" lines)."""
    table: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in (folder_dir / "dovecot-keywords").read_text("utf-8", "replace").splitlines():
            idx, _, name = line.partition(" ")
            if idx.isdigit() and int(idx) < 26 and name:
                table[chr(ord("a") + int(idx))] = name
    return table


def _uid_order(folder_dir: Path) -> dict[str, int]:
    """Base name -> UID from `dovecot-uidlist`, to keep the messages' order."""
    order: dict[str, int] = {}
    try:
        lines = (folder_dir / "dovecot-uidlist").read_text("utf-8", "replace").splitlines()
    except OSError:
        return order
    for line in lines[1:]:
        head, _, name = line.partition(":")
        uid = head.split(" ", 1)[0]
        if uid.isdigit() and name:
            order[name.split(":", 1)[0]] = int(uid)
    return order


def _flags(info: str, keywords: dict[str, str]) -> list[str]:
    flags: list[str] = []
    for ch in info:
        if ch in MAILDIR_FLAGS:
            flags.append(MAILDIR_FLAGS[ch])
        elif ch in keywords:
            flags.append(keywords[ch])
    return flags


def _maildir_messages(folder_dir: Path) -> Iterator[NewMessage]:
    keywords = _keywords(folder_dir)
    order = _uid_order(folder_dir)
    entries: list[tuple[tuple[int, float, str], Path, str]] = []
    for sub in ("cur", "new"):
        try:
            names = os.listdir(folder_dir / sub)
        except FileNotFoundError:
            continue
        for name in names:
            path = folder_dir / sub / name
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if not path.is_file():
                continue
            base, sep, info = name.partition(":2,")
            if not sep:  # some systems write "!2," or ";2," where ':' is not allowed
                for alt in ("!2,", ";2,"):
                    base, sep, info = name.partition(alt)
                    if sep:
                        break
                else:
                    base, info = name, ""
            uid = order.get(base, 1 << 62)
            entries.append(((uid, st.st_mtime, base), path, info if sub == "cur" else ""))
    entries.sort(key=lambda e: e[0])
    for (_, mtime, _), path, info in entries:
        raw, lf = to_crlf(path.read_bytes())
        when = datetime.fromtimestamp(int(mtime)).astimezone()
        yield NewMessage(raw, _flags(info, keywords), when, lf)


def _batched(items: Iterable[NewMessage]) -> Iterator[list[NewMessage]]:
    batch: list[NewMessage] = []
    for item in items:
        batch.append(item)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _ensure_folder(box: SqliteMailbox, folder: str) -> str:
    folder = normalize_folder(folder)
    with contextlib.suppress(FolderExists):
        box.create_folder(folder)
    return folder


def _is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() or (path / "new").is_dir()


def import_maildir(box: SqliteMailbox, path: Path, folder: str | None = None) -> TransferReport:
    """Import a Maildir tree; its top level goes to `folder` (default INBOX) and each
    Maildir++ subfolder below it."""
    path = Path(path)
    if not path.is_dir() or not (
        _is_maildir(path) or any(p.name.startswith(".") and _is_maildir(p) for p in path.iterdir())
    ):
        raise StoreError(f"{path} is not a Maildir (no cur/ or new/ folder).")
    report = TransferReport()
    targets: list[tuple[str, Path]] = []
    top = normalize_folder(folder) if folder else "INBOX"
    if _is_maildir(path):
        targets.append((top, path))
    for entry in sorted(path.iterdir()):
        if entry.name.startswith(".") and entry.name not in (".", "..") and _is_maildir(entry):
            sub = maildir_to_folder(entry.name)
            if folder:
                sub = top + DELIMITER + sub
            targets.append((sub, entry))
    for name, folder_dir in targets:
        name = _ensure_folder(box, name)
        count = 0
        for batch in _batched(_maildir_messages(folder_dir)):
            count += len(box.append_many(name, batch))
        report.folders[name] = report.folders.get(name, 0) + count
    for sub in _subscriptions(path):
        name = normalize_folder(top + DELIMITER + sub if folder else sub)
        if name in report.folders:
            box.set_subscribed(name, True)
    return report


def _subscriptions(path: Path) -> list[str]:
    """Folder names from Dovecot's `subscriptions` file: the old format ('.'-separated
    names, one a line) or version 2 ("V\t2" header, levels separated by tabs)."""
    try:
        lines = (path / "subscriptions").read_text("utf-8", "replace").splitlines()
    except OSError:
        return []
    names = []
    for line in lines:
        if not line or line.startswith("V\t"):
            continue
        parts = line.split("\t") if "\t" in line else line.split(".")
        names.append(DELIMITER.join(_decode_mutf7(p) for p in parts))
    return names


# --- mbox import -------------------------------------------------------------------------------

_FROM_QUOTED = re.compile(rb"^>+From ")


def _mbox_split(lines: Iterable[bytes]) -> Iterator[tuple[bytes, list[bytes]]]:
    """(From_ line, message lines) for each message of an mbox."""
    from_line: bytes | None = None
    body: list[bytes] = []
    blank_before = True
    for line in lines:
        if line.startswith(b"From ") and (blank_before or _from_date(line) is not None):
            if from_line is not None:
                yield from_line, body
            from_line, body = line, []
        elif from_line is not None:
            body.append(line)
        blank_before = line in (b"\n", b"\r\n")
    if from_line is not None:
        yield from_line, body


def _mbox_message(lines: list[bytes], mboxrd: bool) -> bytes:
    if lines and lines[-1] in (b"\n", b"\r\n"):
        lines = lines[:-1]  # the blank line that separates messages is the format's
    out = []
    for line in lines:
        if mboxrd and _FROM_QUOTED.match(line):
            line = line[1:]
        elif not mboxrd and line.startswith(b">From "):
            line = line[1:]
        out.append(line)
    return b"".join(out)


def _header(raw: bytes, name: bytes) -> str:
    end = raw.find(b"\r\n\r\n")
    head = raw if end < 0 else raw[:end]
    m = re.search(rb"(?im)^" + re.escape(name) + rb":[ \t]*(.*)$", head)
    return m.group(1).strip().decode("latin-1") if m else ""


def _mbox_flags(raw: bytes) -> list[str]:
    flags = []
    status, xstatus = _header(raw, b"Status"), _header(raw, b"X-Status")
    if "R" in status:
        flags.append("\\Seen")
    for ch, flag in (("A", "\\Answered"), ("F", "\\Flagged"), ("T", "\\Draft"), ("D", "\\Deleted")):
        if ch in xstatus:
            flags.append(flag)
    flags += [k for k in re.split(r"[\s,]+", _header(raw, b"X-Keywords")) if k]
    return flags


def _from_date(from_line: bytes) -> datetime | None:
    """The asctime date at the end of a From_ line ("From a@b Sat Jan  3 01:05:34 1996")."""
    m = re.search(rb"([A-Z][a-z]{2}) +(\d{1,2}) +(\d{1,2}:\d\d(?::\d\d)?) +(\d{4})", from_line)
    if not m:
        return None
    mon, day, clock, year = (g.decode() for g in m.groups())
    with contextlib.suppress(TypeError, ValueError):
        return parsedate_to_datetime(f"{day} {mon} {year} {clock}").astimezone()
    return None


def import_mbox(
    box: SqliteMailbox, path: Path, folder: str = "INBOX", mboxrd: bool = True
) -> TransferReport:
    """Import an mbox file into `folder` (created if needed). mboxrd unquoting by default;
    mboxrd=False for mboxo (only '>From ' is unquoted)."""
    path = Path(path)
    with open(path, "rb") as fh:
        first = fh.readline()
        if first and not first.startswith(b"From "):
            raise StoreError(f"{path} is not an mbox file (it doesn't start with 'From ').")
        fh.seek(0)
        name = _ensure_folder(box, folder)

        def messages() -> Iterator[NewMessage]:
            for from_line, lines in _mbox_split(fh):
                raw, lf = to_crlf(_mbox_message(lines, mboxrd))
                yield NewMessage(raw, _mbox_flags(raw), _from_date(from_line), lf)

        count = 0
        for batch in _batched(messages()):
            count += len(box.append_many(name, batch))
    return TransferReport({name: count})


# --- Maildir export ------------------------------------------------------------------------------


def export_maildir(box: SqliteMailbox, path: Path) -> TransferReport:
    """Write every folder to a Maildir++ tree at `path` (INBOX at the top), keeping flags,
    keywords (dovecot-keywords, up to 26 per folder), INTERNALDATE (mtime), UIDs
    (dovecot-uidlist) and the bytes as they were imported."""
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise StoreError(f"{path} is not empty; export into a new folder.")
    report = TransferReport()
    host = socket.gethostname().replace("/", "_").replace(":", "_") or "localhost"
    written: list[Path] = []
    for info in box.folders():
        folder_dir = path if info.name == "INBOX" else path / folder_to_maildir(info.name)
        for sub in ("cur", "new", "tmp"):
            (folder_dir / sub).mkdir(parents=True, exist_ok=True)
        if folder_dir != path:
            (folder_dir / "maildirfolder").touch()
        status = box.status(info.name)
        keywords: dict[str, str] = {}
        uidlist = [f"3 V{status.uidvalidity} N{status.uidnext}"]
        count = 0
        for uid, flags, when, body, lf in box.export_rows(info.name):
            letters = sorted(FLAG_LETTERS[f] for f in flags if f in FLAG_LETTERS)
            for kw in sorted(f for f in flags if not f.startswith("\\")):
                letter = keywords.get(kw)
                if letter is None and len(keywords) < 26:
                    letter = keywords[kw] = chr(ord("a") + len(keywords))
                if letter is None:
                    report.warnings.append(f"{info.name} UID {uid}: keyword {kw} left out")
                else:
                    letters.append(letter)
            raw = body.read_bytes()
            if lf:
                raw = raw.replace(b"\r\n", b"\n")
            stamp = int(when.timestamp())
            base = f"{stamp}.M{uid}P{os.getpid()}.{host},S={len(raw)},W={body.stat().st_size}"
            name = f"{base}:2,{''.join(sorted(letters))}"
            tmp = folder_dir / "tmp" / base
            tmp.write_bytes(raw)
            os.utime(tmp, (stamp, stamp))
            final = folder_dir / "cur" / name
            os.rename(tmp, final)
            written.append(final)
            uidlist.append(f"{uid} :{base}")
            count += 1
        if keywords:
            (folder_dir / "dovecot-keywords").write_text(
                "".join(f"{ord(letter) - ord('a')} {kw}\n" for kw, letter in keywords.items()),
                "utf-8",
            )
        (folder_dir / "dovecot-uidlist").write_text("\n".join(uidlist) + "\n", "utf-8")
        report.folders[info.name] = count
    subscribed = [f.name for f in box.folders() if f.subscribed and f.name != "INBOX"]
    (path / "subscriptions").write_text(
        "".join(folder_to_maildir(n)[1:] + "\n" for n in subscribed), "utf-8"
    )
    path.mkdir(parents=True, exist_ok=True)
    sync_batch(path, written)
    return report
