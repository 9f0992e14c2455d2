"""Record Dovecot's ENVELOPE / BODY / BODYSTRUCTURE and BODY[section] answers for the MIME
corpus into dovecot_expected.json, which tests/unit/mail/test_mime_corpus.py compares against.

Needs Debian's dovecot-imapd (apt-get install -y dovecot-imapd); no service is started:
the imap binary runs pre-authenticated on stdin/stdout over a private maildir. Run as root
from the repository root:  python tests/data/mime/record_dovecot.py

Messages: the corpus in tests/data/corpus (line ends normalised to CRLF, as the store does at
delivery) and the hand-written messages in this folder (*.eml, used as they are).
Section answers are stored as sha256-prefix:length so the file stays small.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from tests.unit.mail.test_mime_corpus import (  # noqa: E402
    corpus_messages,
    crlf,
    digest,
    parse_value,
    to_json,
)

HERE = Path(__file__).resolve().parent
IMAP = "/usr/lib/dovecot/imap"

CONF = """\
base_dir = {base}/run
log_path = {base}/dovecot.log
ssl = no
protocols = imap
mail_location = maildir:{base}/mail
mail_uid = mail
mail_gid = mail
first_valid_uid = 1
first_valid_gid = 1
passdb {{
  driver = static
  args = password=x
}}
userdb {{
  driver = static
  args = uid=mail gid=mail home={base}
}}
"""


def messages() -> list[tuple[str, bytes]]:
    out = [(name, crlf(raw)) for name, raw in corpus_messages()]
    out += [(p.name, p.read_bytes()) for p in sorted(HERE.glob("*.eml"))]
    return out


def run_imap(base: Path, commands: bytes) -> dict[str, tuple[bytes, list]]:
    """Run commands through a pre-authenticated imap process; per tag: (status, fetch
    responses seen since the previous tagged line)."""
    env = dict(os.environ, USER="mail", HOME=str(base))
    out = subprocess.run(
        [IMAP, "-c", str(base / "dovecot.conf")],
        input=commands + b"zz LOGOUT\r\n",
        capture_output=True,
        env=env,
        cwd=base,
        check=True,
    ).stdout
    results: dict[str, tuple[bytes, list]] = {}
    pending: list = []
    pos = 0
    fetch_re = re.compile(rb"\* (\d+) FETCH ")
    tagged_re = re.compile(rb"([a-z]\d+) (OK|NO|BAD)[^\r\n]*\r\n")
    while pos < len(out):
        m = fetch_re.match(out, pos)
        if m:
            value, pos = parse_value(out, m.end())
            pending.append((int(m.group(1)), value))
            assert out[pos : pos + 2] == b"\r\n", out[pos : pos + 40]
            pos += 2
            continue
        m = tagged_re.match(out, pos)
        if m:
            results[m.group(1).decode()] = (m.group(2), pending)
            pending = []
            pos = m.end()
            continue
        pos = out.index(b"\r\n", pos) + 2
    return results


def part_paths(bs: list, prefix: str = "") -> list[tuple[str, bool]]:
    """(section path, is message/rfc822) for every part of a BODYSTRUCTURE value."""
    if isinstance(bs[0], list):
        out = []
        for i, child in enumerate([c for c in bs if isinstance(c, list)], 1):
            path = f"{prefix}{i}"
            out += [(path, _is_message(child))] + _inner(child, path)
        return out
    path = prefix + "1"
    return [(path, _is_message(bs))] + _inner(bs, path)


def _is_message(bs: list) -> bool:
    return (
        not isinstance(bs[0], list)
        and bs[0].lower() == b"message"
        and bs[1].lower() == b"rfc822"
        and len(bs) > 8
    )


def _inner(bs: list, path: str) -> list[tuple[str, bool]]:
    if isinstance(bs[0], list):
        return part_paths(bs, path + ".")
    if _is_message(bs):
        return part_paths(bs[8], path + ".")
    return []


def section_list(bs: list) -> list[str]:
    sections = [
        "",
        "HEADER",
        "TEXT",
        "HEADER.FIELDS (FROM SUBJECT CONTENT-TYPE)",
        "HEADER.FIELDS.NOT (FROM SUBJECT CONTENT-TYPE)",
        "99",
        "1.99",
    ]
    for path, is_message in part_paths(bs):
        sections += [path, f"{path}.MIME", f"{path}.HEADER", f"{path}.TEXT"]
        if is_message:
            sections.append(f"{path}.HEADER.FIELDS (FROM)")
    return sections


def main() -> None:
    msgs = messages()
    base = Path(tempfile.mkdtemp(prefix="dovecot-mime-"))
    try:
        for sub in ("mail/cur", "mail/new", "mail/tmp", "run"):
            (base / sub).mkdir(parents=True)
        (base / "dovecot.conf").write_text(CONF.format(base=base))
        shutil.chown(base / "mail", "mail", "mail")
        for sub in ("cur", "new", "tmp"):
            shutil.chown(base / "mail" / sub, "mail", "mail")
        base.chmod(0o755)

        cmds = bytearray()
        for i, (_, raw) in enumerate(msgs, 1):
            cmds += b"a%d APPEND INBOX {%d+}\r\n" % (i, len(raw)) + raw + b"\r\n"
        cmds += b"s1 SELECT INBOX\r\n"
        cmds += b"f1 FETCH 1:* (ENVELOPE BODY BODYSTRUCTURE RFC822.SIZE)\r\n"
        res = run_imap(base, bytes(cmds))
        assert res["f1"][0] == b"OK", res["f1"]
        items = {seq: dict(zip(v[0::2], v[1::2], strict=True)) for seq, v in res["f1"][1]}

        # Dovecot answers pipelined commands out of order, so one FETCH per message carries
        # all its sections and the answers are matched by item name, not by tag.
        cmds = bytearray(b"s1 EXAMINE INBOX\r\n")
        wanted: dict[int, list[str]] = {}
        for seq in range(1, len(msgs) + 1):
            wanted[seq] = section_list(items[seq]["BODYSTRUCTURE"])
            fetch_items = " ".join(f"BODY.PEEK[{s}]" for s in wanted[seq])
            cmds += f"x{seq} FETCH {seq} ({fetch_items})\r\n".encode()
        res2 = run_imap(base, bytes(cmds))
        fetched: dict[int, dict[str, bytes | None]] = {}
        for status, responses in res2.values():
            assert status == b"OK", status
            for seq, values in responses:
                fetched.setdefault(seq, {}).update(zip(values[0::2], values[1::2], strict=True))

        out = []
        for seq, (name, raw) in enumerate(msgs, 1):
            it = items[seq]
            assert it["RFC822.SIZE"] == len(raw), name
            sections = {}
            for section in wanted[seq]:
                value = fetched[seq][f"BODY[{section}]"]
                sections[section] = digest(value or b"")
            out.append(
                {
                    "name": name,
                    "size": len(raw),
                    "envelope": to_json(it["ENVELOPE"]),
                    "body": to_json(it["BODY"]),
                    "bodystructure": to_json(it["BODYSTRUCTURE"]),
                    "sections": sections,
                }
            )
        version = subprocess.run(
            ["dovecot", "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        (HERE / "dovecot_expected.json").write_text(
            json.dumps({"dovecot": version, "messages": out}, indent=1, sort_keys=False) + "\n"
        )
        print(f"recorded {len(out)} messages with Dovecot {version}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
