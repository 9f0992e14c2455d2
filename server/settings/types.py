"""Exchange value types: how an admin writes them, how they are checked, how they are stored.

Every type accepts what the Exchange cmdlets accept (case-insensitive enum names or their
numbers, `$true`/`$false`, `dd.hh:mm:ss` time spans, `36MB` sizes, `host:port:SSL` entries) and
stores the canonical Exchange spelling, so `get-*` output and settings.toml read the same.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum, StrEnum
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

# --------------------------------------------------------------------------- enums


class ExchangeEnum(StrEnum):
    """An enum that also accepts its Exchange number and any letter case."""

    @classmethod
    def numbers(cls) -> dict[int, ExchangeEnum]:
        return {}

    @classmethod
    def parse(cls, value: Any) -> ExchangeEnum:
        if isinstance(value, cls):
            return value
        text = str(value).strip()
        if text.lstrip("-").isdigit() and cls.numbers():
            found = cls.numbers().get(int(text))
            if found is not None:
                return found
        for member in cls:
            if member.value.lower() == text.lower():
                return member
        raise ValueError(f"{value!r} is not valid; allowed: {cls.allowed()}")

    @classmethod
    def allowed(cls) -> str:
        numbers = {m: n for n, m in cls.numbers().items()}
        return ", ".join(f"{m.value} ({numbers[m]})" if m in numbers else m.value for m in cls)


def _numbered(cls: type[ExchangeEnum], start: int = 0) -> None:
    mapping = {i: m for i, m in enumerate(cls, start)}
    cls.numbers = classmethod(lambda _c: mapping)  # type: ignore[method-assign,assignment]


class LoginType(ExchangeEnum):
    PlainTextLogin = "PlainTextLogin"
    PlainTextAuthentication = "PlainTextAuthentication"
    SecureLogin = "SecureLogin"


class CalendarItemRetrievalOption(ExchangeEnum):
    iCalendar = "iCalendar"
    IntranetUrl = "IntranetUrl"
    InternetUrl = "InternetUrl"
    Custom = "Custom"


class MimeTextFormat(ExchangeEnum):
    TextOnly = "TextOnly"
    HtmlOnly = "HtmlOnly"
    HtmlAndTextAlternative = "HtmlAndTextAlternative"
    TextEnrichedOnly = "TextEnrichedOnly"
    TextEnrichedAndTextAlternative = "TextEnrichedAndTextAlternative"
    BestBodyFormat = "BestBodyFormat"
    Tnef = "Tnef"


class SortOrder(ExchangeEnum):
    Ascending = "Ascending"
    Descending = "Descending"


class ExtendedProtectionPolicy(ExchangeEnum):
    None_ = "None"
    Allow = "Allow"
    Require = "Require"


class LogFileRollOver(ExchangeEnum):
    Hourly = "Hourly"
    Daily = "Daily"
    Weekly = "Weekly"
    Monthly = "Monthly"


class StartupType(ExchangeEnum):
    Automatic = "Automatic"
    Manual = "Manual"
    Disabled = "Disabled"


class ProtocolLoggingLevel(ExchangeEnum):
    None_ = "None"
    Verbose = "Verbose"


class MailboxType(ExchangeEnum):
    """Who the mailbox belongs to; only User mailboxes may use POP3/IMAP4 (reference section 5)."""

    User = "User"
    Administrator = "Administrator"
    Guest = "Guest"
    Anonymous = "Anonymous"


class AuthMechanism(ExchangeEnum):
    None_ = "None"
    Tls = "Tls"
    Integrated = "Integrated"
    BasicAuth = "BasicAuth"
    BasicAuthRequireTLS = "BasicAuthRequireTLS"
    ExchangeServer = "ExchangeServer"
    ExternalAuthoritative = "ExternalAuthoritative"


class PermissionGroup(ExchangeEnum):
    None_ = "None"
    AnonymousUsers = "AnonymousUsers"
    ExchangeUsers = "ExchangeUsers"
    ExchangeServers = "ExchangeServers"
    ExchangeLegacyServers = "ExchangeLegacyServers"
    Partners = "Partners"
    Custom = "Custom"


class TransportRole(ExchangeEnum):
    FrontendTransport = "FrontendTransport"
    HubTransport = "HubTransport"


_numbered(LoginType, 1)
_numbered(CalendarItemRetrievalOption)
_numbered(MimeTextFormat)
_numbered(SortOrder)
_numbered(LogFileRollOver, 1)


def enum_type(cls: type[ExchangeEnum]) -> Any:
    return Annotated[
        cls,
        BeforeValidator(cls.parse),
        PlainSerializer(lambda m: m.value, return_type=str),
        WithJsonSchema({"type": "string", "enum": [m.value for m in cls]}),
    ]


def enum_list_type(cls: type[ExchangeEnum]) -> Any:
    def parse(value: Any) -> list[ExchangeEnum]:
        items = split_multivalue(value)
        return [cls.parse(v) for v in items]

    return Annotated[
        list[cls],  # type: ignore[valid-type]
        BeforeValidator(parse),
        PlainSerializer(lambda ms: [m.value for m in ms], return_type=list[str]),
    ]


# --------------------------------------------------------------------------- booleans

_TRUE = {"$true", "true", "1", "yes", "on"}
_FALSE = {"$false", "false", "0", "no", "off"}


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{value!r} is not a boolean; allowed: $true, $false")


Bool = Annotated[bool, BeforeValidator(parse_bool)]


# --------------------------------------------------------------------------- integers


def parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a whole number")
    if isinstance(value, int):
        return value
    text = str(value).strip().replace(",", "").replace("_", "")
    if not re.fullmatch(r"[+-]?\d+", text):
        raise ValueError(f"{value!r} is not a whole number")
    return int(text)


def int_range(lo: int, hi: int) -> Any:
    def check(value: Any) -> int:
        number = parse_int(value)
        if not lo <= number <= hi:
            raise ValueError(f"{number} is out of range; allowed: {lo} to {hi}")
        return number

    return Annotated[int, BeforeValidator(check), WithJsonSchema({"type": "integer"})]


# --------------------------------------------------------------------------- time spans

_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{1,2})(?::(\d{1,2}))?$")


def parse_timespan(value: Any) -> timedelta:
    """Exchange's `[d.]hh:mm:ss` (EnhancedTimeSpan); a bare number is seconds, as in EAC."""
    try:
        return _parse_timespan(value)
    except OverflowError:
        raise ValueError(f"{value!r} is far too long a time span") from None


