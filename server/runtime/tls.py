"""Certificates and TLS contexts.

On first start a private CA and a certificate for the server FQDN are made (cryptography);
`mailctl new-exchangecertificate` / `import-exchangecertificate` add more, and
`enable-exchangecertificate -Services` picks which one a service uses. Each service keeps one
SSLContext per listener kind and reloads the chain into it, so a new certificate serves new
handshakes without touching established ones.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.settings.paths import Home
from server.settings.store import atomic_write, locked

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

CA_NAME = "mailctl-ca"


@dataclass(frozen=True)
class CertificateInfo:
    thumbprint: str
    subject: str
    dns_names: list[str]
    not_after: str
    services: list[str]
    cert_file: Path
    key_file: Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_key(path: Path, key: PrivateKeyTypes) -> None:
    from cryptography.hazmat.primitives import serialization

    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    atomic_write(path, data, mode=0o600)


def ca_paths(home: Home) -> tuple[Path, Path]:
    return home.certs / f"{CA_NAME}.pem", home.certs / f"{CA_NAME}.key"


def ensure_ca(home: Home) -> Path:
    """The private CA that signs self-signed certificates; clients trust its PEM.

    RFC 5280 section 4.2.1.2 wants a Subject Key Identifier in every CA certificate, and
    strict verifiers (`openssl verify -x509_strict`, Python 3.13's default
    VERIFY_X509_STRICT) refuse a chain without it. A CA made before it was added is
    re-issued once with the same key and name, so certificates it signed stay valid."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert_path, key_path = ca_paths(home)
    if cert_path.exists() and key_path.exists():
        existing = x509.load_pem_x509_certificate(cert_path.read_bytes())
        try:
            existing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            return cert_path
        except x509.ExtensionNotFound:
            key = serialization.load_pem_private_key(key_path.read_bytes(), None)
            cert = _ca_certificate(key, existing.subject, existing.not_valid_after_utc)
            atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
            return cert_path
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    home.certs.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailctl private CA")])
    cert = _ca_certificate(key, name, _now() + dt.timedelta(days=3650))
    _write_key(key_path, key)
    atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path


def _ca_certificate(key: Any, name: Any, not_after: dt.datetime) -> Any:
    """A self-signed CA certificate (RFC 5280 4.2.1.9 basicConstraints critical, 4.2.1.3
    keyUsage keyCertSign+cRLSign critical, 4.2.1.1/4.2.1.2 key identifiers)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    public = key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(public)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(days=1))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )


def new_certificate(
    home: Home,
    subject: str,
    dns_names: list[str],
    services: list[str] | None = None,
    days: int = 825,
) -> CertificateInfo:
    """New-ExchangeCertificate: a certificate signed by the private CA."""
    with locked(home):
        return _new_certificate_locked(home, subject, dns_names, services, days)


def _new_certificate_locked(
    home: Home,
    subject: str,
    dns_names: list[str],
    services: list[str] | None,
    days: int,
) -> CertificateInfo:
    """New-ExchangeCertificate's work; the caller holds the home lock (it is not reentrant)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ensure_ca(home)
    ca_cert_path, ca_key_path = ca_paths(home)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):  # ensure_ca makes a P-256 key
        raise ValueError(f"{ca_key_path} is not an EC private key; remove it to make a new CA")
    key = ec.generate_private_key(ec.SECP256R1())
    names = list(dict.fromkeys([subject, *dns_names]))
    alt: list[x509.GeneralName] = []
    for n in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            alt.append(x509.DNSName(n))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(days=1))
        .not_valid_after(_now() + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # ECDSA keys sign the handshake: digitalSignature only (RFC 5480 section 3).
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM) + ca_cert_path.read_bytes()
    thumb = cert.fingerprint(hashes.SHA1()).hex().upper()
    _write_key(home.certs / f"{thumb}.key", key)
    atomic_write(home.certs / f"{thumb}.pem", pem)
    return _register(home, thumb, subject, names, cert.not_valid_after_utc, services or [])


def import_certificate(
    home: Home, cert_pem: bytes, key_pem: bytes, services: list[str] | None = None
) -> CertificateInfo:
    """Import-ExchangeCertificate: a PEM chain (leaf first) and its private key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, None)
    # Compared as SubjectPublicKeyInfo bytes: the same for every key type (RSA, EC, Ed25519).
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise ValueError("the private key does not belong to the certificate")
    thumb = cert.fingerprint(hashes.SHA1()).hex().upper()
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = [str(n) for n in sans.value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        names = []
    cn = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    subject = str(cn[0].value) if cn else (names[0] if names else thumb)
    with locked(home):
        home.certs.mkdir(parents=True, exist_ok=True)
        atomic_write(home.certs / f"{thumb}.key", key_pem, mode=0o600)
        atomic_write(home.certs / f"{thumb}.pem", cert_pem)
        return _register(
            home, thumb, subject, names or [subject], cert.not_valid_after_utc, services or []
        )


def import_pfx(
    home: Home, data: bytes, password: bytes | None, services: list[str] | None = None
) -> CertificateInfo:
    """Import-ExchangeCertificate -FileData: a PKCS#12 (.pfx) file with the key, the
    certificate and maybe its chain. Raises ValueError (wrong password, no key, ...)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password or None)
    except ValueError as exc:
        raise ValueError(f"not a PKCS#12 file, or the password is wrong ({exc})") from None
    if key is None or cert is None:
        raise ValueError("the PKCS#12 file holds no private key and certificate")
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [cert, *extra])
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return import_certificate(home, chain, key_pem, services)


