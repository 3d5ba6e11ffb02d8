from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nodeos import pki


def test_issued_certificate_chains_to_its_ca_and_carries_roles() -> None:
    ca = pki.CertificateAuthority.create("test-ca")
    pair = ca.issue("client", organizations=("os:admin", "os:reader"), client=True)
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    cert.verify_directly_issued_by(ca.cert)
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ["os:admin", "os:reader"]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_server_certificate_loads_into_a_tls_context_with_its_sans(tmp_path: Path) -> None:
    ca = pki.CertificateAuthority.create("test-ca")
    pair = ca.issue("srv", dns_names=("localhost",), ip_addresses=("127.0.0.1",), server=True)
    cert_path = pki.write_pem(tmp_path / "srv.crt", pair.cert_pem)
    key_path = pki.write_pem(tmp_path / "srv.key", pair.key_pem, secret=True)
    assert key_path.stat().st_mode & 0o777 == 0o600
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert_path), str(key_path))
    sans = (
        x509.load_pem_x509_certificate(pair.cert_pem)
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value
    )
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_rsa_key_pair_is_pem() -> None:
    private, public = pki.rsa_key_pair_pem()
    assert private.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public.startswith(b"-----BEGIN PUBLIC KEY-----")
