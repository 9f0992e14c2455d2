"""Body text conversions between text/plain, text/html and text/enriched (RFC 1896)."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

_BLOCK = frozenset(
    {
        "address",
        "article",
        "aside",
        "blockquote",
        "center",
        "dd",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tr",
        "ul",
    }
)
_SKIP = frozenset({"head", "script", "style", "title", "template", "noscript"})
_SPACES = re.compile(r"[ \t\r\n\f\u00a0]+")


class _TextExtractor(HTMLParser):
    """Readable text from HTML: blocks on their own lines, list items bulleted, links kept
    as "text <url>", script/style dropped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.line: list[str] = []
        self.skip = 0
        self.pre = 0
        self.links: list[tuple[str, int]] = []  # (href, length of self.line at <a>)

    # -- structure ------------------------------------------------------------------
    def _break(self, blank: bool = False) -> None:
        text = "".join(self.line)
        if not self.pre:
            text = text.strip()
        if text or (self.lines and self.lines[-1] != ""):
            self.lines.append(text)
        if blank and self.lines and self.lines[-1] != "":
            self.lines.append("")
        self.line = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skip += 1
        elif tag == "br":
            self._break()
        elif tag in _BLOCK:
            self._break(
                blank=tag in ("p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "blockquote")
            )
            if tag == "li":
                self.line.append("* ")
            elif tag == "pre":
                self.pre += 1
            elif tag == "hr":
                self.lines.append("-" * 40)
        elif tag == "a":
            href = dict(attrs).get("href") or ""
            self.links.append((href, len("".join(self.line))))
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.handle_data(f"[{alt}]")
        elif tag in ("td", "th") and self.line:
            self.line.append("\t")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag == "a" and self.links:
            href, start = self.links.pop()
            shown = "".join(self.line)[start:].strip()
            target = href.removeprefix("mailto:")
            if href and not href.startswith("#") and target != shown and href != shown:
                self.line.append(f" <{href}>")
        elif tag in _BLOCK:
            if tag == "pre":
                self.pre = max(0, self.pre - 1)
            self._break(
                blank=tag in ("p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "blockquote")
            )

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if self.pre:
            parts = data.split("\n")
            self.line.append(parts[0])
            for rest in parts[1:]:
                self._break()
                self.line.append(rest)
            return
        text = _SPACES.sub(" ", data)
        if text == " " and (not self.line or self.line[-1].endswith((" ", "\t"))):
            return
        if self.line and self.line[-1].endswith(" ") and text.startswith(" "):
            text = text[1:]
        self.line.append(text)

    def text(self) -> str:
        self.close()
        self._break()
        while self.lines and self.lines[-1] == "":
            self.lines.pop()
        return "\n".join(self.lines) + "\n"


def html_to_text(source: str) -> str:
    parser = _TextExtractor()
    parser.feed(source)
    return parser.text()


def text_to_html(text: str) -> str:
    """Plain text as an HTML document: paragraphs at blank lines, line breaks kept,
    everything escaped."""
    paragraphs = re.split(r"\n[ \t]*\n", text.strip("\n"))
    body = "\n".join(
        "<p>" + "<br>\n".join(html.escape(line) for line in p.split("\n")) + "</p>"
        for p in paragraphs
        if p.strip()
    )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head>\n'
        f"<body>\n{body}\n</body></html>\n"
    )


def text_to_enriched(text: str) -> str:
    """RFC 1896: "<" is written "<<"; a run of n newlines shows as n-1 line breaks, so each
    run of line breaks in the plain text gets one newline more."""
    escaped = text.replace("<", "<<")
    return re.sub(r"\n+", lambda m: "\n" * (len(m.group()) + 1), escaped.rstrip("\n")) + "\n"


_ENRICHED_TOKEN = re.compile(r"<<|<(/?)([A-Za-z0-9-]{1,60})>|\n+")


def enriched_to_text(source: str) -> str:
    """RFC 1896 text/enriched to plain text: formatting commands dropped, <param> contents
    skipped, "<<" unescaped, line-break runs shortened by one (a lone newline is a space)."""
    out: list[str] = []
    pos = 0
    param = 0
    for m in _ENRICHED_TOKEN.finditer(source):
        if not param:
            out.append(source[pos : m.start()])
        pos = m.end()
        token = m.group()
        if token == "<<":
            if not param:
                out.append("<")
        elif token.startswith("\n"):
            if not param:
                out.append(" " if len(token) == 1 else "\n" * (len(token) - 1))
        elif m.group(2).lower() == "param":
            param += -1 if m.group(1) else 1
            param = max(param, 0)
    if not param:
        out.append(source[pos:])
    return "".join(out).strip("\n").rstrip(" ") + "\n"