def _parse_timespan(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return timedelta(seconds=value)
    text = str(value).strip()
    if re.fullmatch(r"\d+", text):
        return timedelta(seconds=int(text))
    match = _TIMESPAN.match(text)
    if not match:
        raise ValueError(f"{value!r} is not a time span; write dd.hh:mm:ss, e.g. 00:30:00")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    if minutes > 59 or seconds > 59:
        raise ValueError(f"{value!r} is not a time span; minutes and seconds go up to 59")
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def format_timespan(value: timedelta) -> str:
    total = int(value.total_seconds())
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    return f"{days}.{text}" if days else text


def timespan_range(lo: str, hi: str) -> Any:
    low, high = parse_timespan(lo), parse_timespan(hi)

    def check(value: Any) -> timedelta:
        span = parse_timespan(value)
        if not low <= span <= high:
            raise ValueError(f"{format_timespan(span)} is out of range; allowed: {lo} to {hi}")
        return span

    return Annotated[
        timedelta,
        BeforeValidator(check),
        PlainSerializer(format_timespan, return_type=str),
        WithJsonSchema({"type": "string", "pattern": r"^(\d+\.)?\d\d:\d\d:\d\d$"}),
    ]


# --------------------------------------------------------------------------- byte sizes

_UNITS = {"": 1, "B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_SIZE = re.compile(r"^([\d.,]+)\s*([KMGT]?B)?(?:\s*\(([\d,]+) bytes\))?$", re.I)


@dataclass(frozen=True)
class ByteSize:
    """ByteQuantifiedSize / Unlimited: None bytes means unlimited."""

    bytes: int | None

    @property
    def unlimited(self) -> bool:
        return self.bytes is None

    def __str__(self) -> str:
        if self.bytes is None:
            return "Unlimited"
        for unit in ("TB", "GB", "MB", "KB"):
            size = _UNITS[unit]
            if self.bytes >= size and self.bytes % size == 0:
                return f"{self.bytes // size} {unit}"
        return f"{self.bytes} B"


def parse_bytesize(value: Any) -> ByteSize:
    if isinstance(value, ByteSize):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return ByteSize(value)
    text = str(value).strip()
    if text.lower() == "unlimited":
        return ByteSize(None)
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{value!r} is not a size; write e.g. 36MB, 512KB, 1048576 or Unlimited")
    if match.group(3):
        return ByteSize(int(match.group(3).replace(",", "")))
    try:
        number = float(match.group(1).replace(",", ""))
        return ByteSize(int(number * _UNITS[(match.group(2) or "").upper()]))
    except (ValueError, OverflowError):
        raise ValueError(f"{value!r} is not a size; write e.g. 36MB, 512KB or Unlimited") from None


def bytesize_type(lo: int = 0, hi: int | None = None, unlimited: bool = True) -> Any:
    def check(value: Any) -> ByteSize:
        size = parse_bytesize(value)
        if size.bytes is None:
            if not unlimited:
                raise ValueError("Unlimited is not allowed here")
            return size
        if size.bytes < lo or (hi is not None and size.bytes > hi):
            top = str(ByteSize(hi)) if hi is not None else "Unlimited"
            raise ValueError(f"{size} is out of range; allowed: {ByteSize(lo)} to {top}")
        return size

    return Annotated[
        ByteSize,
        BeforeValidator(check),
        PlainSerializer(str, return_type=str),
        WithJsonSchema({"type": "string"}),
    ]


# --------------------------------------------------------------------------- multi-valued


def split_multivalue(value: Any) -> list[str]:
    """PowerShell multi-values as they reach us through a POSIX shell:
    `{a:1:SSL, b:2:TLS}`, `a,b`, `@("a","b")`, a TOML list, or `$null` for empty."""
    if value is None:
        return []
    if isinstance(value, Enum):
        return [value.value]
    if isinstance(value, (list, tuple)):
        items: list[str] = []
        for v in value:
            items.extend(split_multivalue(v) if isinstance(v, str) else [v])
        return items
    text = str(value).strip()
    if text.lower() in {"$null", "null", ""}:
        return []
    if text.startswith("@(") and text.endswith(")"):
        text = text[2:-1]
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    return [part.strip().strip("\"'") for part in text.split(",") if part.strip()]


# --------------------------------------------------------------------------- endpoints


@dataclass(frozen=True)
class IPEndPoint:
    """A binding, `0.0.0.0:995` or `[::]:995`."""

    address: str
    port: int

    def __str__(self) -> str:
        if ":" in self.address:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"


def parse_port(text: str, value: Any) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ValueError(f"{value!r} has no valid port; allowed: 0 to 65535")
    return int(text)


def parse_endpoint(value: Any) -> IPEndPoint:
    if isinstance(value, IPEndPoint):
        return value
    text = str(value).strip()
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([0-9.]+):(\d+)", text)
    if not match:
        raise ValueError(
            f"{value!r} is not a binding; write IPv4:port or [IPv6]:port, e.g. 0.0.0.0:995"
        )
    address = match.group(1) or match.group(3)
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"{value!r} has no valid IP address") from None
    return IPEndPoint(address, parse_port(match.group(2) or match.group(4), value))


Endpoints = Annotated[
    list[IPEndPoint],
    BeforeValidator(lambda v: [parse_endpoint(x) for x in split_multivalue(v)]),
    PlainSerializer(lambda eps: [str(e) for e in eps], return_type=list[str]),
    WithJsonSchema({"type": "array", "items": {"type": "string"}}),
]


class Encryption(ExchangeEnum):
    SSL = "SSL"
    TLS = "TLS"


@dataclass(frozen=True)
class ConnectionSetting:
    """ProtocolConnectionSettings `HostName:Port:[SSL|TLS]`; no encryption means none."""

    hostname: str
    port: int
    encryption: Encryption | None

    def __str__(self) -> str:
        return f"{self.hostname}:{self.port}:{self.encryption.value if self.encryption else ''}"


_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*\.?$"
)


