"""An organization on more than one host: Setup /PrepareAD and Setup /Mode:Install
/Role:Mailbox, in Exchange's own spelling and as prepare-organization / join-organization.

Exchange's setup prepares Active Directory once for the organization (/PrepareAD) and then
installs each further mailbox server (/Mode:Install /Role:Mailbox), which reads the
organization's configuration from the directory. Here /PrepareAD puts this host's
settings.toml and the secrets a new host needs into the directory (server.directory.
orgconfig); /Mode:Install on a new host reads them back with an admin's bind, adds the
server to the organization, gives it its own certificate from the organization's CA and
starts its services. The admin's password is read from stdin, never from the command line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from mailctl.cli import (
    OutputOpt,
    command,
    edit_settings,
    emit,
    fail,
    home,
    load_settings,
    local_server,
)

PasswordStdin = Annotated[
    bool,
    typer.Option("--password-stdin", help="Read the admin's password from stdin (one line)."),
]
AdminDn = Annotated[
    str,
    typer.Option("--admin-dn", help="An admin of the organization in the directory (bind DN)."),
]


def _password(from_stdin: bool) -> str:
    if not from_stdin:
        fail("give the admin's password on stdin with --password-stdin (/PasswordStdin)")
    value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        fail("the admin's password on stdin is empty")
    return value


def _shared_error(exc: Exception) -> NoReturn:
    fail(getattr(exc, "message", None) or str(exc), code=1)


def _start_everything(where: Any) -> list[str]:
    from server.control import services as control

    try:
        return [f"{info.Name} ({info.Server})" for info in control.start_all(where)]
    except control.ControlError as exc:
        fail(str(exc), code=1)


def _check_back_end_certificates(session: Any, server: str) -> None:
    """EnforceCertificateErrors on: with back ends on other hosts, the front end checks their
    certificate against the organization's CA and their Fqdn (docs/security.md, "Threat: the
    network between hosts"); every server has one from that CA."""
    for kind in ("ImapSettings", "PopSettings"):
        session.set(("Servers", server, kind, "EnforceCertificateErrors"), True)


@command("Prepare-Organization")
def prepare_organization(
    admin_dn: AdminDn,
    password_stdin: PasswordStdin = False,
    configuration_dn: Annotated[
        str | None,
        typer.Option(
            "--configuration-dn",
            help="Where the organization's entries go (default: ou=mailctl beside BaseDN).",
        ),
    ] = None,
    backend_address: Annotated[
        str | None,
        typer.Option(
            "--backend-address",
            help="This server's BackEndAddress: an address the other hosts can reach.",
        ),
    ] = None,
    organization_name: Annotated[
        str | None,
        typer.Option("--organization-name", help="The organization's name (Organization.Name)."),
    ] = None,
) -> None:
    """Keep this organization's settings in the directory, so more hosts can join it
    (Exchange: Setup /PrepareAD). Run once, on the first host, after set-adserversettings."""
    from server.directory import proxy_secret
    from server.directory.orgconfig import OrgSettings, default_container
    from server.runtime import tls
    from server.settings import host, shared
    from server.settings.names import TOPOLOGY
    from server.settings.store import atomic_write

    where = home()
    settings = load_settings()
    directory = settings.Directory
    if directory is None or not directory.ldap():
        fail(
            "the mailboxes are not in a directory yet: point the organization at one first "
            "(mailctl set-adserversettings --uri ... --base-dn ... --bind-dn ... "
            "--bind-password-stdin)"
        )
    if host.load(where.root) is not None:
        fail(f"{host.host_file(where.root)} exists: this host is part of an organization already")
    password = _password(password_stdin)
    server = local_server(settings)[0]
    with edit_settings() as session:
        session.set(("Servers", server, "Services", TOPOLOGY), "Automatic")
        for name in settings.Servers:
            _check_back_end_certificates(session, name)
        if backend_address:
            session.set(("Servers", server, "BackEndAddress"), backend_address)
        if organization_name:
            session.set(("Organization", "Name"), organization_name)
    text = where.settings_file.read_text("utf-8")
    if not directory.BindPasswordFile:
        fail("[Directory] has no BindPasswordFile: the other hosts' services need one")
    bind_file = Path(directory.BindPasswordFile)
    bind_file = bind_file if bind_file.is_absolute() else where.root / bind_file
    ca_cert, ca_key = tls.ca_paths(where)
    tls.ensure_ca(where)
    secrets = json.dumps(
        {
            "ProxySecret": proxy_secret(where),
            "CaCertificate": ca_cert.read_text(),
            "CaKey": ca_key.read_text(),
            "ServiceAccountPassword": bind_file.read_text().rstrip("\r\n"),
        }
    ).encode()
    container = configuration_dn or default_container(directory.BaseDN)
    org = OrgSettings(
        directory, where.root, f"cn=settings,{container}", bind_dn=admin_dn, password=password
    )
    try:
        org.prepare(text, secrets)
    except shared.SharedSettingsError as exc:
        _shared_error(exc)
    finally:
        org.close()
    atomic_write(
        host.host_file(where.root),
        host.dump(host.HostConfig(server, org.settings_dn)).encode(),
        mode=0o600,
    )
    shared.write_version(where.root, 1)
    print(f"The organization's settings are now kept in {org.settings_dn}.")
    print(f"This host is {server}. Secrets for new hosts: {org.secrets_dn} (admins only).")
    if any(where.run.glob("*.pid")):
        _start_everything(where)
        print(f"Started {TOPOLOGY}.")
    print(
        "Join another host with: mailctl setup /Mode:Install /Role:Mailbox "
        f"/DomainController:{directory.Uri} /AdminDN:{admin_dn} /ConfigurationDN:{container} "
        "/Server:<name> "
        "/BackEndAddress:<its address> /PasswordStdin"
    )


