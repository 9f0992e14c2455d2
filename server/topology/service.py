"""MSExchangeADTopology: brings the organization's settings to this host.

Exchange's Active Directory Topology service is what every Exchange server runs to read the
organization's configuration from Active Directory for its other services. Here it is the
one service of a host that talks to the organization's settings document in the directory
(server.directory.orgconfig): it asks for the document's version every POLL_INTERVAL, and
when the directory has a newer one it writes it to settings.toml (atomically, under the
settings lock), where every other service of the host picks it up through its usual watch
(server/runtime/reload.py). A change made on any host is therefore in force on this one
within POLL_INTERVAL plus a reload.

Polling, not a persistent search: OpenLDAP offers only syncrepl (RFC 4533) for that, Active
Directory only its own change notification control, and ldap3 speaks neither; one base-scope
read of one integer per interval costs the directory next to nothing.

While the directory cannot be reached the host keeps its last copy and the service keeps
asking; get-service shows the last error. It is Manual on a one-host install (nothing to
copy) and Automatic on the servers of an organization that spans hosts.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from server.runtime.service import Service, ServiceContext
from server.settings import host, shared, store
from server.settings.models import Settings

POLL_INTERVAL = 0.5  # seconds; a change is in force everywhere within about this


class TopologyService(Service):
    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        self._task: asyncio.Task[None] | None = None
        self._remote: Any = None
        self._directory: Any = None
        self.version = 0
        self.last_sync: float | None = None
        self.last_error: str | None = None
        self.copies = 0

    async def start(self) -> None:
        config = host.load(self.ctx.home.root)
        if config is None:
            raise RuntimeError(
                "this host has joined no organization (no host.toml): MSExchangeADTopology "
                "has nothing to copy; join one with mailctl setup /Mode:Install /Role:Mailbox"
            )
        self._settings_dn = config.settings_dn
        self._connect(self.ctx.settings)
        self.version = shared.read_version(self.ctx.home.root)
        self._task = asyncio.get_running_loop().create_task(self._poll())

    def _connect(self, settings: Settings) -> None:
        from server.directory.orgconfig import OrgSettings

        directory = settings.Directory
        if directory is None or not directory.ldap():
            raise RuntimeError("settings.toml has no [Directory] Uri: nothing to copy from")
        if directory == self._directory:
            return
        if self._remote is not None:
            self._remote.close()
        self._remote = OrgSettings(directory, self.ctx.home.root, self._settings_dn)
        self._directory = directory

    async def reload(self, old: Settings, new: Settings) -> None:
        try:
            self._connect(new)
        except RuntimeError as exc:
            self.last_error = str(exc)

    async def stop(self, grace: float) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._remote is not None:
            await asyncio.to_thread(self._remote.close)

    def status(self) -> dict[str, Any]:
        return {
            "connections": 0,
            "endpoints": [],
            "OrganizationVersion": self.version,
            "LastCopy": (
                time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.last_sync))
                if self.last_sync
                else None
            ),
            "LastError": self.last_error,
        }

    async def _poll(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.sync_once)
                if self.last_error is not None:
                    self.ctx.log.info("the organization's settings can be read again")
                self.last_error = None
            except (shared.SharedSettingsError, store.SettingsError) as exc:
                message = getattr(exc, "message", None) or str(exc)
                if message != self.last_error:
                    self.ctx.log.warning("%s", message)
                self.last_error = message
            await asyncio.sleep(POLL_INTERVAL)

    def sync_once(self) -> bool:
        """Copy the organization's document here if it is newer; whether it was."""
        remote = self._remote
        if remote.version() <= self.version:
            return False
        text, version = remote.read()
        store.parse(text)  # the writers validated it; never put a broken file in force
        root = self.ctx.home.root
        with store.locked(self.ctx.home):
            # mailctl on this host may have published (and written) a newer one meanwhile.
            if shared.read_version(root) >= version:
                self.version = max(self.version, shared.read_version(root))
                return False
            current = self.ctx.home.settings_file.read_bytes()
            if current != text.encode("utf-8"):
                store.atomic_write(self.ctx.home.settings_file, text.encode("utf-8"))
            shared.write_version(root, version)
        self.version = version
        self.last_sync = time.time()
        self.copies += 1
        return True