def parse_connection_setting(value: Any) -> ConnectionSetting:
    if isinstance(value, ConnectionSetting):
        return value
    text = str(value).strip()
    parts = text.split(":")
    if len(parts) == 2:
        parts.append("")
    if len(parts) != 3 or not parts[0]:
        raise ValueError(
            f"{value!r} is not a connection setting; write HostName:Port:SSL, HostName:Port:TLS or HostName:Port:"
        )
    host, port, enc = parts
    if not _HOSTNAME.match(host):
        raise ValueError(f"{value!r} has no valid host name")
    encryption = Encryption.parse(enc) if enc else None
    return ConnectionSetting(host, parse_port(port, value), encryption)


ConnectionSettings = Annotated[
    list[ConnectionSetting],
    BeforeValidator(lambda v: [parse_connection_setting(x) for x in split_multivalue(v)]),
    PlainSerializer(lambda cs: [str(c) for c in cs], return_type=list[str]),
    WithJsonSchema({"type": "array", "items": {"type": "string"}}),
]


def parse_fqdn(value: Any) -> str:
    text = str(value).strip()
    if not _HOSTNAME.match(text):
        raise ValueError(f"{value!r} is not a valid host name (FQDN)")
    return text.rstrip(".")


Fqdn = Annotated[str, BeforeValidator(parse_fqdn)]


