"""SORT and THREAD (RFC 5256), SORT=DISPLAY (RFC 5957): the pure algorithms.

No store, no I/O: the command handlers (commands/sortthread.py) hand in one `Item` per
message, and the store keeps each message's `SortKeys` from delivery on (they depend
only on the message's header, which never changes), so a SORT of a large folder never
parses a message.

- `sort_keys_from_header(header)`: the keys of one message, from its header block.
- `base_subject(text)`: RFC 5256 section 2.1, and whether the subject was a reply/forward.
- `collation_key(text)`: i;unicode-casemap (RFC 5051), as a string whose code-point order
  is the collation's order, so keys compare with plain `<`.
- `sort_items(items, criteria)`: RFC 5256 section 3 SORT order.
- `thread_references(items)` / `thread_orderedsubject(items)`: RFC 5256 THREAD, as a
  list of `Node` trees; `format_threads()` writes them in the THREAD response syntax.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from server.mail import mime

#: Bumped when the way keys are computed changes: stored keys of another version are
#: computed again on first use.
SORTKEYS_VERSION = 1

#: The sort keys SORT accepts (RFC 5256 section 3, RFC 5957 DISPLAYFROM/DISPLAYTO).
SORT_KEYS = frozenset(
    {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"}
)
THREAD_ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")


class SortKeys(NamedTuple):
    """What SORT and THREAD need of one message beyond its size and INTERNALDATE.
    The string keys are collation keys (see collation_key), "" when absent. A tuple:
    a SORT of a large folder builds one per message."""

    subject: str  # base subject (RFC 5256 2.1)
    reply: bool  # the subject had a reply/forward marker (THREAD=REFERENCES step 5)
    from_: str  # addr-mailbox of the first From address
    to: str
    cc: str
    display_from: str  # RFC 5957: display-name of the first From address, else addr-spec
    display_to: str
    sent: int | None  # Date: as Unix seconds (UTC); None when absent or unparsable
    message_id: str  # "" when absent
    references: tuple[str, ...]  # References, else the first In-Reply-To id (RFC 5256 4)


EMPTY_KEYS = SortKeys("", False, "", "", "", "", "", None, "", ())


def stored_sort_keys(keys: SortKeys, fields: Sequence[str]) -> tuple[object, ...]:
    """`fields` of `keys` as a store keeps them: `reply` as 0 or 1 and `references` as
    one space-separated string (what a database row gives without conversion)."""
    out: list[object] = []
    for name in fields:
        value = getattr(keys, name)
        if name == "reply":
            value = int(value)
        elif name == "references":
            value = " ".join(value)
        out.append(value)
    return tuple(out)


class Item(NamedTuple):
    """One message to sort or thread: `number` is what the response shows (sequence
    number or UID); `seq` its sequence number, the final tie-breaker. A tuple: THREAD
    builds one per message."""

    number: int
    seq: int
    arrival: float  # INTERNALDATE, Unix seconds
    size: int
    keys: SortKeys

    @property
    def date(self) -> float:
        """RFC 5256 section 2.2: the sent date, or INTERNALDATE when it has none."""
        sent = self.keys.sent
        return self.arrival if sent is None else sent


# --- collation ---------------------------------------------------------------------------


def collation_key(text: str) -> str:
    """i;unicode-casemap (RFC 5051): each character titlecased, then canonically
    decomposed. Comparing the results as strings (code points, the order of their UTF-8
    octets) is the collation's comparison."""
    if text.isascii():
        return text.upper()
    titled = "".join(c.title() for c in text)
    return unicodedata.normalize("NFD", titled)


# --- base subject (RFC 5256 section 2.1) --------------------------------------------------

_WSP_RUN = re.compile(r"[ \t\r\n]+")
_TRAILER = re.compile(r"(?:\(fwd\)|[ \t])\Z", re.IGNORECASE)
_BLOB = r"\[[^\[\]]*\][ \t]*"
# subj-leader = (*subj-blob subj-refwd) / WSP; subj-refwd = ("re" / ("fw" ["d"])) *WSP
# [subj-blob] ":"
_LEADER = re.compile(rf"(?:(?:{_BLOB})*(?:re|fwd?)[ \t]*(?:{_BLOB})?:|[ \t])", re.IGNORECASE)
_BLOB_RE = re.compile(_BLOB)


