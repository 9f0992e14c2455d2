"""APPEND with MULTIAPPEND (RFC 3502), CATENATE (RFC 4469), literal8 (RFC 3516) and
APPENDUID (RFC 4315).

Big message literals arrive already streamed into the store (server.backend.imap.spool):
a message is handed to the store as the BodyWriter it was written to, never copied into
memory here. Every message of a command is checked and built first and then stored in one
store call (append_many: one transaction), so a MULTIAPPEND stores all or nothing.
"""

from __future__ import annotations

from server.backend.imap.commands import AUTH, command
from server.backend.imap.commands.quota import receive_limit
from server.backend.imap.commands.urlauth import (  # also registers GENURLAUTH, RESETKEY, URLFETCH
    FileRange,
    resolve_url,
)
from server.backend.imap.session import MAX_LITERAL_SIZE, ImapSession, No, tagged
from server.backend.imap.spool import BodySpool, crlf
from server.protocols.imap import binary
from server.protocols.imap import requests as rq
from server.protocols.imap.imapurl import UrlError, badurl
from server.protocols.imap.seqset import format_seqset
from server.store import api, quota

__all__ = ["append", "crlf"]


@command(rq.Append, states=AUTH)
def append(s: ImapSession, cmd: rq.Command) -> bytes | None:
    args: rq.Append = cmd.args  # type: ignore[assignment]
    built: list[api.NewMessage] = []
    try:
        try:
            for message in args.messages:
                raw = (
                    _catenate(s, message) if message.catenate is not None else _message(s, message)
                )
                flags = [f for f in message.flags if f != "\\Recent"]
                built.append(api.NewMessage(raw, flags, message.date))
                size = raw.size if isinstance(raw, api.BodyWriter) else len(raw)
                if not size:
                    raise No("Empty message")
        except No:
            # A missing folder outranks what is wrong with the message (TRYCREATE tells
            # the client what to do). Looked up here, on the way out, rather than before
            # every APPEND: append_many below finds a missing folder for free.
            _check_folder(s, args.mailbox)
            raise
        try:
            # All of a MULTIAPPEND or none (RFC 3502): the quota is checked for the lot,
            # by the store inside the append's transaction.
            results = s.store.append_many(args.mailbox, built, room=receive_limit(s))
        except api.NoSuchFolder:
            raise No("Mailbox doesn't exist", "TRYCREATE") from None
        except api.OverQuota:
            raise No(quota.OVER_RECEIVE_QUOTA, "OVERQUOTA") from None
    finally:
        # After a commit the store owns the bodies and these do nothing.
        for spooled in args.spools():
            spooled.spool.discard()
        for new in built:
            if isinstance(new.raw, api.BodyWriter):
                new.raw.discard()
    if s.selected is not None and s.selected.name == args.mailbox:
        s.sync(allow_expunge=True)
    uids = format_seqset((r.uid for r in results), sort=False)
    return tagged(cmd.tag, b"OK", "APPEND completed", f"APPENDUID {results[0].uidvalidity} {uids}")


def _check_folder(s: ImapSession, name: str) -> None:
    try:
        s.store.status(name)
    except api.NoSuchFolder:
        raise No("Mailbox doesn't exist", "TRYCREATE") from None


def _spool(data: rq.SpooledLiteral) -> BodySpool:
    spool = data.spool
    assert isinstance(spool, BodySpool)
    if spool.failed is not None:
        raise No(f"The message could not be stored: {spool.failed}", "SERVERBUG")
    return spool


def _message(s: ImapSession, message: rq.AppendMessage) -> bytes | api.BodyWriter:
    data = message.data
    if isinstance(data, rq.SpooledLiteral):
        spool = _spool(data)
        if message.binary and spool.has_nul:
            return binary.encode_nul_parts(spool.writer.read())
        return spool.writer
    if message.binary:
        return binary.encode_nul_parts(data)
    return crlf(data)


def _catenate(s: ImapSession, message: rq.AppendMessage) -> api.BodyWriter:
    """The message a CATENATE describes, written part by part into a new body."""
    writer = s.store.new_body()
    has_nul = False
    try:
        for part in message.catenate or ():
            if isinstance(part, rq.CatUrl):
                try:
                    found = resolve_url(s, part.url)
                except UrlError:
                    found = None
                if found is None:
                    raise No("Bad URL", f"BADURL {badurl(part.url)}")
                if isinstance(found, FileRange):
                    _check_size(writer, found.size)
                    try:
                        for chunk in found.chunks():
                            writer.write(chunk)
                    except FileNotFoundError:  # expunged since the lookup
                        raise No("Bad URL", f"BADURL {badurl(part.url)}") from None
                else:
                    _check_size(writer, len(found))
                    writer.write(found)
            elif isinstance(part.data, rq.SpooledLiteral):
                spool = _spool(part.data)
                has_nul = has_nul or (part.binary and spool.has_nul)
                _check_size(writer, spool.writer.size)
                for chunk in spool.writer.chunks():
                    writer.write(chunk)
                spool.discard()
            else:
                data = part.data if part.binary else crlf(part.data)
                has_nul = has_nul or (part.binary and b"\x00" in data)
                _check_size(writer, len(data))
                writer.write(data)
        if has_nul:
            content = binary.encode_nul_parts(writer.read())
            writer.discard()
            writer = s.store.new_body()
            writer.write(content)
    except BaseException:
        writer.discard()
        raise
    return writer


def _check_size(writer: api.BodyWriter, more: int) -> None:
    if writer.size + more > MAX_LITERAL_SIZE:
        raise No("Message too large", "TOOBIG")
