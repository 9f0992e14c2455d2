"""How a message row keeps its flags and INTERNALDATE: flags as one space-separated text
column, dates as Unix seconds plus the UTC offset in minutes. Reads, writes and export all
convert through here, and the parsed values are interned, since a folder of 10,000 messages
has a handful of distinct flag sets and time zones."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone

from server.store.api import FlagOp, MessageRow

SYSTEM_FLAGS = {f.lower(): f for f in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")}
# MessageRows may be built without their dataclass __init__ (see reads.Reads._load) only
# while the class keeps a __dict__.
FAST_ROWS = not hasattr(MessageRow, "__slots__")
#: The messages columns message_row() takes, in its order.
ROW_COLS = "uid, flags, modseq, size, idate, tz"

# --- flags ----------------------------------------------------------------------------------

flag_cache: dict[str, frozenset[str]] = {}


def parse_flags(text: str) -> frozenset[str]:
    got = flag_cache.get(text)
    if got is None:
        got = frozenset(text.split())
        if len(flag_cache) < 10000:
            flag_cache[text] = got
    return got


def clean_flags(flags: Iterable[str]) -> list[str]:
    """System flags in canonical case; \\Recent and unknown \\-flags dropped; keywords as
    given, de-duplicated case-insensitively."""
    out: dict[str, str] = {}
    for flag in flags:
        if not flag:
            continue
        if flag.startswith("\\"):
            canon = SYSTEM_FLAGS.get(flag.lower())
            if canon:
                out.setdefault(canon.lower(), canon)
        elif not any(c.isspace() for c in flag):
            out.setdefault(flag.lower(), flag)
    return list(out.values())


def apply_flags(current: frozenset[str], op: FlagOp, flags: list[str]) -> frozenset[str]:
    if op == "=":
        return frozenset(flags)
    lower = {f.lower(): f for f in current}
    if op == "+":
        for f in flags:
            lower.setdefault(f.lower(), f)
    else:
        for f in flags:
            lower.pop(f.lower(), None)
    return frozenset(lower.values())


def flags_text(flags: Iterable[str]) -> str:
    return " ".join(sorted(flags))


# --- dates ----------------------------------------------------------------------------------

zones: dict[int, timezone] = {}


def zone(minutes: int) -> timezone:
    tz = zones.get(minutes)
    if tz is None:
        tz = UTC if minutes == 0 else timezone(timedelta(minutes=minutes))
        zones[minutes] = tz
    return tz


def split_date(value: datetime | None) -> tuple[int, int]:
    if value is None:
        value = datetime.now().astimezone()
    elif value.tzinfo is None:
        value = value.astimezone()
    offset = value.utcoffset() or timedelta(0)
    return int(value.timestamp()), int(offset.total_seconds() // 60)


def join_date(ts: int, tz: int) -> datetime:
    return datetime.fromtimestamp(ts, zone(tz))


def message_row(uid: int, flags: str, modseq: int, size: int, idate: int, tz: int) -> MessageRow:
    """A MessageRow from the ROW_COLS of a messages row."""
    return MessageRow(uid, parse_flags(flags), modseq, size, join_date(idate, tz))
