"""Test-ImapConnectivity / Test-PopConnectivity: a real client logon through the front end
(and, without -LightMode, a message sent through client submission and read back), printed
in Exchange's columns; the exit status is 1 when any scenario did not succeed, so monitoring
scripts can use it. The work is done by server.control.connectivity."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated

import typer

from mailctl.cli import (
    EXCHANGE_NAMES,
    OutputOpt,
    command,
    emit,
    fail,
    home,
    load_settings,
    local_server,
)

# kebab-case loses the capitals of "SSL"; docs and completions show Exchange's spelling.
EXCHANGE_NAMES["--trust-any-ssl-certificate"] = "TrustAnySSLCertificate"

CasOpt = Annotated[
    str | None,
    typer.Option(
        "--client-access-server",
        help="The server whose front end is tested (default: the local server).",
    ),
]
ConnectionTypeOpt = Annotated[
    str,
    typer.Option(
        "--connection-type",
        help="Ssl (implicit TLS port, default), Tls (STARTTLS/"
        "STLS on the plain port) or Plaintext (no TLS: fails under SecureLogin).",
        metavar="Plaintext|Ssl|Tls",
    ),
]
PortOpt = Annotated[
    int | None,
    typer.Option(
        "--port-client-access-server",
        help="Port to connect to instead of the binding's.",
        min=1,
        max=65535,
    ),
]
LightOpt = Annotated[
    bool, typer.Option("--light-mode", help="Only log on; send and read back no message.")
]
TrustOpt = Annotated[
    bool,
    typer.Option(
        "--trust-any-ssl-certificate",
        help="Accept any certificate (self-signed, wrong name, expired).",
    ),
]
CredentialOpt = Annotated[
    str | None,
    typer.Option(
        "--mailbox-credential",
        help="The mailbox to log on as; its password is read "
        "from the first line of stdin (or asked for in a terminal).",
    ),
]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", help="Seconds the whole test may take.", min=1, max=3600)
]
PerConnectionOpt = Annotated[
    float | None,
    typer.Option(
        "--per-connection-timeout",
        help="Seconds each connection may take (0 to 120; 0 or none: only -Timeout applies).",
        min=0,
        max=120,
    ),
]
MailboxServerOpt = Annotated[
    str | None,
    typer.Option(
        "--mailbox-server",
        help="The server that must hold the mailbox tested "
        "(name or FQDN); the test fails at once when it does not.",
    ),
]
ResetOpt = Annotated[
    bool,
    typer.Option(
        "--reset-test-account-credentials",
        help="Accepted for scripts; mailctl has "
        "no test account to reset (-MailboxCredential names the mailbox).",
    ),
]


def read_secret(user: str) -> str:
    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass(f"Password for {user}: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        fail("no password: give it on the first line of stdin")
    return password


def run_test(
    protocol: str,
    client_access_server: str | None,
    connection_type: str,
    port: int | None,
    light_mode: bool,
    trust_any: bool,
    credential: str | None,
    timeout: float,
    output: str,
    per_connection_timeout: float | None = None,
    mailbox_server: str | None = None,
) -> None:
    from server.control.connectivity import COLUMNS, ConnectionType, Probe, test_connectivity

    try:
        kind = ConnectionType.parse(connection_type)
    except ValueError as exc:
        fail(str(exc))
    if not credential:
        fail("give the mailbox to test with -MailboxCredential (its password on stdin)")
    settings = load_settings()
    server, _ = local_server(settings, client_access_server)
    if mailbox_server is not None:
        wanted, _ = local_server(settings, mailbox_server)
        found = settings.mailbox(credential)
        if found is not None and found[1].Server.lower() != wanted.lower():
            fail(f"mailbox {found[0]} is on {found[1].Server}, not on -MailboxServer {wanted}")
    probe = Probe(
        protocol=protocol,
        server=server,
        user=credential,
        password=read_secret(credential),
        connection_type=kind,
        port=port,
        light_mode=light_mode,
        trust_any_certificate=trust_any,
        timeout=timeout,
        per_connection_timeout=per_connection_timeout or None,
    )
    results = test_connectivity(home(), settings, probe)
    emit([r.row() for r in results], output, columns=COLUMNS)
    if any(r.Result != "Success" for r in results):
        raise typer.Exit(1)


def connectivity_command(protocol: str) -> Callable[..., None]:
    """Test-ImapConnectivity and Test-PopConnectivity: one set of options, two protocols."""

    def test(
        client_access_server: CasOpt = None,
        connection_type: ConnectionTypeOpt = "Ssl",
        port_client_access_server: PortOpt = None,
        light_mode: LightOpt = False,
        trust_any_ssl_certificate: TrustOpt = False,
        mailbox_credential: CredentialOpt = None,
        timeout: TimeoutOpt = 30.0,
        per_connection_timeout: PerConnectionOpt = None,
        mailbox_server: MailboxServerOpt = None,
        reset_test_account_credentials: ResetOpt = False,
        output: OutputOpt = "table",
    ) -> None:
        run_test(
            protocol,
            client_access_server,
            connection_type,
            port_client_access_server,
            light_mode,
            trust_any_ssl_certificate,
            mailbox_credential,
            timeout,
            output,
            per_connection_timeout,
            mailbox_server,
        )

    test.__doc__ = (
        f"Log on to {protocol} through the front end as a mailbox (and, without "
        "-LightMode, send it a\nmessage over SMTP and read it back); exit 1 if a "
        "step fails."
    )
    return test


test_imapconnectivity = command("Test-ImapConnectivity")(connectivity_command("IMAP4"))
test_popconnectivity = command("Test-PopConnectivity")(connectivity_command("POP3"))
