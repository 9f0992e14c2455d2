"""The settings models: the single definition of every name, type, allowed value and default.

Field names are the Exchange cmdlet parameter names, so settings.toml, `get-*` output and
`Set-* -Param` all say the same thing. Fields marked `windows_only` are accepted and stored so
pasted scripts keep working, but they change nothing here (get-* marks them so).
"""

from __future__ import annotations

import weakref
from datetime import timedelta
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Service names, as Exchange spells them: re-exported from the light module.
from server.settings.names import DELIVERY as DELIVERY
from server.settings.names import IMAP4 as IMAP4
from server.settings.names import IMAP4BE as IMAP4BE
from server.settings.names import POP3 as POP3
from server.settings.names import POP3BE as POP3BE
from server.settings.names import REPLICATION as REPLICATION
from server.settings.names import SERVICE_DISPLAY_NAMES as SERVICE_DISPLAY_NAMES
from server.settings.names import SERVICE_NAMES as SERVICE_NAMES
from server.settings.names import SUBMISSION as SUBMISSION
from server.settings.names import WEB as WEB
from server.settings.names import default_startup
from server.settings.types import (
    AuthMechanism,
    Bool,
    ByteSize,
    CalendarItemRetrievalOption,
    ConnectionSetting,
    ConnectionSettings,
    Encryption,
    Endpoints,
    EnumValue,
    EnumValues,
    ExtendedProtectionPolicy,
    Fqdn,
    IntRange,
    IPEndPoint,
    IPRangeList,
    LogFileRollOver,
    LoginType,
    MailboxType,
    MimeTextFormat,
    OptionalStr,
    PermissionGroup,
    ProtocolLoggingLevel,
    SizeRange,
    SortOrder,
    StartupType,
    StringList,
    TimeSpanRange,
    TransportRole,
    UnlimitedIntRange,
    Url,
)

INT32_MAX = 2147483647
WINDOWS_ONLY: dict[str, Any] = {"windows_only": True}

Port = Annotated[int, IntRange(1, 65535)]
Count = Annotated[int, IntRange(1, INT32_MAX)]
IdleTimeout = Annotated[timedelta, TimeSpanRange("00:00:30", "1:00:00")]
ConnectorTimeout = Annotated[timedelta, TimeSpanRange("00:00:01", "1.00:00:00")]
Size = Annotated[ByteSize, SizeRange()]  # a byte size or Unlimited


_LoginType = Annotated[LoginType, EnumValue(LoginType)]
_CalendarOption = Annotated[CalendarItemRetrievalOption, EnumValue(CalendarItemRetrievalOption)]
_MimeFormat = Annotated[MimeTextFormat, EnumValue(MimeTextFormat)]
_SortOrder = Annotated[SortOrder, EnumValue(SortOrder)]
_ExtendedProtection = Annotated[ExtendedProtectionPolicy, EnumValue(ExtendedProtectionPolicy)]
_RollOver = Annotated[LogFileRollOver, EnumValue(LogFileRollOver)]
_StartupType = Annotated[StartupType, EnumValue(StartupType)]
_MailboxType = Annotated[MailboxType, EnumValue(MailboxType)]
_TransportRole = Annotated[TransportRole, EnumValue(TransportRole)]
_ProtocolLoggingLevel = Annotated[ProtocolLoggingLevel, EnumValue(ProtocolLoggingLevel)]
_AuthMechanisms = Annotated[list[AuthMechanism], EnumValues(AuthMechanism)]
_PermissionGroups = Annotated[list[PermissionGroup], EnumValues(PermissionGroup)]


class Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        validate_default=True,
        arbitrary_types_allowed=True,
    )


