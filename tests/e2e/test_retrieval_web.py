"""Calendar links end to end: the link a POP3/IMAP client gets opens the item for the
signed-in owner and downloads the .ics; nobody else learns anything. The web side reads the
item from the mailbox server's MSExchangeDelivery (server/delivery/items.py), which runs
here in-process on its real TLS port behind the proxy-secret hand-over."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from server.retrieval import ItemRef, Options, render
from server.settings import store as settings_store
from server.settings.models import DELIVERY, Mailbox, Settings
from server.settings.paths import Home
from server.store import open_store
from server.web.calendar import register
from server.web.session import COOKIE, SessionSigner
from tests.conftest import make_home
from tests.e2e.frontend_support import save
from tests.unit.retrieval.test_retrieval import ICS, meeting_request, plain

pytestmark = pytest.mark.e2e


@dataclass
class Ctx:
    home: Home
    settings: Settings
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("mailctl"))


@dataclass
class FakeWeb:
    ctx: Ctx
    signer: SessionSigner


def _setup(tmp_path: Path) -> tuple[FakeWeb, dict[str, Any]]:
    home = make_home(tmp_path / "home")
    settings = settings_store.load(home).settings
    for name in ("alice", "bob"):
        settings.Mailboxes[name] = Mailbox(
            PrimarySmtpAddress=f"{name}@contoso.test", Server="MBX01"
        )
    save(home, settings)
    store = open_store(home, "MBX01")
    try:
        box = store.mailbox("alice")
        meeting = meeting_request()
        seeded = {
            "meeting": box.append("INBOX", meeting).uid,
            "plain": box.append("INBOX", plain()).uid,
            "uidvalidity": box.status("INBOX").uidvalidity,
            "raw": meeting,
        }
    finally:
        store.close()
    settings = settings_store.load(home).settings
    return FakeWeb(Ctx(home, settings), SessionSigner(b"k" * 32)), seeded


async def _requests(web_ctx: FakeWeb, seeded: dict[str, Any]) -> dict[str, Any]:
    app = web.Application()
    register(app, web_ctx)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("/owa"))
    # The link exactly as a client receives it with IntranetUrl on this base.
    rendered = render(
        seeded["raw"],
        Options(calendar_base=base),
        ItemRef("alice", "INBOX", seeded["uidvalidity"], seeded["meeting"]),
    )
    link = next(w for w in rendered.decode().split() if w.startswith(base))
    path = urlsplit(link).path
    out: dict[str, Any] = {"path": path}
    alice = {COOKIE: web_ctx.signer.issue("alice")}
    bob = {COOKIE: web_ctx.signer.issue("bob")}

    async def get(url: str, cookies: dict[str, str] | None = None) -> tuple[int, str, str]:
        async with (
            aiohttp.ClientSession(cookies=cookies) as http,
            http.get(server.make_url(url), allow_redirects=False) as resp,
        ):
            return (
                resp.status,
                resp.headers.get("Content-Type", "") + resp.headers.get("Location", ""),
                await resp.text(),
            )

    try:
        out["anonymous"] = await get(path)
        out["owner"] = await get(path, alice)
        out["ics"] = await get(path + ".ics", alice)
        out["no_prefix"] = await get(path.removeprefix("/owa"), alice)
        out["other_user"] = await get(path, bob)
        out["other_user_ics"] = await get(path + ".ics", bob)
        uv = seeded["uidvalidity"]
        out["not_calendar"] = await get(f"/owa/calendar/alice/{uv}/{seeded['plain']}", alice)
        out["no_such_uid"] = await get(f"/owa/calendar/alice/{uv}/999", alice)
        out["no_such_folder"] = await get(
            f"/owa/calendar/alice/{uv + 1}/{seeded['meeting']}", alice
        )
    finally:
        await server.close()
        await app.cleanup()
    return out


def test_calendar_link_opens_the_item_for_its_owner_only(tmp_path: Path, in_process: Any) -> None:
    web_ctx, seeded = _setup(tmp_path)
    with in_process(DELIVERY, web_ctx.ctx.home):
        got = asyncio.run(_requests(web_ctx, seeded))
    assert got["path"].startswith("/owa/calendar/alice/")
    status, location, _ = got["anonymous"]
    assert status == 303 and location.endswith("/signin?next=" + got["path"])  # back after sign-in
    status, ctype, page = got["owner"]
    assert status == 200 and "text/html" in ctype
    assert "Budget review" in page and "Room 7" in page and ".ics" in page
    status, ctype, ics = got["ics"]
    assert status == 200 and ctype.startswith("text/calendar")
    assert ics.replace("\r\n", "\n") == ICS.replace("\r\n", "\n")
    assert got["no_prefix"][0] == 200
    for key in ("other_user", "other_user_ics", "not_calendar", "no_such_uid", "no_such_folder"):
        assert got[key][0] == 404, key


def test_calendar_link_without_the_back_end_says_try_later(tmp_path: Path) -> None:
    """The web has no way to the item but the mailbox server's back end: with its delivery
    service stopped, the owner gets a 503 page (and other users still the plain 404)."""
    web_ctx, seeded = _setup(tmp_path)
    got = asyncio.run(_requests(web_ctx, seeded))
    status, ctype, page = got["owner"]
    assert status == 503 and "text/html" in ctype and "cannot be reached" in page
    assert got["ics"][0] == 503
    assert got["other_user"][0] == 404 and got["anonymous"][0] == 303
