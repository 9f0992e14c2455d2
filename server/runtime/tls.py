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

from ..settings.paths import Home
from ..settings.store import atomic_write, locked

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


def _write_key(path: Path, key: object) -> None:
    from cryptography.hazmat.primitives import serialization

    data = key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    atomic_write(path, data, mode=0o600)


def ca_paths(home: Home) -> tuple[Path, Path]:
    return home.certs / f"{CA_NAME}.pem", home.certs / f"{CA_NAME}.key"


def ensure_ca(home: Home) -> Path:
    """The private CA that signs self-signed certificates; clients trust its PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert_path, key_path = ca_paths(home)
    if cert_path.exists() and key_path.exists():
        return cert_path
    home.certs.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailctl private CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(days=1))
        .not_valid_after(_now() + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path


def new_certificate(
    home: Home, subject: str, dns_names: list[str], services: list[str] | None = None,
    days: int = 825,
) -> CertificateInfo:
    """New-ExchangeCertificate: a certificate signed by the private CA."""
    with locked(home):
        return _new_certificate_locked(home, subject, dns_names, services, days)


def _new_certificate_locked(
    home: Home, subject: str, dns_names: list[str], services: list[str] | None, days: int,
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
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    pem = cert.public_bytes(serialization.Encoding.PEM) + ca_cert_path.read_bytes()
    thumb = cert.fingerprint(hashes.SHA1()).hex().upper()
    _write_key(home.certs / f"{thumb}.key", key)
    atomic_write(home.certs / f"{thumb}.pem", pem)
    return _register(home, thumb, subject, names, cert.not_valid_after_utc, services or [])


def import_certificate(home: Home, cert_pem: bytes, key_pem: bytes,
                       services: list[str] | None = None) -> CertificateInfo:
    """Import-ExchangeCertificate: a PEM chain (leaf first) and its private key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, None)
    if cert.public_key().public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
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
        return _register(home, thumb, subject, names or [subject], cert.not_valid_after_utc,
                         services or [])


def _index_path(home: Home) -> Path:
    return home.certs / "certificates.json"


def _read_index(home: Home) -> dict[str, dict]:
    try:
        return json.loads(_index_path(home).read_text())
    except FileNotFoundError:
        return {}


def _register(home: Home, thumb: str, subject: str, names: list[str],
              not_after: dt.datetime, services: list[str]) -> CertificateInfo:
    index = _read_index(home)
    index[thumb] = {
        "Subject": subject, "DnsNames": names, "NotAfter": not_after.isoformat(),
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
        thumbprint.upper(), entry["Subject"], entry["DnsNames"], entry["NotAfter"],
        entry["Services"], home.certs / f"{thumbprint.upper()}.pem",
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


def select_certificate(home: Home, kind: str, name: str | None) -> CertificateInfo | None:
    """The certificate a service uses: enabled for its kind and matching X509CertificateName
    (or any enabled one when no name is set)."""
    enabled = [c for c in list_certificates(home) if kind in c.services]
    if name:
        matching = [c for c in enabled if name.lower() in (n.lower() for n in c.dns_names)]
        if matching:
            return matching[-1]
        named = [c for c in list_certificates(home)
                 if name.lower() in (n.lower() for n in c.dns_names)]
        if named:
            return named[-1]
    return enabled[-1] if enabled else None


def ensure_certificate(home: Home, kind: str, fqdn: str) -> CertificateInfo:
    """The certificate for a service, made on first start if there is none. Services that
    start together must not each make one: look again under the lock before making it."""
    found = select_certificate(home, kind, fqdn)
    if found is not None:
        return found
    with locked(home):
        found = select_certificate(home, kind, fqdn)
        if found is not None:
            return found
        return _new_certificate_locked(
            home, fqdn, [fqdn, "localhost", "127.0.0.1"], list(SERVICE_KINDS), 825
        )


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
