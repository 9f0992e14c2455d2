"""How the web service's pages look: the site's layout (templates/) and headers, the message,
sign-in, settings and calendar-item pages. The handlers (app.py, calendar.py) decide what to
show and hand it here; nothing here reads a request, the directory or a store."""

from __future__ import annotations

import html
from functools import lru_cache
from pathlib import Path
from string import Template
from urllib.parse import urlsplit

from aiohttp import web

from server.directory import Entry, may_use_protocol
from server.settings.models import Mailbox, Settings
from server.settings.published import Endpoint
from server.web.view import ClientView

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


def signin_page(
    settings: Settings,
    username: str = "",
    error: str = "",
    status: int = 200,
    target: str = "/settings",
    secure: bool = True,
) -> web.Response:
    """The sign-in form; `target` is where a successful sign-in goes (local_target'ed)."""
    warning = ""
    if not secure:
        warning = (
            '<p class="note">This connection is not encrypted. Your administrator '
            "serves this page without HTTPS.</p>"
        )
    content = template("signin.html").substitute(
        username=e(username),
        error=f'<p class="error" role="alert" id="signin-error">{e(error)}</p>' if error else "",
        warning=warning,
        next=e(target),
    )
    return page(settings, "Sign in", content, status)


def settings_page(
    settings: Settings, box: Mailbox, entry: Entry | None, view: ClientView, csrf: str
) -> web.Response:
    """ "Settings for POP or IMAP access": what this user is shown, with a note where the
    mailbox may not use a protocol, and the Apple profile when it would be complete."""
    shown = view.shown
    blocks = "\n".join(
        (
            setting_block(
                "pop",
                "POP setting",
                shown.POP,
                protocol_note(entry, "POP3", "POP") if entry else "",
            ),
            setting_block(
                "imap",
                "IMAP setting",
                shown.IMAP,
                protocol_note(entry, "IMAP4", "IMAP") if entry else "",
            ),
            setting_block("smtp", "SMTP setting", shown.SMTP),
        )
    )
    scope = (
        '<p class="note" id="scope">You are on the internal network: these are the '
        "settings for use inside it.</p>"
        if view.internal
        else ""
    )
    profile = (
        '<p><a href="/mobileconfig" download>Download a profile for iPhone, iPad and Mac'
        "</a> (installs this account; you type the password on the device).</p>"
        if (shown.IMAP or shown.POP) and shown.SMTP
        else ""
    )
    content = template("settings.html").substitute(
        user=e(box.DisplayName or box.PrimarySmtpAddress)
        + (f" ({e(box.PrimarySmtpAddress)})" if box.DisplayName else ""),
        scope=scope,
        blocks=blocks,
        profile=profile,
        csrf=e(csrf),
    )
    return page(settings, "Settings for POP or IMAP access", content)


def calendar_item_page(settings: Settings, info: dict[str, str], download: str) -> web.Response:
    """A calendar item a link names: its fields (server.retrieval.calendar.describe) and the
    link that downloads it as .ics."""
    rows = "".join(
        f"<div><dt>{label}</dt><dd>{e(info[key])}</dd></div>"
        for key, label in (
            ("SUMMARY", "Subject"),
            ("DTSTART", "Start"),
            ("DTEND", "End"),
            ("LOCATION", "Location"),
            ("ORGANIZER", "Organizer"),
            ("DESCRIPTION", "Description"),
        )
        if key in info
    )
    title = info.get("SUMMARY", "Calendar item")
    content = (
        f'<h1>{e(title)}</h1><dl>{rows}</dl><p><a href="{e(download)}">Download (.ics)</a></p>'
    )
    return page(settings, title, content)
