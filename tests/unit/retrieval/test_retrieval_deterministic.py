"""A rendering (MessageRetrievalMimeFormat, calendar links) is the same bytes every time it
is made: in another process, after the cache forgot it, in the IMAP and the POP3 back end.
A client that fetches a message in pieces must get pieces of one message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from server.retrieval.render import convert
from server.settings.types import MimeTextFormat as F
from tests.unit.retrieval.test_retrieval import CHANGING, MESSAGES

REPO = Path(__file__).resolve().parents[3]

# Rendering changes the shape of these: new multiparts, so new boundaries.
CASES = [
    (name, fmt)
    for name in ("plain", "html", "alternative", "attachment", "meeting")
    for fmt in CHANGING
]


def render_elsewhere(cases: list[tuple[bytes, F]]) -> list[bytes]:
    """The renderings made by a fresh interpreter (its own random state, empty caches)."""
    code = (
        "import json, sys\n"
        "from server.retrieval.render import convert\n"
        "from server.settings.types import MimeTextFormat as F\n"
        "cases = json.loads(sys.stdin.read())\n"
        "print(json.dumps([convert(r.encode('latin-1'), F(f)).decode('latin-1')"
        " for r, f in cases]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps([(raw.decode("latin-1"), f.value) for raw, f in cases]),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=True,
    )
    return [data.encode("latin-1") for data in json.loads(result.stdout)]


def test_renderings_are_identical_across_processes() -> None:
    cases = [(MESSAGES[name](), fmt) for name, fmt in CASES]
    here = [convert(raw, fmt) for raw, fmt in cases]
    assert (
        sum(
            data.count(b"boundary=") > raw.count(b"boundary=")
            for data, (raw, _) in zip(here, cases, strict=True)
        )
        >= 5
    )  # new multiparts
    first, second = render_elsewhere(cases), render_elsewhere(cases)
    for (name, fmt), mine, a, b in zip(CASES, here, first, second, strict=True):
        assert mine == a == b, (name, fmt)


@pytest.mark.parametrize(("name", "fmt"), CASES)
def test_rendering_twice_gives_the_same_bytes(name: str, fmt: F) -> None:
    raw = MESSAGES[name]()
    assert convert(raw, fmt) == convert(raw, fmt)


def test_new_boundaries_depend_on_the_message() -> None:
    one = convert(MESSAGES["plain"](), F.HtmlAndTextAlternative)
    other = convert(MESSAGES["plain"]("Other text\r\n"), F.HtmlAndTextAlternative)

    def boundary(data: bytes) -> bytes:
        return data.split(b'boundary="', 1)[1].split(b'"', 1)[0]

    assert boundary(one) != boundary(other)
    assert data_ok(one) and data_ok(other)


def data_ok(data: bytes) -> bool:
    from tests.unit.retrieval.test_retrieval import assert_valid

    assert_valid(data)
    return True