@command("Join-Organization")
def join_organization(
    directory_uri: Annotated[
        str, typer.Option("--directory-uri", help="ldap://host:port of the directory.")
    ],
    admin_dn: AdminDn,
    server: Annotated[str, typer.Option("--server", help="This new server's name, e.g. MBX02.")],
    backend_address: Annotated[
        str,
        typer.Option("--backend-address", help="Where the other hosts reach this one's back ends."),
    ],
    password_stdin: PasswordStdin = False,
    configuration_dn: Annotated[
        str | None,
        typer.Option("--configuration-dn", help="Given to prepare-organization, if not default."),
    ] = None,
    fqdn: Annotated[
        str | None, typer.Option("--fqdn", help="Its FQDN (default: name.domain).")
    ] = None,
    base_port: Annotated[
        int | None,
        typer.Option("--base-port", help="Shift every port by this much (default: Exchange's)."),
    ] = None,
    tls_ca_file: Annotated[
        str | None, typer.Option("--tls-ca-file", help="CA certificates (PEM) for ldaps://.")
    ] = None,
    start: Annotated[
        bool, typer.Option("--start/--no-start", help="Start its services at the end.")
    ] = True,
) -> None:
    """Make this host a new mailbox server of an organization kept in the directory
    (Exchange: Setup /Mode:Install /Role:Mailbox): settings, CA and its own certificate,
    proxy secret, service account; IMAP4 and POP3 enabled and every service started."""
    from server.directory.orgconfig import OrgSettings
    from server.runtime import tls
    from server.settings import host, shared, store
    from server.settings.models import (
        IMAP4,
        IMAP4BE,
        POP3,
        POP3BE,
        DirectorySettings,
        PortPlan,
        default_connectors,
        default_server,
    )
    from server.settings.names import TOPOLOGY
    from server.settings.store import atomic_write

    where = home()
    existing = host.load(where.root)
    if where.settings_file.exists() and existing is None:
        fail(
            f"{where.settings_file} exists: this home is a one-host install; join from a new "
            "home folder (--home)"
        )
    password = _password(password_stdin)
    try:
        probe = DirectorySettings(Uri=directory_uri, BaseDN="-", TlsCaFile=tls_ca_file)
    except ValueError as exc:
        fail(f"--directory-uri: {exc}")
    dn = existing.settings_dn if existing else None
    if dn is None and configuration_dn:
        dn = f"cn=settings,{configuration_dn}"
    if dn is None:
        fail("give --configuration-dn (/ConfigurationDN): the organization's container")
    org = OrgSettings(probe, where.root, dn, bind_dn=admin_dn, password=password)
    try:
        text, version = org.read()
        secrets = json.loads(org.read_secrets())
    except shared.SharedSettingsError as exc:
        _shared_error(exc)
    finally:
        org.close()
    settings = store.parse(text)
    directory = settings.Directory
    assert directory is not None  # prepare-organization needs it
    where.create_folders()
    ca_cert, ca_key = tls.ca_paths(where)
    atomic_write(ca_key, secrets["CaKey"].encode(), mode=0o600)
    atomic_write(ca_cert, secrets["CaCertificate"].encode())
    atomic_write(where.secrets / "proxy-secret", secrets["ProxySecret"].encode(), mode=0o600)
    bind_file = Path(directory.BindPasswordFile or "secrets/ldap-bind-password")
    bind_file = bind_file if bind_file.is_absolute() else where.root / bind_file
    atomic_write(bind_file, secrets["ServiceAccountPassword"].encode(), mode=0o600)
    if not where.settings_file.exists():
        atomic_write(where.settings_file, text.encode("utf-8"))
        shared.write_version(where.root, version)
    atomic_write(
        host.host_file(where.root), host.dump(host.HostConfig(server, dn)).encode(), mode=0o600
    )
    domain = settings.Organization.Domain
    name_fqdn = fqdn or f"{server.lower()}.{domain}"
    if base_port is None:
        ports = PortPlan(backend_address=backend_address, bind_address="0.0.0.0")
    else:
        ports = PortPlan.shifted(base_port, backend_address=backend_address, bind_address="0.0.0.0")
    with edit_settings() as session:
        current = store.parse(session.text)
        if server not in current.Servers:
            new = default_server(server, name_fqdn, ports).model_dump(mode="json")
            session.set(("Servers", server), new)
            for cname, conn in default_connectors(server, name_fqdn, ports).items():
                session.set(("ReceiveConnectors", cname), conn.model_dump(mode="json"))
        for service in (TOPOLOGY, IMAP4BE, IMAP4, POP3BE, POP3):
            session.set(("Servers", server, "Services", service), "Automatic")
        _check_back_end_certificates(session, server)
    fqdn_now = store.load(where).settings.Servers[server].Fqdn
    if tls.select_certificate(where, "IMAP", fqdn_now, strict=True) is None:
        tls.new_certificate(where, fqdn_now, [fqdn_now, backend_address], list(tls.SERVICE_KINDS))
    print(f"Joined {server} ({fqdn_now}) to the organization kept in {dn}.")
    if start:
        started = _start_everything(where)
        print(f"Started: {', '.join(started) or 'nothing'}.")