def _index_path(home: Home) -> Path:
    return home.certs / "certificates.json"


def _read_index(home: Home) -> dict[str, dict]:
    try:
        return json.loads(_index_path(home).read_text())
    except FileNotFoundError:
        return {}


def _register(
    home: Home,
    thumb: str,
    subject: str,
    names: list[str],
    not_after: dt.datetime,
    services: list[str],
) -> CertificateInfo:
    index = _read_index(home)
    index[thumb] = {
        "Subject": subject,
        "DnsNames": names,
        "NotAfter": not_after.isoformat(),
        "Services": [],
    }
    atomic_write(_index_path(home), json.dumps(index, indent=2).encode())
    if services:
        _enable_unlocked(home, thumb, services)
    return get_certificate(home, thumb)


def list_certificates(home: Home) -> list[CertificateInfo]:
    return [get_certificate(home, t) for t in _read_index(home)]


def get_certificate(home: Home, thumbprint: str) -> CertificateInfo:
    entry = _read_index(home)[thumbprint.upper()]
    return CertificateInfo(
        thumbprint.upper(),
        entry["Subject"],
        entry["DnsNames"],
        entry["NotAfter"],
        entry["Services"],
        home.certs / f"{thumbprint.upper()}.pem",
        home.certs / f"{thumbprint.upper()}.key",
    )


SERVICE_KINDS = ("IMAP", "POP", "SMTP", "IIS")


def enable_certificate(home: Home, thumbprint: str, services: list[str]) -> CertificateInfo:
    """Enable-ExchangeCertificate -Services: the last certificate enabled for a service
    kind wins, as in Exchange."""
    with locked(home):
        _enable_unlocked(home, thumbprint.upper(), services)
    return get_certificate(home, thumbprint)


def _enable_unlocked(home: Home, thumb: str, services: list[str]) -> None:
    index = _read_index(home)
    if thumb not in index:
        raise KeyError(thumb)
    wanted = {s.strip().upper() for s in services}
    unknown = wanted - set(SERVICE_KINDS)
    if unknown:
        raise ValueError(f"unknown service {sorted(unknown)}; allowed: {', '.join(SERVICE_KINDS)}")
    for other, entry in index.items():
        if other != thumb:
            entry["Services"] = [s for s in entry["Services"] if s not in wanted]
    index[thumb]["Services"] = sorted(set(index[thumb]["Services"]) | wanted)
    atomic_write(_index_path(home), json.dumps(index, indent=2).encode())


class CertificateNotFound(LookupError):
    """A certificate name (X509CertificateName) that no certificate carries."""


def _named(certificates: list[CertificateInfo], name: str) -> list[CertificateInfo]:
    wanted = name.lower()
    return [c for c in certificates if wanted in (n.lower() for n in c.dns_names)]


def select_certificate(
    home: Home, kind: str, name: str | None, strict: bool = False
) -> CertificateInfo | None:
    """The certificate a service uses: enabled for its kind and carrying `name`, else any
    certificate carrying `name`. Not strict (and no name): any certificate enabled for the
    kind. Strict: only a certificate that carries the name, so one server never serves
    another's certificate."""
    certificates = list_certificates(home)
    enabled = [c for c in certificates if kind in c.services]
    if name:
        matching = _named(enabled, name) or _named(certificates, name)
        if matching:
            return matching[-1]
        if strict:
            return None
    return enabled[-1] if enabled else None


def ensure_certificate(home: Home, kind: str, fqdn: str) -> CertificateInfo:
    """The certificate for a service of the server named `fqdn`: one that carries that name,
    made on first start if there is none. Each server gets its own (its own names); the
    first one made is also enabled for the service kinds no certificate has yet, so
    Get-ExchangeCertificate shows what is in use. Services that start together must not
    each make one: look again under the lock before making it."""
    found = select_certificate(home, kind, fqdn, strict=True)
    if found is not None and not _made_before_key_identifiers(home, found):
        return found
    with locked(home):
        found = select_certificate(home, kind, fqdn, strict=True)
        if found is not None:
            if not _made_before_key_identifiers(home, found):
                return found
            # Strict clients refuse it: the same names and services, issued again.
            return _new_certificate_locked(
                home, found.subject, found.dns_names, found.services, 825
            )
        taken = {s for c in list_certificates(home) for s in c.services}
        return _new_certificate_locked(
            home,
            fqdn,
            [fqdn, "localhost", "127.0.0.1"],
            [k for k in SERVICE_KINDS if k not in taken],
            825,
        )


