"""Certificates apply live: the watch on certs/certificates.json and the runtime calling
Service.reload_certificates (in-process, no sockets)."""

from __future__ import annotations

import asyncio
import shutil

from server.runtime.main import Runtime
from server.runtime.reload import SettingsWatcher, is_certificate_index, is_relevant
from server.runtime.service import Service
from server.settings import store
from server.settings.models import IMAP4, Settings
from server.settings.paths import Home

COUNTER = f"{__name__}:CertificateCounter"


class CertificateCounter(Service):
    async def start(self) -> None:
        self.reloads = 0
        self.certificate_reloads = 0

    async def reload(self, old: Settings, new: Settings) -> None:
        self.reloads += 1

    async def reload_certificates(self) -> None:
        self.certificate_reloads += 1

    async def stop(self, grace: float) -> None:
        pass


def index(home: Home) -> None:
    home.certs.mkdir(parents=True, exist_ok=True)
    store.atomic_write(home.certs / "certificates.json", b"{}")


def test_certificate_index_is_its_own_event(home: Home) -> None:
    assert is_certificate_index(home, home.certs / "certificates.json")
    assert not is_relevant(home, home.certs / "certificates.json")
    assert not is_certificate_index(home, home.certs / "ABC.pem")

    async def scenario() -> int:
        shutil.rmtree(home.certs, ignore_errors=True)  # made after the watch starts
        settings_changes = 0
        certificates = asyncio.Event()

        def on_settings() -> None:
            nonlocal settings_changes
            settings_changes += 1

        watcher = SettingsWatcher(home, on_settings, certificates.set)
        await watcher.start()
        index(home)  # folder and index at once: the new folder is watched and counts
        await asyncio.wait_for(certificates.wait(), 5)
        certificates.clear()
        index(home)
        await asyncio.wait_for(certificates.wait(), 5)
        watcher.close()
        return settings_changes

    assert asyncio.run(scenario()) == 0


def test_runtime_asks_the_service_to_reload_certificates(home: Home) -> None:
    async def scenario() -> None:
        runtime = Runtime(IMAP4, "MBX01", home, COUNTER)
        await runtime.start()
        service = runtime.service
        assert isinstance(service, CertificateCounter)
        await runtime.reload()  # the one start() asked for, once the watch was up
        baseline = service.certificate_reloads
        assert service.reloads == 0

        runtime.request_certificate_reload()
        await runtime.reload()
        assert service.certificate_reloads == baseline + 1
        assert service.reloads == 0  # settings unchanged: the service is not bothered

        await runtime.reload()  # a settings-only reload does not touch certificates
        assert service.certificate_reloads == baseline + 1
        await runtime.stop(0)

    asyncio.run(scenario())


def test_a_service_without_tls_needs_nothing(home: Home) -> None:
    class Plain(Service):
        async def start(self) -> None: ...
        async def reload(self, old: Settings, new: Settings) -> None: ...
        async def stop(self, grace: float) -> None: ...

    from server.runtime.service import ServiceContext

    snap = store.load(home)
    service = Plain(ServiceContext(IMAP4, "MBX01", home, snap.settings, snap.version))
    assert asyncio.run(service.reload_certificates()) is None