class ProtocolSettings(Model):
    """What Set-PopSettings and Set-ImapSettings share (reference section 1)."""

    AuthenticatedConnectionTimeout: IdleTimeout = Field(
        default=timedelta(minutes=30), description="Idle timeout after login."
    )
    PreAuthenticatedConnectionTimeout: IdleTimeout = Field(
        default=timedelta(minutes=1), description="Idle timeout before login."
    )
    Banner: str = Field(default="", description="Greeting text after +OK / * OK.")
    CalendarItemRetrievalOption: _CalendarOption = Field(
        default=CalendarItemRetrievalOption.iCalendar,
        description="How meeting requests are delivered; Custom requires OwaServerUrl.",
    )
    OwaServerUrl: Url = Field(default=None, description="Base URL of calendar links with Custom.")
    EnableExactRFC822Size: Bool = Field(
        default=False, description="Exact (true) or estimated message sizes."
    )
    EnableGSSAPIAndNTLMAuth: Bool = Field(default=True, json_schema_extra=WINDOWS_ONLY)
    EnforceCertificateErrors: Bool = Field(
        default=False,
        description="Proxy connections to a back end with an invalid certificate fail.",
    )
    ExtendedProtectionPolicy: _ExtendedProtection = Field(
        default=ExtendedProtectionPolicy.None_, json_schema_extra=WINDOWS_ONLY
    )
    ExternalConnectionSettings: ConnectionSettings = Field(
        default_factory=list,
        description="What external clients should use (HostName:Port:SSL|TLS).",
    )
    InternalConnectionSettings: ConnectionSettings = Field(
        default_factory=list, description="What internal clients should use."
    )
    SSLBindings: Endpoints = Field(default_factory=list, description="Implicit-TLS listeners.")
    UnencryptedOrTLSBindings: Endpoints = Field(
        default_factory=list, description="Plain listeners offering STARTTLS / STLS."
    )
    X509CertificateName: OptionalStr = Field(
        default=None, description="Certificate subject to use."
    )
    LoginType: _LoginType = Field(
        default=LoginType.SecureLogin, description="When clear-text credentials are accepted."
    )
    MaxConnections: Count = Field(default=INT32_MAX)
    MaxConnectionFromSingleIP: Count = Field(default=INT32_MAX)
    MaxConnectionsPerUser: Count = Field(default=16)
    MessageRetrievalMimeFormat: _MimeFormat = Field(
        default=MimeTextFormat.BestBodyFormat, description="Body format generated for retrieval."
    )
    SuppressReadReceipt: Bool = Field(
        default=False, description="No read receipt on download, only on open."
    )
    ProtocolLogEnabled: Bool = Field(default=False)
    LogFileLocation: OptionalStr = Field(
        default=None,
        description="Protocol log folder; empty means logs/ProtocolLog in the home folder.",
    )
    LogFileRollOverSettings: _RollOver = Field(default=LogFileRollOver.Daily)
    LogPerFileSizeQuota: Size = Field(
        default=ByteSize(0), description="0 rolls by time; Unlimited keeps one file."
    )
    ProxyTargetPort: Port = Field(
        default=1993, description="Back-end port the front end proxies to."
    )
    DomainController: OptionalStr = Field(default=None, json_schema_extra=WINDOWS_ONLY)
    # mailctl extension (server/runtime/workers.py): read when the front end starts.
    WorkerProcesses: Annotated[int, IntRange(0, 256)] = Field(
        default=1,
        description="Front-end processes sharing the listeners (SO_REUSEPORT); 0: one per "
        "CPU core. Limits and the login slow-down count per process. Applied at restart.",
    )
    # mailctl extension (server/runtime/workers.py): read when the back end starts.
    BackEndWorkerProcesses: Annotated[int, IntRange(0, 256)] = Field(
        default=1,
        description="Back-end processes; the front end hands each mailbox's sessions to "
        "one of them by a hash of its name. 0: one per CPU core. Applied at restart.",
    )

    @field_validator("Banner", mode="before")
    @classmethod
    def _banner_one_line(cls, value: Any) -> Any:
        # $null (or nothing) means the default greeting, as in Exchange; the class is the
        # protocol's (PopSettings / ImapSettings), so each gets its own default.
        if value is None or str(value).strip().lower() in {"$null", ""}:
            return cls.model_fields["Banner"].default
        text = str(value)
        bad = next((c for c in text if not " " <= c <= "~"), None)
        if bad is not None:
            # The greeting is one line of printable US-ASCII (RFC 3501 section 9, TEXT-CHAR;
            # RFC 1939 section 3): a CR or LF would make it two protocol lines.
            raise ValueError(
                f"Banner must be one line of printable ASCII text; {bad!r} is not allowed "
                f"($null gives the default)"
            )
        return text

    @model_validator(mode="after")
    def _custom_needs_url(self) -> ProtocolSettings:
        if (
            self.CalendarItemRetrievalOption is CalendarItemRetrievalOption.Custom
            and not self.OwaServerUrl
        ):
            raise ValueError("CalendarItemRetrievalOption Custom requires OwaServerUrl")
        return self


class PopSettings(ProtocolSettings):
    Banner: str = Field(default="The Microsoft Exchange POP3 service is ready.")
    MaxCommandSize: Annotated[int, IntRange(40, 1024)] = Field(
        default=512, description="Longest command line, in bytes."
    )
    MessageRetrievalSortOrder: _SortOrder = Field(default=SortOrder.Ascending)
    ProxyTargetPort: Port = Field(default=1995)


