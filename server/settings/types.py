"""Exchange value types: how an admin writes them, how they are checked, how they are stored.

Every type accepts what the Exchange cmdlets accept (case-insensitive enum names or their
numbers, `$true`/`$false`, `dd.hh:mm:ss` time spans, `36MB` sizes, `host:port:SSL` entries) and
stores the canonical Exchange spelling, so `get-*` output and settings.toml read the same.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum, StrEnum
from typing import Annotated, Any, Self

from annotated_types import GroupedMetadata
from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

# Field types are written `Annotated[int, IntRange(1, 65535)]`: a type checker reads the base
# type, pydantic unpacks the metadata object (a GroupedMetadata) into its validator,
# serializer and JSON schema. So the annotation is a real type, not one built by a call.

# --------------------------------------------------------------------------- enums


class ExchangeEnum(StrEnum):
    """An enum that also accepts its Exchange number and any letter case."""

    @classmethod
    def numbers(cls) -> dict[int, Self]:
        start = _FIRST_NUMBER.get(cls)
        if start is None:
            return {}
        return dict(enumerate(cls, start))

    @classmethod
    def parse(cls, value: Any) -> Self:
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


# Enums whose members Exchange also accepts as numbers, and the number of the first member.
_FIRST_NUMBER: dict[type[ExchangeEnum], int] = {}


def _numbered(cls: type[ExchangeEnum], start: int = 0) -> None:
    _FIRST_NUMBER[cls] = start


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


@dataclass(frozen=True)
class EnumValue(GroupedMetadata):
    """An ExchangeEnum field: any letter case or the Exchange number in, the spelling out."""

    cls: type[ExchangeEnum]

    def __iter__(self) -> Iterator[object]:
        yield BeforeValidator(self.cls.parse)
        yield PlainSerializer(_enum_value, return_type=str)
        yield WithJsonSchema({"type": "string", "enum": [m.value for m in self.cls]})


@dataclass(frozen=True)
class EnumValues(GroupedMetadata):
    """A multi-valued ExchangeEnum field (`{Tls, BasicAuth}`, `Tls,BasicAuth`, a TOML list)."""

    cls: type[ExchangeEnum]

    def parse(self, value: Any) -> list[ExchangeEnum]:
        return [self.cls.parse(v) for v in split_multivalue(value)]

    def __iter__(self) -> Iterator[object]:
        yield BeforeValidator(self.parse)
        yield PlainSerializer(lambda ms: [_enum_value(m) for m in ms], return_type=list[str])


def _enum_value(member: ExchangeEnum) -> str:
    return member.value


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


@dataclass(frozen=True)
class IntRange(GroupedMetadata):
    """A whole number from `lo` to `hi`, written with or without thousands separators."""

    lo: int
    hi: int

    def check(self, value: Any) -> int:
        number = parse_int(value)
        if not self.lo <= number <= self.hi:
            raise ValueError(f"{number} is out of range; allowed: {self.lo} to {self.hi}")
        return number

    def __iter__(self) -> Iterator[object]:
        yield BeforeValidator(self.check)
        yield WithJsonSchema({"type": "integer"})


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


@dataclass(frozen=True)
class TimeSpanRange(GroupedMetadata):
    """A time span from `lo` to `hi` (both written `[d.]hh:mm:ss`), stored the same way."""

    lo: str
    hi: str

    def __post_init__(self) -> None:
        for bound in (self.lo, self.hi):
            parse_timespan(bound)  # a bad bound fails where it is written, not at first use

    def check(self, value: Any) -> timedelta:
        span = parse_timespan(value)
        if not parse_timespan(self.lo) <= span <= parse_timespan(self.hi):
            raise ValueError(
                f"{format_timespan(span)} is out of range; allowed: {self.lo} to {self.hi}"
            )
        return span

    def __iter__(self) -> Iterator[object]:
        yield BeforeValidator(self.check)
        yield PlainSerializer(format_timespan, return_type=str)
        yield WithJsonSchema({"type": "string", "pattern": r"^(\d+\.)?\d\d:\d\d:\d\d$"})


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


@dataclass(frozen=True)
class SizeRange(GroupedMetadata):
    """A ByteSize from `lo` to `hi` bytes (no `hi`: any size), and Unlimited if `unlimited`."""

    lo: int = 0
    hi: int | None = None
    unlimited: bool = True

    def check(self, value: Any) -> ByteSize:
        size = parse_bytesize(value)
        if size.bytes is None:
            if not self.unlimited:
                raise ValueError("Unlimited is not allowed here")
            return size
        if size.bytes < self.lo or (self.hi is not None and size.bytes > self.hi):
            top = str(ByteSize(self.hi)) if self.hi is not None else "Unlimited"
            raise ValueError(f"{size} is out of range; allowed: {ByteSize(self.lo)} to {top}")
        return size

    def __iter__(self) -> Iterator[object]:
        yield BeforeValidator(self.check)
        yield PlainSerializer(str, return_type=str)
        yield WithJsonSchema({"type": "string"})


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


@dataclass(frozen=True)
class UnlimitedIntRange(GroupedMetadata):
    """A count or Unlimited (Exchange's Unlimited<int>), stored as a number or "Unlimited";
    None means unlimited. A stored "<n> B" (this field was once a byte size) still reads."""

    lo: int
    hi: int

    def check(self, value: Any) -> int | None:
        if value is None:
            return None
        text = str(value).strip()
        if text.lower() == "unlimited":
            return None
        legacy = re.fullmatch(r"(\d[\d,]*)\s*B", text)
        number = parse_int(legacy.group(1) if legacy else value)
        if not self.lo <= number <= self.hi:
            raise ValueError(
                f"{number} is out of range; allowed: {self.lo} to {self.hi}, or Unlimited"
            )
        return number

    def __iter__(self) -> Iterator[object]:
        yield BeforeValidator(self.check)
        yield PlainSerializer(_unlimited_or_number)
        yield WithJsonSchema({"anyOf": [{"type": "integer"}, {"const": "Unlimited"}]})


def _unlimited_or_number(value: int | None) -> int | str:
    return "Unlimited" if value is None else value


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
            if first.version != last.version or int(first) > int(last):
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
            if ip.version == first.version and int(first) <= int(ip) <= int(last):
                return True
        elif ip == ipaddress.ip_address(entry):
            return True
    return False


IPRangeList = Annotated[
    list[str], BeforeValidator(lambda v: [parse_ip_range(x) for x in split_multivalue(v)])
]