def base_subject(subject: str) -> tuple[str, bool]:
    """(base subject, was a reply or forward) of a decoded Subject (RFC 5256 2.1)."""
    s = _WSP_RUN.sub(" ", subject)  # step 1 (encoded words are decoded by the caller)
    reply = False
    while True:
        while (m := _TRAILER.search(s)) is not None:  # step 2
            if m.group() != " " and m.group() != "\t":
                reply = True
            s = s[: m.start()]
        while True:  # steps 3 to 5
            changed = False
            while s and (m := _LEADER.match(s)) is not None:
                if m.group() not in (" ", "\t"):
                    reply = True
                s = s[m.end() :]
                changed = True
            m = _BLOB_RE.match(s)
            if m is not None and s[m.end() :]:
                s = s[m.end() :]
                changed = True
            if not changed:
                break
        if len(s) >= 6 and s[:5].lower() == "[fwd:" and s.endswith("]"):  # step 6
            s = s[5:-1]
            reply = True
            continue
        return s, reply


# --- keys from a header block ---------------------------------------------------------------

_MSGID = re.compile(rb"<([^<>\s]+)>")


def _msgids(value: bytes | None) -> list[str]:
    if not value:
        return []
    return [m.decode("utf-8", "replace") for m in _MSGID.findall(value.replace(b"\r\n", b""))]


def _first_address(value: bytes | None) -> tuple[str, str]:
    """(addr-mailbox, display form) of the first address of an address list. A group
    counts by its name, as its ENVELOPE start marker carries it in the mailbox place.
    Reads no further than that address (the parsing follows mime.parse_addresses)."""
    if value is None:
        return "", ""
    lx = mime._Lexer(value)
    while lx.skip():
        c = lx.peek()
        if c in (44, 59):  # "," or a stray ";"
            lx.i += 1
            continue
        start = lx.i
        phrase = mime._phrase(lx)
        lx.skip()
        if phrase is not None and lx.peek() == 58:  # "group:"
            return phrase.decode("utf-8", "replace"), mime.decode_words(phrase).strip()
        lx.i = start
        addr = mime._mailbox(lx)
        if addr is None:
            lx.i += 1  # an unparsable byte: skip it
            continue
        display_name, _route, mailbox, host = addr
        local = (mailbox or b"").decode("utf-8", "replace")
        display = mime.decode_words(display_name).strip() if display_name else ""
        if not display:
            display = local if host is None else f"{local}@{host.decode('utf-8', 'replace')}"
        return local, display
    return "", ""


def sort_keys_from_header(header: bytes) -> SortKeys:
    """The SortKeys of a message from its top-level header block (the first occurrence
    of each field counts)."""
    wanted = {
        b"subject",
        b"from",
        b"to",
        b"cc",
        b"date",
        b"message-id",
        b"references",
        b"in-reply-to",
    }
    values: dict[bytes, bytes] = {}
    for f in mime.header_fields(header, 0, len(header)):
        name = f.name.lower()
        if name in wanted and name not in values:
            values[name] = f.value
    subject_raw = values.get(b"subject")
    subject, reply = (
        base_subject(mime.decode_words(subject_raw).strip()) if subject_raw else ("", False)
    )
    from_, display_from = _first_address(values.get(b"from"))
    to, display_to = _first_address(values.get(b"to"))
    cc, _ = _first_address(values.get(b"cc"))
    date = mime.parse_date(values.get(b"date"))
    sent = None
    if date is not None:
        try:
            sent = int(date.timestamp())
        except (OverflowError, ValueError, OSError):
            sent = None
    ids = _msgids(values.get(b"message-id"))
    refs = _msgids(values.get(b"references"))
    if not refs:
        refs = _msgids(values.get(b"in-reply-to"))[:1]
    return SortKeys(
        collation_key(subject),
        reply,
        collation_key(from_),
        collation_key(to),
        collation_key(cc),
        collation_key(display_from),
        collation_key(display_to),
        sent,
        ids[0] if ids else "",
        tuple(refs),
    )


# --- SORT ----------------------------------------------------------------------------------

_KEY_FUNCS: dict[str, Callable[[Item], object]] = {
    "ARRIVAL": lambda it: it.arrival,
    "CC": lambda it: it.keys.cc,
    "DATE": lambda it: it.date,
    "FROM": lambda it: it.keys.from_,
    "SIZE": lambda it: it.size,
    "SUBJECT": lambda it: it.keys.subject,
    "TO": lambda it: it.keys.to,
    "DISPLAYFROM": lambda it: it.keys.display_from,
    "DISPLAYTO": lambda it: it.keys.display_to,
}


@dataclass(frozen=True, slots=True)
class SortCriterion:
    key: str  # one of SORT_KEYS
    reverse: bool = False


def sort_positions(columns: Sequence[tuple[Sequence[object], bool]]) -> list[int]:
    """SORT order of n messages given in sequence order, as positions 0..n-1: `columns`
    holds, per criterion in order, the n values of its key and whether it is REVERSE.
    Messages equal under every key stay in sequence order (RFC 5256 section 3). Stable
    sorts from the last criterion to the first give the mixed directions; Python keeps
    equal items in place even when reversing, so sequence order stays the last
    tie-breaker. Values are plain numbers and strings: a large folder sorts in C."""
    if not columns:
        return []
    order = list(range(len(columns[0][0])))
    for values, reverse in reversed(columns):
        order.sort(key=values.__getitem__, reverse=reverse)
    return order