SETUP_HELP = (
    "Exchange's setup switches: /PrepareAD (prepare-organization) or /Mode:Install "
    "/Role:Mailbox (join-organization), with /DomainController: (ldap://host:port), "
    "/AdminDN:, /ConfigurationDN:, /Server:, /BackEndAddress:, /Fqdn:, /BasePort:, /TlsCaFile:, "
    "/PasswordStdin, /NoStart. /IAcceptExchangeServerLicenseTerms* is accepted and ignored."
)


def _switches(words: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for word in words:
        if not word.startswith("/"):
            fail(f"setup: {word!r} is not a /Switch", allowed=SETUP_HELP)
        name, _, value = word[1:].partition(":")
        key = name.lower()
        if key.startswith("iacceptexchangeserverlicenseterms"):
            continue
        out[key] = value.strip('"')
    return out


@command("Setup")
def setup(
    switches: Annotated[list[str] | None, typer.Argument(help=SETUP_HELP)] = None,
) -> None:
    """Exchange's Setup for an organization on several hosts: `setup /PrepareAD ...` on the
    first host, `setup /Mode:Install /Role:Mailbox ...` on each new one."""
    given = _switches(switches or [])
    known = {
        "preparead", "mode", "role", "domaincontroller", "admindn", "configurationdn", "server",
        "backendaddress", "fqdn", "baseport", "passwordstdin", "nostart", "organizationname",
        "tlscafile",
    }  # fmt: skip
    unknown = [k for k in given if k not in known]
    if unknown:
        fail(f"setup: unknown switch /{unknown[0]}", allowed=SETUP_HELP)
    if not given.get("admindn"):
        fail("setup: /AdminDN: is needed (an admin of the organization in the directory)")
    if "preparead" in given:
        prepare_organization(
            admin_dn=given["admindn"],
            password_stdin="passwordstdin" in given,
            configuration_dn=given.get("configurationdn") or None,
            backend_address=given.get("backendaddress") or None,
            organization_name=given.get("organizationname") or None,
        )
        return
    if given.get("mode", "").lower() != "install" or given.get("role", "").lower() not in (
        "mailbox",
        "mb",
    ):
        fail("setup: give /PrepareAD, or /Mode:Install /Role:Mailbox", allowed=SETUP_HELP)
    for needed in ("domaincontroller", "server", "backendaddress"):
        if not given.get(needed):
            fail(f"setup /Mode:Install: /{needed} is needed", allowed=SETUP_HELP)
    uri = given["domaincontroller"]
    if "://" not in uri:
        uri = f"ldap://{uri}"
    base_port = given.get("baseport")
    if base_port is not None and not base_port.isdigit():
        fail(f"setup: /BasePort:{base_port} is not a number")
    join_organization(
        directory_uri=uri,
        admin_dn=given["admindn"],
        server=given["server"],
        backend_address=given["backendaddress"],
        password_stdin="passwordstdin" in given,
        configuration_dn=given.get("configurationdn") or None,
        fqdn=given.get("fqdn") or None,
        base_port=int(base_port) if base_port else None,
        tls_ca_file=given.get("tlscafile") or None,
        start="nostart" not in given,
    )


@command("Get-OrganizationConfig", read=True)
def get_organizationconfig(output: OutputOpt = "table") -> None:
    """Where this host's settings come from: the organization's document in the directory
    and its version (several hosts), or this home alone."""
    from mailctl.orgview import organization_row

    emit(organization_row(load_settings().model_dump(mode="json"), home()), output)
