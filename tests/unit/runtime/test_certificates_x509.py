"""The generated CA and certificates pass strict X.509 checks; each server gets its own
certificate; a certificate name that matches no certificate is refused; PFX import."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailctl.commands.certificates import file_data_path
from server.runtime import tls
from server.settings.paths import Home
from tests.unit.mailctl.cli_helpers import mailctl, ok

FQDN = "mbx01.contoso.test"


def leaf_and_ca(home: Home, cert: tls.CertificateInfo) -> tuple[Path, Path]:
    """The leaf alone (the .pem holds the chain) and the CA, as files for openssl."""
    first = cert.cert_file.read_bytes().split(b"-----END CERTIFICATE-----")[0]
    leaf = home.root / "leaf.pem"
    leaf.write_bytes(first + b"-----END CERTIFICATE-----\n")
    return leaf, tls.ca_paths(home)[0]


def openssl_verify(ca: Path, leaf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "openssl",
            "verify",
            "-x509_strict",
            "-purpose",
            "sslserver",
            "-CAfile",
            str(ca),
            str(leaf),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl binary")


@needs_openssl
def test_generated_chain_passes_openssl_x509_strict(home: Home) -> None:
    cert = tls.ensure_certificate(home, "IMAP", FQDN)
    leaf, ca = leaf_and_ca(home, cert)
    result = openssl_verify(ca, leaf)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(": OK")
    # And the chain in the served file verifies as a whole.
    result = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-CAfile", str(ca), str(cert.cert_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_extensions_of_ca_and_leaf(home: Home) -> None:
    cert = tls.ensure_certificate(home, "IMAP", FQDN)
    ca = x509.load_pem_x509_certificate(tls.ca_paths(home)[0].read_bytes())
    leaf = x509.load_pem_x509_certificate(cert.cert_file.read_bytes())
    ext = ca.extensions
    assert ext.get_extension_for_class(x509.BasicConstraints).critical
    assert ext.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = ext.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    ca_ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ca_ski == x509.SubjectKeyIdentifier.from_public_key(ca.public_key())
    ext = leaf.extensions
    assert not ext.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = ext.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    assert (
        ExtendedKeyUsageOID.SERVER_AUTH in ext.get_extension_for_class(x509.ExtendedKeyUsage).value
    )
    assert ext.get_extension_for_class(
        x509.SubjectKeyIdentifier
    ).value == x509.SubjectKeyIdentifier.from_public_key(leaf.public_key())
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest


def test_a_strict_tls_client_accepts_the_server(home: Home) -> None:
    """What Python 3.13 clients do by default (VERIFY_X509_STRICT), done here by hand."""
    cert = tls.ensure_certificate(home, "IMAP", FQDN)

    async def handshake() -> None:
        server = await asyncio.start_server(
            lambda r, w: w.close(), "127.0.0.1", 0, ssl=tls.server_context(cert)
        )
        port = server.sockets[0].getsockname()[1]
        client = ssl.create_default_context(cafile=str(tls.ca_paths(home)[0]))
        client.verify_flags |= ssl.VERIFY_X509_STRICT
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client, server_hostname=FQDN
        )
        writer.close()
        server.close()

    asyncio.run(handshake())


def _old_style_ca(home: Home) -> None:
    """A CA as mailctl made them before key identifiers were added."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailctl private CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=9))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    home.certs.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = tls.ca_paths(home)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@needs_openssl
def test_a_ca_without_key_identifier_is_reissued_with_the_same_key(home: Home) -> None:
    _old_style_ca(home)
    before = x509.load_pem_x509_certificate(tls.ca_paths(home)[0].read_bytes())
    tls.ensure_ca(home)
    after = x509.load_pem_x509_certificate(tls.ca_paths(home)[0].read_bytes())
    assert after.public_key() == before.public_key() and after.subject == before.subject
    after.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    cert = tls.new_certificate(home, FQDN, [FQDN])
    leaf, ca = leaf_and_ca(home, cert)
    assert openssl_verify(ca, leaf).returncode == 0


@needs_openssl
def test_a_server_certificate_made_before_key_identifiers_is_issued_again(home: Home) -> None:
    _old_style_ca(home)
    ca_cert_path, ca_key_path = tls.ca_paths(home)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    old = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, FQDN)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=9))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(FQDN)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # type: ignore[arg-type]
    info = tls.import_certificate(
        home,
        old.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        ["IMAP", "POP"],
    )
    fresh = tls.ensure_certificate(home, "IMAP", FQDN)
    assert fresh.thumbprint != info.thumbprint
    assert fresh.dns_names == [FQDN] and fresh.services == ["IMAP", "POP"]
    assert tls.get_certificate(home, info.thumbprint).services == []
    leaf, ca = leaf_and_ca(home, fresh)
    assert openssl_verify(ca, leaf).returncode == 0
    assert tls.ensure_certificate(home, "POP", FQDN).thumbprint == fresh.thumbprint


