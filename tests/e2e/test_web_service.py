"""W3SVC end to end, in-process on real sockets: sign-in and sessions, what the page shows,
autoconfig/autodiscover over HTTP, HTTPS redirect, live reload of settings and bindings."""

from __future__ import annotations

import html
import http.client
import re
import socket
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from server.directory import Directory
from server.directory.throttle import LoginThrottle
from server.runtime import tls
from server.settings import store
from server.settings.models import WEB, Mailbox
from server.settings.paths import Home
from server.settings.types import IPEndPoint
from tests.conftest import InProcessService

pytestmark = pytest.mark.e2e

PASSWORD = "Corr3ct horse!"
OUTLOOK = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"


def add_mailbox(home: Home, name: str, password: str | None = PASSWORD, **fields: object) -> None:
    box = Mailbox(
        DisplayName=name.title(),
        PrimarySmtpAddress=f"{name}@contoso.test",
        Server="MBX01",
        **fields,  # type: ignore[arg-type]
    )
    with store.edit(home) as session:
        session.set(("Mailboxes", name), box.model_dump(mode="json"))
    if password:
        Directory(home).set_password(name, password)


def publish(home: Home) -> None:
    with store.edit(home) as session:
        server = ("Servers", "MBX01")
        session.set(
            (*server, "PopSettings", "ExternalConnectionSettings"),
            ["mail.contoso.com:995:SSL", "mail.contoso.com:110:TLS"],
        )
        session.set(
            (*server, "ImapSettings", "ExternalConnectionSettings"), ["mail.contoso.com:143:TLS"]
        )
        conn = ("ReceiveConnectors", "Client Frontend MBX01")
        session.set((*conn, "AdvertiseClientSettings"), True)
        session.set((*conn, "Fqdn"), "smtp.contoso.com")


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def cookies(self) -> list[str]:
        return self.headers.get_all("Set-Cookie") or []


@dataclass
class Browser:
    """A minimal cookie-keeping client; follows no redirects, so tests see them."""

    home: Home
    host: str
    port: int
    secure: bool
    cookies: dict[str, str] = field(default_factory=dict)

    def connection(self) -> http.client.HTTPConnection:
        if self.secure:
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=10, context=tls.client_context(self.home)
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=10)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        conn = self.connection()
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        reply = Reply(response.status, response.headers, response.read())
        conn.close()
        for cookie in reply.cookies():
            name, _, rest = cookie.partition("=")
            value = rest.split(";", 1)[0].strip('"')
            if value and "Max-Age=0" not in cookie:
                self.cookies[name] = value
            else:
                self.cookies.pop(name, None)
        return reply

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post_form(self, path: str, fields: dict[str, str], **headers: str) -> Reply:
        return self.request(
            "POST",
            path,
            urllib.parse.urlencode(fields).encode(),
            {"Content-Type": "application/x-www-form-urlencoded", **headers},
        )

    def sign_in(self, username: str, password: str = PASSWORD) -> Reply:
        return self.post_form("/signin", {"username": username, "password": password})


@pytest.fixture
def web(home: Home) -> Iterator[InProcessService]:
    add_mailbox(home, "alice")
    publish(home)
    with InProcessService(WEB, home) as service:
        yield service


def vdir(home: Home):  # noqa: ANN201 - the settings model
    return store.load(home).settings.server("MBX01").OwaVirtualDirectory


def https(home: Home) -> Browser:
    return Browser(home, "127.0.0.1", vdir(home).SSLBindings[0].port, True)


def plain(home: Home) -> Browser:
    return Browser(home, "127.0.0.1", vdir(home).Bindings[0].port, False)


def fields(page: str, section: str) -> dict[str, str]:
    block = re.search(rf'<section class="setting" id="{section}".*?</section>', page, re.S)
    assert block, f"no {section} block"
    return dict(re.findall(r'data-field="(\w+)">([^<]*)<', block.group(0)))


# --------------------------------------------------------------------------- sign-in


