"""The web side of calendar links: where IntranetUrl / InternetUrl / Custom links point.

`<base>/calendar/<mailbox>/<folder UIDVALIDITY>/<uid>` shows the item to the signed-in owner
of the mailbox, and `.../<uid>.ics` downloads it. The base may carry a path (an OWA virtual
directory's InternalUrl is https://host/owa), so any path prefix before /calendar/ is
accepted. Anyone else, signed in or not, gets the same 404 as for an item that does not
exist, so links tell nobody which mailboxes or items exist; not signed in sends to /signin,
which comes back to the item after signing in.
"""

from __future__ import annotations

import asyncio
import html
from typing import Any, Protocol
from urllib.parse import quote

from aiohttp import web

from server.retrieval.calendar import calendar_part, describe
from server.settings.models import Settings
from server.store import api
from server.web.session import COOKIE

ROUTE = r"/{prefix:(?:[^/]+/)*}calendar/{mailbox}/{uidvalidity:\d{1,10}}/{uid:\d{1,10}}"
STORES_KEY = web.AppKey("retrieval-calendar-stores", dict)


class Signer(Protocol):
    def check(self, token: str | None) -> str | None: ...


class WebContext(Protocol):
    """What the handlers need of the web service (server.web.service.WebService has it)."""

    ctx: Any  # ServiceContext: .home, .settings (live)

    @property
    def signer(self) -> Signer: ...


def register(app: web.Application, ctx: WebContext) -> None:
    """Add the calendar item page and .ics download to the web service's application."""
    handlers = _Handlers(ctx)
    app[STORES_KEY] = handlers.stores
    app.router.add_get(ROUTE, handlers.show_item)
    app.router.add_get(ROUTE + ".ics", handlers.download_item)
    app.on_cleanup.append(handlers.close)


class _Handlers:
    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx
        self.stores: dict[str, api.MailStore] = {}

    @property
    def settings(self) -> Settings:
        return self.ctx.ctx.settings

    async def close(self, app: web.Application) -> None:
        stores, self.stores = list(self.stores.values()), {}
        for store in stores:
            await asyncio.to_thread(store.close)

    def _store(self, server: str) -> api.MailStore:
        store = self.stores.get(server)
        if store is None:
            from server.store import open_store

            store = self.stores[server] = open_store(self.ctx.ctx.home, server)
        return store

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
        ics = await asyncio.to_thread(
            self._find,
            box.Server,
            name,
            int(request.match_info["uidvalidity"]),
            int(request.match_info["uid"]),
        )
        if ics is None:
            raise web.HTTPNotFound()
        return name, ics

    def _find(self, server: str, mailbox: str, uidvalidity: int, uid: int) -> str | None:
        box = self._store(server).mailbox(mailbox)
        try:
            for folder in box.folders():
                if box.status(folder.name).uidvalidity == uidvalidity:
                    return calendar_part(box.read(folder.name, uid))
        except api.StoreError:
            return None
        return None

    async def show_item(self, request: web.Request) -> web.StreamResponse:
        _, ics = await self._ics(request)
        info = describe(ics)
        rows = "".join(
            f"<div><dt>{label}</dt><dd>{html.escape(info[key])}</dd></div>"
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
        download = html.escape(request.path + ".ics", quote=True)
        content = (
            f"<h1>{html.escape(info.get('SUMMARY', 'Calendar item'))}</h1><dl>{rows}</dl>"
            f'<p><a href="{download}">Download (.ics)</a></p>'
        )
        from server.web.app import page  # the site's own layout and headers

        return page(self.settings, info.get("SUMMARY", "Calendar item"), content)

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
