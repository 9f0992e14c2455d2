"""Writing a SQLite mailbox: append (bodies made durable before the transaction that
names them commits), flags, copy and move (bodies shared, not copied), expunge with its
tombstones, POP3's delete, and \\Recent. Every change takes one new MODSEQ for all the
messages it touches."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from datetime import datetime

from server.mail.mime import header_end
from server.store.api import (
    AppendResult,
    BodyWriter,
    CopyResult,
    FlagOp,
    FlagResult,
    MessageRow,
    NewMessage,
    OverQuota,
)
from server.store.sqlite.base import MailboxBase
from server.store.sqlite.files import (
    BATCH_SYNC,
    FileBody,
    read_path,
    sync_batch,
    write_file,
)
from server.store.sqlite.rows import (
    ROW_COLS,
    apply_flags,
    clean_flags,
    flags_text,
    message_row,
    parse_flags,
    split_date,
)
from server.store.sqlite.schema import SORTKEYS_INSERT, sortkeys_row
from server.store.sqlite.totals import FolderKey


def blank_line_end(raw: bytes) -> int:
    """Where a message's header block ends (after its blank line), or its length."""
    crlf, lf = raw.find(b"\r\n\r\n"), raw.find(b"\n\n")
    ends = [i + 4 for i in (crlf,) if i >= 0] + [i + 2 for i in (lf,) if i >= 0]
    return min(ends) if ends else len(raw)


#: From this size on a message is analyzed (MIME structure, ENVELOPE, sort keys) when it is
#: stored; a smaller one on first use, as Dovecot fills its cache: an APPEND or a delivery
#: then costs what storing costs (its header block is kept at once: one search), and the
#: reader that first needs the analysis pays a bounded price (a big message's analysis must
#: not run on a server's event loop, where inline FETCHes read). A batch (an import, a
#: mailbox move: BATCH_SYNC messages or more in one call) is analyzed as it is stored: nobody
#: waits on it message by message, and the first SORT of the folder after it would
#: otherwise compute the keys of every message at once.
ANALYZE_FROM = 256 * 1024


def analyze(raw: bytes) -> tuple[str | None, bytes | None]:
    """MIME metadata and the header block of a big message, computed at delivery; (None, None)
    (computed on first use) if the analyzer fails on a pathological message, which must
    not stop delivery."""
    try:
        from server.protocols.imap import bodystructure

        info = bodystructure.analyze(raw)
        return info.to_json(), raw[: info.header_len]
    except Exception:  # noqa: BLE001 - any analyzer bug must not lose mail
        return None, None