def test_each_server_gets_its_own_certificate(home: Home) -> None:
    first = tls.ensure_certificate(home, "IMAP", "mbx01.contoso.test")
    second = tls.ensure_certificate(home, "IMAP", "mbx02.contoso.test")
    assert first.thumbprint != second.thumbprint
    assert "mbx02.contoso.test" in second.dns_names
    assert "mbx01.contoso.test" not in second.dns_names
    # The first server keeps its certificate (and what it is enabled for).
    assert tls.ensure_certificate(home, "IMAP", "mbx01.contoso.test").thumbprint == first.thumbprint
    assert tls.get_certificate(home, first.thumbprint).services == sorted(tls.SERVICE_KINDS)
    assert tls.ensure_certificate(home, "POP", "mbx02.contoso.test").thumbprint == second.thumbprint


def test_a_certificate_name_on_no_certificate_is_refused(home: Home) -> None:
    with pytest.raises(tls.CertificateNotFound, match="'mail.contoso.test' is on no certificate"):
        tls.certificate_for(home, "IMAP", "mail.contoso.test", FQDN)
    assert tls.list_certificates(home) == []  # nothing invented for it
    own = tls.certificate_for(home, "IMAP", FQDN, FQDN)  # the server's own name: made
    assert FQDN in own.dns_names
    named = tls.new_certificate(home, "mail.contoso.test", ["mail.contoso.test"])
    assert (
        tls.certificate_for(home, "IMAP", "mail.contoso.test", FQDN).thumbprint == named.thumbprint
    )


def test_set_imapsettings_refuses_a_name_on_no_certificate(home: Home) -> None:
    result = mailctl(home, "set-imapsettings", "--x509-certificate-name", "mail.contoso.test")
    assert result.code == 2 and "no certificate carries the name mail.contoso.test" in result.err
    ok(home, "new-exchangecertificate", "--domain-name", "mail.contoso.test")
    ok(home, "set-imapsettings", "--x509-certificate-name", "mail.contoso.test")


def make_pfx(path: Path, password: bytes | None) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.fabrikam.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=9))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("mail.fabrikam.test")]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(b"fabrikam", key, cert, None, encryption)
    )
    return cert.fingerprint(hashes.SHA1()).hex().upper()


def test_import_a_pfx_with_its_password(home: Home, tmp_path: Path) -> None:
    pfx = tmp_path / "Exported Fabrikam Cert.pfx"
    thumb = make_pfx(pfx, b"P@ssw0rd")
    wrong = mailctl(
        home,
        "import-exchangecertificate",
        "--file-data",
        str(pfx),
        "--password-stdin",
        stdin="nope\n",
    )
    assert wrong.code == 1 and "password is wrong" in wrong.err
    pasted = f"([System.IO.File]::ReadAllBytes('{pfx}'))"
    result = ok(
        home,
        "import-exchangecertificate",
        "--file-data",
        pasted,
        "--password",
        "(ConvertTo-SecureString -String 'P@ssw0rd' -AsPlainText -Force)",
        "--services",
        "IMAP",
        "-o",
        "json",
    )
    row = result.json()
    assert row["Thumbprint"] == thumb and row["Services"] == "IMAP"
    info = tls.get_certificate(home, thumb)
    assert info.dns_names == ["mail.fabrikam.test"]
    tls.server_context(info)  # the key and certificate load as a TLS server chain


def test_import_an_unprotected_pfx_and_refuse_nonsense(home: Home, tmp_path: Path) -> None:
    pfx = tmp_path / "open.pfx"
    thumb = make_pfx(pfx, None)
    ok(home, "import-exchangecertificate", "--file-data", str(pfx), "--password-stdin", stdin="\n")
    assert tls.get_certificate(home, thumb).subject == "mail.fabrikam.test"
    junk = tmp_path / "junk.pfx"
    junk.write_bytes(b"not a pfx")
    result = mailctl(
        home, "import-exchangecertificate", "--file-data", str(junk), "--password-stdin", stdin="\n"
    )
    assert result.code == 1 and "not a PKCS#12 file" in result.err
    assert mailctl(home, "import-exchangecertificate").code == 2  # neither file given


def test_file_data_forms() -> None:
    assert file_data_path("/tmp/x.pfx") == Path("/tmp/x.pfx")
    assert file_data_path("([System.IO.File]::ReadAllBytes('/tmp/a b.pfx'))") == Path(
        "/tmp/a b.pfx"
    )
    assert file_data_path(
        '([Byte[]](Get-Content -Path "/tmp/c.pfx" -Encoding Byte -ReadCount 0))'
    ) == Path("/tmp/c.pfx")


def test_front_end_refuses_a_certificate_name_on_no_certificate(
    home: Home, in_process: Any
) -> None:
    from server.settings import store
    from server.settings.models import IMAP4

    def name(value: str) -> None:
        with store.edit(home) as doc:
            doc.set(("Servers", "MBX01", "ImapSettings", "X509CertificateName"), value)

    name("mail.contoso.test")
    run = in_process(IMAP4, home)
    with pytest.raises(tls.CertificateNotFound, match="mail.contoso.test"):
        run.__enter__()  # the service does not start, and says why
    run.__exit__(None, None, None)
    name(FQDN)
    with in_process(IMAP4, home) as run:
        served = run.service.status()["certificate"]
        name("mail.contoso.test")
        with pytest.raises(tls.CertificateNotFound):  # the runtime records it in LastReload
            run.reload()
        assert run.service.status()["certificate"] == served  # still serving the old one
