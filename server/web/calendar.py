"""The web side of calendar links: where IntranetUrl / InternetUrl / Custom links point.

`<base>/calendar/<mailbox>/<folder UIDVALIDITY>/<uid>` shows the item to the signed-in owner
of the mailbox, and `.../<uid>.ics` downloads it. The base may carry a path (an OWA virtual
directory's InternalUrl is https://host/owa), so any path prefix before /calendar/ is
accepted. Anyone else, signed in or not, gets the same 404 as for an item that does not
exist, so links tell nobody which mailboxes or items exist; not signed in sends to /signin,
which comes back to the item after signing in.

The web service opens no mailbox store: it asks the back end of the server that holds the
mailbox (its MSExchangeDelivery, server/delivery/items.py) for the item's iCalendar text,
and only after it has checked that the signed-in user owns the mailbox.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import quote

from aiohttp import web

from server.delivery import items
from server.directory import ProxySecret
from server.retrieval.calendar import describe
from server.settings.models import Settings
from server.web.pages import calendar_item_page, message_page
from server.web.session import COOKIE

ROUTE = r"/{prefix:(?:[^/]+/)*}calendar/{mailbox}/{uidvalidity:\d{1,10}}/{uid:\d{1,10}}"
# (settings, server, mailbox, folder UIDVALIDITY, uid) -> the item's iCalendar text, or None
Fetch = Callable[[Settings, str, str, int, int], Awaitable[str | None]]


class Signer(Protocol):
    def check(self, token: str | None) -> str | None: ...


class WebContext(Protocol):
    """What the handlers need of the web service (server.web.service.WebService has it)."""

    @property
    def ctx(self) -> Any: ...  # ServiceContext: .home, .settings (live), .log

    @property
    def signer(self) -> Signer: ...


def register(app: web.Application, ctx: WebContext, fetch: Fetch | None = None) -> None:
    """Add the calendar item page and .ics download to the web service's application.
    `fetch`: where items come from; the mailbox's back end (items.fetch) unless given."""
    handlers = _Handlers(ctx, fetch or _from_back_end(ctx))
    app.router.add_get(ROUTE, handlers.show_item)
    app.router.add_get(ROUTE + ".ics", handlers.download_item)


def _from_back_end(ctx: WebContext) -> Fetch:
    home = ctx.ctx.home
    secret = ProxySecret(home)

    async def fetch(
        settings: Settings, server: str, mailbox: str, uidvalidity: int, uid: int
    ) -> str | None:
        return await items.fetch(home, settings, server, mailbox, uidvalidity, uid, secret)

    return fetch


class _Handlers:
    def __init__(self, ctx: WebContext, fetch: Fetch) -> None:
        self.ctx = ctx
        self.fetch = fetch

    @property
    def settings(self) -> Settings:
        return self.ctx.ctx.settings

    async def _ics(self, request: web.Request) -> tuple[str, str]:
        """(mailbox name, iCalendar text) of the item the request names, for its owner."""
        user = self.ctx.signer.check(request.cookies.get(COOKIE))
        if user is None:  # back here after signing in (app.local_target checks it)
            raise web.HTTPSeeOther(f"/signin?next={quote(request.path_qs, safe='')}")
        settings = self.settings
        found = settings.mailbox(request.match_info["mailbox"])
        if found is None or found[0].lower() != user.lower():
            raise web.HTTPNotFound()
        name, box = found
        try:
            ics = await self.fetch(
                settings,
                box.Server,
                name,
                int(request.match_info["uidvalidity"]),
                int(request.match_info["uid"]),
            )
        except items.ItemsUnavailable as exc:
            self.ctx.ctx.log.warning("event=calendar-item-unavailable error=%r", str(exc))
            shown = message_page(
                settings,
                "Calendar item",
                "The server that holds your mailbox cannot be reached right now. "
                "Try again in a few minutes.",
                503,
            )
            raise web.HTTPServiceUnavailable(
                text=shown.text, content_type="text/html", headers={"Cache-Control": "no-store"}
            ) from None
        if ics is None:
            raise web.HTTPNotFound()
        return name, ics

    async def show_item(self, request: web.Request) -> web.StreamResponse:
        _, ics = await self._ics(request)
        return calendar_item_page(self.settings, describe(ics), request.path + ".ics")

    async def download_item(self, request: web.Request) -> web.StreamResponse:
        _, ics = await self._ics(request)
        return web.Response(
            body=ics.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8"),
            content_type="text/calendar",
            charset="utf-8",
            headers={
                "Content-Disposition": 'attachment; filename="invite.ics"',
                "Cache-Control": "no-store",
            },
        )
