"""Sequence sets: parsing, resolving `*`, membership on big ranges, compact formatting."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.protocols.imap.seqset import MAX_NUMBER, SAVED, RangeSet, SeqSet, format_seqset


def test_parse_forms() -> None:
    assert SeqSet.parse("1:*") == SeqSet(((1, None),))
    assert SeqSet.parse(b"2,4:7,*") == SeqSet(((2, 2), (4, 7), (None, None)))
    assert SeqSet.parse("9:3") == SeqSet(((9, 3),))
    assert SeqSet.parse("$") is SAVED and SAVED.saved
    assert SeqSet.parse(str(MAX_NUMBER)).ranges == ((MAX_NUMBER, MAX_NUMBER),)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0",
        "1:0",
        "01",
        "1,",
        ",1",
        "1::2",
        "1:2:3",
        "a",
        "-1",
        "1,$",
        "$:1",
        "1 2",
        str(MAX_NUMBER + 1),
        "\u0661",
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        SeqSet.parse(text)


def test_str_round_trip() -> None:
    for text in ("1:*", "2,4:7,*", "*:4", "$", "5"):
        assert str(SeqSet.parse(text)) == text


def test_resolve_star_and_reversed_ranges() -> None:
    assert SeqSet.parse("1:*").resolve(100_000).ranges == ((1, 100_000),)
    assert SeqSet.parse("7:2,*").resolve(10).ranges == ((2, 7), (10, 10))
    # UID 500:* with the last UID 300 still names message 300 (RFC 3501 section 9).
    assert 300 in SeqSet.parse("500:*").resolve(300)
    assert SeqSet.parse("*").uses_star and not SeqSet.parse("1:2").uses_star
    with pytest.raises(ValueError):
        SAVED.resolve(5)


def test_rangeset_merges_and_counts() -> None:
    rs = RangeSet([(5, 9), (1, 3), (4, 4), (20, 25), (8, 12)])
    assert rs.ranges == ((1, 12), (20, 25))
    assert len(rs) == 18 and rs.min == 1 and rs.max == 25
    assert list(RangeSet([(3, 1)])) == [1, 2, 3]
    assert 13 not in rs and 20 in rs and "x" not in rs
    assert not RangeSet() and str(rs) == "1:12,20:25"
    with pytest.raises(ValueError):
        _ = RangeSet().min
    assert rs.clip(10, 21).ranges == ((10, 12), (20, 21))


def test_big_mailbox_is_cheap() -> None:
    uids = list(range(1, 200_001, 2))  # 100k UIDs with gaps
    everything = SeqSet.parse("1:*").resolve(uids[-1])
    assert len(everything.ranges) == 1
    assert everything.index_ranges(uids) == [(0, len(uids))]
    some = SeqSet.parse("3:7,199999,250000:*").resolve(uids[-1])
    assert some.filter(uids) == [3, 5, 7, 199999]
    assert RangeSet([(1000, 1000)]).filter(uids) == []


def test_format_seqset() -> None:
    assert format_seqset([7, 1, 2, 3, 5, 8, 3]) == "1:3,5,7:8"
    assert format_seqset([]) == ""
    assert format_seqset([5, 6, 1, 2], sort=False) == "5:6,1:2"
    assert str(SeqSet.from_values([4, 2, 3])) == "2:4"


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(min_value=1, max_value=MAX_NUMBER), max_size=60))
def test_format_parse_round_trip(values: set[int]) -> None:
    text = format_seqset(values)
    if not values:
        assert text == ""
        return
    resolved = SeqSet.parse(text).resolve(MAX_NUMBER)
    assert set(resolved) == values
    assert RangeSet.from_values(values) == resolved
    assert all(v in resolved for v in values)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 300), st.integers(1, 300)), min_size=1, max_size=10),
    st.integers(0, 310),
)
def test_rangeset_matches_naive_set(pairs: list[tuple[int, int]], probe: int) -> None:
    naive = {v for a, b in pairs for v in range(min(a, b), max(a, b) + 1)}
    rs = RangeSet(pairs)
    assert set(rs) == naive and len(rs) == len(naive)
    assert (probe in rs) == (probe in naive)
    values = list(range(1, 311, 3))
    assert rs.filter(values) == [v for v in values if v in naive]