def sort_items(items: Iterable[Item], criteria: Sequence[SortCriterion]) -> list[Item]:
    """Items in SORT order (see sort_positions)."""
    ordered = sorted(items, key=lambda it: it.seq)
    columns = [([_KEY_FUNCS[c.key](it) for it in ordered], c.reverse) for c in criteria]
    return [ordered[i] for i in sort_positions(columns)] if columns else ordered


# --- THREAD --------------------------------------------------------------------------------


class Node:
    """A thread tree node; `item` None is a dummy (a message referred to but absent)."""

    __slots__ = ("item", "children", "parent")

    def __init__(self, item: Item | None, children: list[Node] | None = None) -> None:
        self.item = item
        self.children: list[Node] = children if children is not None else []
        self.parent: Node | None = None

    def first(self) -> Item | None:
        """The message that stands for this node: its own, or a dummy's first child's."""
        node: Node | None = self
        while node is not None and node.item is None:
            node = node.children[0] if node.children else None
        return node.item if node is not None else None


def _order(node: Node) -> tuple[float, int]:
    """Sort key of a node: sent date, then sequence number (called once per node and
    sort, so it reads the tuples by position)."""
    item = node.item if node.item is not None else node.first()
    if item is None:
        return (0.0, 0)
    sent = item[4][7]  # keys.sent
    return (item[2] if sent is None else sent, item[1])


def _is_ancestor(a: Node, b: Node) -> bool:
    """True when `a` is `b` or one of its ancestors. Only a node with children can be an
    ancestor, which spares the walk up (as long as the thread is deep) for nearly every
    new message."""
    if a is b:
        return True
    if not a.children:
        return False
    node: Node | None = b
    while node is not None:
        if node is a:
            return True
        node = node.parent
    return False


def _link(parent: Node, child: Node) -> None:
    child.parent = parent
    parent.children.append(child)


def _unlink(child: Node) -> None:
    parent = child.parent
    if parent is not None:
        parent.children.remove(child)
        child.parent = None


def _walk(roots: list[Node]) -> list[Node]:
    """Every node below `roots`, parents before children (iterative: reply chains can be
    deeper than Python's recursion limit)."""
    out: list[Node] = []
    stack = list(reversed(roots))
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(reversed(node.children))
    return out


def _sort_siblings(nodes: Iterable[Node], roots: list[Node]) -> None:
    """Sort every set of siblings by sent date (RFC 5256 REFERENCES step 6). `nodes`
    holds every node of the trees. A dummy sorts by its first child, so its children are
    sorted before the set it belongs to; dummies are only left at the top (step 3), so
    sorting the dummies' children first and the top level last is enough, and no walk
    through the trees is needed."""
    for node in nodes:
        if len(node.children) > 1 and node.item is not None:
            node.children.sort(key=_order)
    for node in roots:
        if node.item is None:
            node.children.sort(key=_order)
    roots.sort(key=_order)


def thread_references(items: Iterable[Item]) -> list[Node]:
    """THREAD=REFERENCES (RFC 5256 section 4), items in sequence order."""
    ids: dict[str, Node] = {}
    containers: list[Node] = []
    for item in items:
        mid = item.keys.message_id
        node = ids.get(mid) if mid else None
        if node is not None and node.item is None:
            node.item = item
        else:
            # A duplicate Message-ID counts as none: the message gets its own node.
            node = Node(item)
            containers.append(node)
            if mid and mid not in ids:
                ids[mid] = node
        # Step 1B: link the References in order, keeping links already made. (The hot
        # loop of a big folder: _link and the cheap cases of _is_ancestor are inlined.)
        prev: Node | None = None
        for ref in item.keys.references:
            ref_node = ids.get(ref)
            if ref_node is None:
                ref_node = ids[ref] = Node(None)
                containers.append(ref_node)
            elif ref_node.parent is not None or ref_node is prev:
                prev = ref_node
                continue
            if prev is not None and (not ref_node.children or not _is_ancestor(ref_node, prev)):
                ref_node.parent = prev
                prev.children.append(ref_node)
            prev = ref_node
        # Step 1C: the message's own References decide its parent: a parent presumed
        # from another message's References gives way, unless that would make a loop.
        if node.parent is not None and node.parent is not prev:
            _unlink(node)
        if prev is not None and node.parent is None and not _is_ancestor(node, prev):
            _link(prev, node)
    roots = [n for n in containers if n.parent is None]  # step 2
    if any(n.item is None for n in containers):
        roots = _prune(roots)  # step 3
    roots.sort(key=_order)  # step 4 (dummies use their first child)
    for node in roots:
        if node.item is None:
            node.children.sort(key=_order)
    roots = _merge_subjects(roots)  # step 5
    _sort_siblings(containers, roots)  # step 6
    # Parent links are not needed any more; without them the trees hold no reference
    # cycles and are freed as soon as they are formatted, not by a garbage collection.
    for node in containers:
        node.parent = None
    return roots


