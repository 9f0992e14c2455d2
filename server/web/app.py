"""The aiohttp application: the routes and handlers of sign-in, "Settings for POP or IMAP
access", autoconfig, autodiscover and the Apple profile (pages.py renders the pages, and
calendar.py adds the calendar-link routes).

Every request reads `ctx.settings` afresh (the runtime replaces it on reload), so a change
made with mailctl shows at the next request. Who may sign in: any mailbox with a password
except Anonymous and Guest ones (the "disabled" kinds); a mailbox whose POP or IMAP is turned
off still signs in and is told so next to that block. A refused sign-in looks exactly like a
wrong password, and unknown names cost the same time (Directory.verify), so no page tells
whether an account exists. Sign-in failures slow the next attempt per client address and per
name typed, as the mail front ends do (LoginThrottle).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Protocol
from urllib.parse import urlsplit

from aiohttp import web

from server.directory import Directory, DirectoryUnavailable, Entry
from server.directory.throttle import LoginThrottle, account_key
from server.runtime.service import ServiceContext
from server.settings.models import Mailbox, Settings
from server.settings.types import MailboxType
from server.web import autoconfig, autodiscover, mobileconfig, pages
from server.web import calendar as calendar_web
from server.web.pages import STATIC, local_target, message_page
from server.web.session import COOKIE, SessionSigner
from server.web.view import ClientView, client_view, is_internal


class Site(Protocol):
    """What the handlers need of the web service (server.web.service.WebService has it): a
    protocol, so that the service imports the application and not the other way round."""

    @property
    def ctx(self) -> ServiceContext: ...

    @property
    def directory(self) -> Directory: ...

    @property
    def signer(self) -> SessionSigner: ...

    @property
    def throttle(self) -> LoginThrottle: ...


SERVICE_KEY = web.AppKey("service", object)
REFUSED_TYPES = (MailboxType.Anonymous, MailboxType.Guest)
BAD_SIGNIN = "The user name or password isn't correct. Try again."
MAX_INFLIGHT_PER_ADDRESS = 4
PAGES_NEEDING_TLS = ("/", "/signin", "/settings", "/signout", "/mobileconfig")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


# --------------------------------------------------------------------------- handlers


class Handlers:
    def __init__(self, service: Site) -> None:
        self.service = service
        self._inflight: dict[str, int] = {}

    # --- shared helpers ------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        return self.service.ctx.settings

    def view_for(self, request: web.Request, mailbox: str | None = None) -> ClientView:
        settings = self.settings
        server = self.service.ctx.server
        vdir = settings.server(server).OwaVirtualDirectory
        internal = is_internal(list(vdir.InternalNetworks), request.remote)
        return client_view(settings, server, internal, mailbox)

    def signed_in(self, request: web.Request) -> tuple[str, Mailbox] | None:
        """The mailbox of a valid session that still exists and may still sign in."""
        name = self.service.signer.check(request.cookies.get(COOKIE))
        if name is None:
            return None
        box = self.settings.Mailboxes.get(name)
        if box is None:  # in an LDAP directory: as the sign-in found it
            entry = self.service.directory.cached_entry(self.settings, name)
            box = entry.mailbox if entry is not None else None
        if box is None or box.Type in REFUSED_TYPES:
            return None
        return name, box

    def require_sign_in(self, request: web.Request) -> tuple[str, Mailbox]:
        """The signed-in mailbox, or off to the sign-in page."""
        found = self.signed_in(request)
        if found is None:
            raise web.HTTPSeeOther("/signin")
        return found

    def https_url(self, request: web.Request) -> str | None:
        """Where a plain-HTTP page request should go instead, when HTTPS is served."""
        server = self.settings.server(self.service.ctx.server)
        vdir = server.OwaVirtualDirectory
        ssl = vdir.SSLBindings
        if request.secure or not ssl:
            return None
        # Never the request's Host header: whoever sends the request would choose where the
        # browser goes next. The configured URL for the client's side of the network, else
        # the other one, else this server's FQDN on the first HTTPS binding's port.
        internal = is_internal(list(vdir.InternalNetworks), request.remote)
        urls = (
            (vdir.InternalUrl, vdir.ExternalUrl)
            if internal
            else (vdir.ExternalUrl, vdir.InternalUrl)
        )
        host, port = server.Fqdn, ssl[0].port
        for url in urls:
            parts = urlsplit(url or "")
            if parts.hostname:
                host = parts.hostname
                port = (
                    parts.port
                    if parts.scheme == "https" and parts.port
                    else (443 if parts.scheme == "https" else port)
                )
                break
        if ":" in host:
            host = f"[{host}]"
        return f"https://{host}{'' if port == 443 else f':{port}'}{request.path_qs}"

    @staticmethod
    def same_origin(request: web.Request) -> bool:
        """Forms are only accepted from our own pages (CSRF, including login CSRF).
        Browsers send Sec-Fetch-Site; older ones and scripts are judged by Origin alone."""
        fetch_site = request.headers.get("Sec-Fetch-Site")
        if fetch_site is not None and fetch_site not in ("same-origin", "none"):
            return False
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        if origin == "null":  # privacy modes hide the origin; trust only Sec-Fetch-Site then
            return fetch_site is not None
        return urlsplit(origin).netloc.lower() == request.host.lower()

    # --- pages ---------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther("/settings" if self.signed_in(request) else "/signin")

    async def show_signin(self, request: web.Request) -> web.StreamResponse:
        target = local_target(request.query.get("next"))
        if self.signed_in(request):
            raise web.HTTPSeeOther(target)
        return self.signin_page(request, target=target)

    def signin_page(
        self,
        request: web.Request,
        username: str = "",
        error: str = "",
        status: int = 200,
        target: str = "/settings",
    ) -> web.Response:
        return pages.signin_page(self.settings, username, error, status, target, request.secure)

    async def sign_in(self, request: web.Request) -> web.StreamResponse:
        if not self.same_origin(request):
            return message_page(self.settings, "Sign in", "Request refused.", 403, "/signin")
        form = await request.post()
        username = str(form.get("username", "")).strip()[:320]
        password = str(form.get("password", ""))[:1024]
        target = local_target(str(form.get("next", "")))
        if not username or not password:
            return self.signin_page(request, username, BAD_SIGNIN, 401, target)
        ip = request.remote or "unknown"
        if self._inflight.get(ip, 0) >= MAX_INFLIGHT_PER_ADDRESS:
            return self.signin_page(
                request, username, "Too many attempts. Wait and try again.", 429, target
            )
        self._inflight[ip] = self._inflight.get(ip, 0) + 1
        try:
            entry = await self.check_password(ip, username, password)
        except DirectoryUnavailable:
            self.service.ctx.log.warning(
                "event=web_signin result=unavailable client=%s user=%r", ip, username
            )
            return self.signin_page(
                request,
                username,
                "The directory of mailboxes cannot be reached right now. "
                "Nothing is wrong with your password: try again in a few minutes.",
                503,
                target,
            )
        finally:
            self._inflight[ip] -= 1
            if not self._inflight[ip]:
                del self._inflight[ip]
        if entry is None:
            return self.signin_page(request, username, BAD_SIGNIN, 401, target)
        token = self.service.signer.issue(entry.name)
        response = web.HTTPSeeOther(target)
        response.set_cookie(
            COOKIE,
            token,
            httponly=True,
            samesite="Strict",
            secure=request.secure,
            path="/",
            max_age=int(self.service.signer.max_age),
        )
        raise response

    async def check_password(self, ip: str, username: str, password: str) -> Entry | None:
        throttle, log = self.service.throttle, self.service.ctx.log
        settings = self.settings
        account = account_key(settings, username)
        delay = throttle.delay(ip, account)
        if delay:
            await asyncio.sleep(delay)
        entry = await asyncio.to_thread(self.service.directory.verify, settings, username, password)
        if entry is None or entry.mailbox.Type in REFUSED_TYPES:
            throttle.failed(ip, account)
            log.info("event=web_signin result=fail client=%s user=%r", ip, username)
            return None
        throttle.succeeded(ip, entry.name)
        log.info("event=web_signin result=ok client=%s mailbox=%s", ip, entry.name)
        return entry

    async def show_settings(self, request: web.Request) -> web.StreamResponse:
        name, box = self.require_sign_in(request)
        settings = self.settings
        entry = self.service.directory.cached_entry(settings, name)
        view = self.view_for(request, name)
        csrf = self.service.signer.csrf_token(request.cookies.get(COOKIE, ""))
        return pages.settings_page(settings, box, entry, view, csrf)

    async def sign_out(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        token = request.cookies.get(COOKIE, "")
        csrf = form.get("csrf")
        if not self.same_origin(request) or not self.service.signer.check_csrf(
            token, csrf if isinstance(csrf, str) else None
        ):
            return message_page(self.settings, "Sign out", "Request refused.", 403, "/settings")
        # Deleting the cookie is up to the browser; a copy of it must stop working too.
        await asyncio.to_thread(self.service.signer.revoke, token)
        response = web.HTTPSeeOther("/signin")
        response.del_cookie(COOKIE, path="/")
        raise response

    async def download_profile(self, request: web.Request) -> web.StreamResponse:
        name, box = self.require_sign_in(request)
        settings = self.settings
        data = mobileconfig.profile(
            self.view_for(request, name),
            box.PrimarySmtpAddress,
            box.DisplayName,
            settings.Organization.Domain,
        )
        if data is None:
            return message_page(
                settings,
                "Nothing to download",
                "Your administrator has not published settings a profile could use.",
                404,
                "/settings",
                "Back to the settings",
            )
        return web.Response(
            body=data,
            content_type=mobileconfig.CONTENT_TYPE,
            headers={
                "Content-Disposition": 'attachment; filename="mail.mobileconfig"',
                "Cache-Control": "no-store",
            },
        )

    # --- machine-readable ----------------------------------------------------------
    async def thunderbird_config(self, request: web.Request) -> web.StreamResponse:
        settings = self.settings
        domain = self.config_domain(settings, request.query.get("emailaddress", ""))
        body = autoconfig.config_xml(self.view_for(request), domain, settings.Organization.Name)
        return web.Response(
            body=body,
            content_type="application/xml",
            charset="utf-8",
            headers={"Cache-Control": "no-cache"},
        )

    @staticmethod
    def config_domain(settings: Settings, address: str) -> str:
        """The domain of the address asked about when it is one of ours, else the
        organization's (one answer for every address of a domain: nothing to probe)."""
        domain = address.rpartition("@")[2].strip().lower()
        if domain and re.fullmatch(r"[a-z0-9.-]{1,253}", domain):
            ours = {settings.Organization.Domain.lower()} | {
                a.rpartition("@")[2].lower()
                for box in settings.Mailboxes.values()
                for a in box.addresses()
            }
            if domain in ours:
                return domain
        return settings.Organization.Domain

    async def outlook_autodiscover(self, request: web.Request) -> web.StreamResponse:
        body = await request.content.read(autodiscover.MAX_REQUEST + 1)
        try:
            asked = autodiscover.parse_request(body)
        except autodiscover.UnreadableRequest:
            return self.autodiscover_error(400)
        except autodiscover.InvalidRequest:
            return self.autodiscover_error()
        except Exception as exc:  # a parser surprise is still the client's bad request
            self.service.ctx.log.warning("event=autodiscover-unparsable error=%r", exc)
            return self.autodiscover_error(400)
        if asked.schema != autodiscover.OUTLOOK_NS:
            # Exchange answers an ActiveSync/other schema it cannot serve with 600 as well.
            return self.autodiscover_error()
        return web.Response(
            body=autodiscover.response_xml(self.view_for(request), asked),
            content_type="text/xml",
            charset="utf-8",
        )

    async def autodiscover_get(self, request: web.Request) -> web.StreamResponse:
        return self.autodiscover_error()

    @staticmethod
    def autodiscover_error(status: int = 200) -> web.Response:
        return web.Response(
            body=autodiscover.error_xml(),
            content_type="text/xml",
            charset="utf-8",
            status=status,
        )