class ImapSettings(ProtocolSettings):
    Banner: str = Field(default="The Microsoft Exchange IMAP4 service is ready.")
    MaxCommandSize: Annotated[int, IntRange(1024, 16384)] = Field(
        default=10240, description="Longest command, in bytes."
    )
    ShowHiddenFoldersEnabled: Bool = Field(default=False)


PopSettingsModel = PopSettings
ImapSettingsModel = ImapSettings


class OwaVirtualDirectorySettings(Model):
    """Where the web service listens and the URLs links are built on (Get-OwaVirtualDirectory)."""

    InternalUrl: Url = None
    ExternalUrl: Url = None
    Bindings: Endpoints = Field(default_factory=list, description="Plain HTTP listeners.")
    SSLBindings: Endpoints = Field(default_factory=list, description="HTTPS listeners.")
    InternalNetworks: StringList = Field(
        default_factory=list,
        description="Client networks (CIDR) that are shown InternalConnectionSettings.",
    )


class Server(Model):
    """One server of the organization: it runs front ends and holds a mailbox database."""

    Fqdn: Fqdn
    Site: str = "Default-First-Site-Name"
    BackEndAddress: str = Field(default="127.0.0.1", description="Address the back ends listen on.")
    ImapBackEndPort: Port = 1143
    ImapBackEndSSLPort: Port = 1993
    PopBackEndPort: Port = 1110
    PopBackEndSSLPort: Port = 1995
    DeliveryPort: Port = Field(
        default=475, description="LMTP over TLS port of MSExchangeDelivery, on BackEndAddress."
    )
    MailboxReplicationPort: Port = Field(
        default=808,
        description="Port of MSExchangeMailboxReplication (mailbox moves), on BackEndAddress.",
    )
    PopSettings: PopSettingsModel
    ImapSettings: ImapSettingsModel
    OwaVirtualDirectory: OwaVirtualDirectorySettings = Field(
        default_factory=lambda: OwaVirtualDirectorySettings()
    )
    Services: dict[str, _StartupType] = Field(
        default_factory=dict, description="StartupType of each service on this server."
    )

    @model_validator(mode="before")
    @classmethod
    def _delivery_port_follows_the_base(cls, data: Any) -> Any:
        # A home made before MSExchangeDelivery existed has no DeliveryPort: give it the
        # port its own port plan would have (475, shifted like the back-end ports), so a
        # non-root install does not start trying to bind 475.
        if isinstance(data, dict) and "DeliveryPort" not in data:
            backend = data.get("ImapBackEndPort", 1143)
            if isinstance(backend, int) and backend - 1143 + 475 >= 1:
                data = {**data, "DeliveryPort": backend - 1143 + 475}
        # Likewise for a home made before mailbox moves (MSExchangeMailboxReplication).
        if isinstance(data, dict) and "MailboxReplicationPort" not in data:
            backend = data.get("ImapBackEndPort", 1143)
            if isinstance(backend, int) and backend - 1143 + 808 >= 1:
                data = {**data, "MailboxReplicationPort": backend - 1143 + 808}
        return data

    @model_validator(mode="after")
    def _known_services(self) -> Server:
        for name in self.Services:
            if name not in SERVICE_NAMES:
                raise ValueError(f"unknown service {name!r}; allowed: {', '.join(SERVICE_NAMES)}")
        return self

    def startup_type(self, service: str) -> StartupType:
        return self.Services.get(service, default_startup_type(service))


def default_startup_type(service: str) -> StartupType:
    return StartupType(default_startup(service))