def parse_optional_str(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return None if text.strip().lower() in {"$null", ""} else text


OptionalStr = Annotated[str | None, BeforeValidator(parse_optional_str)]


def parse_url(value: Any) -> str | None:
    text = parse_optional_str(value)
    if text is None:
        return None
    if not re.match(r"^https?://[^\s/]+", text):
        raise ValueError(f"{value!r} is not a URL; write e.g. https://mail.contoso.com/owa")
    return text


Url = Annotated[str | None, BeforeValidator(parse_url)]

StringList = Annotated[list[str], BeforeValidator(split_multivalue)]


# --------------------------------------------------------------------------- counts, IP ranges


def unlimited_int_range(lo: int, hi: int) -> Any:
    """A count or Unlimited (Exchange's Unlimited<int>), stored as a number or "Unlimited";
    None means unlimited. A stored "<n> B" (this field was once a byte size) still reads."""

    def check(value: Any) -> int | None:
        if value is None:
            return None
        text = str(value).strip()
        if text.lower() == "unlimited":
            return None
        legacy = re.fullmatch(r"(\d[\d,]*)\s*B", text)
        number = parse_int(legacy.group(1) if legacy else value)
        if not lo <= number <= hi:
            raise ValueError(f"{number} is out of range; allowed: {lo} to {hi}, or Unlimited")
        return number

    return Annotated[
        int | None,
        BeforeValidator(check),
        PlainSerializer(lambda v: "Unlimited" if v is None else v),
        WithJsonSchema({"anyOf": [{"type": "integer"}, {"const": "Unlimited"}]}),
    ]


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip_range(value: Any) -> str:
    """One RemoteIPRanges entry as Exchange takes it: an address (192.168.1.1), a CIDR
    network (192.168.1.0/24) or a range (192.168.1.10-192.168.1.20), IPv4 or IPv6; stored
    in canonical form. Anything else (999.1.1.1, a range running backwards) is refused."""
    text = str(value).strip()
    try:
        if "/" in text:
            return str(ipaddress.ip_network(text, strict=False))
        if "-" in text:
            first_text, last_text = (t.strip() for t in text.split("-", 1))
            first, last = ipaddress.ip_address(first_text), ipaddress.ip_address(last_text)
            if first.version != last.version or first > last:  # type: ignore[operator]
                raise ValueError
            return f"{first}-{last}"
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(
            f"{text!r} is not an IP address range; write 192.168.1.1, 192.168.1.0/24, "
            "192.168.1.10-192.168.1.20 or the IPv6 forms of these"
        ) from None


def ip_in_ranges(address: str, ranges: list[str]) -> bool:
    """Whether `address` (a client's IP, IPv4-mapped IPv6 included) is in one of `ranges`
    (entries as parse_ip_range stores them)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for entry in ranges:
        if "/" in entry:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        elif "-" in entry:
            first_text, last_text = entry.split("-", 1)
            first, last = ipaddress.ip_address(first_text), ipaddress.ip_address(last_text)
            if ip.version == first.version and first <= ip <= last:  # type: ignore[operator]
                return True
        elif ip == ipaddress.ip_address(entry):
            return True
    return False


IPRangeList = Annotated[
    list[str], BeforeValidator(lambda v: [parse_ip_range(x) for x in split_multivalue(v)])
]