def test_sign_in_sets_a_hardened_cookie_and_shows_the_published_settings(
    web: InProcessService, home: Home
) -> None:
    client = https(home)
    assert client.get("/").headers["Location"] == "/signin"
    form = client.get("/signin")
    assert form.status == 200 and 'name="viewport"' in form.text
    assert 'for="username"' in form.text and 'for="password"' in form.text
    reply = client.sign_in("alice@contoso.test")
    assert reply.status == 303 and reply.headers["Location"] == "/settings"
    [cookie] = reply.cookies()
    flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite"} <= flags and "SameSite=Strict" in cookie
    page = client.get("/settings")
    assert page.status == 200 and "Settings for POP or IMAP access" in page.text
    assert page.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert fields(page.text, "pop") == {
        "server": "mail.contoso.com",
        "port": "995",
        "encryption": "SSL",
    }
    assert fields(page.text, "imap") == {
        "server": "mail.contoso.com",
        "port": "143",
        "encryption": "TLS",
    }
    smtp_port = (
        store.load(home).settings.ReceiveConnectors["Client Frontend MBX01"].Bindings[0].port
    )
    assert fields(page.text, "smtp") == {
        "server": "smtp.contoso.com",
        "port": str(smtp_port),
        "encryption": "TLS",
    }


def test_not_published_blocks_say_so(home: Home) -> None:
    add_mailbox(home, "alice")
    with InProcessService(WEB, home):
        client = https(home)
        client.sign_in("alice")
        page = client.get("/settings").text
        for section in ("pop", "imap", "smtp"):
            assert fields(page, section) == {"empty": "Not published by your administrator."}
        assert "/mobileconfig" not in page


def test_failures_look_the_same_whoever_the_account_is(web: InProcessService, home: Home) -> None:
    add_mailbox(home, "guest1", Type="Guest")
    add_mailbox(home, "anon1", Type="Anonymous")
    add_mailbox(home, "nopass", password=None)
    web.reload()
    # Keep the slow-down (0.5 s doubling per failure) from dominating the test's time.
    web.service.logins.throttle = LoginThrottle(base=0.01, cap=0.05)
    client = https(home)
    replies = {
        name: client.sign_in(name, password)
        for name, password in [
            ("alice", "wrong"),
            ("nobody@contoso.test", PASSWORD),
            ("guest1", PASSWORD),
            ("anon1", PASSWORD),
            ("nopass", PASSWORD),
        ]
    }
    normal = {
        name: (r.status, html.unescape(r.text).replace(name, "NAME")) for name, r in replies.items()
    }
    assert len(set(normal.values())) == 1, normal
    status, text = next(iter(normal.values()))
    assert status == 401 and "isn't correct" in text
    assert not client.cookies
    # Each failure counts against the address and the name typed, as in the front ends.
    assert web.service.logins.throttle.delay("127.0.0.1") > 0
    assert web.service.logins.throttle.delay("10.9.9.9", "guest1") > 0


def test_forms_from_other_sites_are_refused(web: InProcessService, home: Home) -> None:
    client = https(home)
    foreign = client.post_form(
        "/signin", {"username": "alice", "password": PASSWORD}, Origin="https://evil.example"
    )
    assert foreign.status == 403 and not client.cookies
    client.sign_in("alice")
    assert client.post_form("/signout", {"csrf": "forged"}).status == 403
    assert client.get("/settings").status == 200
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/settings").text)
    assert token
    out = client.post_form("/signout", {"csrf": token.group(1)})
    assert out.status == 303 and not client.cookies
    assert client.get("/settings").headers["Location"] == "/signin"


def test_a_mailbox_made_guest_loses_its_session(web: InProcessService, home: Home) -> None:
    client = https(home)
    client.sign_in("alice")
    assert client.get("/settings").status == 200
    with store.edit(home) as session:
        session.set(("Mailboxes", "alice", "Type"), "Guest")
    web.reload()
    assert client.get("/settings").headers["Location"] == "/signin"


def test_pages_on_http_go_to_https_and_autoconfig_stays(web: InProcessService, home: Home) -> None:
    client = plain(home)
    reply = client.get("/signin")
    assert reply.status == 301
    assert (
        reply.headers["Location"]
        == f"https://mbx01.contoso.test:{vdir(home).SSLBindings[0].port}/signin"
    )
    xml = client.get("/mail/config-v1.1.xml?emailaddress=alice%40contoso.test")
    assert xml.status == 200 and xml.headers["Content-Type"].startswith("application/xml")
    assert ET.fromstring(xml.body).tag == "clientConfig"


def test_http_only_install_serves_the_page_over_http_without_secure_cookie(home: Home) -> None:
    add_mailbox(home, "alice")
    with store.edit(home) as session:
        session.set(("Servers", "MBX01", "OwaVirtualDirectory", "SSLBindings"), [])
    with InProcessService(WEB, home) as service:
        assert all("SSL" not in ep for ep in service.service.status()["endpoints"])
        client = plain(home)
        assert "not encrypted" in client.get("/signin").text
        reply = client.sign_in("alice")
        assert reply.status == 303
        assert "secure" not in reply.cookies()[0].lower()
        assert client.get("/settings").status == 200