def _made_before_key_identifiers(home: Home, info: CertificateInfo) -> bool:
    """A certificate this installation's CA signed before leaf certificates carried an
    Authority Key Identifier (imported certificates are left alone)."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    try:
        leaf = x509.load_pem_x509_certificate(info.cert_file.read_bytes())
    except (OSError, ValueError):
        return False
    try:
        leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
        return False
    except x509.ExtensionNotFound:
        pass
    except ValueError:
        return False
    ca = x509.load_pem_x509_certificate(ensure_ca(home).read_bytes())
    try:
        leaf.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def certificate_for(home: Home, kind: str, name: str | None, fqdn: str) -> CertificateInfo:
    """What a front end serves: the certificate X509CertificateName names, or the server's
    own (made when missing). A name other than the server's Fqdn must be on a certificate:
    mailctl does not invent one for it; CertificateNotFound says so."""
    if name and name.lower() != fqdn.lower():
        found = select_certificate(home, kind, name, strict=True)
        if found is None:
            raise CertificateNotFound(
                f"X509CertificateName {name!r} is on no certificate: create or import one "
                f"with that name (New-ExchangeCertificate -DomainName {name}, "
                f"Import-ExchangeCertificate), or set the server's Fqdn"
            )
        return found
    return ensure_certificate(home, kind, fqdn)


def server_context(cert: CertificateInfo, session_tickets: bool = True) -> ssl.SSLContext:
    """TLS 1.2+ only, modern ciphers (Mozilla intermediate).

    `session_tickets=False` is for listeners only front ends talk to (the back ends): asyncio
    clients never resume a session, yet each TLS 1.3 ticket is made and sent by the server
    and parsed and kept by the client for the life of the connection (about 7 KB each, two
    per connection by default)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:!aNULL:!MD5:!DSS")
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    if not session_tickets:
        ctx.num_tickets = 0  # TLS 1.3
        ctx.options |= ssl.OP_NO_TICKET  # TLS 1.2
    ctx.load_cert_chain(cert.cert_file, cert.key_file)
    return ctx


def reload_context(ctx: ssl.SSLContext, cert: CertificateInfo) -> None:
    """Load a new chain into a live context: new handshakes use it, old sessions keep theirs."""
    ctx.load_cert_chain(cert.cert_file, cert.key_file)


class LiveContext:
    """A listener's server context across reloads: made at the first use, then given a new
    chain only when the certificate in force changed. The object stays the same, so the
    listeners keep it and only new handshakes see the new chain."""

    def __init__(self, session_tickets: bool = True) -> None:
        self.context: ssl.SSLContext | None = None
        self._session_tickets = session_tickets
        self._thumbprint: str | None = None

    def use(self, cert: CertificateInfo) -> ssl.SSLContext:
        if self.context is None:
            self.context = server_context(cert, self._session_tickets)
        elif cert.thumbprint != self._thumbprint:
            reload_context(self.context, cert)
        self._thumbprint = cert.thumbprint
        return self.context


def client_context(home: Home, verify: bool = True) -> ssl.SSLContext:
    """What a front end (or a test) uses to reach a back end. Verifying, it trusts the
    organization's private CA (what back ends get by default) and the system's CAs (a
    purchased certificate imported and enabled for the back end), and checks the name."""
    ctx = ssl.create_default_context(cafile=str(ensure_ca(home)))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify:
        ctx.load_default_certs()
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


_FileSignature = tuple[int, int, int]
_client_contexts: dict[tuple[str, bool], tuple[_FileSignature, ssl.SSLContext]] = {}


def file_signature(path: Path) -> _FileSignature:
    """What changes when a file is replaced or rewritten (atomic_write renames a new inode in);
    raises FileNotFoundError."""
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def shared_client_context(home: Home, verify: bool = True) -> ssl.SSLContext:
    """client_context(home, verify), made once and reused while the CA file is unchanged.

    Front ends open a back-end connection per session; building a context (parse the CA,
    set up OpenSSL's store) cost more than the rest of the hand-over's bookkeeping. One stat
    per call notices a new CA, so sessions from then on trust it."""
    path = ca_paths(home)[0]
    try:
        signature = file_signature(path)
    except FileNotFoundError:
        ensure_ca(home)
        signature = file_signature(path)
    key = (str(path), verify)
    cached = _client_contexts.get(key)
    if cached is not None and cached[0] == signature:
        return cached[1]
    # Stat first, load second: a CA replaced in between is loaded under the old signature
    # and simply loaded once more on the next call.
    context = client_context(home, verify)
    _client_contexts[key] = (signature, context)
    return context