class ReceiveConnector(Model):
    """Set-ReceiveConnector (reference section 2); keyed by name, Identity is Server\\Name.

    Only FrontendTransport connectors are served (by MSExchangeFrontEndTransport). The
    HubTransport "Client Proxy" connector is Exchange's hop from the front end to the
    mailbox server's transport; here the front end hands local mail straight to the mailbox
    server's MSExchangeDelivery over LMTP (server/delivery/), so nothing listens on it and
    its settings have no effect (Get-ReceiveConnector says so under Served)."""

    Server: str
    TransportRole: _TransportRole = TransportRole.FrontendTransport
    Enabled: Bool = True
    AdvertiseClientSettings: Bool = False
    Fqdn: Fqdn
    Bindings: Endpoints = Field(default_factory=list)
    AuthMechanism: _AuthMechanisms = Field(
        default_factory=lambda: [
            AuthMechanism.Tls,
            AuthMechanism.BasicAuth,
            AuthMechanism.BasicAuthRequireTLS,
            AuthMechanism.Integrated,
        ],
        description="Tls: STARTTLS; BasicAuth: AUTH PLAIN/LOGIN; BasicAuthRequireTLS: AUTH only "
        "after STARTTLS. Integrated, ExchangeServer, ExternalAuthoritative: no effect here.",
    )
    PermissionGroups: _PermissionGroups = Field(
        default_factory=lambda: [PermissionGroup.ExchangeUsers],
        description="AnonymousUsers lets clients send to local mailboxes without AUTH; "
        "without it AUTH is required. The other groups: no effect here.",
    )
    Banner: OptionalStr = None
    RequireTLS: Bool = False
    TlsCertificateName: OptionalStr = None
    RemoteIPRanges: IPRangeList = Field(
        default_factory=lambda: [
            "0.0.0.0-255.255.255.255",
            "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ],
        description="Client addresses served: 192.168.1.1, 192.168.1.0/24, "
        "192.168.1.10-192.168.1.20 or IPv6 forms; others get 554 5.7.1 and are closed.",
    )
    MaxMessageSize: Annotated[ByteSize, SizeRange(1, 2 * 1024**3, unlimited=False)] = ByteSize(
        36 * 1024**2
    )
    MaxRecipientsPerMessage: Annotated[int, IntRange(1, 512000)] = 200
    MaxInboundConnection: Annotated[int | None, UnlimitedIntRange(1, 2147483647)] = Field(
        default=5000,
        description="Connections served at once (a number or Unlimited); more get 421 4.3.2.",
    )
    MaxInboundConnectionPerSource: Annotated[int, IntRange(1, 10000)] = Field(
        default=20, description="Connections served at once from one address; more get 421 4.3.2."
    )
    MaxInboundConnectionPercentagePerSource: Annotated[int, IntRange(1, 100)] = Field(
        default=2,
        description="Also caps connections from one address, as a percentage of "
        "MaxInboundConnection.",
    )
    MaxLogonFailures: Annotated[int, IntRange(0, 10)] = 3
    ConnectionTimeout: ConnectorTimeout = Field(
        default=timedelta(minutes=10), description="Longest life of a connection, busy or not."
    )
    ConnectionInactivityTimeout: ConnectorTimeout = Field(
        default=timedelta(minutes=5), description="Longest silence from the client."
    )
    ProtocolLoggingLevel: _ProtocolLoggingLevel = Field(
        default=ProtocolLoggingLevel.None_,
        description="Verbose: SMTP receive protocol log in "
        "logs/FrontEnd/ProtocolLog/SmtpReceive/RECV<yyyymmdd>-1.LOG.",
    )
    Comment: OptionalStr = Field(default=None, description="A note for admins; no effect here.")

    @model_validator(mode="after")
    def _mechanisms_consistent(self) -> ReceiveConnector:
        mechs = set(self.AuthMechanism)
        if AuthMechanism.None_ in mechs and len(mechs) > 1:
            raise ValueError("AuthMechanism None cannot be combined with other values")
        if (
            AuthMechanism.BasicAuthRequireTLS in mechs
            and not {
                AuthMechanism.BasicAuth,
                AuthMechanism.Tls,
            }
            <= mechs
        ):
            raise ValueError("AuthMechanism BasicAuthRequireTLS needs BasicAuth and Tls")
        if self.RequireTLS and AuthMechanism.Tls not in mechs:
            raise ValueError("RequireTLS $true needs AuthMechanism Tls")
        if self.Banner is not None and not self.Banner.startswith("220"):
            raise ValueError("Banner must start with 220")
        return self


class SendConnector(Model):
    """Where mail for other domains goes (New-SendConnector -SmartHosts)."""

    AddressSpaces: StringList = Field(default_factory=lambda: ["*"])
    SmartHosts: StringList = Field(default_factory=list, description="host or host:port")
    Enabled: Bool = True
    RequireTLS: Bool = False


class Mailbox(Model):
    """A mailbox and its CAS switches (Set-Mailbox / Set-CASMailbox, reference section 3)."""

    DisplayName: str = ""
    PrimarySmtpAddress: str
    EmailAddresses: StringList = Field(default_factory=list)
    Server: str = Field(description="The server whose mailbox database holds it.")
    Type: _MailboxType = MailboxType.User
    PopEnabled: Bool = True
    ImapEnabled: Bool = True
    PopUseProtocolDefaults: Bool = True
    ImapUseProtocolDefaults: Bool = True
    PopMessagesRetrievalMimeFormat: _MimeFormat = MimeTextFormat.BestBodyFormat
    ImapMessagesRetrievalMimeFormat: _MimeFormat = MimeTextFormat.BestBodyFormat
    PopEnableExactRFC822Size: Bool = False
    ImapEnableExactRFC822Size: Bool = False
    PopForceICalForCalendarRetrievalOption: Bool = False
    ImapForceICalForCalendarRetrievalOption: Bool = False
    PopSuppressReadReceipt: Bool = False
    ImapSuppressReadReceipt: Bool = False
    # Quotas (server.store.quota): the database's while UseDatabaseQuotaDefaults is $true.
    UseDatabaseQuotaDefaults: Bool = Field(
        default=True, description="Use the database's quotas; $false to use this mailbox's own."
    )
    IssueWarningQuota: Size = Field(
        default=ByteSize(None), description="StorageLimitStatus turns IssueWarning at this size."
    )
    ProhibitSendQuota: Size = Field(
        default=ByteSize(None), description="At this size the mailbox can no longer send mail."
    )
    ProhibitSendReceiveQuota: Size = Field(
        default=ByteSize(None),
        description="At this size the mailbox can no longer receive mail nor APPEND (IMAP QUOTA).",
    )

    @model_validator(mode="after")
    def _quotas_in_order(self) -> Mailbox:
        order = ("IssueWarningQuota", "ProhibitSendQuota", "ProhibitSendReceiveQuota")
        for low, high in zip(order, order[1:], strict=False):
            a, b = getattr(self, low).bytes, getattr(self, high).bytes
            if a is not None and b is not None and a > b:
                raise ValueError(
                    f"{low} ({getattr(self, low)}) must not be larger than "
                    f"{high} ({getattr(self, high)})"
                )
        return self

    def addresses(self) -> list[str]:
        return [self.PrimarySmtpAddress, *self.EmailAddresses]

    def reserved_type(self, name: str) -> MailboxType | None:
        """Administrator or Guest when the mailbox is named so, by its name or the local part
        of an address, whatever its Type says (reference section 5: those accounts never use
        POP3/IMAP4, and a Type set by hand must not open them)."""
        for word in (name, *(a.rsplit("@", 1)[0] for a in self.addresses())):
            kind = RESERVED_NAMES.get(word.rsplit("\\", 1)[-1].strip().lower())
            if kind is not None:
                return kind
        return None


RESERVED_NAMES = {"administrator": MailboxType.Administrator, "guest": MailboxType.Guest}


class Organization(Model):
    Name: str = "First Organization"
    Domain: Fqdn = Field(description="The accepted domain mailbox addresses are made in.")


OrganizationModel = Organization


class DirectoryMapping(Model):
    """Which LDAP attribute holds each mailbox field (Set-ADServerSettings -Mapping).

    An empty value means "not in the directory": the field keeps its default and mailctl
    does not write it. The defaults fit inetOrgPerson plus the auxiliary class of
    server/directory/mailctl.schema; docs/architecture.md ("Directory") gives the Active
    Directory values."""

    Name: str = Field(
        default="uid", description="The mailbox name, i.e. the login name (AD: sAMAccountName)."
    )
    LoginNames: StringList = Field(
        default_factory=list,
        description="More attributes a login may name (AD: userPrincipalName).",
    )
    PrimarySmtpAddress: str = Field(
        default="mail", description="AD: mail, or '' to use the SMTP: proxy address."
    )
    EmailAddresses: str = Field(
        default="mailctlEmailAddress",
        description="Aliases; values may carry AD's smtp:/SMTP: prefixes.",
    )
    DisplayName: str = "displayName"
    Server: str = Field(
        default="mailctlServer",
        description="The server that holds the mailbox; a DN-like value "
        "(AD's msExchHomeServerName) counts by its last cn=.",
    )
    Type: str = "mailctlType"
    PopEnabled: str = "mailctlPopEnabled"
    ImapEnabled: str = "mailctlImapEnabled"
    UseDatabaseQuotaDefaults: str = "mailctlUseDatabaseQuotaDefaults"
    IssueWarningQuota: str = "mailctlIssueWarningQuota"
    ProhibitSendQuota: str = "mailctlProhibitSendQuota"
    ProhibitSendReceiveQuota: str = "mailctlProhibitSendReceiveQuota"
    QuotaUnit: Annotated[int, IntRange(1, 1024**3)] = Field(
        default=1, description="Bytes per unit of plain-number quotas (AD's mDB*Quota: 1024)."
    )
    Password: str = Field(
        default="userPassword", description="Where the {ARGON2} hash is kept; '' when logins bind."
    )
    ObjectClasses: StringList = Field(
        default_factory=lambda: ["inetOrgPerson", "mailctlMailbox"],
        description="Object classes of entries New-Mailbox creates.",
    )
    Filter: str = Field(
        default="(objectClass=mailctlMailbox)", description="Which entries are mailboxes."
    )


class DirectorySettings(Model):
    """Where the mailboxes live: absent (or Uri empty), the Mailboxes table of this file;
    with Uri, an LDAP server (OpenLDAP, Active Directory, Samba AD)."""

    Uri: OptionalStr = Field(default=None, description="ldap://host:port or ldaps://host:port.")
    BaseDN: str = Field(default="", description="Where mailboxes are searched and created.")
    BindDN: OptionalStr = Field(default=None, description="The service account; none: anonymous.")
    BindPasswordFile: OptionalStr = Field(
        default=None,
        description="File with the service account's password (relative: to the home).",
    )
    LoginVerification: str = Field(
        default="Hash",
        description="Hash: check the stored argon2 hash; Bind: bind as the user's DN.",
    )
    TlsCaFile: OptionalStr = Field(
        default=None,
        description="CA certificates (PEM) for ldaps://; none: the system's. Always checked.",
    )
    ConnectTimeout: Annotated[int, IntRange(1, 120)] = Field(
        default=5, description="Seconds to reach the server."
    )
    OperationTimeout: Annotated[int, IntRange(1, 300)] = Field(
        default=5, description="Seconds for one answer."
    )
    Mapping: DirectoryMapping = Field(default_factory=lambda: DirectoryMapping())

    @model_validator(mode="after")
    def _verification_known(self) -> DirectorySettings:
        if self.LoginVerification not in ("Hash", "Bind"):
            raise ValueError("LoginVerification must be Hash or Bind")
        if self.Uri and not self.BaseDN:
            raise ValueError("Directory: BaseDN is needed with Uri")
        if self.Uri and not self.Uri.lower().startswith(("ldap://", "ldaps://")):
            raise ValueError("Directory: Uri must start with ldap:// or ldaps://")
        return self

    def ldap(self) -> bool:
        return bool(self.Uri)


class Settings(Model):
    """The whole settings store (settings.toml)."""

    SchemaVersion: int = 1
    Organization: OrganizationModel
    Servers: dict[str, Server]
    ReceiveConnectors: dict[str, ReceiveConnector] = Field(default_factory=dict)
    SendConnectors: dict[str, SendConnector] = Field(default_factory=dict)
    Mailboxes: dict[str, Mailbox] = Field(default_factory=dict)
    # Absent: the mailboxes are the table above (server.directory).
    Directory: DirectorySettings | None = None

    @model_validator(mode="after")
    def _references_exist(self) -> Settings:
        if not self.Servers:
            raise ValueError("Servers: at least one server is needed")
        for name, conn in self.ReceiveConnectors.items():
            if conn.Server not in self.Servers:
                raise ValueError(f"ReceiveConnectors.{name}.Server: no server {conn.Server!r}")
        seen: dict[str, str] = {}
        for name, box in self.Mailboxes.items():
            if box.Server not in self.Servers:
                raise ValueError(f"Mailboxes.{name}.Server: no server {box.Server!r}")
            for address in box.addresses():
                other = seen.setdefault(address.lower(), name)
                if other != name:
                    raise ValueError(
                        f"Mailboxes.{name}: address {address} is already used by {other}"
                    )
        for name in self.Servers:
            _check_listeners(name, self.server_listeners(name))
        return self

    def server_listeners(self, name: str) -> list[tuple[str, IPEndPoint]]:
        """Every address:port the services of one server listen on, with who listens."""
        server = self.Servers[name]
        out: list[tuple[str, IPEndPoint]] = []
        for service, ps in (
            ("MSExchangePOP3", server.PopSettings),
            ("MSExchangeIMAP4", server.ImapSettings),
        ):
            kind = "PopSettings" if service == "MSExchangePOP3" else "ImapSettings"
            out += [(f"{service} ({kind}.SSLBindings)", ep) for ep in ps.SSLBindings]
            out += [
                (f"{service} ({kind}.UnencryptedOrTLSBindings)", ep)
                for ep in ps.UnencryptedOrTLSBindings
            ]
        for service, field in (
            ("MSExchangePOP3BE", "PopBackEndPort"),
            ("MSExchangePOP3BE", "PopBackEndSSLPort"),
            ("MSExchangeIMAP4BE", "ImapBackEndPort"),
            ("MSExchangeIMAP4BE", "ImapBackEndSSLPort"),
        ):
            out.append(
                (f"{service} ({field})", IPEndPoint(server.BackEndAddress, getattr(server, field)))
            )
        owa = server.OwaVirtualDirectory
        out += [("W3SVC (OwaVirtualDirectory.Bindings)", ep) for ep in owa.Bindings]
        out += [("W3SVC (OwaVirtualDirectory.SSLBindings)", ep) for ep in owa.SSLBindings]
        for cname, conn in self.frontend_connectors(name).items():
            out += [
                (f"MSExchangeFrontEndTransport (receive connector {cname!r})", ep)
                for ep in conn.Bindings
            ]
        return out

    # --- lookups everyone needs -------------------------------------------------
    def server(self, name: str) -> Server:
        return self.Servers[self.server_name(name)]

    def server_name(self, name: str) -> str:
        """The key of a server given by name or FQDN (Exchange's ServerIdParameter takes
        both), case-insensitively."""
        for key in self.Servers:
            if key.lower() == name.lower():
                return key
        wanted = name.lower().rstrip(".")
        for key, server in self.Servers.items():
            if server.Fqdn.lower() == wanted:
                return key
        raise KeyError(name)

    def frontend_connectors(self, server: str) -> dict[str, ReceiveConnector]:
        """The enabled client-submission connectors the transport service of `server` runs."""
        return {
            name: conn
            for name, conn in self.ReceiveConnectors.items()
            if conn.Server.lower() == server.lower()
            and conn.Enabled
            and conn.TransportRole is TransportRole.FrontendTransport
        }

    def mailbox(self, identity: str) -> tuple[str, Mailbox] | None:
        """Find a mailbox by name, e-mail address or `domain\\name`, case-insensitively."""
        wanted = identity.strip().lower().rsplit("\\", 1)[-1]
        name = _mailbox_index(self).get(wanted)
        if name is not None:
            box = self.Mailboxes.get(name)
            if box is not None and _names(name, box, wanted):
                return name, box
        # Not in the index, or the index is stale: this object was changed in place since.
        for name, box in self.Mailboxes.items():
            if _names(name, box, wanted):
                _mailbox_indexes.pop(id(self), None)  # found by the scan: rebuilt next time
                return name, box
        return None


def _names(name: str, box: Mailbox, wanted: str) -> bool:
    """Whether the mailbox `name` answers to `wanted` (lower case, no `domain\\`)."""
    return name.lower() == wanted or wanted in (a.lower() for a in box.addresses())


# Settings.mailbox runs at every login, several times (the front end's throttle and
# password check, the back end's hand-over): a scan over every mailbox and its addresses
# costs as much as the rest of the lookup in a large organization. Each Settings object
# gets an index (lower-case name or address -> mailbox name, the first in order as the
# scan finds it) when first asked. A hit is checked against the object as it is now and
# anything the index does not answer is scanned for, so an object changed in place (the
# CLI edits its own copy) still gets the scan's answer. Kept beside the object, not in it:
# a private attribute would take part in Settings equality.
_mailbox_indexes: dict[int, tuple[weakref.ref[Settings], dict[str, str]]] = {}


def _mailbox_index(settings: Settings) -> dict[str, str]:
    key = id(settings)
    found = _mailbox_indexes.get(key)
    if found is not None and found[0]() is settings:
        return found[1]
    index: dict[str, str] = {}
    for name, box in settings.Mailboxes.items():
        index.setdefault(name.lower(), name)
        for address in box.addresses():
            index.setdefault(address.lower(), name)
    _mailbox_indexes[key] = (weakref.ref(settings, lambda _: _forget_index(key)), index)
    return index


def _forget_index(key: int) -> None:
    found = _mailbox_indexes.get(key)
    if found is not None and found[0]() is None:
        del _mailbox_indexes[key]


def _overlap(a: IPEndPoint, b: IPEndPoint) -> bool:
    """Whether two listeners cannot both bind: same port, and the same address or a wildcard
    of the same family ([::] is bound IPv6-only, so it does not take 0.0.0.0's port)."""
    if a.port != b.port or a.port == 0:
        return False
    import ipaddress

    try:
        x, y = ipaddress.ip_address(a.address), ipaddress.ip_address(b.address)
    except ValueError:  # a host name (BackEndAddress): only the same name is known to clash
        return a.address.lower() == b.address.lower()
    return x.version == y.version and (x == y or x.is_unspecified or y.is_unspecified)


def _check_listeners(server: str, listeners: list[tuple[str, IPEndPoint]]) -> None:
    # A binding another service holds would only fail later, at reload, with the new
    # settings already on disk: refuse it when it is set.
    for i, (who, ep) in enumerate(listeners):
        for other, other_ep in listeners[:i]:
            if _overlap(ep, other_ep):
                same = "" if str(ep) == str(other_ep) else f" ({other_ep})"
                raise ValueError(
                    f"server {server}: {who} binding {ep} collides with {other}{same}; "
                    f"choose another port or address"
                )


# --------------------------------------------------------------------------- defaults

P = TypeVar("P", bound=ProtocolSettings)


def default_server(name: str, fqdn: str, ports: PortPlan) -> Server:
    """A server as a fresh install has it (reference sections 1 and 4)."""
    any4 = ports.bind_address if ports.loopback_only else "0.0.0.0"

    def both(port: int) -> list[IPEndPoint]:
        if ports.loopback_only or not ports.ipv6:
            return [IPEndPoint(any4, port)]
        return [IPEndPoint("::", port), IPEndPoint(any4, port)]

    def protocol(model: type[P], ssl: int, plain: int, backend_ssl: int) -> P:
        return model(
            SSLBindings=both(ssl),
            UnencryptedOrTLSBindings=both(plain),
            InternalConnectionSettings=[
                ConnectionSetting(fqdn, ssl, Encryption.SSL),
                ConnectionSetting(fqdn, plain, Encryption.TLS),
            ],
            X509CertificateName=fqdn,
            ProxyTargetPort=backend_ssl,
        )

    pop = protocol(PopSettings, ports.pop3s, ports.pop3, ports.pop3_backend_ssl)
    imap = protocol(ImapSettings, ports.imaps, ports.imap, ports.imap_backend_ssl)
    return Server(
        Fqdn=fqdn,
        BackEndAddress=ports.backend_address,
        ImapBackEndPort=ports.imap_backend,
        ImapBackEndSSLPort=ports.imap_backend_ssl,
        PopBackEndPort=ports.pop3_backend,
        PopBackEndSSLPort=ports.pop3_backend_ssl,
        DeliveryPort=ports.delivery,
        MailboxReplicationPort=ports.replication,
        PopSettings=pop,
        ImapSettings=imap,
        OwaVirtualDirectory=OwaVirtualDirectorySettings(
            InternalUrl=f"https://{fqdn}:{ports.https}/owa"
            if ports.https != 443
            else f"https://{fqdn}/owa",
            Bindings=[IPEndPoint(any4, ports.http)],
            SSLBindings=[IPEndPoint(any4, ports.https)],
        ),
        Services={name: default_startup_type(name) for name in SERVICE_NAMES},
    )


def default_connectors(server: str, fqdn: str, ports: PortPlan) -> dict[str, ReceiveConnector]:
    address = ports.bind_address if ports.loopback_only else "0.0.0.0"
    return {
        f"Client Frontend {server}": ReceiveConnector(
            Server=server,
            TransportRole=TransportRole.FrontendTransport,
            Fqdn=fqdn,
            Bindings=[IPEndPoint(address, ports.submission)],
        ),
        f"Client Proxy {server}": ReceiveConnector(
            Server=server,
            TransportRole=TransportRole.HubTransport,
            Fqdn=fqdn,
            Bindings=[IPEndPoint(ports.backend_address, ports.client_proxy)],
            AuthMechanism=[
                AuthMechanism.Tls,
                AuthMechanism.BasicAuth,
                AuthMechanism.BasicAuthRequireTLS,
                AuthMechanism.ExchangeServer,
                AuthMechanism.Integrated,
            ],
            PermissionGroups=[PermissionGroup.ExchangeServers, PermissionGroup.ExchangeUsers],
        ),
    }


class PortPlan(Model):
    """The ports a new server gets: Exchange's when root, else the same shifted by `base`
    (10143 for 143 with base 10000) so a non-root user can run it; tests pick a free base."""

    imap: int = 143
    imaps: int = 993
    pop3: int = 110
    pop3s: int = 995
    submission: int = 587
    client_proxy: int = 465
    imap_backend: int = 1143
    imap_backend_ssl: int = 1993
    pop3_backend: int = 1110
    pop3_backend_ssl: int = 1995
    delivery: int = 475  # Exchange's Mailbox Transport Delivery port
    replication: int = 808  # Exchange's Mailbox Replication Service (MRS proxy) port
    http: int = 80
    https: int = 443
    backend_address: str = "127.0.0.1"
    bind_address: str = "127.0.0.1"
    loopback_only: bool = False
    ipv6: bool = True

    @classmethod
    def shifted(cls, base: int, **kw: Any) -> PortPlan:
        plain = cls()
        fields = {
            k: base + v
            for k, v in plain.model_dump().items()
            if isinstance(v, int) and not isinstance(v, bool)
        }
        return cls(**{**fields, **kw})


def default_settings(
    server: str = "MBX01",
    domain: str = "contoso.test",
    fqdn: str | None = None,
    ports: PortPlan | None = None,
) -> Settings:
    ports = ports or PortPlan()
    fqdn = fqdn or f"{server.lower()}.{domain}"
    return Settings(
        Organization=Organization(Domain=domain),
        Servers={server: default_server(server, fqdn, ports)},
        ReceiveConnectors=default_connectors(server, fqdn, ports),
    )