def test_profile_download_for_the_signed_in_user(web: InProcessService, home: Home) -> None:
    client = https(home)
    assert client.get("/mobileconfig").status == 303
    client.sign_in("alice")
    reply = client.get("/mobileconfig")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/x-apple-aspen-config")
    assert b"alice@contoso.test" in reply.body and b"com.apple.mail.managed" in reply.body


# --------------------------------------------------------------------------- autodiscover


def autodiscover_body(email: str) -> bytes:
    return (
        f'<Autodiscover xmlns="{REQUEST_NS}"><Request><EMailAddress>{email}</EMailAddress>'
        f"<AcceptableResponseSchema>{OUTLOOK}</AcceptableResponseSchema></Request></Autodiscover>"
    ).encode()


@pytest.mark.parametrize(
    "path", ["/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"]
)
def test_autodiscover_post(web: InProcessService, home: Home, path: str) -> None:
    client = plain(home)
    known = client.request(
        "POST", path, autodiscover_body("alice@contoso.test"), {"Content-Type": "text/xml"}
    )
    unknown = client.request(
        "POST", path, autodiscover_body("nobody@contoso.test"), {"Content-Type": "text/xml"}
    )
    assert known.status == 200 and known.headers["Content-Type"].startswith("text/xml")
    root = ET.fromstring(known.body)
    types = [t.text for t in root.iter(f"{{{OUTLOOK}}}Type")]
    assert types == ["IMAP", "POP3", "SMTP"]
    # The same answer for an address that does not exist: nothing to probe.
    assert unknown.body.replace(b"nobody", b"alice") == known.body
    bad = client.request("GET", path)
    assert b"<ErrorCode>600</ErrorCode>" in bad.body


# --------------------------------------------------------------------------- live changes


def test_a_settings_change_shows_at_the_next_request(web: InProcessService, home: Home) -> None:
    client = plain(home)

    def ports() -> list[str]:
        root = ET.fromstring(client.get("/.well-known/autoconfig/mail/config-v1.1.xml").body)
        return [p.text or "" for p in root.iter("port")]

    before = ports()
    with store.edit(home) as session:
        session.set(
            ("Servers", "MBX01", "ImapSettings", "ExternalConnectionSettings"),
            ["imap.contoso.com:993:SSL"],
        )
    web.reload()
    after = ports()
    assert "993" in after and "993" not in before


def test_internal_networks_see_internal_settings(web: InProcessService, home: Home) -> None:
    client = https(home)
    client.sign_in("alice")
    assert 'id="scope"' not in client.get("/settings").text
    with store.edit(home) as session:
        session.set(
            ("Servers", "MBX01", "OwaVirtualDirectory", "InternalNetworks"), ["127.0.0.0/8"]
        )
    web.reload()
    page = client.get("/settings").text
    assert 'id="scope"' in page
    internal = store.load(home).settings.server("MBX01").PopSettings.InternalConnectionSettings
    ssl_entry = next(e for e in internal if e.encryption and e.encryption.value == "SSL")
    assert fields(page, "pop") == {
        "server": ssl_entry.hostname,
        "port": str(ssl_entry.port),
        "encryption": "SSL",
    }


def test_bindings_move_on_reload_without_dropping_a_kept_alive_connection(
    web: InProcessService, home: Home
) -> None:
    old = vdir(home).Bindings[0]
    keep = http.client.HTTPConnection("127.0.0.1", old.port, timeout=10)
    keep.request("GET", "/mail/config-v1.1.xml")
    keep.getresponse().read()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    new_port = sock.getsockname()[1]
    sock.close()
    with store.edit(home) as session:
        session.set(
            ("Servers", "MBX01", "OwaVirtualDirectory", "Bindings"),
            [str(IPEndPoint("127.0.0.1", new_port))],
        )
    web.reload()
    assert f"127.0.0.1:{new_port}" in web.service.status()["endpoints"]
    assert plain(home).get("/mail/config-v1.1.xml").status == 200
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", old.port), timeout=5).close()
    keep.request("GET", "/mail/config-v1.1.xml")  # the established connection still works
    assert keep.getresponse().status == 200
    keep.close()


