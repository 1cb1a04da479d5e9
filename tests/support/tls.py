"""A throw-away PKI for TLS tests: one CA, server/client/token-signing certificates, as PEM files.

Keys are EC P-256 (fast to generate; Go, OpenSSL and libtrust all take them) unless RSA is asked
for.  Certificates carry the extensions strict verifiers want (SKI/AKI, key usage, EKU, SAN), and
the server certificate names 127.0.0.1, ::1 and localhost: an IP SAN is needed because Go and
Python never match an IP against the CN.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Names in the default server certificate.
SERVER_NAMES = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class CertKey:
    """A certificate and its private key, both PEM files."""

    cert: Path
    key: Path

    @property
    def pair(self) -> tuple[str, str]:
        """``(cert, key)`` as strings: what ``requests``' ``cert=`` takes."""
        return str(self.cert), str(self.key)

    def load_key(self):
        """The private key object."""
        return serialization.load_pem_private_key(self.key.read_bytes(), password=None)

    def load_cert(self) -> x509.Certificate:
        """The certificate object."""
        return x509.load_pem_x509_certificate(self.cert.read_bytes())


def _new_key(key_type: str):
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"key_type must be ec or rsa, not {key_type!r}")


def _write(directory: Path, name: str, cert: x509.Certificate, key) -> CertKey:
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return CertKey(cert_path, key_path)


def _builder(subject: str, public_key, issuer: x509.Name | None = None) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))  # tolerate a little clock skew
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def make_ca(directory: Path, name: str = "ca", common_name: str = "kubesolo.fleet test CA") -> CertKey:
    """Write a self-signed CA certificate and key into ``directory``."""
    key = _new_key("ec")
    cert = (
        _builder(common_name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return _write(directory, name, cert, key)


def issue(  # pylint: disable=too-many-arguments
    ca: CertKey,
    directory: Path,
    name: str,
    *,
    sans: tuple[str, ...] = (),
    server: bool = False,
    client: bool = False,
    key_type: str = "ec",
) -> CertKey:
    """Write ``<name>.crt``/``<name>.key`` signed by ``ca``; ``sans`` are IPs or DNS names."""
    ca_cert, ca_key = ca.load_cert(), ca.load_key()
    key = _new_key(key_type)
    usages = [
        oid
        for oid, wanted in ((ExtendedKeyUsageOID.SERVER_AUTH, server), (ExtendedKeyUsageOID.CLIENT_AUTH, client))
        if wanted
    ]
    builder = (
        _builder(name, key.public_key(), ca_cert.subject)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=key_type == "rsa",
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            ),
            critical=False,
        )
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([_general_name(s) for s in sans]), critical=False)
    return _write(directory, name, builder.sign(ca_key, hashes.SHA256()), key)


def _general_name(value: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)


@dataclass(frozen=True)
class PKI:
    """Everything :func:`make_pki` wrote; every attribute is a :class:`CertKey` of PEM files."""

    directory: Path
    ca: CertKey
    server: CertKey  # 127.0.0.1, ::1, localhost; serverAuth
    client: CertKey  # clientAuth, for mutual TLS
    token: CertKey  # signs registry bearer tokens (see tokenserver.py)
    other_ca: CertKey  # an unrelated CA: trusting only it must fail verification
    other_client: CertKey  # a client certificate from other_ca: mutual TLS must refuse it

    @property
    def ca_bundle(self) -> Path:
        """The CA certificate: what a client passes as ``verify=`` / CA file."""
        return self.ca.cert

    def issue(self, name: str, **kwargs) -> CertKey:
        """Issue one more certificate from the CA (keyword arguments as :func:`issue`)."""
        return issue(self.ca, self.directory, name, **kwargs)

    def server_context(self, *, client_ca: bool = False, ask_client_cert: bool = False) -> ssl.SSLContext:
        """Server-side context with the server certificate; ``client_ca``: require a client cert;
        ``ask_client_cert``: ask for one but accept a client without (to see who offers one)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*self.server.pair)
        if client_ca or ask_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED if client_ca else ssl.CERT_OPTIONAL
            context.load_verify_locations(cafile=str(self.ca.cert))
        return context

    def registry_tls_config(self, *, mtls: bool = False) -> dict:
        """``extra_config`` for a Registry started with ``scheme='https'``."""
        tls = {"certificate": str(self.server.cert), "key": str(self.server.key)}
        if mtls:
            tls["clientcas"] = [str(self.ca.cert)]  # Distribution then requires and verifies one
        return {"http": {"tls": tls}}


def make_pki(directory: Path) -> PKI:
    """Generate the CA and the certificates of :class:`PKI` into ``directory`` (~50 ms)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca(directory)
    other_ca = make_ca(directory, "other-ca", "unrelated test CA")
    return PKI(
        directory=directory,
        ca=ca,
        server=issue(ca, directory, "server", sans=SERVER_NAMES, server=True),
        client=issue(ca, directory, "client", client=True),
        token=issue(ca, directory, "token-signer"),
        other_ca=other_ca,
        other_client=issue(other_ca, directory, "other-client", client=True),
    )
