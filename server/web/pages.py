"""How the web service's pages look: the site's layout (templates/), the message page, the
blocks of the settings page, and the headers every page gets. Handlers (app.py, calendar.py)
build their content and hand it here; nothing here reads a request or the settings' state
beyond what it is given."""

from __future__ import annotations

import html
from functools import lru_cache
from pathlib import Path
from string import Template
from urllib.parse import urlsplit

from aiohttp import web

from server.directory import Entry, may_use_protocol
from server.settings.models import Settings
from server.settings.published import Endpoint

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
NOT_PUBLISHED = "Not published by your administrator."


@lru_cache(maxsize=16)
def template(name: str) -> Template:
    return Template((TEMPLATES / name).read_text(encoding="utf-8"))


def e(value: object) -> str:
    return html.escape(str(value), quote=True)


def page(settings: Settings, title: str, content: str, status: int = 200) -> web.Response:
    body = template("base.html").substitute(
        title=e(title), organization=e(settings.Organization.Name), content=content
    )
    return web.Response(
        text=body,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-store"},
    )


def message_page(
    settings: Settings,
    heading: str,
    message: str,
    status: int,
    link: str = "/",
    link_text: str = "Back",
) -> web.Response:
    content = template("message.html").substitute(
        heading=e(heading), message=e(message), link=e(link), link_text=e(link_text)
    )
    return page(settings, heading, content, status)


def endpoint_list(endpoint: Endpoint) -> str:
    rows = (
        ("Server name", "server", endpoint.Server),
        ("Port", "port", endpoint.Port),
        ("Encryption method", "encryption", endpoint.Encryption),
    )
    items = "".join(
        f'<div><dt>{label}</dt><dd data-field="{field}">{e(value)}</dd></div>'
        for label, field, value in rows
    )
    return f"<dl>{items}</dl>"


def setting_block(key: str, title: str, endpoint: Endpoint | None, note: str = "") -> str:
    body = (
        endpoint_list(endpoint)
        if endpoint
        else f'<p class="empty" data-field="empty">{NOT_PUBLISHED}</p>'
    )
    return template("block.html").substitute(
        key=key, title=title, body=body, note=f'<p class="note">{e(note)}</p>' if note else ""
    )


def local_target(value: str | None, default: str = "/settings") -> str:
    """Where to go after signing in: a path on this site only. Anything that a browser could
    read as another site (`//host`, `/\\host`, a scheme, control characters) gives `default`,
    so the sign-in page cannot be used to send someone elsewhere."""
    if not value or len(value) > 2048 or not value.startswith("/"):
        return default
    if value.startswith(("//", "/\\")) or "\\" in value:
        return default
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value


def protocol_note(entry: Entry, protocol: str, label: str) -> str:
    return f"{label} can't be used with your mailbox." if may_use_protocol(entry, protocol) else ""