def test_a_protocol_turned_off_for_the_mailbox_is_noted(home: Home) -> None:
    add_mailbox(home, "carol", PopEnabled=False)
    publish(home)
    with InProcessService(WEB, home):
        client = https(home)
        client.sign_in("carol")
        page = client.get("/settings").text
        pop = re.search(r'<section class="setting" id="pop".*?</section>', page, re.S)
        imap = re.search(r'<section class="setting" id="imap".*?</section>', page, re.S)
        assert pop and imap
        assert "can&#x27;t be used with your mailbox" in pop.group(0)
        assert "can&#x27;t be used" not in imap.group(0)


def test_autodiscover_with_a_dtd_in_utf16_is_a_400_not_a_500(
    web: InProcessService, home: Home
) -> None:
    client = plain(home)
    text = (
        '<?xml version="1.0" encoding="UTF-16BE"?><!DOCTYPE a [<!ENTITY e "x">]>'
        + autodiscover_body("alice@contoso.test").decode().split("?>", 1)[-1]
    )
    for codec in ("utf-16-be", "utf-16"):
        answer = client.request(
            "POST",
            "/autodiscover/autodiscover.xml",
            text.encode(codec),
            {"Content-Type": "text/xml"},
        )
        assert answer.status == 400, answer.body
        assert b"<ErrorCode>600</ErrorCode>" in answer.body and b"Traceback" not in answer.body


def _signed_in_copy(home: Home) -> tuple[Browser, Browser]:
    client = https(home)
    assert client.sign_in("alice").status == 303
    copy = https(home)
    copy.cookies = dict(client.cookies)  # the same cookie, kept elsewhere (stolen, a 2nd tab)
    assert copy.get("/settings").status == 200
    return client, copy


def test_a_signed_out_cookie_stops_working_everywhere(web: InProcessService, home: Home) -> None:
    client, copy = _signed_in_copy(home)
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/settings").text)
    assert token
    assert client.post_form("/signout", {"csrf": token.group(1)}).status == 303
    assert copy.get("/settings").headers["Location"] == "/signin"


def test_a_password_change_ends_the_sessions(web: InProcessService, home: Home) -> None:
    _, copy = _signed_in_copy(home)
    Directory(home).set_password("alice", "An0ther one!")
    assert copy.get("/settings").headers["Location"] == "/signin"
    fresh = https(home)
    assert fresh.sign_in("alice", "An0ther one!").status == 303
    assert fresh.get("/settings").status == 200


def test_the_https_redirect_ignores_the_host_header(web: InProcessService, home: Home) -> None:
    client = plain(home)
    port = vdir(home).SSLBindings[0].port
    reply = client.request("GET", "/signin?x=1", headers={"Host": "evil.example"})
    assert reply.headers["Location"] == f"https://mbx01.contoso.test:{port}/signin?x=1"
    with store.edit(home) as session:
        session.set(
            ("Servers", "MBX01", "OwaVirtualDirectory", "ExternalUrl"),
            "https://mail.contoso.com/owa",
        )
        session.set(
            ("Servers", "MBX01", "OwaVirtualDirectory", "InternalUrl"),
            "https://mbx01.corp.contoso.test:8443/owa",
        )
    web.reload()
    reply = client.request("GET", "/signin", headers={"Host": "evil.example"})
    assert reply.headers["Location"] == "https://mail.contoso.com/signin"
    with store.edit(home) as session:
        session.set(
            ("Servers", "MBX01", "OwaVirtualDirectory", "InternalNetworks"), ["127.0.0.0/8"]
        )
    web.reload()
    reply = client.request("GET", "/signin", headers={"Host": "evil.example"})
    assert reply.headers["Location"] == "https://mbx01.corp.contoso.test:8443/signin"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/owa/calendar/alice/1/2", "/owa/calendar/alice/1/2"),
        ("/settings?x=1", "/settings?x=1"),
        ("//evil.example/x", "/settings"),
        ("/\\evil.example", "/settings"),
        ("https://evil.example/", "/settings"),
        ("javascript:alert(1)", "/settings"),
        ("/ok\r\nSet-Cookie: x=y", "/settings"),
    ],
)
def test_sign_in_goes_back_to_a_local_target_only(
    web: InProcessService, home: Home, given: str, expected: str
) -> None:
    client = https(home)
    page = client.get("/signin?next=" + urllib.parse.quote(given, safe="")).text
    assert f'name="next" value="{html.escape(expected, quote=True)}"' in page
    reply = client.post_form("/signin", {"username": "alice", "password": PASSWORD, "next": given})
    assert reply.status == 303 and reply.headers["Location"] == expected
    # Signed in already: the link goes straight through.
    assert (
        client.get("/signin?next=" + urllib.parse.quote(given, safe="")).headers["Location"]
        == expected
    )
