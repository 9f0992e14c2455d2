"""Get-/Set-PopSettings and Get-/Set-ImapSettings: every parameter of the reference,
options generated from the pydantic models so none can be missing."""

from __future__ import annotations

from typing import Any

from mailctl.cli import (
    OutputOpt,
    ServerOpt,
    WhatIfOpt,
    command,
    edit_settings,
    emit,
    fail,
    home,
    is_windows_only,
    load_settings,
    local_server,
    model_options,
    report_changes,
    require_values,
    update_fields,
)
from mailctl.views import PROTOCOLS, protocol_settings
from server.settings.models import ImapSettings, PopSettings

MODELS: dict[str, type[PopSettings] | type[ImapSettings]] = {
    "pop": PopSettings,
    "imap": ImapSettings,
}


def windows_only_notes(model: type[Any]) -> dict[str, str]:
    return {f: "no effect here" for f in model.model_fields if is_windows_only(model, f)}


def show(protocol: str, server: str | None, output: str) -> None:
    settings = load_settings()
    key, _ = local_server(settings, server)
    data = protocol_settings(settings.model_dump(mode="json"), key, protocol)
    title = f"{PROTOCOLS[protocol]} of {key}"
    emit(data, output, notes=windows_only_notes(MODELS[protocol]), title=title)


def change(protocol: str, server: str | None, values: dict[str, Any], what_if: bool) -> None:
    model = MODELS[protocol]
    cmdlet = f"Set-{PROTOCOLS[protocol]}"
    require_values(values, cmdlet)
    with edit_settings(what_if) as session:
        settings = session.validate()
        key, srv = local_server(settings, server)
        current = getattr(srv, PROTOCOLS[protocol])
        check_certificate_name(protocol, values.get("X509CertificateName"), srv.Fqdn)
        changes = update_fields(
            session, ("Servers", key, PROTOCOLS[protocol]), model, current, values, cmdlet
        )
    report_changes(f"{PROTOCOLS[protocol]} of {key}", changes, what_if)


def check_certificate_name(protocol: str, name: Any, fqdn: str) -> None:
    """X509CertificateName must name a certificate (the server's own Fqdn is made on
    demand): otherwise the front end could not start with it (tls.certificate_for)."""
    if not isinstance(name, str) or not name or name.lower() == fqdn.lower():
        return
    from server.runtime import tls

    if tls.select_certificate(home(), protocol.upper(), name, strict=True) is None:
        fail(
            f"no certificate carries the name {name}",
            allowed=f"a name from Get-ExchangeCertificate, or {fqdn}; "
            f"or first New-ExchangeCertificate -DomainName {name}",
        )


@command("Get-PopSettings", read=True)
def get_popsettings(server: ServerOpt = None, output: OutputOpt = "table") -> None:
    """Show the POP3 settings of a server (every Set-PopSettings parameter)."""
    show("pop", server, output)


@command("Get-ImapSettings", read=True)
def get_imapsettings(server: ServerOpt = None, output: OutputOpt = "table") -> None:
    """Show the IMAP4 settings of a server (every Set-ImapSettings parameter)."""
    show("imap", server, output)


@command("Set-PopSettings", params=model_options(PopSettings))
def set_popsettings(
    server: ServerOpt = None, what_if: WhatIfOpt = False, values: dict[str, Any] | None = None
) -> None:
    """Change POP3 settings of a server; values are checked before anything is written."""
    change("pop", server, values or {}, what_if)


@command("Set-ImapSettings", params=model_options(ImapSettings))
def set_imapsettings(
    server: ServerOpt = None, what_if: WhatIfOpt = False, values: dict[str, Any] | None = None
) -> None:
    """Change IMAP4 settings of a server; values are checked before anything is written."""
    change("imap", server, values or {}, what_if)
