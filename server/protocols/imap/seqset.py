"""IMAP sequence sets: `1:*`, `2,4:7,*`, and `$` (RFC 3501 section 9, RFC 5182).

A `SeqSet` is what the client sent (it may mention `*`, or be `$`, the saved search result).
`SeqSet.resolve(max_value)` turns it into a `RangeSet`: sorted, merged, inclusive integer
ranges, so `1:*` on a 100k-message mailbox is one range, not 100k integers.

`format_seqset()` goes the other way, for COPYUID / APPENDUID / VANISHED / ESEARCH ALL.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

#: Largest value a sequence number or UID may take (nz-number is 32-bit unsigned).
MAX_NUMBER = 4294967295

# A bound in a parsed SeqSet: an int, or None for "*".
Bound = int | None


def _number(text: str) -> int | None:
    if text == "*":
        return None
    # nz-number = digit-nz *DIGIT: no leading zero, no sign, no "0".
    if not text.isdigit() or not text.isascii() or text[0] == "0" or len(text) > 10:
        raise ValueError("Invalid sequence set")
    value = int(text)
    if value > MAX_NUMBER:
        raise ValueError("Invalid sequence set")
    return value


@dataclass(frozen=True, slots=True)
class SeqSet:
    """A sequence set as sent by the client.

    ranges: (low, high) pairs in the order given; a bound of None means `*`; a single number
        n is (n, n). Bounds are not reordered: `7:2` stays (7, 2) until resolved.
    saved: True for `$` (RFC 5182): the session substitutes its saved SEARCH result
        (`ranges` is then empty).
    """

    ranges: tuple[tuple[Bound, Bound], ...]
    saved: bool = False

    @classmethod
    def parse(cls, text: str | bytes) -> SeqSet:
        """Parse `1:*`, `2,4:7,*`, `$`. Raises ValueError("Invalid sequence set")."""
        if isinstance(text, bytes):
            text = text.decode("ascii", "replace")
        if text == "$":
            return SAVED
        if not text:
            raise ValueError("Invalid sequence set")
        ranges: list[tuple[Bound, Bound]] = []
        for part in text.split(","):
            low, sep, high = part.partition(":")
            first = _number(low)
            ranges.append((first, _number(high) if sep else first))
        return cls(tuple(ranges))

    @classmethod
    def from_values(cls, values: Iterable[int]) -> SeqSet:
        """A compact SeqSet holding exactly `values` (sorted, merged)."""
        return cls(RangeSet.from_values(values).ranges)

    @property
    def uses_star(self) -> bool:
        return any(low is None or high is None for low, high in self.ranges)

    def resolve(self, max_value: int) -> RangeSet:
        """Replace `*` with `max_value` (the highest sequence number or UID in use) and
        normalize. `7:2` means 2..7, and `10:*` with max_value 5 means 5..10 (RFC 3501 9,
        so `UID n:*` always includes the last message). A saved set (`$`) cannot be
        resolved here: the session holds its value."""
        if self.saved:
            raise ValueError("a saved sequence set ($) is resolved by the session")
        pairs = []
        for low, high in self.ranges:
            lo = max_value if low is None else low
            hi = max_value if high is None else high
            pairs.append((lo, hi) if lo <= hi else (hi, lo))
        return RangeSet(pairs)

    def __str__(self) -> str:
        if self.saved:
            return "$"
        out = []
        for low, high in self.ranges:
            lo = "*" if low is None else str(low)
            out.append(lo if low == high else f"{lo}:{'*' if high is None else high}")
        return ",".join(out)


#: The `$` sequence set (RFC 5182).
SAVED = SeqSet((), saved=True)


class RangeSet:
    """An immutable set of integers held as sorted, disjoint, non-adjacent inclusive ranges.

    Membership is O(log r), iteration is lazy, and `filter()` picks the members of a sorted
    list (e.g. a mailbox's UIDs) in O(r log n) plus the size of the answer.
    """

    __slots__ = ("ranges", "_starts")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        merged: list[tuple[int, int]] = []
        for lo, hi in sorted((lo, hi) if lo <= hi else (hi, lo) for lo, hi in ranges):
            if merged and lo <= merged[-1][1] + 1:
                if hi > merged[-1][1]:
                    merged[-1] = (merged[-1][0], hi)
            else:
                merged.append((lo, hi))
        self.ranges: tuple[tuple[int, int], ...] = tuple(merged)
        self._starts = [lo for lo, _ in merged]

    @classmethod
    def from_values(cls, values: Iterable[int]) -> RangeSet:
        ranges: list[tuple[int, int]] = []
        for v in sorted(set(values)):
            if ranges and v == ranges[-1][1] + 1:
                ranges[-1] = (ranges[-1][0], v)
            else:
                ranges.append((v, v))
        return cls(ranges)

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int):
            return False
        i = bisect_right(self._starts, value) - 1
        return i >= 0 and value <= self.ranges[i][1]

    def __iter__(self) -> Iterator[int]:
        for lo, hi in self.ranges:
            yield from range(lo, hi + 1)

    def __len__(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.ranges)

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangeSet) and self.ranges == other.ranges

    def __hash__(self) -> int:
        return hash(self.ranges)

    def __repr__(self) -> str:
        return f"RangeSet({str(self)!r})"

    def __str__(self) -> str:
        return ",".join(str(lo) if lo == hi else f"{lo}:{hi}" for lo, hi in self.ranges)

    @property
    def min(self) -> int:
        """Smallest member; ValueError when empty."""
        if not self.ranges:
            raise ValueError("empty set")
        return self.ranges[0][0]

    @property
    def max(self) -> int:
        """Largest member; ValueError when empty."""
        if not self.ranges:
            raise ValueError("empty set")
        return self.ranges[-1][1]

    def clip(self, low: int, high: int) -> RangeSet:
        """Members within low..high."""
        return RangeSet(
            (max(lo, low), min(hi, high)) for lo, hi in self.ranges if hi >= low and lo <= high
        )

    def filter(self, sorted_values: Sequence[int]) -> list[int]:
        """The members of `sorted_values` (ascending, e.g. a mailbox's UIDs) in this set."""
        out: list[int] = []
        for start, stop in self.index_ranges(sorted_values):
            out.extend(sorted_values[start:stop])
        return out

    def index_ranges(self, sorted_values: Sequence[int]) -> list[tuple[int, int]]:
        """Half-open index ranges [start, stop) of `sorted_values` whose values are members;
        with a UID list, index + 1 is the message sequence number."""
        out = []
        for lo, hi in self.ranges:
            start = bisect_left(sorted_values, lo)
            stop = bisect_right(sorted_values, hi, lo=start)
            if start < stop:
                out.append((start, stop))
        return out


def format_seqset(values: Iterable[int], *, sort: bool = True) -> str:
    """A compact sequence set for `values`: [1, 2, 3, 5, 7, 8] -> "1:3,5,7:8".

    With sort=False the order is kept (COPYUID pairs source and destination UIDs by
    position, RFC 4315), and only ascending consecutive runs are merged. Empty input gives
    an empty string.
    """
    if sort:
        return str(RangeSet.from_values(values))
    runs: list[list[int]] = []
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ",".join(str(lo) if lo == hi else f"{lo}:{hi}" for lo, hi in runs)
