"""The settings page in a real headless browser (Debian's chromium), driven through
chromedriver's W3C WebDriver HTTP API with the standard library - no selenium needed.

The admin publishes settings with the Exchange-spelling commands, W3SVC runs as a real
process started by `mailctl start-service`, the browser signs in and reads the page; then
a change made with mailctl shows at the next request, with no restart.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.runtime.main import query_control
from server.settings import store
from server.settings.models import WEB

from .conftest import ServiceRunner

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C WebDriver element key
PASSWORD = "Brows3r pass!"


class WebDriver:
    """Just the WebDriver commands the test needs (W3C WebDriver, section by section)."""

    def __init__(self, port: int, profile: Path) -> None:
        self.base = f"http://127.0.0.1:{port}"
        caps = {
            "browserName": "chrome",
            "acceptInsecureCerts": True,  # the service's certificate is from its private CA
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    f"--user-data-dir={profile}",
                    "--window-size=390,844",  # a phone-sized viewport
                ],
            },
        }
        reply = self.call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})
        self.session = f"/session/{reply['sessionId']}"
        # Element look-ups wait (up to 10 s) for the page a click navigated to.
        self.call("POST", f"{self.session}/timeouts", {"implicit": 10_000, "pageLoad": 30_000})

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body if body is not None else {}).encode() if method == "POST" else None
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"WebDriver {method} {path}: {exc.read()[:500]!r}") from None

    def go(self, url: str) -> None:
        self.call("POST", f"{self.session}/url", {"url": url})

    def find(self, css: str) -> str:
        found = self.call(
            "POST", f"{self.session}/element", {"using": "css selector", "value": css}
        )
        return found[ELEMENT]

    def type(self, css: str, text: str) -> None:
        self.call("POST", f"{self.session}/element/{self.find(css)}/value", {"text": text})

    def click(self, css: str) -> None:
        self.call("POST", f"{self.session}/element/{self.find(css)}/click", {})

    def text(self, css: str) -> str:
        return self.call("GET", f"{self.session}/element/{self.find(css)}/text")

    def script(self, source: str) -> Any:
        return self.call("POST", f"{self.session}/execute/sync", {"script": source, "args": []})

    @property
    def url(self) -> str:
        return self.call("GET", f"{self.session}/url")

    @property
    def title(self) -> str:
        return self.call("GET", f"{self.session}/title")

    def quit(self) -> None:
        self.call("DELETE", self.session)


def _port_free_on_both_families() -> int:
    """chromedriver listens on 127.0.0.1 and ::1 and exits when either is taken."""
    while True:
        six = socket.socket(socket.AF_INET6)
        six.bind(("::1", 0))
        port = six.getsockname()[1]
        four = socket.socket()
        try:
            four.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            four.close()
            six.close()


def start_chromedriver() -> tuple[subprocess.Popen[str], int]:
    """chromedriver on a free port; its readiness signal is the "started successfully" line.
    A port taken between our probe and its bind makes it exit: try another port."""
    output: list[str] = []
    for _ in range(5):
        port = _port_free_on_both_families()
        proc = subprocess.Popen(
            [CHROMEDRIVER, f"--port={port}", "--allowed-ips=127.0.0.1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if "started successfully" in line:
                return proc, port
        proc.wait(timeout=10)
    pytest.fail("chromedriver exited before it was ready: " + "".join(output)[-2000:])


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip(
            "chromium and chromium-driver are not installed "
            "(apt-get install chromium chromium-driver; .ci/run does it)"
        )
    driver_proc, port = start_chromedriver()
    try:
        driver = WebDriver(port, tmp_path / "chromium-profile")
        try:
            yield driver
        finally:
            driver.quit()
    finally:
        driver_proc.terminate()
        driver_proc.wait(timeout=10)


def wait_reloaded(runner: ServiceRunner) -> None:
    """Until the running W3SVC reports the settings version now on disk."""
    want = store.load(runner.home).version
    deadline = time.monotonic() + 10
    while (query_control(runner.home, WEB, "MBX01") or {}).get("SettingsVersion") != want:
        assert time.monotonic() < deadline, "W3SVC did not pick up the change"
        time.sleep(0.02)


def block(driver: WebDriver, section: str) -> dict[str, str]:
    return driver.script(
        f"return Object.fromEntries(Array.from(document.querySelectorAll("
        f"'#{section} [data-field]')).map(e => [e.dataset.field, e.textContent.trim()]));"
    )


def test_the_settings_page_in_a_real_browser(services: ServiceRunner, browser: WebDriver) -> None:
    runner = services
    runner.run_ok(
        "Set-PopSettings",
        "-ExternalConnectionSettings",
        "{mail.contoso.com:995:SSL,mail.contoso.com:110:TLS}",
    )
    runner.run_ok(
        "Set-ReceiveConnector",
        "Client Frontend MBX01",
        "-AdvertiseClientSettings",
        "$True",
        "-Fqdn",
        "mail.contoso.com",
    )
    runner.run_ok(
        "New-Mailbox",
        "alice",
        "-DisplayName",
        "Alice Liddell",
        "-PasswordStdin",
        stdin=PASSWORD + "\n",
    )
    # The HTTPS redirect goes to the configured URL (never the request's Host header).
    ssl_port = runner.settings.server("MBX01").OwaVirtualDirectory.SSLBindings[0].port
    with store.edit(runner.home) as session:
        session.set(
            ("Servers", "MBX01", "OwaVirtualDirectory", "ExternalUrl"),
            f"https://127.0.0.1:{ssl_port}/owa",
        )
    runner.start(WEB)
    vdir = runner.settings.server("MBX01").OwaVirtualDirectory
    smtp_port = runner.settings.ReceiveConnectors["Client Frontend MBX01"].Bindings[0].port

    # Plain HTTP sends the browser to HTTPS before anything is typed.
    browser.go(f"http://127.0.0.1:{vdir.Bindings[0].port}/")
    assert browser.url.startswith(f"https://127.0.0.1:{vdir.SSLBindings[0].port}/signin")
    assert browser.title == "Sign in"

    browser.type("#username", "alice@contoso.test")
    browser.type("#password", "not the password")
    browser.click("button[type=submit]")
    assert "isn't correct" in browser.text("#signin-error")

    browser.type("#password", PASSWORD)
    browser.click("button[type=submit]")
    # The server slows the attempt after a failure: wait for the next page's content.
    assert "Alice Liddell" in browser.text("#signed-in-as")
    assert browser.url.endswith("/settings")
    assert browser.text("h1") == "Settings for POP or IMAP access"
    assert browser.text("#pop h2") == "POP setting"
    assert block(browser, "pop") == {
        "server": "mail.contoso.com",
        "port": "995",
        "encryption": "SSL",
    }
    assert block(browser, "imap") == {"empty": "Not published by your administrator."}
    assert block(browser, "smtp") == {
        "server": "mail.contoso.com",
        "port": str(smtp_port),
        "encryption": "TLS",
    }
    # The session cookie is invisible to scripts (HttpOnly); the page fits a phone's width.
    assert browser.script("return document.cookie;") == ""
    assert (
        browser.script("return document.documentElement.scrollWidth <= window.innerWidth;") is True
    )
    labels = browser.script("return getComputedStyle(document.querySelector('dt')).color;")
    assert labels.startswith("rgb")

    # A change made with mailctl shows at the next request: no "iisreset".
    runner.run_ok("Set-ImapSettings", "-ExternalConnectionSettings", "imap.contoso.com:993:SSL")
    wait_reloaded(runner)
    browser.go(browser.url)
    assert block(browser, "imap") == {
        "server": "imap.contoso.com",
        "port": "993",
        "encryption": "SSL",
    }

    browser.click(".signout button")
    browser.find("#username")
    assert browser.url.endswith("/signin")