# --------------------------------------------------------------------------- middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def tls_redirect_middleware(handlers: Handlers) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def redirect_pages_to_https(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Passwords and session cookies never travel in clear when HTTPS is served; the
        # autoconfig/autodiscover answers stay on HTTP too, where clients look for them.
        if request.path in PAGES_NEEDING_TLS:
            target = handlers.https_url(request)
            if target is not None:
                raise (
                    web.HTTPPermanentRedirect(target)
                    if request.method == "POST"
                    else (web.HTTPMovedPermanently(target))
                )
        return await handler(request)

    return redirect_pages_to_https


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    for key, value in SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)
    if request.secure:
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    if isinstance(response, web.HTTPException):
        raise response
    return response


# --------------------------------------------------------------------------- the app


def build_app(service: Site) -> web.Application:
    handlers = Handlers(service)
    app = web.Application(
        middlewares=[security_headers, tls_redirect_middleware(handlers)],
        client_max_size=64 * 1024,
    )
    app[SERVICE_KEY] = service
    router = app.router
    router.add_get("/", handlers.index)
    router.add_get("/signin", handlers.show_signin)
    router.add_post("/signin", handlers.sign_in)
    router.add_get("/settings", handlers.show_settings)
    router.add_post("/signout", handlers.sign_out)
    router.add_get("/mobileconfig", handlers.download_profile)
    for path in ("/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml"):
        router.add_get(path, handlers.thunderbird_config)
    for path in (
        "/autodiscover/autodiscover.xml",
        "/Autodiscover/Autodiscover.xml",
        "/AutoDiscover/AutoDiscover.xml",
    ):
        router.add_post(path, handlers.outlook_autodiscover)
        router.add_get(path, handlers.autodiscover_get)
    router.add_static("/static", STATIC, show_index=False, follow_symlinks=False)
    calendar_web.register(app, service)  # calendar links of POP3/IMAP meeting requests
    return app
