"""Cmdlets the reference mentions that only mean something on Windows: they fail with a clear
"not supported here" (exit 2) and what to do instead, rather than "unknown command"."""

from __future__ import annotations

from mailctl.cli import unsupported

unsupported(
    "Get-ServerComponentState",
    "there are no server components here; see a service's state with `mailctl get-service`",
)
unsupported(
    "Set-ServerComponentState",
    "there are no server components here; start or stop the service with "
    "`mailctl start-service` / `mailctl stop-service`",
)
unsupported(
    "iisreset",
    "there is no IIS; the web service reloads settings by itself "
    "(or `mailctl restart-service W3SVC`)",
)
unsupported("net", "use `mailctl start-service NAME` / `mailctl stop-service NAME`")
unsupported(
    "New-TestCasConnectivityUser",
    "create a mailbox with `mailctl new-mailbox` and pass it to Test-PopConnectivity / "
    "Test-ImapConnectivity with -MailboxCredential",
)
unsupported("Get-Credential", "give the mailbox name and password to the command instead")