class Writes(MailboxBase):
    def append(
        self,
        folder: str,
        raw: bytes | BodyWriter,
        flags: Iterable[str] = (),
        internaldate: datetime | None = None,
    ) -> AppendResult:
        return self.append_many(folder, [NewMessage(raw, flags, internaldate)])[0]

    def append_many(
        self, folder: str, messages: Iterable[NewMessage], room: int | None = None
    ) -> list[AppendResult]:
        """Append several messages in one transaction (one directory fsync, one commit):
        what import and multi-message APPEND (RFC 3502) use. `room` is checked against
        the kept sums inside the transaction: no read transaction of its own, and no
        other append slips in between the check and the commit."""
        messages = list(messages)
        batch = len(messages) >= BATCH_SYNC
        prepared = []
        written: list[str] = []
        # Plain strings: a pathlib join and its str() cost more than the write of a small
        # message's bytes.
        folder_path = f"{self.msgs}{os.sep}"
        try:
            for msg in messages:
                if isinstance(msg.raw, FileBody) and msg.raw.box is self:
                    # Streamed straight into its body file: made durable here, then read
                    # once for the MIME analysis (as delivery does), not kept.
                    name = msg.raw.finish(sync=not batch)
                    written.append(name)
                    raw = read_path(folder_path + name)
                else:
                    raw = msg.raw.read() if isinstance(msg.raw, BodyWriter) else bytes(msg.raw)
                    name = self.store.writers.new_name()
                    write_file(folder_path + name, raw, sync=not batch)
                    written.append(name)
                idate, tz = split_date(msg.internaldate)
                if batch or len(raw) >= ANALYZE_FROM:
                    info, header = analyze(raw)
                    # The sort keys come from the header block; without one (the
                    # analyzer failed) from the bytes up to the first blank line.
                    head = header if header is not None else raw[: blank_line_end(raw)]
                else:
                    # Kept now, as it costs one search: header-field FETCHes (a client's
                    # folder listing) then read no file, analyzed or not. header_end is
                    # where the analyzer puts header_len (tests/unit/store).
                    info, header, head = None, raw[: header_end(raw)], None
                prepared.append(
                    (
                        name,
                        len(raw),
                        flags_text(clean_flags(msg.flags)),
                        idate,
                        tz,
                        info,
                        header,
                        msg.lf,
                        head,
                    )
                )
                del raw
            if not prepared:
                return []
            incoming = sum(p[1] for p in prepared)
            if batch:
                sync_batch(self.msgs, [self.msgs / n for n in written])
            self.pool.sync_folder()
            results = []
            with self._write() as c:
                # Kept quota sums move forward with this append (see totals.py).
                before: FolderKey | None = None
                if self._usage.kept or room is not None:
                    f, before = self._folder_keyed(c, folder)
                    if room is not None and self._usage.at(c, before)[1] + incoming > room:
                        raise OverQuota("Quota exceeded")
                else:
                    f = self._folder(c, folder)
                modseq = f.highestmodseq + 1
                uid = f.uidnext
                for name, size, flags, idate, tz, info, header, lf, head in prepared:
                    body = int(
                        c.execute(
                            "INSERT INTO bodies(file, size, refs, lf, info, header)"
                            " VALUES(?, ?, 1, ?, ?, ?)",
                            (name, size, int(lf), info, header),
                        ).lastrowid
                        or 0
                    )
                    c.execute(
                        "INSERT INTO messages VALUES(?, ?, ?, ?, ?, ?, ?, ?, 1)",
                        (f.id, uid, body, flags, modseq, idate, tz, size),
                    )
                    keys = None if head is None else sortkeys_row(body, name, head)
                    if keys is not None:
                        c.execute(SORTKEYS_INSERT, keys)
                    results.append(AppendResult(f.uidvalidity, uid, modseq))
                    uid += 1
                c.execute(
                    "UPDATE folders SET uidnext=?, highestmodseq=? WHERE id=?",
                    (uid, modseq, f.id),
                )
            written.clear()
            if before is not None:
                self._usage.added(before, f.highestmodseq, modseq, len(prepared), incoming)
            for msg in messages:
                if isinstance(msg.raw, BodyWriter):
                    msg.raw.taken = True
            return results
        finally:
            self._unlink(written)  # not committed: nothing refers to them

    def new_body(self) -> BodyWriter:
        """A body file in this mailbox's msgs folder, named like every body this process
        writes: until an append commits it, it is an orphan that clean_orphans() leaves
        alone while this process lives (for an hour at most)."""
        return FileBody(self, self.msgs, self.store.writers.new_name())

    def set_flags(
        self,
        folder: str,
        uids: Sequence[int],
        op: FlagOp,
        flags: Iterable[str],
        unchangedsince: int | None = None,
    ) -> FlagResult:
        if op not in ("+", "-", "="):
            raise ValueError(f"bad flag operation {op!r}")
        wanted = clean_flags(flags)
        changed: list[MessageRow] = []
        failed: list[int] = []
        with self._write() as c:
            f = self._folder(c, folder)
            modseq = f.highestmodseq + 1
            updates = []
            for uid, text, old_modseq, size, idate, tz in self._select_rows(
                c, f.id, uids, ROW_COLS
            ):
                if unchangedsince is not None and old_modseq > unchangedsince:
                    failed.append(uid)
                    continue
                current = parse_flags(text)
                new = apply_flags(current, op, wanted)
                if new == current:
                    continue
                new_text = flags_text(new)
                updates.append((new_text, modseq, f.id, uid))
                changed.append(message_row(uid, new_text, modseq, size, idate, tz))
            if updates:
                c.executemany(
                    "UPDATE messages SET flags=?, modseq=? WHERE folder=? AND uid=?", updates
                )
                c.execute("UPDATE folders SET highestmodseq=? WHERE id=?", (modseq, f.id))
        return FlagResult(changed, failed)

    def copy(self, folder: str, uids: Sequence[int], dest: str) -> CopyResult:
        return self._copy(folder, uids, dest, move=False)

    def move(self, folder: str, uids: Sequence[int], dest: str) -> CopyResult:
        return self._copy(folder, uids, dest, move=True)

    def _copy(self, folder: str, uids: Sequence[int], dest: str, move: bool) -> CopyResult:
        with self._write() as c:
            src = self._folder(c, folder)
            dst = self._folder(c, dest)
            rows = self._select_rows(c, src.id, uids, "uid, body, flags, idate, tz, size")
            if not rows:
                return CopyResult(dst.uidvalidity, [])
            dst_modseq = dst.highestmodseq + 1
            uid = dst.uidnext
            mapping = []
            inserts = []
            for src_uid, body, flags, idate, tz, size in rows:
                inserts.append((dst.id, uid, body, flags, dst_modseq, idate, tz, size))
                mapping.append((src_uid, uid))
                uid += 1
            src_modseq = 0
            if move:
                src_modseq = (dst_modseq if src.id == dst.id else src.highestmodseq) + 1
                c.executemany(
                    "DELETE FROM messages WHERE folder=? AND uid=?",
                    [(src.id, r[0]) for r in rows],
                )
                self._bury(c, src.id, [r[0] for r in rows], src_modseq)
                c.execute("UPDATE folders SET highestmodseq=? WHERE id=?", (src_modseq, src.id))
            else:
                c.executemany(
                    "UPDATE bodies SET refs = refs + 1 WHERE id=?", [(r[1],) for r in rows]
                )
            c.executemany("INSERT INTO messages VALUES(?, ?, ?, ?, ?, ?, ?, ?, 1)", inserts)
            top = max(dst_modseq, src_modseq) if move and src.id == dst.id else dst_modseq
            c.execute(
                "UPDATE folders SET uidnext=?, highestmodseq=? WHERE id=?", (uid, top, dst.id)
            )
        return CopyResult(dst.uidvalidity, mapping)

    def expunge(self, folder: str, uids: Sequence[int] | None = None) -> list[int]:
        doomed: list[str] = []
        with self._write() as c:
            f = self._folder(c, folder)
            if uids is None:
                rows = c.execute(
                    "SELECT uid, body, flags FROM messages WHERE folder=? ORDER BY uid", (f.id,)
                ).fetchall()
            else:
                rows = self._select_rows(c, f.id, uids, "uid, body, flags")
            gone = [(uid, body) for uid, body, flags in rows if "\\Deleted" in flags.split()]
            if not gone:
                return []
            doomed = self._remove_rows(c, f.id, gone, f.highestmodseq + 1)
        self._unlink(doomed)
        return [u for u, _ in gone]

    def delete_messages(
        self, folder: str, uids: Sequence[int], also_seen: Sequence[int] = ()
    ) -> list[int]:
        doomed: list[str] = []
        with self._write() as c:
            f = self._folder(c, folder)
            modseq = f.highestmodseq + 1
            gone = self._select_rows(c, f.id, uids, "uid, body")
            expunged = {uid for uid, _ in gone}
            seen = []
            for uid, text in self._select_rows(
                c, f.id, [u for u in also_seen if u not in expunged], "uid, flags"
            ):
                current = parse_flags(text)
                new = apply_flags(current, "+", ["\\Seen"])
                if new != current:
                    seen.append((flags_text(new), modseq, f.id, uid))
            if not gone and not seen:
                return []
            c.executemany("UPDATE messages SET flags=?, modseq=? WHERE folder=? AND uid=?", seen)
            doomed = self._remove_rows(c, f.id, gone, modseq)
        self._unlink(doomed)
        return [u for u, _ in gone]

    def _remove_rows(
        self, c: sqlite3.Connection, folder_id: int, gone: list[tuple[int, int]], modseq: int
    ) -> list[str]:
        """Expunge `gone` (uid, body id) at `modseq`: rows deleted, tombstones kept, the
        folder's HIGHESTMODSEQ moved; the body files no message refers to any more are
        returned, to be unlinked after the commit."""
        c.executemany(
            "DELETE FROM messages WHERE folder=? AND uid=?", [(folder_id, u) for u, _ in gone]
        )
        self._bury(c, folder_id, [u for u, _ in gone], modseq)
        c.execute("UPDATE folders SET highestmodseq=? WHERE id=?", (modseq, folder_id))
        return self._release_bodies(c, [b for _, b in gone])

    @staticmethod
    def _bury(c: sqlite3.Connection, folder_id: int, uids: list[int], modseq: int) -> None:
        """Tombstones for expunged UIDs, dated so prune_tombstones() can age them."""
        now = int(time.time())
        c.executemany(
            "INSERT OR REPLACE INTO tombstones(folder, uid, modseq, at) VALUES(?, ?, ?, ?)",
            [(folder_id, uid, modseq, now) for uid in uids],
        )

    def claim_recent(self, folder: str) -> set[int]:
        # Not a change clients see through MODSEQ, so no notification.
        with self._write(notify=False) as c:
            f = self._folder(c, folder)
            got = {
                r[0]
                for r in c.execute("SELECT uid FROM messages WHERE folder=? AND recent=1", (f.id,))
            }
            if got:
                c.execute("UPDATE messages SET recent=0 WHERE folder=? AND recent=1", (f.id,))
        return got