def _prune(roots: list[Node]) -> list[Node]:
    """Step 3: dummies without children go; a dummy's children take its place, except
    at the top where several children keep their dummy."""
    for node in reversed(_walk(roots)):
        if not any(c.item is None for c in node.children):
            continue
        kept: list[Node] = []
        for child in node.children:
            if child.item is None:
                for grandchild in child.children:
                    grandchild.parent = node
                    kept.append(grandchild)
            else:
                kept.append(child)
        node.children = kept
    out: list[Node] = []
    for node in roots:
        if node.item is None and len(node.children) <= 1:
            for child in node.children:
                child.parent = None
                out.append(child)
        else:
            out.append(node)
    return out


def _merge_subjects(roots: list[Node]) -> list[Node]:
    """Step 5: gather the top-level threads with the same base subject."""

    def subject(node: Node) -> tuple[str, bool]:
        item = node.first()
        return (item.keys.subject, item.keys.reply) if item is not None else ("", False)

    table: dict[str, Node] = {}
    for node in roots:
        subj, reply = subject(node)
        if not subj:
            continue
        old = table.get(subj)
        if (
            old is None
            or (node.item is None and old.item is not None)
            or (subject(old)[1] and not reply and old.item is not None)
        ):
            table[subj] = node
    out: list[Node | None] = list(roots)
    where = {id(n): i for i, n in enumerate(roots)}
    for i, node in enumerate(roots):
        if out[i] is not node:
            continue
        subj, reply = subject(node)
        if not subj:
            continue
        found = table[subj]
        if found is node:
            continue
        j = where[id(found)]
        if found.item is None and node.item is None:
            for child in node.children:
                _link(found, child)
            node.children = []
            out[i] = None
        elif found.item is None or node.item is None:
            dummy, other = (found, node) if found.item is None else (node, found)
            _link(dummy, other)
            out[where[id(other)]] = None
            table[subj] = dummy
        elif not subject(found)[1] and reply:
            _link(found, node)
            out[i] = None
        else:
            dummy = Node(None)
            _link(dummy, found)
            _link(dummy, node)
            out[j] = dummy
            out[i] = None
            where[id(dummy)] = j
            table[subj] = dummy
    return [n for n in out if n is not None]


def thread_orderedsubject(items: Iterable[Item]) -> list[Node]:
    """THREAD=ORDEREDSUBJECT (RFC 5256 section 4), items in sequence order: messages
    sorted by base subject and
    sent date; each run of one subject is a thread whose first message is the parent of
    all the others; threads in the order of their first message's sent date."""
    items = list(items)
    subjects = [it.keys.subject for it in items]
    dates = [it.arrival if it.keys.sent is None else it.keys.sent for it in items]
    roots: list[Node] = []
    current: Node | None = None
    subject = None
    for pos in sort_positions([(subjects, False), (dates, False)]):
        item = items[pos]
        if current is not None and subjects[pos] == subject:
            current.children.append(Node(item))
        else:
            current = Node(item)
            subject = subjects[pos]
            roots.append(current)
    roots.sort(key=_order)  # threads by their first message's date, then sequence
    return roots


def format_threads(roots: Sequence[Node]) -> bytes:
    """The THREAD response's data: "(1 2 (3)(4))(5)" (RFC 5256 section 5)."""
    out: list[str] = []
    for root in roots:
        out.append("(")
        _format(root, out)
        out.append(")")
    return "".join(out).encode("ascii")


def _format(root: Node, out: list[str]) -> None:
    # A single child continues the chain without parentheses; each branch is "(...)".
    # A stack instead of recursion: threads can be deeper than Python's recursion limit.
    stack: list[Node | str] = [root]
    while stack:
        top = stack.pop()
        if isinstance(top, str):
            out.append(top)
            continue
        node = top
        first = True
        while True:
            if node.item is not None:
                if not first:
                    out.append(" ")
                out.append(str(node.item.number))
                first = False
            kids = node.children
            if len(kids) == 1 and node.item is not None:
                node = kids[0]
                continue
            if kids:
                if not first:
                    out.append(" ")
                for child in reversed(kids):
                    stack.extend((")", child, "("))
            break


THREADERS: dict[str, Callable[[Iterable[Item]], list[Node]]] = {
    "REFERENCES": thread_references,
    "ORDEREDSUBJECT": thread_orderedsubject,
}
